//! `NodeSupervisor`: the root of a node's actor tree. It owns the node's slots, starts
//! the `Claimer`, the `Heartbeat` and one `ClaudeSession` per claimed job, and applies the restart
//! policy: a crashed claimer is restarted unless it crashes more often than the
//! configured intensity allows, in which case the supervisor fails (escalates) and the
//! node agent exits for its service manager to restart. A crashed session never leaves
//! its job hanging: the supervisor records the job as failed (or gives it back to the
//! queue when it cannot record) and frees the slot; other sessions are untouched.

use crate::claimer::{Claimer, ClaimerArgs, ClaimerMsg};
use crate::heartbeat::{Heartbeat, HeartbeatArgs, HeartbeatMsg, HeartbeatSettings};
use crate::policy::RestartIntensity;
use crate::ports::{ClaimedJob, JobFeed, JobMessage, JobPorts};
use crate::session::{ClaudeSession, SessionArgs, SessionMsg, SessionSettings};
use paddock_contract::event::failure;
use paddock_contract::{EventBody, JobId, JobSpec};
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::sync::CancellationToken;

pub struct NodeArgs {
    pub feed: Arc<dyn JobFeed>,
    pub ports: Arc<dyn JobPorts>,
    pub settings: Arc<SessionSettings>,
    pub slots: usize,
    /// Claimer restarts allowed within `restart_period` before escalating.
    pub max_restarts: usize,
    pub restart_period: Duration,
    pub shutdown: CancellationToken,
    /// Reconciliation with the control plane and heartbeats (none in unit tests).
    pub heartbeat: Option<HeartbeatSettings>,
}

/// What the supervisor reports about the node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeStatus {
    pub running: Vec<JobId>,
    pub slots: usize,
    pub free: usize,
    pub paused: bool,
}

pub enum NodeMsg {
    /// A job taken from the queue, with the slot it occupies.
    Claimed(ClaimedJob, OwnedSemaphorePermit),
    /// Stop (true) or resume (false) claiming, for the node's own reasons (a graceful
    /// stop); running jobs go on.
    SetPaused(bool),
    /// The operator's wish: stop (draining, cordoned) or resume claiming.
    SetDesiredPause(bool),
    /// The node is stopping: stop every running agent and give the jobs back.
    HandBackAll,
    Status(RpcReplyPort<NodeStatus>),
}

impl ractor::Message for NodeMsg {}

struct RunningJob {
    spec: JobSpec,
    actor: ActorRef<SessionMsg>,
    message: Arc<dyn JobMessage>,
    slot: OwnedSemaphorePermit,
    session_id: Arc<Mutex<Option<String>>>,
    /// Crashes of this job's session actor, bounded like any child's.
    crashes: RestartIntensity,
    restarts: u32,
}

pub struct NodeState {
    args: NodeArgs,
    slots: Arc<Semaphore>,
    paused: watch::Sender<bool>,
    claimer: Option<ActorRef<ClaimerMsg>>,
    claimer_restarts: RestartIntensity,
    sessions: HashMap<ActorId, RunningJob>,
    local_pause: bool,
    desired_pause: bool,
    heartbeat: Option<ActorRef<HeartbeatMsg>>,
}

pub struct NodeSupervisor;

impl NodeSupervisor {
    async fn start_claimer(
        myself: &ActorRef<NodeMsg>,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        let args = ClaimerArgs {
            feed: state.args.feed.clone(),
            supervisor: myself.clone(),
            slots: state.slots.clone(),
            paused: state.paused.subscribe(),
            shutdown: state.args.shutdown.clone(),
        };
        let (claimer, _) = Actor::spawn_linked(None, Claimer, args, myself.get_cell()).await?;
        state.claimer = Some(claimer);
        Ok(())
    }

    async fn start_session(
        myself: &ActorRef<NodeMsg>,
        state: &mut NodeState,
        job: ClaimedJob,
        slot: OwnedSemaphorePermit,
    ) {
        let spec = match serde_json::from_slice::<JobSpec>(&job.payload) {
            Ok(spec) => spec,
            Err(e) => {
                let ports = state.args.ports.clone();
                tokio::spawn(reject_bad_job(ports, job, e.to_string()));
                return;
            }
        };
        let session_id = Arc::new(Mutex::new(None));
        let crashes = RestartIntensity::new(3, Duration::from_secs(60));
        Self::spawn_session(
            myself,
            state,
            spec,
            job.message,
            slot,
            session_id,
            crashes,
            None,
            0,
        )
        .await;
    }

    /// Starts (or restarts, with `restart_reason`) the session actor of a job.
    #[allow(clippy::too_many_arguments)]
    async fn spawn_session(
        myself: &ActorRef<NodeMsg>,
        state: &mut NodeState,
        spec: JobSpec,
        message: Arc<dyn JobMessage>,
        slot: OwnedSemaphorePermit,
        session_id: Arc<Mutex<Option<String>>>,
        crashes: RestartIntensity,
        restart_reason: Option<String>,
        restarts: u32,
    ) {
        let name = ClaudeSession::name_for(&spec);
        let args = SessionArgs {
            spec: spec.clone(),
            message: message.clone(),
            ports: state.args.ports.clone(),
            settings: state.args.settings.clone(),
            session_id: session_id.clone(),
            restart_reason,
            restarts,
        };
        match Actor::spawn_linked(Some(name), ClaudeSession, args, myself.get_cell()).await {
            Ok((actor, _)) => {
                state.sessions.insert(
                    actor.get_id(),
                    RunningJob {
                        spec,
                        actor,
                        message,
                        slot,
                        session_id,
                        crashes,
                        restarts,
                    },
                );
            }
            Err(ractor::SpawnErr::ActorAlreadyRegistered(_)) => {
                // A redelivery of a job this node still runs: the running session keeps
                // its claim; this delivery is left alone.
                tracing::warn!(job = %spec.id, "job delivered again while it runs here");
            }
            Err(e) => {
                // Most often the event log was unreachable (a NATS fail-over): give the
                // job back to be tried again, bounded by the stream's delivery limit.
                tracing::warn!(job = %spec.id, error = %e, "session failed to start; giving the job back");
                tokio::spawn(async move {
                    let _ = message.nak_after(Duration::from_secs(2)).await;
                });
            }
        }
    }

    async fn start_heartbeat(
        myself: &ActorRef<NodeMsg>,
        state: &mut NodeState,
    ) -> Result<(), ActorProcessingErr> {
        let Some(settings) = state.args.heartbeat.clone() else {
            return Ok(());
        };
        let args = HeartbeatArgs {
            settings,
            supervisor: myself.clone(),
        };
        let name = format!("heartbeat-{}", state.args.settings.node);
        let (heartbeat, _) =
            Actor::spawn_linked(Some(name), Heartbeat, args, myself.get_cell()).await?;
        state.heartbeat = Some(heartbeat);
        Ok(())
    }

    fn is_heartbeat(state: &NodeState, cell: &ActorCell) -> bool {
        state
            .heartbeat
            .as_ref()
            .is_some_and(|heartbeat| heartbeat.get_id() == cell.get_id())
    }

    /// The heartbeat stopped: restart it within the same intensity as the claimer.
    async fn heartbeat_down(
        myself: &ActorRef<NodeMsg>,
        state: &mut NodeState,
        why: String,
    ) -> Result<(), ActorProcessingErr> {
        state.heartbeat = None;
        if state.args.shutdown.is_cancelled() {
            return Ok(());
        }
        if !state.claimer_restarts.allow_restart() {
            return Err(format!("heartbeat keeps failing (last: {why}); giving up").into());
        }
        tracing::warn!(%why, "heartbeat stopped; restarting it");
        Self::start_heartbeat(myself, state).await
    }

    fn is_claimer(state: &NodeState, cell: &ActorCell) -> bool {
        state
            .claimer
            .as_ref()
            .is_some_and(|claimer| claimer.get_id() == cell.get_id())
    }

    async fn claimer_down(
        myself: &ActorRef<NodeMsg>,
        state: &mut NodeState,
        why: String,
    ) -> Result<(), ActorProcessingErr> {
        state.claimer = None;
        if state.args.shutdown.is_cancelled() {
            return Ok(());
        }
        if !state.claimer_restarts.allow_restart() {
            return Err(format!(
                "claimer failed more than {} times in {:?} (last: {why}); giving up",
                state.claimer_restarts.max_restarts, state.claimer_restarts.period
            )
            .into());
        }
        tracing::warn!(%why, "claimer stopped; restarting it");
        Self::start_claimer(myself, state).await
    }
}

/// A job message that is not a job: record it as failed when it names a job, and take
/// it off the queue either way (it would fail the same way everywhere).
async fn reject_bad_job(ports: Arc<dyn JobPorts>, job: ClaimedJob, error: String) {
    let id = serde_json::from_slice::<serde_json::Value>(&job.payload)
        .ok()
        .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_string))
        .and_then(|id| id.parse::<JobId>().ok());
    tracing::error!(?id, %error, "a job message could not be read");
    if let Some(id) = id
        && let Ok(mut events) = ports.open_events(id).await
    {
        let body = EventBody::Failed {
            reason: failure::BAD_JOB.into(),
            message: format!("the job message could not be read: {error}"),
            summary: None,
        };
        if let Err(e) = events.append(job.message.delivered(), body, None).await {
            tracing::warn!(%id, error = %e, "could not record the bad job");
        }
    }
    let _ = job.message.ack().await;
}

/// Records a job whose session crashed as failed; gives it back when that is impossible.
async fn record_node_failure(
    ports: Arc<dyn JobPorts>,
    job: JobId,
    message: Arc<dyn JobMessage>,
    why: String,
) {
    let body = EventBody::Failed {
        reason: failure::NODE_ERROR.into(),
        message: why,
        summary: None,
    };
    let recorded = match ports.open_events(job).await {
        Ok(mut events) => match events.last_event() {
            Some(last) if last.is_terminal() => Ok(()),
            _ => events
                .append(message.delivered(), body, None)
                .await
                .map(|_| ()),
        },
        Err(e) => Err(e),
    };
    match recorded {
        Ok(()) => {
            let _ = message.ack().await;
        }
        Err(e) => {
            tracing::warn!(%job, error = %e, "could not record the failure; giving the job back");
            let _ = message.nak().await;
        }
    }
}

#[ractor::async_trait]
impl Actor for NodeSupervisor {
    type Msg = NodeMsg;
    type State = NodeState;
    type Arguments = NodeArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: NodeArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (paused, _) = watch::channel(false);
        Ok(NodeState {
            slots: Arc::new(Semaphore::new(args.slots)),
            claimer_restarts: RestartIntensity::new(args.max_restarts, args.restart_period),
            args,
            paused,
            claimer: None,
            sessions: HashMap::new(),
            local_pause: false,
            desired_pause: false,
            heartbeat: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        Self::start_claimer(&myself, state).await?;
        Self::start_heartbeat(&myself, state).await
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            NodeMsg::Claimed(job, slot) => {
                if state.args.shutdown.is_cancelled() {
                    let _ = job.message.nak().await;
                } else {
                    Self::start_session(&myself, state, job, slot).await;
                }
            }
            NodeMsg::SetPaused(paused) => {
                state.local_pause = paused;
                state
                    .paused
                    .send_replace(state.local_pause || state.desired_pause);
            }
            NodeMsg::SetDesiredPause(paused) => {
                state.desired_pause = paused;
                state
                    .paused
                    .send_replace(state.local_pause || state.desired_pause);
            }
            NodeMsg::HandBackAll => {
                state.paused.send_replace(true);
                for running in state.sessions.values() {
                    let _ = running.actor.cast(SessionMsg::HandBack);
                }
            }
            NodeMsg::Status(reply) => {
                let _ = reply.send(NodeStatus {
                    running: state.sessions.values().map(|r| r.spec.id).collect(),
                    slots: state.args.slots,
                    free: state.slots.available_permits(),
                    paused: *state.paused.borrow(),
                });
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorFailed(cell, error) => {
                if Self::is_claimer(state, &cell) {
                    return Self::claimer_down(&myself, state, error.to_string()).await;
                }
                if Self::is_heartbeat(state, &cell) {
                    return Self::heartbeat_down(&myself, state, error.to_string()).await;
                }
                if let Some(mut running) = state.sessions.remove(&cell.get_id()) {
                    let job = running.spec.id;
                    tracing::error!(%job, %error, "session crashed");
                    let reason = format!("the job's session actor crashed: {error}");
                    if !state.args.shutdown.is_cancelled() && running.crashes.allow_restart() {
                        Self::spawn_session(
                            &myself,
                            state,
                            running.spec,
                            running.message,
                            running.slot,
                            running.session_id,
                            running.crashes,
                            Some(reason),
                            running.restarts + 1,
                        )
                        .await;
                    } else {
                        tokio::spawn(record_node_failure(
                            state.args.ports.clone(),
                            job,
                            running.message,
                            reason,
                        ));
                    }
                }
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if Self::is_claimer(state, &cell) {
                    let why = reason.unwrap_or_else(|| "stopped".into());
                    return Self::claimer_down(&myself, state, why).await;
                }
                if Self::is_heartbeat(state, &cell) {
                    let why = reason.unwrap_or_else(|| "stopped".into());
                    return Self::heartbeat_down(&myself, state, why).await;
                }
                state.sessions.remove(&cell.get_id());
            }
            _ => {}
        }
        Ok(())
    }
}
