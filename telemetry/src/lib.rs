//! Paddock's observability in one crate, so that each binary gets it with a few small
//! edits: every Prometheus metric ([`metrics`], defined once and grouped by the
//! component that records it), the operations listener for `/metrics`, `/healthz` and
//! `/readyz` ([`http`], [`readiness`]), logging and OpenTelemetry tracing with OTLP
//! export and trace ids in log lines ([`tracing_setup`]), W3C trace context in NATS
//! headers ([`propagation`]), the node's job metrics and spans read off the events it
//! appends ([`observer`]), and the JetStream queue sampler ([`sampler`]).
//!
//! A binary, at start:
//!
//! ```ignore
//! let _telemetry = paddock_telemetry::init("paddock-coordinator", config.otlp_endpoint.clone(), config.log_json)?;
//! let registry = paddock_telemetry::new_registry("paddock-coordinator")?;
//! let metrics = CoordinatorMetrics::register(&registry)?;
//! NatsMetrics::register(&registry, client.clone())?;
//! let readiness = Readiness::new().with_check(checks::nats_connected(client.clone()));
//! tokio::spawn(paddock_telemetry::http::serve(metrics_listener, registry, readiness, shutdown.clone()));
//! ```
//!
//! This crate depends on the contract (event and job types) and on NATS types for
//! headers and the sampler; it must not depend on any service crate, the ledger or the
//! actors. Features: `http` (the listener, axum) and `otlp` (the exporter), both on by
//! default; a library that only records metrics or carries trace context uses neither.

#[cfg(feature = "http")]
pub mod http;
pub mod labels;
mod log_format;
pub mod metrics;
pub mod observer;
pub mod propagation;
pub mod readiness;
pub mod sampler;
pub mod tracing_setup;

pub use metrics::{
    CoordinatorMetrics, FleetView, GatewayMetrics, JobOutcome, NatsMetrics, NodeMetrics,
    NodeReport, NodeState, QueueMetrics, catalogue, new_registry, render,
};
pub use observer::{ClaimSpans, JobObserver};
pub use readiness::{Readiness, ReadinessCheck, checks};
pub use sampler::QueueSampler;
pub use tracing_setup::{TracingGuard, TracingSetup, init};

/// Errors of setting up or serving telemetry, with what a person needs to act.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("metric registration failed: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("log filter (RUST_LOG): {0}")]
    Filter(String),
    #[error("a tracing subscriber is already installed for this process: {0}")]
    AlreadyInitialised(String),
    #[error("OTLP exporter for {endpoint}: {detail}")]
    Exporter { endpoint: String, detail: String },
    #[error("exporting spans failed: {0}")]
    Flush(String),
    #[error("serving metrics and health: {0}")]
    Serve(#[source] std::io::Error),
    #[error("reading the state of stream {stream}: {detail}")]
    Sample { stream: String, detail: String },
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_cross_threads_and_anyhow() {
        fn send_sync<T: Send + Sync + std::error::Error + 'static>() {}
        send_sync::<super::TelemetryError>();
    }
}
