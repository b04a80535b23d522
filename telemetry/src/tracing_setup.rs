//! Logging and tracing for a binary, in one call at start:
//! `let _telemetry = paddock_telemetry::init("paddock-gateway", config.otlp_endpoint.clone(), args.log_json)?;`
//!
//! - logs go to standard output as text or JSON lines, filtered by `RUST_LOG`
//!   (default `info`), each line inside a span carrying its trace and span ids;
//! - every `tracing` span is also an OpenTelemetry span (`tracing-opentelemetry`), so
//!   trace ids exist and travel in NATS headers ([`crate::propagation`]) even when
//!   nothing is exported;
//! - with an OTLP endpoint (`http://collector:4318`; `/v1/traces` is added when
//!   missing), spans are batched and exported over OTLP/HTTP with protobuf, from the
//!   SDK's own thread, so a slow collector never blocks a request.
//!
//! Keep the returned [`TracingGuard`] alive until the end of `main`: dropping it
//! flushes the spans still in the batch.

use crate::TelemetryError;
use crate::log_format::{DispatchCell, WithTraceIds};
use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, TracerProviderBuilder};
use tracing::Dispatch;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// The subscriber below the output layers: the registry with the log filter.
type Base = Layered<EnvFilter, Registry>;
type BoxedLayer = Box<dyn Layer<Base> + Send + Sync + 'static>;

/// Path of the OTLP/HTTP traces endpoint on a collector.
const TRACES_PATH: &str = "/v1/traces";
/// How long one export may take before the batch is dropped.
#[cfg(feature = "otlp")]
const EXPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Sets up logs and traces for `service_name` and installs them for the process.
/// See [`TracingSetup`] for more options.
pub fn init(
    service_name: &str,
    otlp_endpoint: Option<String>,
    json_logs: bool,
) -> Result<TracingGuard, TelemetryError> {
    TracingSetup::new(service_name)
        .otlp_endpoint(otlp_endpoint)
        .json_logs(json_logs)
        .init()
}

/// How a service logs and traces.
#[derive(Clone, Debug)]
pub struct TracingSetup {
    service_name: String,
    otlp_endpoint: Option<String>,
    json_logs: bool,
    filter: Option<String>,
    attributes: Vec<KeyValue>,
}

impl TracingSetup {
    pub fn new(service_name: impl Into<String>) -> Self {
        TracingSetup {
            service_name: service_name.into(),
            otlp_endpoint: None,
            json_logs: false,
            filter: None,
            attributes: Vec::new(),
        }
    }

    /// Export spans to this OTLP/HTTP collector (`None` or empty: export nothing).
    pub fn otlp_endpoint(mut self, endpoint: Option<String>) -> Self {
        self.otlp_endpoint = endpoint.filter(|e| !e.trim().is_empty());
        self
    }

    /// JSON lines instead of text.
    pub fn json_logs(mut self, json: bool) -> Self {
        self.json_logs = json;
        self
    }

    /// Filter directives (`info,paddock_gateway=debug`); default: `RUST_LOG`, else
    /// `info`.
    pub fn filter(mut self, directives: impl Into<String>) -> Self {
        self.filter = Some(directives.into());
        self
    }

    /// An attribute of every span of this process (`paddock.node` = the node's name).
    pub fn resource_attribute(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.attributes.push(KeyValue::new(key, value.into()));
        self
    }

    /// Installs the setup as the process' subscriber, logging to standard output,
    /// and W3C trace context as the global propagator.
    pub fn init(self) -> Result<TracingGuard, TelemetryError> {
        let (dispatch, guard) = self.dispatch(std::io::stdout)?;
        // Also routes the `log` crate's records (from dependencies) into tracing.
        dispatch
            .try_init()
            .map_err(|e| TelemetryError::AlreadyInitialised(e.to_string()))?;
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(guard.provider.clone());
        Ok(guard)
    }

    /// The setup as a dispatcher writing logs to `writer`, without installing it:
    /// for tests, and for a process that runs several services in one (each with
    /// `tracing::instrument::WithSubscriber::with_subscriber`).
    pub fn dispatch<W>(self, writer: W) -> Result<(Dispatch, TracingGuard), TelemetryError>
    where
        W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
    {
        let cell = DispatchCell::default();
        let (subscriber, guard) = self.subscriber(writer, cell.clone())?;
        let dispatch = Dispatch::new(subscriber);
        // A fresh cell: it cannot have been set.
        let _ = cell.set(dispatch.downgrade());
        Ok((dispatch, guard))
    }

    fn subscriber<W>(
        self,
        writer: W,
        dispatch: DispatchCell,
    ) -> Result<(Layered<Vec<BoxedLayer>, Base>, TracingGuard), TelemetryError>
    where
        W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
    {
        let filter = match &self.filter {
            Some(directives) => EnvFilter::try_new(directives),
            None => EnvFilter::try_from_default_env().or_else(|_| EnvFilter::try_new("info")),
        }
        .map_err(|e| TelemetryError::Filter(e.to_string()))?;

        let provider = self.tracer_provider()?;
        let tracer = provider.tracer("paddock");
        let otel: BoxedLayer = Box::new(tracing_opentelemetry::layer().with_tracer(tracer));
        let json = self.json_logs;
        let logs: BoxedLayer = if json {
            Box::new(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(writer)
                    .map_event_format(|inner| WithTraceIds::new(inner, true, dispatch)),
            )
        } else {
            Box::new(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(writer)
                    .map_event_format(|inner| WithTraceIds::new(inner, false, dispatch)),
            )
        };
        let subscriber = tracing_subscriber::registry()
            .with(filter)
            .with(vec![otel, logs]);
        Ok((subscriber, TracingGuard { provider }))
    }

    fn tracer_provider(&self) -> Result<SdkTracerProvider, TelemetryError> {
        let mut attributes = vec![KeyValue::new("service.version", env!("CARGO_PKG_VERSION"))];
        attributes.extend(self.attributes.iter().cloned());
        let resource = Resource::builder()
            .with_service_name(self.service_name.clone())
            .with_attributes(attributes)
            .build();
        let builder = SdkTracerProvider::builder().with_resource(resource);
        let builder = match &self.otlp_endpoint {
            Some(endpoint) => with_exporter(builder, endpoint)?,
            None => builder,
        };
        Ok(builder.build())
    }
}

/// `endpoint` with the traces path, as the exporter wants the full URL.
pub fn traces_url(endpoint: &str) -> String {
    let endpoint = endpoint.trim().trim_end_matches('/');
    if endpoint.ends_with(TRACES_PATH) {
        endpoint.to_string()
    } else {
        format!("{endpoint}{TRACES_PATH}")
    }
}

#[cfg(feature = "otlp")]
fn with_exporter(
    builder: TracerProviderBuilder,
    endpoint: &str,
) -> Result<TracerProviderBuilder, TelemetryError> {
    use opentelemetry_otlp::WithExportConfig as _;
    // The exporter's client (reqwest, built with rustls but no crypto provider)
    // panics without a process-wide provider, and this runs before a binary sets up
    // anything else: install the workspace's (ring) unless one is there already.
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    let url = traces_url(endpoint);
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(url.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| TelemetryError::Exporter {
            endpoint: url,
            detail: e.to_string(),
        })?;
    Ok(builder.with_batch_exporter(exporter))
}

#[cfg(not(feature = "otlp"))]
fn with_exporter(
    _builder: TracerProviderBuilder,
    endpoint: &str,
) -> Result<TracerProviderBuilder, TelemetryError> {
    Err(TelemetryError::Exporter {
        endpoint: traces_url(endpoint),
        detail: "paddock-telemetry was built without its `otlp` feature".into(),
    })
}

/// Keeps the tracer provider alive; dropping it exports the spans still batched.
#[derive(Debug)]
pub struct TracingGuard {
    provider: SdkTracerProvider,
}

impl TracingGuard {
    /// Exports every finished span now. Blocks until the collector answered or the
    /// export timed out: call it from a blocking context
    /// (`tokio::task::spawn_blocking`) inside a runtime.
    pub fn flush(&self) -> Result<(), TelemetryError> {
        self.provider
            .force_flush()
            .map_err(|e| TelemetryError::Flush(e.to_string()))
    }
}

impl Drop for TracingGuard {
    fn drop(&mut self) {
        if let Err(error) = self.provider.shutdown() {
            // The subscriber may be gone already: standard error is all that is left.
            eprintln!("paddock-telemetry: exporting the last spans failed: {error}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::traces_url;

    #[test]
    fn the_traces_path_is_added_once() {
        assert_eq!(
            traces_url("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("http://collector:4318/v1/traces"),
            "http://collector:4318/v1/traces"
        );
    }
}
