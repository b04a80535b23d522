//! Every metric Paddock exports, defined once, grouped by the component that records
//! it. Each group is a cheap-to-clone struct registered in a `prometheus::Registry`
//! with small recording methods, so a call site is one line:
//!
//! | group | registered by | what it counts |
//! | --- | --- | --- |
//! | [`GatewayMetrics`] | gateway | submissions, HTTP requests, auth failures, rate limits, quota refusals, WebSockets, Web Push notifications |
//! | [`NodeMetrics`] | node agent | slots, state, running jobs, session restarts, time to first output, tool calls, approvals |
//! | [`CoordinatorMetrics`] | coordinator | the job lifecycle as the ledger records it: starts, endings by reason, dispatch latency, duration, cost and tokens; ledger writes |
//! | [`FleetView`] | coordinator | every node as the control plane sees it: heartbeat age, state, drain deadline |
//! | [`QueueMetrics`] | coordinator | jobs queued and claimed per JetStream consumer, stream sizes (see [`crate::sampler`]) |
//! | [`NatsMetrics`] | every service | the NATS connection: up, reconnects, messages and bytes |
//! | [`MembershipMetrics`] | coordinator | the actor cluster's members, joins and leaves, `Reconcile` nudges sent |
//! | [`ClusterLinkMetrics`] | node agent | the node's link to the actor cluster: joined, join attempts, nudges received |
//!
//! Conventions: names start with `paddock_`, carry their unit (`_seconds`, `_bytes`,
//! `_usd`), counters end in `_total`; label values come through
//! [`crate::labels::BoundedLabel`] where they come from outside; no job id is ever a
//! label. [`catalogue`] lists every metric, which the tests hold the dashboards and
//! alert rules to.

mod cluster;
mod coordinator;
mod fleet;
mod gateway;
mod nats;
mod node;
mod queue;

pub use cluster::{ClusterLinkMetrics, JoinOutcome, MembershipMetrics, ReconcileReason};
pub use coordinator::CoordinatorMetrics;
pub use fleet::{FleetView, NodeReport};
pub use gateway::{GatewayMetrics, PushOutcome, WebSocketGuard};
pub use nats::NatsMetrics;
pub use node::{ApprovalOutcome, ApprovalWait, NodeMetrics, NodeState};
pub use queue::QueueMetrics;

use crate::TelemetryError;
use paddock_contract::{EventBody, JobEvent};
use prometheus::core::Collector;
use prometheus::proto::MetricType;
use prometheus::{
    CounterVec, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry,
};
use std::collections::BTreeMap;

/// Buckets (seconds) for submit → started: from a busy-loop claim to a long queue.
pub const DISPATCH_LATENCY_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Buckets (seconds) for a job's run, started → ended: seconds to hours.
pub const JOB_DURATION_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
];
/// Buckets (seconds) for started → first output of the agent (model latency).
pub const FIRST_OUTPUT_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
];
/// Buckets (seconds) for how long a tool call waits for a person's approval.
pub const APPROVAL_WAIT_BUCKETS: &[f64] = &[
    1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// Buckets (seconds) for an HTTP request of the API.
pub const HTTP_DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets (seconds) for one ledger write.
pub const LEDGER_WRITE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A group of metrics that registers as one.
pub(crate) trait MetricGroup {
    /// Every collector of the group, each a clone sharing the group's storage.
    fn collectors(&self) -> Vec<Box<dyn Collector>>;

    fn register_in(&self, registry: &Registry) -> Result<(), TelemetryError> {
        for collector in self.collectors() {
            registry.register(collector)?;
        }
        Ok(())
    }
}

/// A registry for one service, holding `paddock_build_info{service, version}` = 1.
pub fn new_registry(service: &str) -> Result<Registry, TelemetryError> {
    let registry = Registry::new();
    build_info(service)?.register_in(&registry)?;
    Ok(registry)
}

/// The registry's metrics in Prometheus' text format.
pub fn render(registry: &Registry) -> Result<String, TelemetryError> {
    Ok(prometheus::TextEncoder::new().encode_to_string(&registry.gather())?)
}

struct BuildInfo(IntGaugeVec);

impl MetricGroup for BuildInfo {
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![Box::new(self.0.clone())]
    }
}

fn build_info(service: &str) -> Result<BuildInfo, TelemetryError> {
    let info = gauge_vec(
        Opts::new(
            "paddock_build_info",
            "Always 1; its labels name the service and the version running.",
        ),
        &["service", "version"],
    )?;
    info.with_label_values(&[service, env!("CARGO_PKG_VERSION")])
        .set(1);
    Ok(BuildInfo(info))
}

/// The kind of a metric, as Prometheus' text format names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
    Other,
}

/// One metric Paddock exports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetricDescription {
    pub name: String,
    pub help: String,
    pub kind: MetricKind,
    /// Variable and constant label names.
    pub labels: Vec<String>,
    /// The groups that export it (`gateway`, `node`, …).
    pub exported_by: Vec<&'static str>,
}

impl MetricDescription {
    /// The names of the series this metric produces (`_bucket`, `_sum` and `_count`
    /// for a histogram).
    pub fn series_names(&self) -> Vec<String> {
        match self.kind {
            MetricKind::Histogram => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|suffix| format!("{}{suffix}", self.name))
                .collect(),
            _ => vec![self.name.clone()],
        }
    }
}

/// Every metric of every group, sorted by name. A metric exported by several groups
/// (quota refusals, by the gateway and the nodes) is listed once.
pub fn catalogue() -> Result<Vec<MetricDescription>, TelemetryError> {
    let groups: Vec<(&'static str, Box<dyn MetricGroup>)> = vec![
        ("all", Box::new(build_info("catalogue")?)),
        ("gateway", Box::new(GatewayMetrics::new()?)),
        ("node", Box::new(NodeMetrics::new("catalogue")?)),
        ("coordinator", Box::new(CoordinatorMetrics::new()?)),
        ("coordinator", Box::new(FleetView::new()?)),
        ("coordinator", Box::new(QueueMetrics::new()?)),
        ("coordinator", Box::new(MembershipMetrics::new()?)),
        ("node", Box::new(ClusterLinkMetrics::new()?)),
        ("all", Box::new(NatsMetrics::detached()?)),
    ];
    let mut found: BTreeMap<String, MetricDescription> = BTreeMap::new();
    for (group, metrics) in groups {
        for collector in metrics.collectors() {
            let families = collector.collect();
            for desc in collector.desc() {
                let kind = families
                    .iter()
                    .find(|family| family.name() == desc.fq_name)
                    .map_or(MetricKind::Other, |family| match family.get_field_type() {
                        MetricType::COUNTER => MetricKind::Counter,
                        MetricType::GAUGE => MetricKind::Gauge,
                        MetricType::HISTOGRAM => MetricKind::Histogram,
                        _ => MetricKind::Other,
                    });
                let mut labels = desc.variable_labels.clone();
                labels.extend(
                    desc.const_label_pairs
                        .iter()
                        .map(|pair| pair.name().to_string()),
                );
                let entry =
                    found
                        .entry(desc.fq_name.clone())
                        .or_insert_with(|| MetricDescription {
                            name: desc.fq_name.clone(),
                            help: desc.help.clone(),
                            kind,
                            labels,
                            exported_by: Vec::new(),
                        });
                if !entry.exported_by.contains(&group) {
                    entry.exported_by.push(group);
                }
            }
        }
    }
    Ok(found.into_values().collect())
}

/// How a job ended, for the metrics that split by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobOutcome<'a> {
    Completed,
    /// Failed with one of the reasons of `paddock_contract::event::failure`.
    Failed {
        reason: &'a str,
    },
    Cancelled,
}

impl<'a> JobOutcome<'a> {
    /// The ending recorded by a terminal event, or `None` for any other event.
    pub fn of(event: &'a JobEvent) -> Option<JobOutcome<'a>> {
        match &event.body {
            EventBody::Completed { .. } => Some(JobOutcome::Completed),
            EventBody::Failed { reason, .. } => Some(JobOutcome::Failed { reason }),
            EventBody::Cancelled { .. } => Some(JobOutcome::Cancelled),
            _ => None,
        }
    }

    /// The `status` label: `completed`, `failed` or `cancelled`.
    pub fn status(&self) -> &'static str {
        match self {
            JobOutcome::Completed => "completed",
            JobOutcome::Failed { .. } => "failed",
            JobOutcome::Cancelled => "cancelled",
        }
    }

    /// The failure reason, `none` for a job that did not fail.
    pub fn reason(&self) -> &'a str {
        match self {
            JobOutcome::Failed { reason } => reason,
            _ => "none",
        }
    }
}

// Constructors: every metric is built through these, so that the options live in one
// place and a bad name fails at start with the metric's name in the error.

pub(crate) fn counter(opts: Opts) -> Result<IntCounter, TelemetryError> {
    Ok(IntCounter::with_opts(opts)?)
}

pub(crate) fn counter_vec(opts: Opts, labels: &[&str]) -> Result<IntCounterVec, TelemetryError> {
    Ok(IntCounterVec::new(opts, labels)?)
}

pub(crate) fn float_counter_vec(opts: Opts, labels: &[&str]) -> Result<CounterVec, TelemetryError> {
    Ok(CounterVec::new(opts, labels)?)
}

pub(crate) fn float_gauge_vec(opts: Opts, labels: &[&str]) -> Result<GaugeVec, TelemetryError> {
    Ok(GaugeVec::new(opts, labels)?)
}

pub(crate) fn gauge(opts: Opts) -> Result<IntGauge, TelemetryError> {
    Ok(IntGauge::with_opts(opts)?)
}

pub(crate) fn gauge_vec(opts: Opts, labels: &[&str]) -> Result<IntGaugeVec, TelemetryError> {
    Ok(IntGaugeVec::new(opts, labels)?)
}

pub(crate) fn histogram(opts: HistogramOpts) -> Result<Histogram, TelemetryError> {
    Ok(Histogram::with_opts(opts)?)
}

pub(crate) fn histogram_vec(
    opts: HistogramOpts,
    labels: &[&str],
) -> Result<HistogramVec, TelemetryError> {
    Ok(HistogramVec::new(opts, labels)?)
}

/// The counter of refused requests or jobs by quota, the same metric in the gateway
/// (per-user quotas) and on nodes (per-job quotas).
pub(crate) fn quota_refusals(opts_const: &[(&str, &str)]) -> Result<IntCounterVec, TelemetryError> {
    let mut opts = Opts::new(
        "paddock_quota_refusals_total",
        "Requests or jobs refused or stopped because a quota was reached, by quota.",
    );
    for (name, value) in opts_const {
        opts = opts.const_label(*name, *value);
    }
    counter_vec(opts, &["quota"])
}

/// Seconds of a duration, for histograms.
pub(crate) fn seconds(duration: std::time::Duration) -> f64 {
    duration.as_secs_f64()
}

/// The non-negative span between two wire timestamps (ms since the epoch), in
/// seconds. Clocks of different machines can disagree by a little: a negative span
/// counts as zero.
pub(crate) fn seconds_between(from_ms: i64, to_ms: i64) -> f64 {
    (to_ms.saturating_sub(from_ms)).max(0) as f64 / 1000.0
}
