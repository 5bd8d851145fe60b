//! Admission at the edge, the same for REST, grpc-web and native gRPC: a
//! call is identified by its RPC path (`/pkg.Service/Method`), whatever the
//! protocol, so one table of scopes and rate limits guards all three.
//!
//! Order: authenticate (a bad token is refused even on a public route, so a
//! client learns its token is wrong), require a token unless the route is
//! public, require the route's scopes, then take a token from the caller's
//! bucket (its subject, or its address when anonymous). The verified
//! identity is what services see: every `x-ordermesh-*` header a client
//! sent is dropped and the gateway's own are set.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue};

use ordermesh_mesh::breaker::Caller;

use crate::auth::{Authenticator, Principal};
use crate::config::RouteAccess;
use crate::error;
use crate::limit::RateLimits;

use ordermesh_runtime::actor::{CUSTOMER_HEADER, SCOPES_HEADER, SUBJECT_HEADER};
const RESERVED_PREFIX: &str = "x-ordermesh-";

#[derive(Clone)]
pub struct Guard {
    auth: Authenticator,
    limits: RateLimits,
    access: Arc<HashMap<String, RouteAccess>>,
}

impl Guard {
    pub fn new(auth: Authenticator, limits: RateLimits, access: HashMap<String, RouteAccess>) -> Self {
        Self {
            auth,
            limits,
            access: Arc::new(access),
        }
    }

    /// Whether `principal` may call `rpc` (a token if the route is not
    /// public, and every scope it requires), without taking a rate-limit
    /// token: for a composed read, whose parts are other RPCs.
    pub fn allows(&self, rpc: &str, principal: Option<&Principal>) -> Result<(), tonic::Status> {
        let access = self
            .access
            .get(rpc)
            .ok_or_else(|| tonic::Status::unimplemented(format!("{rpc} is not served by the gateway")))?;
        Self::permits(access, rpc, principal)
    }

    fn permits(access: &RouteAccess, rpc: &str, principal: Option<&Principal>) -> Result<(), tonic::Status> {
        if access.public {
            return Ok(());
        }
        let Some(principal) = principal else {
            return Err(crate::error::token_missing());
        };
        let missing: Vec<&str> = access
            .scopes
            .iter()
            .filter(|scope| !principal.has_scope(scope))
            .map(String::as_str)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(tonic::Status::permission_denied(format!(
                "the token lacks the scope(s) {} that {rpc} requires",
                missing.join(", ")
            )))
        }
    }

    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// Admits a call to `rpc` or says why not, as the status the caller gets.
    pub async fn admit(
        &self,
        rpc: &str,
        headers: &HeaderMap,
        peer: Option<IpAddr>,
    ) -> Result<Admitted, tonic::Status> {
        let access = self
            .access
            .get(rpc)
            .ok_or_else(|| tonic::Status::unimplemented(format!("{rpc} is not served by the gateway")))?;
        let principal = self
            .auth
            .authenticate(headers.get(http::header::AUTHORIZATION))
            .await
            .map_err(|error| {
                crate::metrics::auth_refused(match error {
                    crate::auth::AuthError::Expired => "expired_token",
                    _ => "invalid_token",
                });
                error.to_status()
            })?;
        Self::permits(access, rpc, principal.as_ref()).inspect_err(|status| {
            crate::metrics::auth_refused(match status.code() {
                tonic::Code::Unauthenticated => "missing_token",
                _ => "forbidden",
            })
        })?;
        let key = match (&principal, peer) {
            (Some(principal), _) => format!("sub:{}", principal.subject),
            (None, Some(ip)) => format!("ip:{ip}"),
            (None, None) => "ip:unknown".to_owned(),
        };
        self.limits.check(rpc, &key).map_err(|wait| {
            crate::metrics::rate_limited(rpc);
            error::rate_limited(wait)
        })?;
        Ok(Admitted {
            principal,
            caller: Caller::of(&key),
        })
    }
}

/// An admitted call: who made it (when it carried a token), and the caller
/// the mesh counts its failures by (the token's subject, else the client's
/// address), so that no single caller can open a breaker for everyone.
#[derive(Debug, Clone)]
pub struct Admitted {
    pub principal: Option<Principal>,
    pub caller: Caller,
}

/// Drops every identity header a client sent, and its credentials (the
/// gateway is the only component that sees them), and sets the verified
/// identity.
pub fn forward_identity(headers: &mut HeaderMap, principal: Option<&Principal>) {
    headers.remove(http::header::AUTHORIZATION);
    headers.remove(http::header::COOKIE);
    let spoofed: Vec<http::HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with(RESERVED_PREFIX))
        .cloned()
        .collect();
    for name in spoofed {
        headers.remove(name);
    }
    if let Some(principal) = principal {
        // The authenticator refused identities that are not printable
        // ASCII, so these conversions keep every byte.
        if let Ok(subject) = HeaderValue::from_str(&principal.subject) {
            headers.insert(SUBJECT_HEADER, subject);
        }
        if let Ok(customer) = HeaderValue::from_str(&principal.customer) {
            headers.insert(CUSTOMER_HEADER, customer);
        }
        let scopes: Vec<&str> = principal.scopes.iter().map(String::as_str).collect();
        if let Ok(scopes) = HeaderValue::from_str(&scopes.join(" ")) {
            headers.insert(SCOPES_HEADER, scopes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_identity_headers_are_replaced() {
        let mut headers = HeaderMap::new();
        headers.insert(SUBJECT_HEADER, HeaderValue::from_static("mallory"));
        headers.insert("x-ordermesh-scopes", HeaderValue::from_static("admin"));
        headers.insert("x-ordermesh-anything", HeaderValue::from_static("1"));
        headers.insert("x-request-id", HeaderValue::from_static("r-1"));
        forward_identity(&mut headers, None);
        assert!(headers.get(SUBJECT_HEADER).is_none());
        assert!(headers.get(SCOPES_HEADER).is_none());
        assert!(headers.get("x-ordermesh-anything").is_none());
        assert_eq!(headers["x-request-id"], "r-1", "other headers pass");

        headers.insert(SUBJECT_HEADER, HeaderValue::from_static("mallory"));
        headers.insert(CUSTOMER_HEADER, HeaderValue::from_static("mallory"));
        let alice = Principal {
            subject: "u-1".to_owned(),
            customer: "alice".to_owned(),
            scopes: ["orders:read".to_owned(), "orders:write".to_owned()].into(),
        };
        forward_identity(&mut headers, Some(&alice));
        assert_eq!(headers[SUBJECT_HEADER], "u-1");
        assert_eq!(headers[CUSTOMER_HEADER], "alice");
        assert_eq!(headers[SCOPES_HEADER], "orders:read orders:write");
    }
}
