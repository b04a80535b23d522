//! The side effects the node's actors need, behind small traits: claiming job messages,
//! acknowledging them, appending job events, receiving control requests. The node agent
//! implements them over NATS JetStream; tests implement them in memory, so supervision
//! and session logic are tested without a network.

use async_trait::async_trait;
use bytes::Bytes;
use paddock_contract::control::{ControlReply, ControlRequest};
use paddock_contract::{EventBody, JobEvent, JobId};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// A failure of a port: the transport (NATS) was unavailable, or the job ended.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("{0}")]
    Unavailable(String),
    /// Another writer recorded the job's end first.
    #[error("job already ended ({0})")]
    JobEnded(&'static str),
}

/// A job message claimed from the queue and not yet acknowledged.
#[async_trait]
pub trait JobMessage: Send + Sync + 'static {
    /// How many times the queue has delivered this message (1 on the first delivery).
    fn delivered(&self) -> u32;
    /// Keeps the claim alive: resets the queue's redelivery timer.
    async fn progress(&self) -> Result<(), PortError>;
    /// The job is finished (its last event is recorded): remove it from the queue.
    async fn ack(&self) -> Result<(), PortError>;
    /// Give the job back for another node to take now.
    async fn nak(&self) -> Result<(), PortError>;
    /// Give the job back to be delivered again after `delay` (a transient failure).
    async fn nak_after(&self, delay: std::time::Duration) -> Result<(), PortError> {
        let _ = delay;
        self.nak().await
    }
}

/// One claimed job: the raw message body (parsed by the session, so a bad body is a
/// failed job rather than a crash) and its handle.
pub struct ClaimedJob {
    pub payload: Bytes,
    pub message: Arc<dyn JobMessage>,
}

/// Where claimed jobs come from.
#[async_trait]
pub trait JobFeed: Send + Sync + 'static {
    /// Waits a short while for up to `max` jobs. An empty result is normal.
    async fn fetch(&self, max: usize) -> Result<Vec<ClaimedJob>, PortError>;
}

/// Appends one job's events, in order, with contiguous sequence numbers.
#[async_trait]
pub trait JobEvents: Send + 'static {
    /// The job's last recorded event, as of the last append or refresh.
    fn last_event(&self) -> Option<&JobEvent>;
    async fn append(
        &mut self,
        attempt: u32,
        body: EventBody,
        raw: Option<String>,
    ) -> Result<JobEvent, PortError>;
}

/// A control request for a running job and the way to answer it.
pub struct ControlEnvelope {
    pub request: ControlRequest,
    pub reply: oneshot::Sender<ControlReply>,
}

/// Opens the per-job ports once a job is claimed.
#[async_trait]
pub trait JobPorts: Send + Sync + 'static {
    async fn open_events(&self, job: JobId) -> Result<Box<dyn JobEvents>, PortError>;
    /// Starts receiving control requests for the job; they stop when the receiver drops.
    async fn open_control(&self, job: JobId) -> Result<mpsc::Receiver<ControlEnvelope>, PortError>;
}
