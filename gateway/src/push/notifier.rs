//! The notifier: reads job events from the events stream through the durable
//! consumer every gateway shares (`subjects::PUSH_CONSUMER`), so each event is handled
//! by one gateway, and turns the three that a person wants to hear about when the
//! page is closed (`job.completed`, `job.failed`, `approval.requested`) into a
//! notification to each of the job owner's subscriptions.
//!
//! What must stay true:
//! - an event is acknowledged after its notifications were tried (sent, refused or
//!   given up on), so a gateway that dies mid-way leaves it to another after the ack
//!   wait; a failure to learn the owner or read the subscriptions (NATS, the database)
//!   hands the event back with a delay, up to the consumer's delivery limit;
//! - a subscription its push service calls gone is deleted;
//! - nothing but the short title and body of [`super::Notification`] leaves: no prompt,
//!   no output, no tool input;
//! - old events are not notified about: an event older than `push.max_event_age`
//!   (the gateways were away), or an approval past its deadline, is acknowledged and
//!   counted `stale`;
//! - any NATS error leads back to ensuring the stream and consumer, after a back-off;
//!   events in hand are finished first. Shutdown stops at once: events in hand are
//!   left to the ack wait (another gateway, or this one restarted, takes them).
//!
//! The job's owner and project come from its first event (`job.queued`), read from
//! the stream; the ledger answers when that event has aged out.

use super::sender::{Delivered, Message, Sender};
use super::{Notification, NotificationKind};
use crate::state::AppState;
use anyhow::Context as _;
use async_nats::jetstream::{self, AckKind, stream::LastRawMessageErrorKind};
use futures::StreamExt as _;
use paddock_bus::EventsConsumer;
use paddock_contract::{EventBody, JobEvent, JobId, subjects};
use paddock_telemetry::metrics::PushOutcome;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Events taken per pull request.
const BATCH: usize = 32;
/// How long one pull request waits for events.
const FETCH_WAIT: Duration = Duration::from_secs(2);
/// Events handled at once by one gateway.
const EVENTS_IN_FLIGHT: usize = 32;
/// How long before a handed-back event comes again.
const RETRY_DELAY: Duration = Duration::from_secs(5);
/// How long an event may be held: enough for every try of every subscription.
const ACK_WAIT: Duration = Duration::from_secs(120);

/// The consumer all gateways share.
pub fn consumer() -> EventsConsumer {
    EventsConsumer {
        ack_wait: ACK_WAIT,
        max_deliver: 5,
        max_ack_pending: 1_000,
        ..EventsConsumer::new(
            subjects::PUSH_CONSUMER,
            "Paddock gateways: Web Push notifications of finished jobs and approval requests",
        )
    }
}

/// Why an event goes back to the stream.
#[derive(Debug)]
struct HandBack(anyhow::Error);

struct Notifier {
    state: AppState,
    sender: Arc<Sender>,
    events: jetstream::stream::Stream<()>,
}

/// Consumes until the gateway stops.
pub async fn run(state: AppState, sender: Arc<Sender>) {
    let shutdown = state.shutdown().clone();
    let mut pause = Duration::from_millis(200);
    let mut recovering = false;
    loop {
        let attempt = tokio::select! {
            () = shutdown.cancelled() => return,
            attempt = consume(&state, &sender, recovering) => attempt,
        };
        match attempt {
            Ok(()) => return,
            Err(error) => {
                tracing::warn!(error = format!("{error:#}"), retry_in = ?pause, "the push notifier lost the events stream; retrying");
            }
        }
        recovering = true;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// One life of the consumer: set it up, then pull and handle events until shutdown
/// (`Ok`) or an error of NATS.
async fn consume(state: &AppState, sender: &Arc<Sender>, recovering: bool) -> anyhow::Result<()> {
    let js = state.jetstream();
    if recovering {
        paddock_bus::ensure_streams(js, &state.config().streams).await?;
    }
    let pull = consumer().ensure(js).await?;
    let events = js
        .get_stream_no_info(subjects::EVENTS_STREAM)
        .await
        .with_context(|| format!("events stream {}", subjects::EVENTS_STREAM))?;
    tracing::info!(
        consumer = subjects::PUSH_CONSUMER,
        "push notifier consuming job events"
    );
    let notifier = Arc::new(Notifier {
        state: state.clone(),
        sender: sender.clone(),
        events,
    });
    let slots = Arc::new(Semaphore::new(EVENTS_IN_FLIGHT));
    let mut handling = JoinSet::new();
    let lost = pull_and_hand_out(&pull, &notifier, &slots, &mut handling).await;
    // Events in hand are finished (their tries are bounded by the request timeouts)
    // rather than dropped to wait out the ack wait; shutdown, by contrast, drops this
    // whole future and them with it.
    while handling.join_next().await.is_some() {}
    lost
}

/// Pulls events and hands each to a handler task, at most `EVENTS_IN_FLIGHT` at once,
/// until an error of NATS.
async fn pull_and_hand_out(
    pull: &async_nats::jetstream::consumer::PullConsumer,
    notifier: &Arc<Notifier>,
    slots: &Arc<Semaphore>,
    handling: &mut JoinSet<()>,
) -> anyhow::Result<()> {
    loop {
        let batch = pull
            .batch()
            .max_messages(BATCH)
            .expires(FETCH_WAIT)
            .messages()
            .await
            .context("pull request")?;
        futures::pin_mut!(batch);
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow::anyhow!(e).context("receiving a batch"))?;
            let slot = slots
                .clone()
                .acquire_owned()
                .await
                .context("the notifier's slots closed")?;
            let notifier = notifier.clone();
            handling.spawn(async move {
                notifier.handle(message).await;
                drop(slot);
            });
            // Reap finished handlers so the set does not grow.
            while handling.try_join_next().is_some() {}
        }
    }
}

/// What an event asks for, if anything.
fn wanted(event: &JobEvent) -> Option<NotificationKind> {
    match &event.body {
        EventBody::Completed { .. } => Some(NotificationKind::Completed),
        EventBody::Failed { .. } => Some(NotificationKind::Failed),
        EventBody::ApprovalRequested { .. } => Some(NotificationKind::Approval),
        // A cancellation is someone's own doing; everything else is not news.
        _ => None,
    }
}

fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

/// How long the push service may keep the message, in seconds, or `None` when it is
/// too late to send it at all.
fn time_to_live(event: &JobEvent, max_event_age: Duration, now_ms: i64) -> Option<u64> {
    let max_age_ms = i64::try_from(max_event_age.as_millis()).unwrap_or(i64::MAX);
    if now_ms.saturating_sub(event.at_ms) > max_age_ms {
        return None;
    }
    match &event.body {
        // Past its deadline the request is denied; the message would only mislead.
        EventBody::ApprovalRequested { deadline_ms, .. } => {
            let left_ms = deadline_ms.saturating_sub(now_ms);
            (left_ms > 0).then(|| u64::try_from(left_ms / 1000).unwrap_or(0).max(1))
        }
        _ => Some(24 * 3600),
    }
}

impl Notifier {
    async fn handle(&self, message: jetstream::Message) {
        let acknowledgement = match self.notify(&message.payload).await {
            Ok(()) => AckKind::Ack,
            Err(HandBack(error)) => {
                tracing::warn!(error = format!("{error:#}"), retry_in = ?RETRY_DELAY, "a push notification waits for its owner or subscriptions");
                AckKind::Nak(Some(RETRY_DELAY))
            }
        };
        if let Err(error) = message.ack_with(acknowledgement).await {
            tracing::debug!(%error, "acknowledging an event failed; it will come again");
        }
    }

    async fn notify(&self, payload: &[u8]) -> Result<(), HandBack> {
        let Ok(event) = serde_json::from_slice::<JobEvent>(payload) else {
            return Ok(());
        };
        let Some(kind) = wanted(&event) else {
            return Ok(());
        };
        let settings = &self.state.config().push;
        let Some(ttl) = time_to_live(&event, settings.max_event_age, now_ms()) else {
            tracing::debug!(job = %event.job_id, kind = event.kind(), "not notifying about an old event");
            self.state.metrics().push_notification(PushOutcome::Stale);
            return Ok(());
        };
        let Some((owner, project)) = self.owner_of(event.job_id).await.map_err(HandBack)? else {
            tracing::debug!(job = %event.job_id, "no owner found for a job; nothing to notify");
            return Ok(());
        };
        let subscriptions = self
            .state
            .auth()
            .accounts()
            .push_subscriptions_of(&owner)
            .await
            .map_err(|e| HandBack(e.into()))?;
        if subscriptions.is_empty() {
            return Ok(());
        }
        let Some(notification) = Notification::for_event(&event, &project) else {
            return Ok(());
        };
        let payload = serde_json::to_vec(&notification)
            .map_err(|e| HandBack(anyhow::anyhow!(e).context("serialising a notification")))?;
        let message = Message {
            payload: &payload,
            ttl,
            urgency: match kind {
                NotificationKind::Approval => "high",
                NotificationKind::Completed | NotificationKind::Failed => "normal",
            },
        };
        let deliveries = subscriptions.iter().map(|subscription| async move {
            let delivered = self.sender.deliver(subscription, &message).await;
            self.record(subscription, delivered).await;
        });
        futures::future::join_all(deliveries).await;
        Ok(())
    }

    async fn record(
        &self,
        subscription: &paddock_accounts::PushSubscription,
        delivered: Delivered,
    ) {
        let metrics = self.state.metrics();
        match delivered {
            Delivered::Sent => metrics.push_notification(PushOutcome::Sent),
            Delivered::Gone => {
                metrics.push_notification(PushOutcome::Gone);
                tracing::info!(subscription = %subscription.id, "a push subscription is gone; removing it");
                if let Err(error) = self
                    .state
                    .auth()
                    .accounts()
                    .drop_push_subscription(&subscription.id)
                    .await
                {
                    // The next notification finds it gone again and retries this.
                    tracing::warn!(%error, subscription = %subscription.id, "removing a gone push subscription failed");
                }
            }
            Delivered::Rejected(_) => metrics.push_notification(PushOutcome::Rejected),
            Delivered::Failed(_) => metrics.push_notification(PushOutcome::Failed),
        }
    }

    /// The user who submitted the job and its project: from the job's first event,
    /// else from the ledger. `None` for a job neither knows.
    async fn owner_of(&self, job: JobId) -> anyhow::Result<Option<(String, String)>> {
        match self
            .events
            .get_first_raw_message_by_subject(subjects::job_events(&job), 0)
            .await
        {
            Ok(message) => {
                if let Ok(JobEvent {
                    body:
                        EventBody::Queued {
                            submitted_by,
                            project,
                            ..
                        },
                    ..
                }) = serde_json::from_slice::<JobEvent>(&message.payload)
                {
                    return Ok(Some((submitted_by, project)));
                }
            }
            Err(error) if error.kind() == LastRawMessageErrorKind::NoMessageFound => {}
            Err(error) => {
                return Err(anyhow::anyhow!(error).context("reading the job's first event"));
            }
        }
        let job = self
            .state
            .ledger()
            .get(job)
            .await
            .context("reading the job from the ledger")?;
        Ok(job.map(|job| (job.submitted_by, job.project)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_contract::RunSummary;

    fn event(at_ms: i64, body: EventBody) -> JobEvent {
        JobEvent {
            version: paddock_contract::CONTRACT_VERSION,
            job_id: JobId::new(),
            seq: 5,
            at_ms,
            node: None,
            attempt: 1,
            body,
            raw: None,
        }
    }

    const NOW: i64 = 1_700_000_000_000;
    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn three_kinds_of_event_are_notified_and_cancellations_are_not() {
        let completed = event(
            NOW,
            EventBody::Completed {
                summary: RunSummary::default(),
            },
        );
        assert_eq!(wanted(&completed), Some(NotificationKind::Completed));
        let cancelled = event(
            NOW,
            EventBody::Cancelled {
                by: "ada".into(),
                summary: None,
            },
        );
        assert_eq!(wanted(&cancelled), None);
        let text = event(NOW, EventBody::AssistantText { text: "hi".into() });
        assert_eq!(wanted(&text), None);
    }

    #[test]
    fn old_events_and_approvals_past_their_deadline_are_stale() {
        let completed = event(
            NOW - 10_000,
            EventBody::Completed {
                summary: RunSummary::default(),
            },
        );
        assert_eq!(time_to_live(&completed, HOUR, NOW), Some(24 * 3600));
        let old = event(
            NOW - 2 * 3_600_000,
            EventBody::Completed {
                summary: RunSummary::default(),
            },
        );
        assert_eq!(time_to_live(&old, HOUR, NOW), None);
        let approval = |deadline_ms| {
            event(
                NOW,
                EventBody::ApprovalRequested {
                    request_id: "r".into(),
                    tool_name: "Bash".into(),
                    input: serde_json::json!({}),
                    deadline_ms,
                },
            )
        };
        assert_eq!(time_to_live(&approval(NOW + 90_000), HOUR, NOW), Some(90));
        assert_eq!(time_to_live(&approval(NOW + 300), HOUR, NOW), Some(1));
        assert_eq!(time_to_live(&approval(NOW - 1), HOUR, NOW), None);
    }
}
