//! The wire contract of Paddock: every type that crosses a process boundary (the jobs
//! and events streams, the control subjects, the gateway's REST and WebSocket API) and
//! every NATS subject and stream name. Services depend on this crate; it depends on no
//! service, only on serde. Changing a type here is a protocol change: bump
//! [`CONTRACT_VERSION`] when a change is not backward compatible.

pub mod api;
pub mod control;
pub mod event;
pub mod job;
pub mod join;
pub mod node;
pub mod subjects;

pub use event::{EventBody, JobEvent, RunSummary};
pub use job::{ApprovalMode, JobId, JobLimits, JobOptions, JobSpec, JobStatus, ResumeFrom};

/// Version of the wire contract, carried in every job message and event.
pub const CONTRACT_VERSION: u32 = 1;

/// Milliseconds since the Unix epoch, the one time format on the wire.
pub fn now_unix_ms() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
