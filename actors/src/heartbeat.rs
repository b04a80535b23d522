//! `Heartbeat`: reconciles the node to its desired state and reports its status. On
//! every tick (a timer, or a nudge when the desired state changes) it reads what the
//! operator wants (ready, draining with a deadline, cordoned), tells the supervisor to
//! claim or not, hands running jobs back once a drain deadline has passed, and
//! publishes the node's heartbeat. Level-triggered: a missed nudge costs only the time
//! to the next tick; [`reconcile_now`] is the nudge.

use crate::ports::PortError;
use crate::supervisor::{NodeMsg, NodeStatus};
use async_trait::async_trait;
use paddock_contract::node::{DesiredState, NodeDesired, NodeHeartbeat, NodeState};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Where desired states come from and heartbeats go.
#[async_trait]
pub trait ControlPlane: Send + Sync + 'static {
    async fn desired(&self) -> Result<NodeDesired, PortError>;
    async fn beat(&self, heartbeat: NodeHeartbeat) -> Result<(), PortError>;
}

/// How the node describes itself.
#[derive(Clone)]
pub struct HeartbeatSettings {
    pub plane: Arc<dyn ControlPlane>,
    pub interval: Duration,
    pub node: String,
    pub pool: String,
    pub labels: BTreeMap<String, String>,
    pub version: String,
}

pub struct HeartbeatArgs {
    pub settings: HeartbeatSettings,
    pub supervisor: ActorRef<NodeMsg>,
}

pub enum HeartbeatMsg {
    Tick,
}

impl ractor::Message for HeartbeatMsg {}

/// The name the node supervisor gives the heartbeat of `node`.
pub fn actor_name(node: &str) -> String {
    format!("heartbeat-{node}")
}

/// Reconcile now rather than at the next tick: the fast path of a desired-state
/// change (a KV watch, or the coordinator's `Reconcile` over the actor cluster).
/// False when the heartbeat is not running (between a crash and its restart); the
/// next tick reconciles anyway.
pub fn reconcile_now(node: &str) -> bool {
    ractor::registry::where_is(actor_name(node))
        .is_some_and(|cell| cell.send_message(HeartbeatMsg::Tick).is_ok())
}

pub struct HeartbeatState {
    settings: HeartbeatSettings,
    supervisor: ActorRef<NodeMsg>,
    last_desired: NodeDesired,
    /// The drain deadline whose jobs were already handed back.
    handed_back_at: Option<i64>,
    ticker: JoinHandle<()>,
}

impl Drop for HeartbeatState {
    fn drop(&mut self) {
        self.ticker.abort();
    }
}

pub struct Heartbeat;

/// The state a node reports from what is wanted of it and what it runs.
pub fn reported_state(desired: DesiredState, running: usize) -> NodeState {
    match desired {
        DesiredState::Ready => NodeState::Ready,
        DesiredState::Cordoned => NodeState::Cordoned,
        DesiredState::Draining if running == 0 => NodeState::Drained,
        DesiredState::Draining => NodeState::Draining,
    }
}

#[ractor::async_trait]
impl Actor for Heartbeat {
    type Msg = HeartbeatMsg;
    type State = HeartbeatState;
    type Arguments = HeartbeatArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: HeartbeatArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let interval = args.settings.interval;
        let ticker = tokio::spawn(async move {
            let mut timer = tokio::time::interval(interval);
            loop {
                timer.tick().await;
                if myself.cast(HeartbeatMsg::Tick).is_err() {
                    break;
                }
            }
        });
        Ok(HeartbeatState {
            settings: args.settings,
            supervisor: args.supervisor,
            last_desired: NodeDesired::default(),
            handed_back_at: None,
            ticker,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let HeartbeatMsg::Tick = message;
        match state.settings.plane.desired().await {
            Ok(desired) => state.last_desired = desired,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the desired state; keeping the last one")
            }
        }
        let desired = state.last_desired.clone();
        let _ = state.supervisor.cast(NodeMsg::SetDesiredPause(
            desired.state != DesiredState::Ready,
        ));
        let status: NodeStatus =
            ractor::call_t!(state.supervisor, NodeMsg::Status, 5000).map_err(|e| format!("{e}"))?;
        if desired.state == DesiredState::Draining
            && let Some(deadline) = desired.drain_deadline_ms
            && paddock_contract::now_unix_ms() >= deadline
            && !status.running.is_empty()
            && state.handed_back_at != Some(deadline)
        {
            tracing::info!(
                running = status.running.len(),
                "drain deadline passed: handing jobs back"
            );
            state.handed_back_at = Some(deadline);
            let _ = state.supervisor.cast(NodeMsg::HandBackAll);
        }
        let heartbeat = NodeHeartbeat {
            node: state.settings.node.clone(),
            pool: state.settings.pool.clone(),
            labels: state.settings.labels.clone(),
            state: reported_state(desired.state, status.running.len()),
            slots: u32::try_from(status.slots).unwrap_or(u32::MAX),
            free: u32::try_from(status.free).unwrap_or(u32::MAX),
            running: status.running,
            version: state.settings.version.clone(),
            at_ms: paddock_contract::now_unix_ms(),
        };
        if let Err(e) = state.settings.plane.beat(heartbeat).await {
            tracing::warn!(error = %e, "heartbeat failed");
        }
        Ok(())
    }
}
