//! The node agent's actors (ractor), with their side effects behind the small traits of
//! [`ports`], so supervision and restart policies are tested without a network:
//!
//! ```text
//! NodeSupervisor (restarts its children within a bounded intensity)
//!  ├─ Claimer        pulls jobs only while a slot is free and the node is not paused
//!  ├─ Heartbeat      reconciles to the desired state (drain, cordon), reports status
//!  └─ ClaudeSession  one per job: runs the CLI, publishes its events, settles the job
//! Member             the node in the control plane's actor cluster: nudges the Heartbeat
//! ```
//!
//! This crate must not depend on NATS, SQL or HTTP: the node agent provides the ports.

pub mod agent;
pub mod claimer;
pub mod heartbeat;
pub mod member;
pub mod policy;
pub mod ports;
pub mod session;
pub mod stream_json;
pub mod supervisor;

pub use ports::{ClaimedJob, ControlEnvelope, JobEvents, JobFeed, JobMessage, JobPorts, PortError};
pub use session::{ProjectRoot, SessionSettings};
pub use supervisor::{NodeArgs, NodeMsg, NodeStatus, NodeSupervisor};
