//! Reads what JetStream knows about the queue and writes it to [`QueueMetrics`]: for
//! every consumer of the jobs stream, the jobs not yet delivered (`num_pending`: the
//! "jobs queued" of the dashboards), delivered but unacknowledged (`num_ack_pending`),
//! redelivered, and the pull requests waiting (idle slots); for both streams, their
//! messages and bytes. Consumers are discovered on every sample, so a new pool or node
//! shows up without configuration, and one that was deleted disappears.
//!
//! JetStream answers these reads cheaply, but they are requests to the server: one
//! sampler per paddock (the coordinator's) at an interval of a few seconds is enough.

use crate::TelemetryError;
use crate::metrics::QueueMetrics;
use async_nats::jetstream;
use futures::StreamExt;
use paddock_contract::subjects;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// Samples the jobs and events streams into [`QueueMetrics`].
#[derive(Clone)]
pub struct QueueSampler {
    js: jetstream::Context,
    metrics: QueueMetrics,
    /// Consumers that have series now, to remove those that went away.
    known: Arc<Mutex<HashSet<String>>>,
}

impl std::fmt::Debug for QueueSampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueSampler").finish_non_exhaustive()
    }
}

/// One consumer's state.
struct ConsumerSample {
    name: String,
    queued: u64,
    claimed: usize,
    redelivered: usize,
    waiting: usize,
}

impl QueueSampler {
    pub fn new(js: jetstream::Context, metrics: QueueMetrics) -> Self {
        QueueSampler {
            js,
            metrics,
            known: Arc::new(Mutex::new(HashSet::new())),
        }
    }

    /// Samples every `every` until `shutdown`. Failures are counted in
    /// `paddock_queue_sample_errors_total` and logged at debug level (a NATS outage is
    /// reported by the services themselves), never returned.
    pub fn spawn(
        self,
        every: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = ticker.tick() => {}
                }
                let sampled = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    sampled = self.sample() => sampled,
                };
                if let Err(error) = sampled {
                    tracing::debug!(%error, "sampling the job queue failed");
                }
            }
        })
    }

    /// Reads both streams and every consumer of the jobs stream once.
    pub async fn sample(&self) -> Result<(), TelemetryError> {
        let jobs = self.sample_jobs().await;
        let events = self.sample_stream(subjects::EVENTS_STREAM).await;
        jobs.and(events)
            .inspect_err(|_| self.metrics.sample_errors.inc())
    }

    async fn sample_jobs(&self) -> Result<(), TelemetryError> {
        self.sample_stream(subjects::JOBS_STREAM).await?;
        let stream = self
            .js
            .get_stream_no_info(subjects::JOBS_STREAM)
            .await
            .map_err(|e| sample_error(subjects::JOBS_STREAM, e))?;
        let mut consumers = stream.consumers();
        let mut samples = Vec::new();
        while let Some(info) = consumers.next().await {
            let info = info.map_err(|e| sample_error(subjects::JOBS_STREAM, e))?;
            samples.push(ConsumerSample {
                name: info.name,
                queued: info.num_pending,
                claimed: info.num_ack_pending,
                redelivered: info.num_redelivered,
                waiting: info.num_waiting,
            });
        }
        self.publish_consumers(samples);
        Ok(())
    }

    fn publish_consumers(&self, samples: Vec<ConsumerSample>) {
        let metrics = &self.metrics;
        let mut known = self.known.lock().unwrap_or_else(PoisonError::into_inner);
        let current: HashSet<String> = samples.iter().map(|s| s.name.clone()).collect();
        for gone in known.difference(&current) {
            for vec in [
                &metrics.queued,
                &metrics.claimed,
                &metrics.redelivered,
                &metrics.waiting_pulls,
            ] {
                // Absent series are fine: the consumer may never have had one.
                let _ = vec.remove_label_values(&[gone]);
            }
        }
        for sample in samples {
            let name = sample.name.as_str();
            metrics
                .queued
                .with_label_values(&[name])
                .set(to_i64(sample.queued));
            metrics
                .claimed
                .with_label_values(&[name])
                .set(to_i64(sample.claimed as u64));
            metrics
                .redelivered
                .with_label_values(&[name])
                .set(to_i64(sample.redelivered as u64));
            metrics
                .waiting_pulls
                .with_label_values(&[name])
                .set(to_i64(sample.waiting as u64));
        }
        *known = current;
    }

    async fn sample_stream(&self, name: &str) -> Result<(), TelemetryError> {
        let stream = self
            .js
            .get_stream(name)
            .await
            .map_err(|e| sample_error(name, e))?;
        let state = &stream.cached_info().state;
        self.metrics
            .stream_messages
            .with_label_values(&[name])
            .set(to_i64(state.messages));
        self.metrics
            .stream_bytes
            .with_label_values(&[name])
            .set(to_i64(state.bytes));
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.metrics.last_sample.with_label_values(&[name]).set(now);
        Ok(())
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn sample_error(stream: &str, error: impl std::fmt::Display) -> TelemetryError {
    TelemetryError::Sample {
        stream: stream.to_string(),
        detail: error.to_string(),
    }
}
