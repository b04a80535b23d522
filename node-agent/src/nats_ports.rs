//! The actors' ports over NATS: jobs are pulled in batches sized to the free slots,
//! from the node's own consumer first, then the label selectors it matches
//! ([`crate::labels`]), then its pool's consumer; a claimed job's message is kept
//! alive with in-progress acks and settled with a confirmed ack (or a nak to hand it
//! back); events go through the per-job event log; control requests arrive by
//! request/reply on the job's control subject, subscribed only while this node runs
//! the job.
//!
//! Telemetry rides on the same ports: a pulled job message starts a `job.claim` span,
//! a child of the submission's trace (its headers carry the W3C context), kept in
//! [`ClaimSpans`] until the session opens the job's events; every event appended then
//! passes through a [`JobObserver`] (the node's job metrics, the `job.run` and tool
//! spans) and is published inside the observer's span, so it carries the trace on.

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use async_trait::async_trait;
use futures::StreamExt;
use paddock_actors::{
    ClaimedJob, ControlEnvelope, JobEvents, JobFeed, JobMessage, JobPorts, PortError,
};
use paddock_bus::{EventLog, EventLogError, JobEventWriter};
use paddock_contract::control::{ControlReply, ControlRequest};
use paddock_contract::{EventBody, JobEvent, JobId, JobSpec, subjects};
use paddock_telemetry::{ClaimSpans, JobObserver, NodeMetrics, NodeState};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

fn unavailable(e: impl std::fmt::Display) -> PortError {
    PortError::Unavailable(e.to_string())
}

/// Jobs from one pull consumer.
pub struct ConsumerFeed {
    pub consumer: PullConsumer,
    /// How long one pull waits for jobs before returning empty.
    pub wait: Duration,
    /// This node's name, for the claim spans.
    pub node: String,
    /// Where each pulled job's `job.claim` span waits for its session (shared with
    /// [`NodePorts`]).
    pub claims: ClaimSpans,
}

impl ConsumerFeed {
    /// Up to `max` jobs, waiting at most `wait` for the first.
    async fn fetch_within(
        &self,
        consumer: &PullConsumer,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<ClaimedJob>, PortError> {
        let mut batch = consumer
            .fetch()
            .max_messages(max)
            .expires(wait)
            .messages()
            .await
            .map_err(unavailable)?;
        let mut jobs = Vec::new();
        while let Some(message) = batch.next().await {
            let message = message.map_err(unavailable)?;
            // A message that is not a job is the session's to refuse; it has no span.
            if let Ok(spec) = serde_json::from_slice::<JobSpec>(&message.payload) {
                self.claims
                    .claim(spec.id, &self.node, message.headers.as_ref());
            }
            jobs.push(ClaimedJob {
                payload: message.payload.clone(),
                message: Arc::new(QueuedJob(message)),
            });
        }
        Ok(jobs)
    }
}

#[async_trait]
impl JobFeed for ConsumerFeed {
    async fn fetch(&self, max: usize) -> Result<Vec<ClaimedJob>, PortError> {
        self.fetch_within(&self.consumer, max, self.wait).await
    }
}

/// How long a pull from one selector waits: selectors are polled in turn, so each
/// only looks at what is there.
const SELECTOR_PULL_WAIT: Duration = Duration::from_millis(10);
/// The longest pull from the pool while the node matches selectors: a selector's
/// job waits at most this long for a free node's attention.
const POOL_WAIT_WITH_SELECTORS: Duration = Duration::from_secs(1);

/// Work addressed to this node (sessions resumed here) first, then the jobs of the
/// label selectors it matches, then the pool's jobs.
pub struct NodeFeed {
    pub own: ConsumerFeed,
    pub selectors: crate::labels::SelectorFeeds,
    pub pool: ConsumerFeed,
}

#[async_trait]
impl JobFeed for NodeFeed {
    async fn fetch(&self, max: usize) -> Result<Vec<ClaimedJob>, PortError> {
        let mut jobs = self.own.fetch(max).await?;
        let selectors = self.selectors.in_turn();
        for (id, consumer) in &selectors {
            if jobs.len() >= max {
                break;
            }
            // One broken selector (its consumer gone) must not stop the node's other
            // work: it is set up again in the background.
            match self
                .pool
                .fetch_within(consumer, max - jobs.len(), SELECTOR_PULL_WAIT)
                .await
            {
                Ok(more) => jobs.extend(more),
                Err(e) => {
                    tracing::warn!(selector = %id, error = %e, "claiming from a selector failed");
                    self.selectors.broken(id);
                }
            }
        }
        if jobs.len() < max {
            let wait = if selectors.is_empty() {
                self.pool.wait
            } else {
                self.pool.wait.min(POOL_WAIT_WITH_SELECTORS)
            };
            jobs.extend(
                self.pool
                    .fetch_within(&self.pool.consumer, max - jobs.len(), wait)
                    .await?,
            );
        }
        Ok(jobs)
    }
}

/// Answers "are you there" on the node's ping subject until the task is aborted.
pub async fn answer_pings(
    client: async_nats::Client,
    node: &str,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut subscription = client.subscribe(subjects::node_ping(node)).await?;
    Ok(tokio::spawn(async move {
        while let Some(message) = subscription.next().await {
            if let Some(reply) = message.reply {
                let _ = client.publish(reply, "pong".into()).await;
            }
        }
    }))
}

/// The control plane over the node registry's key-value buckets.
pub struct RegistryPlane {
    pub registry: paddock_bus::NodeRegistry,
    pub node: String,
    /// `paddock_node_state`, set from every heartbeat.
    pub state: StateGauge,
}

/// The node's `paddock_node_state`: what each heartbeat reports, until the node
/// begins to stop; `stopping` then stays, whatever a late heartbeat says.
#[derive(Clone, Debug)]
pub struct StateGauge {
    metrics: NodeMetrics,
    stopping: Arc<Mutex<bool>>,
}

impl StateGauge {
    pub fn new(metrics: NodeMetrics) -> Self {
        StateGauge {
            metrics,
            stopping: Arc::new(Mutex::new(false)),
        }
    }

    /// The node reported `state` in a heartbeat.
    pub fn reported(&self, state: paddock_contract::node::NodeState) {
        let stopping = self.stopping.lock().unwrap_or_else(PoisonError::into_inner);
        if !*stopping {
            self.metrics.set_state(state.into());
        }
    }

    /// The graceful stop began.
    pub fn stopping(&self) {
        let mut stopping = self.stopping.lock().unwrap_or_else(PoisonError::into_inner);
        *stopping = true;
        self.metrics.set_state(NodeState::Stopping);
    }
}

#[async_trait]
impl paddock_actors::heartbeat::ControlPlane for RegistryPlane {
    async fn desired(&self) -> Result<paddock_contract::node::NodeDesired, PortError> {
        self.registry.desired(&self.node).await.map_err(unavailable)
    }

    async fn beat(
        &self,
        heartbeat: paddock_contract::node::NodeHeartbeat,
    ) -> Result<(), PortError> {
        self.state.reported(heartbeat.state);
        self.registry.beat(&heartbeat).await.map_err(unavailable)
    }
}

/// A claimed job message.
pub struct QueuedJob(pub jetstream::Message);

#[async_trait]
impl JobMessage for QueuedJob {
    fn delivered(&self) -> u32 {
        self.0
            .info()
            .map(|info| u32::try_from(info.delivered).unwrap_or(u32::MAX))
            .unwrap_or(1)
    }

    async fn progress(&self) -> Result<(), PortError> {
        self.0
            .ack_with(AckKind::Progress)
            .await
            .map_err(unavailable)
    }

    async fn ack(&self) -> Result<(), PortError> {
        // Confirmed by the server, so a job is not left to be delivered again after it
        // has been recorded as ended.
        self.0.double_ack().await.map_err(unavailable)
    }

    async fn nak(&self) -> Result<(), PortError> {
        self.0
            .ack_with(AckKind::Nak(None))
            .await
            .map_err(unavailable)
    }
}

/// One job's events, written as this node, each observed for the node's metrics and
/// spans.
pub struct NodeJobEvents {
    node: String,
    writer: JobEventWriter,
    observer: JobObserver,
}

#[async_trait]
impl JobEvents for NodeJobEvents {
    fn last_event(&self) -> Option<&JobEvent> {
        self.writer.last_event()
    }

    async fn append(
        &mut self,
        attempt: u32,
        body: EventBody,
        raw: Option<String>,
    ) -> Result<JobEvent, PortError> {
        // Published inside the attempt's span: the event's headers carry it on.
        let span = self.observer.span().clone();
        let appended = self
            .writer
            .append(Some(&self.node), attempt, body, raw)
            .instrument(span)
            .await;
        if let Ok(event) = &appended {
            self.observer.observe(event);
        }
        appended.map_err(|e| match e {
            EventLogError::Ended { kind, .. } => PortError::JobEnded(kind),
            other => unavailable(other),
        })
    }
}

/// The per-job ports of one node.
pub struct NodePorts {
    pub node: String,
    pub client: async_nats::Client,
    pub log: EventLog,
    pub metrics: NodeMetrics,
    /// The claim spans the feeds started (shared with [`ConsumerFeed`]).
    pub claims: ClaimSpans,
}

#[async_trait]
impl JobPorts for NodePorts {
    async fn open_events(&self, job: JobId) -> Result<Box<dyn JobEvents>, PortError> {
        // A fresh writer id per session: a retried append of this writer is stored
        // once, and a competing writer conflicts instead of being taken as a duplicate.
        let writer_id = format!("{}-{}", self.node, uuid::Uuid::new_v4().simple());
        let writer = self.log.writer(job, writer_id).await.map_err(unavailable)?;
        // The claim's span when this node pulled the job; a session started again
        // after a panic (its claim already taken) continues in the current span.
        let parent = self.claims.take(job).unwrap_or_else(tracing::Span::current);
        Ok(Box::new(NodeJobEvents {
            node: self.node.clone(),
            writer,
            observer: JobObserver::new(self.metrics.clone(), parent),
        }))
    }

    async fn open_control(&self, job: JobId) -> Result<mpsc::Receiver<ControlEnvelope>, PortError> {
        let mut subscription = self
            .client
            .subscribe(subjects::job_control(&job))
            .await
            .map_err(unavailable)?;
        // Make sure the server has the subscription before the job is announced.
        self.client.flush().await.map_err(unavailable)?;
        let (sender, receiver) = mpsc::channel(16);
        let client = self.client.clone();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    message = subscription.next() => match message {
                        Some(message) => message,
                        None => break,
                    },
                    _ = sender.closed() => break,
                };
                let Some(reply_to) = message.reply.clone() else {
                    continue;
                };
                let reply = match serde_json::from_slice::<ControlRequest>(&message.payload) {
                    Ok(request) => {
                        let (reply, answer) = oneshot::channel();
                        if sender
                            .send(ControlEnvelope { request, reply })
                            .await
                            .is_err()
                        {
                            break;
                        }
                        answer.await.unwrap_or(ControlReply::Refused {
                            reason: "the job ended".into(),
                        })
                    }
                    Err(e) => ControlReply::Refused {
                        reason: format!("not a control request: {e}"),
                    },
                };
                if let Ok(payload) = serde_json::to_vec(&reply) {
                    let _ = client.publish(reply_to, payload.into()).await;
                }
            }
            let _ = subscription.unsubscribe().await;
        });
        Ok(receiver)
    }
}
