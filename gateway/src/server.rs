//! Building the gateway from its config and serving it: one axum router on
//! one port, HTTP/1.1 and HTTP/2 (h2c) both, with the edge layers every
//! request passes (request id, CORS, gzip, access log). REST bodies are
//! read up to the configured limit (413 beyond); gRPC and grpc-web messages
//! stream through and are bounded by the services' own message limit.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use http::{HeaderName, HeaderValue, Method, Request, Response, header};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};
use tower_http::compression::CompressionLayer;
use tower_http::compression::predicate::{DefaultPredicate, NotForContentType, Predicate};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

use ordermesh_mesh::admin::MeshAdmin;
use ordermesh_proto::mesh::v1::mesh_admin_service_server::MeshAdminServiceServer;

use crate::auth::Authenticator;
use crate::config::{FileConfig, GatewayConfig, route_access};
use crate::descriptors::{PUBLIC_SERVICES, pool};
use crate::edge::Guard;
use crate::limit::RateLimits;
use crate::upstream::{Upstream, Upstreams};
use crate::{Shared, grpc, rest, rules, sort_routes};

/// A built gateway, ready to serve.
pub struct Gateway {
    shared: Arc<Shared>,
    connections: crate::listen::ConnectionLimits,
    cors: Vec<String>,
    reporter: tonic_health::server::HealthReporter,
    /// Until the token keys load (a JWKS URL that has not answered yet),
    /// the gateway is up but not ready.
    keys_loaded: tokio::sync::watch::Receiver<bool>,
}

/// What can stop the gateway from starting; each names what to fix.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("the contracts' HTTP rules: {0}")]
    Rules(#[from] crate::rules::RuleError),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthConfigError),
    #[error("the mesh client stack: {0}")]
    Mesh(#[from] ordermesh_mesh::stack::MeshError),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("the OpenAPI document: {0}")]
    OpenApi(#[from] serde_json::Error),
}

/// Reads the contracts, checks the configuration (an invalid value stops the
/// gateway here, naming the key) and connects the upstreams.
pub async fn build(config: GatewayConfig) -> Result<Gateway, BuildError> {
    let pool = pool();
    let mut routes = rules::bindings(pool, PUBLIC_SERVICES)?;
    sort_routes(&mut routes);
    let (file, file_path) = match &config.file {
        Some(path) => (FileConfig::load(path)?, path.clone()),
        None => (FileConfig::default(), "(built-in defaults)".into()),
    };
    let access = route_access(pool, PUBLIC_SERVICES, &file, &file_path)?;
    let openapi = crate::openapi::document(pool, &routes, &access);
    let limits = RateLimits::new(
        file.rate_limit,
        access
            .iter()
            .filter_map(|(rpc, access)| access.rate_limit.map(|limit| (rpc.clone(), limit))),
    );
    let auth = Authenticator::new(config.auth.clone()).await?;
    let keys_loaded = auth.keys_loaded();
    let guard = Guard::new(auth, limits, access);

    let mesh = config.mesh.build("gateway");
    let exported = mesh.clone();
    ordermesh_runtime::metrics::on_scrape(move || {
        exported.export_metrics();
        Box::pin(async {})
    });
    let remote = |name: &str, url: &str| -> Result<Upstream, BuildError> {
        Ok(Upstream::new(mesh.client(name, url)?))
    };
    let (reporter, health) = tonic_health::server::health_reporter();
    let local = ordermesh_runtime::server::with_reflection(tonic::service::Routes::new(health).add_service(
        // Reached in-process, through the edge only, which forwards the
        // identity it verified: believed as it comes (`Network`).
        MeshAdminServiceServer::with_interceptor(
            MeshAdmin::new(mesh.clone()),
            ordermesh_runtime::actor::OperatorOnly(ordermesh_runtime::actor::Trust::Network),
        ),
    ))?;
    let upstreams = Upstreams::new(
        remote("order", &config.order_url)?,
        remote("inventory", &config.inventory_url)?,
        remote("payment", &config.payment_url)?,
        Upstream::new(ServiceExt::<http::Request<tonic::body::Body>>::map_err(
            local,
            |never: std::convert::Infallible| match never {},
        )),
    );
    let openapi = serde_json::to_vec_pretty(&openapi)?;
    let shared = Arc::new(Shared {
        routes,
        guard,
        upstreams,
        json: crate::json::JsonOptions {
            deny_unknown_fields: !config.allow_unknown_fields,
        },
        default_timeout: config.default_timeout,
        max_timeout: config.max_timeout,
        max_body_bytes: config.max_body_bytes,
        body_read_timeout: config.connections.body_read_timeout,
        openapi: openapi.into(),
    });
    Ok(Gateway {
        shared,
        connections: config.connections,
        cors: file.cors.origins,
        reporter,
        keys_loaded,
    })
}

impl Gateway {
    /// The router with every edge layer: what `serve` runs, and what tests
    /// can drive without a socket.
    pub fn router(&self) -> Router {
        let grpc = ServiceBuilder::new()
            .layer(tonic_web::GrpcWebLayer::new())
            .service(grpc::Proxy {
                shared: self.shared.clone(),
            });
        let dispatch = move |State(shared): State<Arc<Shared>>, request: Request<Body>| {
            let grpc = grpc.clone();
            async move {
                if grpc::is_grpc(&request) {
                    let response = grpc
                        .oneshot(request.map(tonic::body::Body::new))
                        .await
                        .unwrap_or_else(|never| match never {});
                    response.map(Body::new)
                } else {
                    rest::handle(State(shared), request).await.into_response()
                }
            }
        };
        let compression = DefaultPredicate::new().and(NotForContentType::const_new("application/x-ndjson"));
        let request_id = HeaderName::from_static(crate::REQUEST_ID);
        Router::new()
            .route("/openapi.json", get(openapi).fallback(crate::rest::get_only))
            .route(
                crate::compose::ROUTE,
                get(crate::compose::details).fallback(crate::rest::get_only),
            )
            .fallback(dispatch)
            .with_state(self.shared.clone())
            .layer(
                ServiceBuilder::new()
                    .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                    .layer(PropagateRequestIdLayer::new(request_id))
                    .layer(axum::middleware::from_fn(access_log))
                    .layer(cors(&self.cors))
                    .layer(CompressionLayer::new().gzip(true).compress_when(compression))
                    .layer(axum::middleware::from_fn(require_host)),
            )
    }

    /// Serves on `listener` until `shutdown`, then drains (up to 10 s).
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        self.reporter
            .set_service_status(
                ordermesh_runtime::health::LIVENESS,
                tonic_health::ServingStatus::Serving,
            )
            .await;
        // Ready once tokens can be verified; live (above) regardless, so a
        // down identity provider does not get the pod restarted.
        let ready_now = *self.keys_loaded.borrow();
        self.reporter
            .set_service_status(
                "",
                if ready_now {
                    tonic_health::ServingStatus::Serving
                } else {
                    tonic_health::ServingStatus::NotServing
                },
            )
            .await;
        let reporter = self.reporter.clone();
        let mut keys_loaded = self.keys_loaded.clone();
        let ready = tokio::spawn(async move {
            if !ready_now && keys_loaded.wait_for(|loaded| *loaded).await.is_ok() {
                reporter
                    .set_service_status("", tonic_health::ServingStatus::Serving)
                    .await;
            }
        });
        let limits = self.shared.guard.limits().clone();
        let sweeper = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                limits.sweep();
            }
        });
        let app = self.router();
        let local = listener.local_addr().ok();
        tracing::info!(service = "gateway", addr = ?local, "serving");
        let result = crate::listen::serve(listener, app, self.connections, shutdown).await;
        sweeper.abort();
        ready.abort();
        tracing::info!(service = "gateway", "stopped");
        result
    }
}

/// An HTTP/1.1 request must name its host (RFC 9112, 3.2): 400 without a
/// `Host` header. (HTTP/2 carries it as `:authority`; HTTP/1.0 may omit it.)
async fn require_host(request: Request<Body>, next: axum::middleware::Next) -> Response<Body> {
    if request.version() == http::Version::HTTP_11 && !request.headers().contains_key(header::HOST) {
        return crate::error::EdgeError::from(tonic::Status::invalid_argument(
            "an HTTP/1.1 request must send a Host header",
        ))
        .into_response();
    }
    next.run(request).await
}

async fn openapi(State(shared): State<Arc<Shared>>) -> Response<Body> {
    let mut response = Response::new(Body::from(shared.openapi.clone()));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Browsers (grpc-web, REST) from the configured origins; none by default.
fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let names = |list: &[&'static str]| {
        list.iter()
            .map(|h| HeaderName::from_static(h))
            .collect::<Vec<_>>()
    };
    CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers(names(&[
            "authorization",
            "content-type",
            "x-grpc-web",
            "x-user-agent",
            "grpc-timeout",
            "x-request-id",
            "x-request-timeout",
            "connect-protocol-version",
            "connect-timeout-ms",
        ]))
        .expose_headers(names(&[
            "grpc-status",
            "grpc-message",
            "grpc-status-details-bin",
            "x-request-id",
            "retry-after",
            "traceparent",
        ]))
        .max_age(Duration::from_secs(600))
}

/// One line per request: method, path, status (and gRPC status when the
/// answer was trailers-only), latency, request id; the request's metrics;
/// and its span, the child of the caller's trace context, whose own
/// context the response carries back (`traceparent`).
async fn access_log(mut request: Request<Body>, next: axum::middleware::Next) -> Response<Body> {
    let started = Instant::now();
    let arrival = crate::metrics::Arrival {
        protocol: crate::metrics::Protocol::of(&request),
        at: started,
    };
    request.extensions_mut().insert(arrival);
    let matched = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| format!("{} {}", request.method(), m.as_str()));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let id = request
        .headers()
        .get(crate::REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let span = tracing::info_span!(
        "http.server",
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        url.path = %path,
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        ordermesh.request_id = %id,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    ordermesh_mesh::trace::set_parent(&span, ordermesh_mesh::trace::extract(request.headers()));
    ordermesh_mesh::trace::record_ids(&span);
    let mut response = {
        use tracing::Instrument;
        next.run(request).instrument(span.clone()).await
    };
    let route = match arrival.protocol {
        crate::metrics::Protocol::Rest => response
            .extensions()
            .get::<crate::metrics::Route>()
            .map(|r| r.0.clone())
            .or(matched)
            .unwrap_or_else(|| crate::metrics::UNMATCHED.to_owned()),
        _ => format!("POST {}", crate::metrics::grpc_route(&path)),
    };
    if arrival.protocol == crate::metrics::Protocol::Rest {
        crate::metrics::record(arrival, &route, response.status().as_str());
    }
    {
        // Named by its route once it is known (the span has started by
        // then, which `otel.name` no longer changes).
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        span.context().span().update_name(route.clone());
    }
    span.record("http.route", route.as_str());
    span.record("http.response.status_code", response.status().as_u16());
    if response.status().is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    ordermesh_mesh::trace::inject(&span, response.headers_mut());
    let grpc_status = response
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // Inside the request's span: the line names its trace.
    span.in_scope(|| {
        tracing::info!(
            target: "ordermesh_gateway::access",
            %method,
            path,
            status = response.status().as_u16(),
            grpc_status,
            latency_ms = started.elapsed().as_secs_f64() * 1000.0,
            request_id = id,
            "request"
        )
    });
    response
}
