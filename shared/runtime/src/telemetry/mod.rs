//! The tracing subscriber every process installs once, in `main`: log lines
//! (human readable by default, JSON lines for log collectors) filtered by
//! `RUST_LOG`, and, when a collector is configured, ordermesh's spans and
//! log records exported over OTLP, gRPC or HTTP/protobuf (a record inside a
//! span carries its trace and span ids, so a collector holds an order's logs
//! beside its trace).
//!
//! Why it is built this way:
//! - **Two filters.** `RUST_LOG` says what is logged; the exporter takes
//!   ordermesh's own spans at INFO whatever it says, so turning the logs
//!   down does not break the traces.
//! - **Batch export off the request path.** The SDK's batch processor
//!   queues finished spans for a thread of its own; when the collector is
//!   down or slow the queue fills and further spans are dropped (the SDK
//!   counts them and logs the count at shutdown). A request never waits
//!   for the collector.
//! - **The standard variables.** `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `--otlp-endpoint`), `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
//!   `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (parent-based,
//!   always on, unless they say otherwise), `OTEL_BSP_*` for the batch;
//!   `OTEL_EXPORTER_OTLP_PROTOCOL` `grpc` (the default, to port 4317) or
//!   `http/protobuf` (to `<endpoint>/v1/traces` and `/v1/logs`, port 4318
//!   by convention, for collectors and proxies that take HTTP only); JSON
//!   is not built in. W3C trace context is the propagator.
//! - **TLS by the endpoint's scheme.** An `https://` collector is reached
//!   over TLS on either transport, trusting the web PKI or the CA in
//!   `OTEL_EXPORTER_OTLP_CERTIFICATE`, with a client certificate when
//!   `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE`/`_KEY` name one
//!   ([`collector_tls`]).

mod collector_tls;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Where and as whom traces are exported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceExport {
    /// The collector's OTLP/gRPC endpoint, e.g. `http://127.0.0.1:4317`.
    pub endpoint: String,
    /// `service.name` unless `OTEL_SERVICE_NAME` (or
    /// `OTEL_RESOURCE_ATTRIBUTES`) names one.
    pub default_service_name: String,
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("OTEL_EXPORTER_OTLP_PROTOCOL={0:?}: \"grpc\" or \"http/protobuf\" (http/json is not built in)")]
    Protocol(String),
    #[error("the OTLP exporter for {endpoint}: {reason}")]
    Exporter { endpoint: String, reason: String },
    #[error("{variable}: {reason}")]
    Tls { variable: &'static str, reason: String },
}

/// The installed exporters; [`Telemetry::shutdown`] flushes what is queued.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    logs: Option<SdkLoggerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exports(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports what is queued (bounded by the SDK's export timeout).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "flushing traces at shutdown");
        }
        if let Some(logs) = self.logs
            && let Err(error) = logs.shutdown()
        {
            tracing::warn!(%error, "flushing log records at shutdown");
        }
    }
}

/// The OTLP transport, by `OTEL_EXPORTER_OTLP_PROTOCOL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Grpc,
    HttpProtobuf,
}

impl Protocol {
    /// The protocol a value of `OTEL_EXPORTER_OTLP_PROTOCOL` names (unset or
    /// empty: gRPC).
    pub fn parse(value: Option<&str>) -> Result<Protocol, TelemetryError> {
        match value.map(str::trim) {
            None | Some("" | "grpc") => Ok(Protocol::Grpc),
            Some("http/protobuf") => Ok(Protocol::HttpProtobuf),
            Some(other) => Err(TelemetryError::Protocol(other.to_owned())),
        }
    }

    fn from_env() -> Result<Protocol, TelemetryError> {
        Protocol::parse(std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").ok().as_deref())
    }
}

/// The URL of one signal (`traces`, `logs`) under an OTLP/HTTP base
/// endpoint, as the OpenTelemetry specification composes it.
fn signal_url(endpoint: &str, signal: &str) -> String {
    format!("{}/v1/{signal}", endpoint.trim_end_matches('/'))
}

/// Installs the global subscriber (a second call installs nothing and
/// exports nothing). With `traces`, needs a tokio runtime.
pub fn init(format: LogFormat, traces: Option<TraceExport>) -> Result<Telemetry, TelemetryError> {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,tower=warn"));
    // Colours only on a terminal: a log file or a collector reading a pipe
    // gets plain text, not escape codes around every field.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = match format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_ansi(ansi)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    let transport = traces
        .as_ref()
        .map(|export| Transport::from_env(&export.endpoint))
        .transpose()?;
    let (exported_logs, provider) = match (traces, &transport) {
        (Some(export), Some(transport)) => (
            Some(logger_provider(&export, transport)?),
            Some(tracer_provider(export, transport)?),
        ),
        _ => (None, None),
    };
    let spans = provider.as_ref().map(|provider| {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        // Only the attributes the spans are read by: no source location,
        // thread, `target` or busy/idle time on every span (eight
        // attributes each, more than the span's own, and each one an
        // allocation, a clock read or bytes to encode and send).
        tracing_opentelemetry::layer()
            .with_location(false)
            .with_threads(false)
            .with_target(false)
            .with_tracked_inactivity(false)
            .with_tracer(provider.tracer("ordermesh"))
            .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
                metadata.target().starts_with("ordermesh") && *metadata.level() <= tracing::Level::INFO
            }))
    });
    // Log records as the log lines are filtered (RUST_LOG).
    let records = exported_logs.as_ref().map(|exported| {
        let filter = EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,h2=warn,tower=warn"));
        opentelemetry_appender_tracing::layer::OpenTelemetryTracingBridge::new(exported).with_filter(filter)
    });
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .with(records)
        .try_init()
        .is_ok();
    Ok(Telemetry {
        provider: provider.filter(|_| installed),
        logs: exported_logs.filter(|_| installed),
    })
}

/// How both signals' exporters reach the collector, worked out once: the
/// protocol, and TLS for an `https://` endpoint (for HTTP, one client that
/// both share).
enum Transport {
    Grpc(Option<tonic::transport::ClientTlsConfig>),
    Http(reqwest::blocking::Client),
}

impl Transport {
    fn from_env(endpoint: &str) -> Result<Transport, TelemetryError> {
        let tls = collector_tls::CollectorTls::for_endpoint(endpoint, |name| std::env::var(name).ok())?;
        Ok(match Protocol::from_env()? {
            Protocol::Grpc => Transport::Grpc(tls.map(|tls| tls.tonic())),
            Protocol::HttpProtobuf => Transport::Http(
                tls.unwrap_or_else(collector_tls::CollectorTls::web_pki)
                    .blocking_client()?,
            ),
        })
    }
}

/// One signal's exporter on `$transport`. A macro, not a function: the span
/// and log builders share method names but no trait that builds.
macro_rules! otlp_exporter {
    ($builder:expr, $export:expr, $transport:expr, $signal:literal) => {{
        match $transport {
            Transport::Grpc(tls) => {
                let builder = $builder.with_tonic().with_endpoint($export.endpoint.clone());
                match tls {
                    Some(tls) => builder.with_tls_config(tls.clone()),
                    None => builder,
                }
                .build()
            }
            Transport::Http(client) => $builder
                .with_http()
                .with_endpoint(signal_url(&$export.endpoint, $signal))
                .with_http_client(client.clone())
                .build(),
        }
        .map_err(|e| TelemetryError::Exporter {
            endpoint: $export.endpoint.clone(),
            reason: e.to_string(),
        })?
    }};
}

fn logger_provider(export: &TraceExport, transport: &Transport) -> Result<SdkLoggerProvider, TelemetryError> {
    let exporter = otlp_exporter!(
        opentelemetry_otlp::LogExporter::builder(),
        export,
        transport,
        "logs"
    );
    Ok(SdkLoggerProvider::builder()
        .with_resource(resource(export))
        .with_batch_exporter(exporter)
        .build())
}

/// `service.name` (ours unless the environment names one) and what
/// `OTEL_RESOURCE_ATTRIBUTES` adds.
fn resource(export: &TraceExport) -> opentelemetry_sdk::Resource {
    let named = std::env::var_os("OTEL_SERVICE_NAME").is_some()
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|a| a.contains("service.name="));
    let mut resource = opentelemetry_sdk::Resource::builder();
    if !named {
        resource = resource.with_service_name(export.default_service_name.clone());
    }
    resource.build()
}

fn tracer_provider(export: TraceExport, transport: &Transport) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = otlp_exporter!(
        opentelemetry_otlp::SpanExporter::builder(),
        export,
        transport,
        "traces"
    );
    Ok(SdkTracerProvider::builder()
        .with_resource(resource(&export))
        .with_batch_exporter(exporter)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_protocol_variable_chooses_the_transport() {
        assert_eq!(Protocol::parse(None).ok(), Some(Protocol::Grpc));
        assert_eq!(Protocol::parse(Some("")).ok(), Some(Protocol::Grpc));
        assert_eq!(Protocol::parse(Some("grpc")).ok(), Some(Protocol::Grpc));
        assert_eq!(
            Protocol::parse(Some("http/protobuf")).ok(),
            Some(Protocol::HttpProtobuf)
        );
        let refused = Protocol::parse(Some("http/json")).expect_err("not built in");
        assert!(refused.to_string().contains("http/json"), "{refused}");
    }

    #[test]
    fn http_signals_go_under_the_base_endpoint() {
        assert_eq!(
            signal_url("http://collector:4318", "traces"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            signal_url("https://collector:4318/", "logs"),
            "https://collector:4318/v1/logs"
        );
    }
}
