//! Nodes as the control plane sees them: the desired state an operator sets (ready,
//! draining with a deadline, cordoned), kept in the `paddock_nodes` key-value bucket,
//! and the status each node reports in `paddock_heartbeats`, whose entries expire when
//! a node stops reporting. A node reconciles to its desired state on start, on every
//! change it is told of, and on every heartbeat: the state is level-triggered, so a lost
//! notification costs only latency.

use crate::job::JobId;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What an operator wants of a node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum DesiredState {
    /// Takes work.
    #[default]
    Ready,
    /// Takes no new work; running jobs finish, or are handed back at the deadline.
    Draining,
    /// Takes no new work; running jobs are left alone.
    Cordoned,
}

/// The desired state of one node (the value under its name in `paddock_nodes`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeDesired {
    pub state: DesiredState,
    /// With `draining`: when running jobs are handed back to the queue (unix ms).
    #[serde(default)]
    pub drain_deadline_ms: Option<i64>,
    #[serde(default)]
    pub updated_by: String,
    #[serde(default)]
    pub updated_at_ms: i64,
}

/// A node's state as reported and listed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum NodeState {
    Ready,
    Draining,
    /// Draining and no job left.
    Drained,
    Cordoned,
    /// No heartbeat within its time to live.
    Lost,
}

/// What a node reports on every heartbeat (the value under its name in
/// `paddock_heartbeats`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeHeartbeat {
    pub node: String,
    pub pool: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub state: NodeState,
    pub slots: u32,
    pub free: u32,
    pub running: Vec<JobId>,
    pub version: String,
    pub at_ms: i64,
}

/// A node in `GET /v1/nodes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NodeView {
    pub name: String,
    pub state: NodeState,
    pub desired: DesiredState,
    pub pool: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub slots: u32,
    pub used: u32,
    pub running: Vec<JobId>,
    pub version: Option<String>,
    pub last_seen_ms: Option<i64>,
    pub drain_deadline_ms: Option<i64>,
}

/// `POST /v1/nodes/{name}/drain`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DrainRequest {
    /// Seconds from now after which running jobs are handed back; none: wait for them.
    #[serde(default)]
    pub deadline_secs: Option<u64>,
}
