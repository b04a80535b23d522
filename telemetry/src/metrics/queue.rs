//! Jobs waiting and claimed, as JetStream holds them: per consumer of the jobs stream
//! (`pool-<pool>` for a pool's jobs, `node-<node>` for work addressed to one node),
//! and the size of both streams. Filled by [`crate::sampler::QueueSampler`], which
//! reads consumer and stream state every few seconds; one sampler per paddock is
//! enough (the coordinator runs it).

use super::{MetricGroup, counter, float_gauge_vec, gauge_vec};
use crate::TelemetryError;
use prometheus::core::Collector;
use prometheus::{GaugeVec, IntCounter, IntGaugeVec, Opts, Registry};

/// The queue gauges. Clones share the same series.
#[derive(Clone, Debug)]
pub struct QueueMetrics {
    pub(crate) queued: IntGaugeVec,
    pub(crate) claimed: IntGaugeVec,
    pub(crate) redelivered: IntGaugeVec,
    pub(crate) waiting_pulls: IntGaugeVec,
    pub(crate) stream_messages: IntGaugeVec,
    pub(crate) stream_bytes: IntGaugeVec,
    pub(crate) last_sample: GaugeVec,
    pub(crate) sample_errors: IntCounter,
}

impl QueueMetrics {
    /// Creates the queue gauges and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, TelemetryError> {
        let metrics = Self::new()?;
        metrics.register_in(registry)?;
        Ok(metrics)
    }

    pub(crate) fn new() -> Result<Self, TelemetryError> {
        Ok(QueueMetrics {
            queued: gauge_vec(
                Opts::new(
                    "paddock_jobs_queued",
                    "Jobs waiting for a node: messages of the jobs stream not yet delivered to the consumer, by consumer.",
                ),
                &["consumer"],
            )?,
            claimed: gauge_vec(
                Opts::new(
                    "paddock_jobs_claimed",
                    "Jobs delivered to a node and not yet acknowledged (running or about to), by consumer.",
                ),
                &["consumer"],
            )?,
            redelivered: gauge_vec(
                Opts::new(
                    "paddock_jobs_redelivered",
                    "Jobs now out for a second or later delivery (their node was lost or handed them back), by consumer.",
                ),
                &["consumer"],
            )?,
            waiting_pulls: gauge_vec(
                Opts::new(
                    "paddock_consumer_waiting_pulls",
                    "Pull requests waiting at a consumer: nodes with a free slot asking for work, by consumer.",
                ),
                &["consumer"],
            )?,
            stream_messages: gauge_vec(
                Opts::new(
                    "paddock_stream_messages",
                    "Messages held by a JetStream stream, by stream.",
                ),
                &["stream"],
            )?,
            stream_bytes: gauge_vec(
                Opts::new(
                    "paddock_stream_bytes",
                    "Bytes held by a JetStream stream, by stream.",
                ),
                &["stream"],
            )?,
            last_sample: float_gauge_vec(
                Opts::new(
                    "paddock_queue_last_sample_timestamp_seconds",
                    "When the queue gauges were last read from JetStream (Unix time), by stream.",
                ),
                &["stream"],
            )?,
            sample_errors: counter(Opts::new(
                "paddock_queue_sample_errors_total",
                "Failed reads of JetStream stream or consumer state.",
            ))?,
        })
    }
}

impl MetricGroup for QueueMetrics {
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.queued.clone()),
            Box::new(self.claimed.clone()),
            Box::new(self.redelivered.clone()),
            Box::new(self.waiting_pulls.clone()),
            Box::new(self.stream_messages.clone()),
            Box::new(self.stream_bytes.clone()),
            Box::new(self.last_sample.clone()),
            Box::new(self.sample_errors.clone()),
        ]
    }
}
