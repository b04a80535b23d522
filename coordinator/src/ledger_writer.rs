//! The ledger writer: a durable pull consumer (`subjects::LEDGER_CONSUMER`) on the
//! events stream that applies every job event to the SQL ledger.
//!
//! What must stay true:
//! - an event is acknowledged only after the database has it, so a crash replays it
//!   (and `Ledger::apply` is idempotent, so a replay changes nothing);
//! - a database error is never acknowledged away: the writer keeps the event, tells
//!   the server it is still working on it, backs off and tries again;
//! - a message that is not a job event is acknowledged and logged, never retried, so
//!   it cannot block the stream;
//! - an event of a job is applied after the job's earlier events. The ledger ignores
//!   an event older than its row, so one that arrives late would be lost: an earlier
//!   delivery lost in flight (a NATS restart, a writer that crashed holding a batch)
//!   comes back only after the consumer's ack wait, while later events arrive at once.
//!   An event whose predecessor is missing is therefore handed back to the server
//!   (a delayed negative ack) until its predecessor has been applied, or until
//!   `gap_wait` has passed (the predecessor may be gone for good: aged out of the
//!   stream), and then applied anyway with a warning;
//! - the writer outlives NATS restarts: any error of the subscription leads back to
//!   ensuring the stream and consumer exist, after a back-off.
//!
//! Because each event changes the ledger once, the paddock's job metrics are counted
//! here (`CoordinatorMetrics`): an event that changed the row counts, with the row as
//! it is after the event for starts, retries and endings (project, submitter, times,
//! cost). Each write runs in a `ledger.apply` span, a child of the span that appended
//! the event (from the message's trace headers).

use crate::config::LedgerWriterSettings;
use anyhow::Context as _;
use async_nats::jetstream::{self, AckKind, consumer};
use futures::{FutureExt, StreamExt};
use paddock_bus::StreamSettings;
use paddock_contract::{JobEvent, subjects};
use paddock_ledger::{Ledger, LedgerError};
use paddock_telemetry::CoordinatorMetrics;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// How long one pull request waits for messages. A pull request lost with a NATS
/// connection is noticed a few seconds after this (the client's own timer).
const FETCH_WAIT: Duration = Duration::from_secs(2);

/// The consumer's configuration. Creating it again with the same name updates it.
pub fn consumer_config(settings: &LedgerWriterSettings) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(subjects::LEDGER_CONSUMER.to_string()),
        description: Some("Paddock coordinator: writes the job ledger".into()),
        deliver_policy: consumer::DeliverPolicy::All,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: settings.ack_wait,
        filter_subjects: subjects::events_stream_subjects(),
        // Events held back for a missing predecessor stay pending meanwhile.
        max_ack_pending: 10_000,
        ..Default::default()
    }
}

/// Consumes until `shutdown`; returns `Ok` then. Errors of NATS or the database are
/// retried here, never returned.
pub async fn run(
    js: jetstream::Context,
    ledger: Ledger,
    settings: LedgerWriterSettings,
    streams: StreamSettings,
    metrics: CoordinatorMetrics,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let writer = Writer {
        js,
        ledger,
        gap: GapPolicy::new(settings.gap_wait),
        settings,
        streams,
        metrics,
        shutdown,
    };
    writer.run().await;
    Ok(())
}

struct Writer {
    js: jetstream::Context,
    ledger: Ledger,
    settings: LedgerWriterSettings,
    streams: StreamSettings,
    gap: GapPolicy,
    metrics: CoordinatorMetrics,
    shutdown: CancellationToken,
}

/// Whether the writer goes on after a message.
#[derive(Debug, PartialEq)]
enum Flow {
    Continue,
    Stop,
}

impl Writer {
    async fn run(&self) {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut recovering = false;
        loop {
            let consumer = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                consumer = self.ensure_consumer(recovering) => consumer,
            };
            recovering = true;
            let error = match consumer {
                Ok(consumer) => match self.consume(&consumer, &mut backoff).await {
                    Ok(()) => return,
                    Err(error) => error,
                },
                Err(error) => error,
            };
            let wait = backoff.next_delay();
            tracing::warn!(error = format!("{error:#}"), retry_in = ?wait, "ledger writer lost the events stream; retrying");
            if self.pause(wait).await == Flow::Stop {
                return;
            }
        }
    }

    /// The ledger's consumer. When `recovering` from an error, the streams are ensured
    /// first: a NATS server may have come back without its store.
    async fn ensure_consumer(&self, recovering: bool) -> anyhow::Result<consumer::PullConsumer> {
        if recovering {
            paddock_bus::ensure_streams(&self.js, &self.streams).await?;
        }
        let stream = self
            .js
            .get_stream_no_info(subjects::EVENTS_STREAM)
            .await
            .with_context(|| format!("events stream {}", subjects::EVENTS_STREAM))?;
        let consumer = stream
            .create_consumer(consumer_config(&self.settings))
            .await
            .with_context(|| format!("ledger consumer {}", subjects::LEDGER_CONSUMER))?;
        tracing::info!(
            consumer = subjects::LEDGER_CONSUMER,
            "ledger writer consuming job events"
        );
        Ok(consumer)
    }

    /// Pulls batches and handles each message until shutdown (`Ok`) or a NATS error.
    async fn consume(
        &self,
        consumer: &consumer::PullConsumer,
        backoff: &mut Backoff,
    ) -> anyhow::Result<()> {
        loop {
            let batch = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                batch = consumer
                    .batch()
                    .max_messages(self.settings.batch_size)
                    .expires(FETCH_WAIT)
                    .messages() => batch.context("pull request")?,
            };
            futures::pin_mut!(batch);
            loop {
                let next = tokio::select! {
                    _ = self.shutdown.cancelled() => {
                        release_unhandled(batch.as_mut()).await;
                        return Ok(());
                    }
                    next = batch.next() => next,
                };
                let message = match next {
                    None => break,
                    Some(Ok(message)) => message,
                    Some(Err(error)) => {
                        return Err(anyhow::anyhow!(error).context("receiving a batch"));
                    }
                };
                backoff.reset();
                if self.handle(&message).await == Flow::Stop {
                    release(&message).await;
                    release_unhandled(batch.as_mut()).await;
                    return Ok(());
                }
            }
        }
    }

    /// Applies one message to the ledger and acknowledges it, or hands it back.
    async fn handle(&self, message: &jetstream::Message) -> Flow {
        let (stream_seq, delivered) = message
            .info()
            .map(|info| (info.stream_sequence, info.delivered))
            .unwrap_or((0, 1));
        let event: JobEvent = match serde_json::from_slice(&message.payload) {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(subject = %message.subject, stream_seq, %error, "skipping a message that is not a job event");
                acknowledge(message, AckKind::Ack).await;
                return Flow::Continue;
            }
        };
        if message.subject.as_str() != subjects::job_events(&event.job_id) {
            tracing::warn!(subject = %message.subject, job = %event.job_id, stream_seq, "skipping a job event published on another job's subject");
            acknowledge(message, AckKind::Ack).await;
            return Flow::Continue;
        }
        let span = tracing::info_span!(
            "ledger.apply",
            job = %event.job_id,
            seq = event.seq,
            kind = event.kind(),
        );
        paddock_telemetry::propagation::set_parent(&span, message.headers.as_ref());
        self.apply_with_retries(message, &event, delivered)
            .instrument(span)
            .await
    }

    /// Applies `event` until the ledger has it (or it must wait, or be dropped).
    async fn apply_with_retries(
        &self,
        message: &jetstream::Message,
        event: &JobEvent,
        delivered: i64,
    ) -> Flow {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let started = Instant::now();
            let attempt = tokio::select! {
                _ = self.shutdown.cancelled() => return Flow::Stop,
                attempt = self.apply(event, delivered) => attempt,
            };
            match attempt {
                Ok(Applied::Changed(changed)) => {
                    tracing::debug!(job = %event.job_id, seq = event.seq, kind = event.kind(), changed, "ledger applied event");
                    if changed {
                        self.count(event, started.elapsed()).await;
                    }
                    acknowledge(message, AckKind::Ack).await;
                    return Flow::Continue;
                }
                Ok(Applied::HeldBack { expected }) => {
                    tracing::debug!(job = %event.job_id, seq = event.seq, expected, delivered, "event held back until its predecessor is applied");
                    self.metrics.event_held_back();
                    acknowledge(message, AckKind::Nak(Some(self.gap.redelivery_delay))).await;
                    return Flow::Continue;
                }
                Err(error) if error.is_retryable() => {
                    self.metrics.ledger_write_failed(true);
                    let wait = backoff.next_delay();
                    tracing::warn!(job = %event.job_id, seq = event.seq, error = %error, retry_in = ?wait, "ledger write failed; retrying");
                    // Still working on it: the server must not deliver it again meanwhile.
                    acknowledge(message, AckKind::Progress).await;
                    if self.pause(wait).await == Flow::Stop {
                        return Flow::Stop;
                    }
                }
                Err(error) => {
                    self.metrics.ledger_write_failed(false);
                    tracing::error!(job = %event.job_id, seq = event.seq, error = %error, "the ledger cannot take this event; dropping it");
                    acknowledge(message, AckKind::Term).await;
                    return Flow::Continue;
                }
            }
        }
    }

    /// Counts an event that changed the ledger (once per event, whatever the
    /// redeliveries). A start, retry or ending is counted from the job's row; a row
    /// that cannot be read now leaves the job metrics uncounted, never the event
    /// unacknowledged.
    async fn count(&self, event: &JobEvent, elapsed: Duration) {
        self.metrics.event_applied(event.kind(), elapsed);
        if !CoordinatorMetrics::needs_job_view(event) {
            return;
        }
        match self.ledger.get(event.job_id).await {
            Ok(Some(job)) => self.metrics.job_event_applied(event, &job),
            Ok(None) => {
                tracing::warn!(job = %event.job_id, seq = event.seq, "the ledger has no row for an event it applied; not counted")
            }
            Err(error) => {
                tracing::warn!(job = %event.job_id, seq = event.seq, %error, "reading the job's row to count its event failed; not counted")
            }
        }
    }

    async fn apply(&self, event: &JobEvent, delivered: i64) -> Result<Applied, LedgerError> {
        let last = self.ledger.last_seq(event.job_id).await?;
        let expected = last.map_or(1, |seq| seq + 1);
        if event.seq > expected {
            if self.gap.keeps_waiting(delivered) {
                return Ok(Applied::HeldBack { expected });
            }
            tracing::warn!(job = %event.job_id, seq = event.seq, expected, "applying an event whose predecessors never reached the ledger");
        }
        self.ledger.apply(event).await.map(Applied::Changed)
    }

    /// Waits `wait`, or less if shutdown comes first.
    async fn pause(&self, wait: Duration) -> Flow {
        tokio::select! {
            _ = self.shutdown.cancelled() => Flow::Stop,
            _ = tokio::time::sleep(wait) => Flow::Continue,
        }
    }
}

enum Applied {
    Changed(bool),
    HeldBack { expected: u64 },
}

/// How long an event waits for a missing predecessor, counted in deliveries: each
/// hold-back is a negative ack with `redelivery_delay`.
#[derive(Debug, PartialEq)]
struct GapPolicy {
    redelivery_delay: Duration,
    max_deliveries: i64,
}

impl GapPolicy {
    fn new(gap_wait: Duration) -> GapPolicy {
        let redelivery_delay =
            (gap_wait / 20).clamp(Duration::from_millis(50), Duration::from_secs(2));
        let max_deliveries = gap_wait.as_millis().div_ceil(redelivery_delay.as_millis());
        GapPolicy {
            redelivery_delay,
            max_deliveries: i64::try_from(max_deliveries).unwrap_or(i64::MAX).max(1),
        }
    }

    fn keeps_waiting(&self, delivered: i64) -> bool {
        delivered <= self.max_deliveries
    }
}

/// Sends an acknowledgement of some kind. A lost one is harmless: the server delivers
/// the message again and the ledger ignores what it already has.
async fn acknowledge(message: &jetstream::Message, kind: AckKind) {
    if let Err(error) = message.ack_with(kind).await {
        tracing::warn!(subject = %message.subject, %error, "could not acknowledge a message; it will be delivered again");
    }
}

/// Hands a message back for immediate redelivery (at shutdown).
async fn release(message: &jetstream::Message) {
    acknowledge(message, AckKind::Nak(None)).await;
}

/// Hands back the messages of a batch already received but not handled, so that the
/// next writer gets them at once rather than after the ack wait.
async fn release_unhandled<S>(mut batch: std::pin::Pin<&mut S>)
where
    S: futures::Stream<Item = Result<jetstream::Message, async_nats::Error>>,
{
    while let Some(Some(Ok(message))) = batch.next().now_or_never() {
        release(&message).await;
    }
}

/// Exponential back-off between `first` and `max`.
#[derive(Debug)]
struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            next: first,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_ceiling_and_resets() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(500));
        let delays: Vec<u128> = (0..5).map(|_| backoff.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 500, 500]);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn a_gap_is_waited_for_about_gap_wait() {
        let default = GapPolicy::new(Duration::from_secs(45));
        assert_eq!(default.redelivery_delay, Duration::from_secs(2));
        assert_eq!(default.max_deliveries, 23);
        assert!(default.keeps_waiting(23));
        assert!(!default.keeps_waiting(24));

        let short = GapPolicy::new(Duration::from_secs(1));
        assert_eq!(short.redelivery_delay, Duration::from_millis(50));
        assert_eq!(short.max_deliveries, 20);
    }

    #[test]
    fn the_consumer_acks_explicitly_from_the_first_event_of_every_job() {
        let config = consumer_config(&LedgerWriterSettings::default());
        assert_eq!(
            config.durable_name.as_deref(),
            Some(subjects::LEDGER_CONSUMER)
        );
        assert_eq!(config.ack_policy, consumer::AckPolicy::Explicit);
        assert_eq!(config.deliver_policy, consumer::DeliverPolicy::All);
        assert_eq!(config.filter_subjects, subjects::events_stream_subjects());
    }
}
