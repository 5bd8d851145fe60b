//! One way out for every failure: whatever went wrong (a refused token, a
//! field that does not parse, a service that answered NOT_FOUND, one that is
//! down) is a `tonic::Status` until the edge, where it becomes either a gRPC
//! status (native and grpc-web callers) or, here, an HTTP response whose body
//! is `google.rpc.Status` as JSON with its details rendered by type URL (the
//! same document grpc-gateway and Envoy return, so their clients' error
//! handling works unchanged). [`EdgeError`] is that HTTP answer as a type:
//! REST handlers return `Result<_, EdgeError>` and axum turns it into the
//! response (`IntoResponse`), so no handler builds an error response itself.

use std::time::Duration;

use axum::body::Body;
use http::{HeaderValue, Response, StatusCode, header};
use prost_reflect::{DynamicMessage, SerializeOptions};
use tonic::Code;
use tonic_types::{ErrorDetails, StatusExt};

/// The standard gRPC → HTTP table (grpc-gateway's `HTTPStatusFromCode`,
/// Envoy's transcoder).
pub fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::from_u16(499).expect("499 is a valid status"),
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// `google.rpc.Status` as JSON: `{"code", "message", "details": [{"@type", ...}]}`.
pub fn status_json(status: &tonic::Status) -> serde_json::Value {
    let plain = || {
        serde_json::json!({
            "code": status.code() as i32,
            "message": status.message(),
            "details": [],
        })
    };
    if status.details().is_empty() {
        return plain();
    }
    let Some(descriptor) = crate::descriptors::pool().get_message_by_name("google.rpc.Status") else {
        return plain();
    };
    let Ok(message) = DynamicMessage::decode(descriptor, status.details()) else {
        return plain();
    };
    // Defaults skipped inside details (no `"reason": ""`), but the three
    // top-level keys always present, as clients index them unconditionally.
    let options = SerializeOptions::new();
    match message.serialize_with_options(serde_json::value::Serializer, &options) {
        Ok(serde_json::Value::Object(mut object)) => {
            object
                .entry("code")
                .or_insert_with(|| serde_json::json!(status.code() as i32));
            object
                .entry("message")
                .or_insert_with(|| serde_json::json!(status.message()));
            object.entry("details").or_insert_with(|| serde_json::json!([]));
            serde_json::Value::Object(object)
        }
        _ => plain(),
    }
}

/// How long a refused caller should wait, from the status's `RetryInfo`.
pub fn retry_after(status: &tonic::Status) -> Option<Duration> {
    status.get_details_retry_info().and_then(|info| info.retry_delay)
}

/// A failed REST call, as the edge answers it: the status, rendered as
/// `google.rpc.Status` JSON with the HTTP code of the standard table, unless
/// the HTTP answer is more precise than any gRPC code (405 with `Allow`, 413).
#[derive(Debug)]
pub struct EdgeError {
    status: tonic::Status,
    http: Option<StatusCode>,
    allow: Option<HeaderValue>,
}

impl From<tonic::Status> for EdgeError {
    fn from(status: tonic::Status) -> Self {
        Self {
            status,
            http: None,
            allow: None,
        }
    }
}

impl EdgeError {
    /// 405 with `Allow` (UNIMPLEMENTED in the body), for a path another verb binds.
    pub fn method_not_allowed(method: &http::Method, path: &str, allow: &str) -> Self {
        let status =
            tonic::Status::unimplemented(format!("{method} is not allowed on {path} (allowed: {allow})"));
        Self {
            status,
            http: Some(StatusCode::METHOD_NOT_ALLOWED),
            allow: HeaderValue::from_str(allow).ok(),
        }
    }

    /// 413: a body over the limit, refused before it is parsed or forwarded.
    pub fn too_large(max_body_bytes: usize) -> Self {
        Self {
            status: bad_field(
                "",
                format!("the request body is larger than {max_body_bytes} bytes"),
            ),
            http: Some(StatusCode::PAYLOAD_TOO_LARGE),
            allow: None,
        }
    }

    /// 408: the body did not arrive in time (a client trickling it).
    pub fn body_timeout(limit: std::time::Duration) -> Self {
        Self {
            status: tonic::Status::deadline_exceeded(format!(
                "the request body did not arrive within {} ms",
                limit.as_millis()
            )),
            http: Some(StatusCode::REQUEST_TIMEOUT),
            allow: None,
        }
    }

    pub fn status(&self) -> &tonic::Status {
        &self.status
    }
}

impl axum::response::IntoResponse for EdgeError {
    fn into_response(self) -> Response<Body> {
        let status = &self.status;
        let body = serde_json::to_vec(&status_json(status)).unwrap_or_default();
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = self.http.unwrap_or_else(|| http_status(status.code()));
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(allow) = self.allow {
            headers.insert(header::ALLOW, allow);
        }
        if let Some(delay) = retry_after(status) {
            // Whole seconds, rounded up: a client that waits this long is admitted.
            let secs = delay.as_secs() + u64::from(delay.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        if status.code() == Code::Unauthenticated {
            // RFC 6750 3.1: a request without credentials gets the challenge
            // alone; error="invalid_token" is for a token that was refused.
            let challenge = if is_token_missing(status) {
                "Bearer realm=\"ordermesh\""
            } else {
                "Bearer realm=\"ordermesh\", error=\"invalid_token\""
            };
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        response
    }
}

/// `ErrorInfo.reason` of a call that came without a bearer token.
pub const TOKEN_MISSING: &str = "BEARER_TOKEN_MISSING";

/// UNAUTHENTICATED for a call without a token, marked as such (an
/// `ErrorInfo` with [`TOKEN_MISSING`]) so the edge answers with the bare
/// challenge rather than with "invalid token".
pub fn token_missing() -> tonic::Status {
    tonic::Status::with_error_details(
        Code::Unauthenticated,
        "this route needs a bearer token (Authorization: Bearer <token>)",
        ErrorDetails::with_error_info(
            TOKEN_MISSING,
            "gateway.ordermesh",
            std::collections::HashMap::<String, String>::new(),
        ),
    )
}

fn is_token_missing(status: &tonic::Status) -> bool {
    status
        .get_details_error_info()
        .is_some_and(|info| info.reason == TOKEN_MISSING)
}

/// INVALID_ARGUMENT naming the field, with a `BadRequest` field violation.
pub fn bad_field(field: &str, description: impl Into<String>) -> tonic::Status {
    let description = description.into();
    let message = if field.is_empty() {
        description.clone()
    } else {
        format!("{field}: {description}")
    };
    tonic::Status::with_error_details(
        Code::InvalidArgument,
        message,
        ErrorDetails::with_bad_request_violation(field, description),
    )
}

/// RESOURCE_EXHAUSTED with a `RetryInfo` saying when to come back.
pub fn rate_limited(retry_after: Duration) -> tonic::Status {
    tonic::Status::with_error_details(
        Code::ResourceExhausted,
        "rate limit exceeded for this caller and route",
        ErrorDetails::with_retry_info(Some(retry_after)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_standard_table() {
        let expect = [
            (Code::InvalidArgument, 400),
            (Code::FailedPrecondition, 400),
            (Code::OutOfRange, 400),
            (Code::Unauthenticated, 401),
            (Code::PermissionDenied, 403),
            (Code::NotFound, 404),
            (Code::AlreadyExists, 409),
            (Code::Aborted, 409),
            (Code::ResourceExhausted, 429),
            (Code::Cancelled, 499),
            (Code::Internal, 500),
            (Code::Unknown, 500),
            (Code::DataLoss, 500),
            (Code::Unimplemented, 501),
            (Code::Unavailable, 503),
            (Code::DeadlineExceeded, 504),
        ];
        for (code, http) in expect {
            assert_eq!(http_status(code).as_u16(), http, "{code:?}");
        }
    }

    #[test]
    fn details_render_by_type_url() {
        let json = status_json(&bad_field("lines[0].quantity", "must be positive"));
        assert_eq!(json["code"], 3);
        assert_eq!(json["message"], "lines[0].quantity: must be positive");
        let detail = &json["details"][0];
        assert_eq!(detail["@type"], "type.googleapis.com/google.rpc.BadRequest");
        assert_eq!(detail["fieldViolations"][0]["field"], "lines[0].quantity");
        assert_eq!(detail["fieldViolations"][0]["description"], "must be positive");
    }

    #[test]
    fn rate_limited_carries_retry_after_rounded_up() {
        use axum::response::IntoResponse;
        let response = EdgeError::from(rate_limited(Duration::from_millis(1200))).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        let plain = EdgeError::from(tonic::Status::unavailable("down")).into_response();
        assert_eq!(plain.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(plain.headers().get(header::RETRY_AFTER).is_none());
    }
}
