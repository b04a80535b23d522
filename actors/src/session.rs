//! `ClaudeSession`: the actor that runs one job, a live Claude Code session. It records
//! the job's start, starts the CLI in the project's directory, turns every output line
//! into events (each published before the next line is handled), keeps the job's queue
//! claim alive, relays follow-ups, tool approvals and interrupts from people to the
//! CLI, and ends the job in exactly one recorded state: completed, failed with a
//! reason, or cancelled. Only then is the job message acknowledged; when the node hands
//! a job back (graceful stop) the message is given back to the queue instead.
//!
//! Restarts: a CLI that dies without a result is started again with `--resume` and the
//! same session id, with exponential back-off, up to `max_restarts`; the unanswered
//! turn is sent again. A turn the model API failed (overload, rate limit) is sent again
//! after a back-off, up to `max_api_retries`. Past the limits the job fails with every
//! reason kept.
//!
//! Long work runs in tasks the actor owns (reading the CLI's output, progress acks,
//! relaying control requests, timers), so a cancel reaches the actor while a turn runs.
//! Messages from an earlier CLI process carry its generation and are ignored.

use crate::agent::{self, AgentLaunch, AgentRun};
use crate::policy::backoff;
use crate::ports::{ControlEnvelope, JobEvents, JobMessage, JobPorts, PortError};
use crate::stream_json::{self, parse_line};
use futures::StreamExt;
use nix::sys::signal::Signal;
use paddock_contract::control::{ControlReply, ControlRequest};
use paddock_contract::event::SessionStateKind;
use paddock_contract::event::failure;
use paddock_contract::{ApprovalMode, EventBody, JobSpec, RunSummary};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::ChildStdin;
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};

/// A project as a node knows it: where it lives and what it may run unasked.
#[derive(Clone, Debug)]
pub struct ProjectRoot {
    pub path: PathBuf,
    pub allowed_tools: Vec<String>,
    /// Hosts the project's jobs may reach through the egress proxy, beyond the base
    /// allowlist (a package registry, say).
    pub hosts: Vec<String>,
}

/// Everything a session needs to know about its node.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    pub node: String,
    pub launch: AgentLaunch,
    pub projects: BTreeMap<String, ProjectRoot>,
    /// How often the queue claim is renewed (well under the stream's ack wait).
    pub progress_interval: Duration,
    /// Between SIGTERM and SIGKILL when a job is cancelled or handed back.
    pub kill_grace: Duration,
    /// Deliveries after which a job is failed as poison.
    pub max_attempts: u32,
    /// Wall-clock limit of a job.
    pub max_duration: Option<Duration>,
    /// Longest output line read from the CLI.
    pub max_line_bytes: usize,
    /// Most stderr lines recorded as events for one job.
    pub max_stderr_events: usize,
    /// Restarts of a CLI that died without a result, and the first back-off (doubling,
    /// capped at `max_restart_backoff`).
    pub max_restarts: u32,
    pub restart_backoff: Duration,
    pub max_restart_backoff: Duration,
    /// Retries of a turn the model API failed.
    pub max_api_retries: u32,
    /// How long an approval request waits when the job does not say.
    pub approval_timeout: Duration,
    /// Upper bound of a job's idle timeout; also how long a session stays open after
    /// an interrupt when the job asked for none.
    pub max_idle: Duration,
    /// Test builds only: a user message containing `paddock-fault:panic` makes the
    /// session actor panic once, to exercise the supervisor.
    pub fault_injection: bool,
    /// Most bytes of output the CLI may write for one job.
    pub max_output_bytes: u64,
}

/// What a session is started with.
pub struct SessionArgs {
    pub spec: JobSpec,
    pub message: Arc<dyn JobMessage>,
    pub ports: Arc<dyn JobPorts>,
    pub settings: Arc<SessionSettings>,
    /// The CLI's session id once known; shared with the supervisor so a restarted
    /// session actor resumes the same CLI session.
    pub session_id: Arc<Mutex<Option<String>>>,
    /// Set when the supervisor restarts a crashed session actor: why it crashed.
    pub restart_reason: Option<String>,
    /// Restarts so far (carried across session actor restarts).
    pub restarts: u32,
}

/// Messages of a session. `u64` fields are the CLI process generation.
pub enum SessionMsg {
    /// A line the CLI wrote on stdout.
    Line(u64, String),
    /// A stdout line longer than the limit was dropped.
    LineTooLong(u64),
    /// A line the CLI wrote on stderr.
    Stderr(u64, String),
    /// What the sandbox stopped during the run that just ended.
    SandboxNotes(u64, Vec<(String, String)>),
    /// The CLI exited.
    Exited(u64, String),
    Control(ControlEnvelope),
    /// The grace period after SIGTERM ran out.
    KillNow(u64),
    /// The wall-clock limit ran out.
    TimedOut,
    /// The node is stopping: stop the CLI and give the job back to the queue.
    HandBack,
    /// The idle timeout of the given idle period ran out.
    IdleTimeout(u64),
    /// An approval request's deadline passed.
    ApprovalDeadline(String),
    /// Start the CLI again after a crash (after the back-off).
    Relaunch,
    /// Send the unanswered turn again after a model API failure.
    ResendTurn,
}

impl ractor::Message for SessionMsg {}

enum Ending {
    Cancelled(String),
    /// A limit was reached: the failure reason and what to tell the user.
    Limit(&'static str, String),
    HandedBack,
}

struct PendingApproval {
    input: serde_json::Value,
}

pub struct SessionState {
    spec: JobSpec,
    settings: Arc<SessionSettings>,
    ports: Arc<dyn JobPorts>,
    attempt: u32,
    message: Arc<dyn JobMessage>,
    events: Box<dyn JobEvents>,
    workdir: PathBuf,
    project_tools: Vec<String>,
    project_hosts: Vec<String>,
    session_id: Arc<Mutex<Option<String>>>,
    stdin: Option<ChildStdin>,
    pid: Option<u32>,
    generation: u64,
    /// User turns written and not yet answered by a result.
    pending_turns: u32,
    last_user_text: Option<String>,
    last_summary: Option<RunSummary>,
    state_kind: Option<SessionStateKind>,
    idle_period: u64,
    /// We closed stdin on purpose: the process is expected to exit.
    closing: bool,
    interrupted: bool,
    /// An interrupt keeps the session open even for a one-shot job.
    keep_open: bool,
    approvals: HashMap<String, PendingApproval>,
    restarts: u32,
    restart_reasons: Vec<String>,
    api_retries: u32,
    ending: Option<Ending>,
    stderr_tail: VecDeque<String>,
    stderr_seen: usize,
    tasks: Vec<JoinHandle<()>>,
    panicked_once: bool,
    output_bytes: u64,
}

impl Drop for SessionState {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(pid) = self.pid.take() {
            agent::signal_group(pid, Signal::SIGKILL);
        }
    }
}

impl SessionState {
    fn idle_timeout(&self) -> Duration {
        let asked =
            Duration::from_secs(u64::from(self.spec.options.idle_timeout_secs.unwrap_or(0)));
        let asked = if asked.is_zero() && self.keep_open {
            self.settings.max_idle
        } else {
            asked
        };
        asked.min(self.settings.max_idle)
    }

    fn approval_timeout(&self) -> Duration {
        self.spec
            .options
            .approval_timeout_secs
            .map(|s| Duration::from_secs(u64::from(s)))
            .unwrap_or(self.settings.approval_timeout)
    }

    fn known_session_id(&self) -> Option<String> {
        self.session_id.lock().ok().and_then(|id| id.clone())
    }
}

pub struct ClaudeSession;

impl ClaudeSession {
    /// The actor's registered name for a job.
    pub fn name_for(spec: &JobSpec) -> String {
        format!("session-{}", spec.id)
    }
}

/// Resolves the job's working directory inside its project, refusing escapes.
pub fn resolve_workdir(root: &Path, subdir: Option<&str>) -> Result<PathBuf, String> {
    let root = root
        .canonicalize()
        .map_err(|e| format!("project directory {}: {e}", root.display()))?;
    let Some(subdir) = subdir.filter(|s| !s.is_empty()) else {
        return Ok(root);
    };
    let relative = Path::new(subdir);
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!("{subdir:?} is not a plain relative path"));
    }
    let joined = root
        .join(relative)
        .canonicalize()
        .map_err(|e| format!("{subdir:?}: {e}"))?;
    if !joined.starts_with(&root) {
        return Err(format!("{subdir:?} leaves the project directory"));
    }
    Ok(joined)
}

#[ractor::async_trait]
impl Actor for ClaudeSession {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SessionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let events = args.ports.open_events(args.spec.id).await?;
        if let Some(reason) = &args.restart_reason {
            tracing::warn!(job = %args.spec.id, %reason, "restarting a crashed session");
        }
        let _ = myself;
        Ok(SessionState {
            attempt: args.message.delivered(),
            spec: args.spec,
            settings: args.settings,
            ports: args.ports,
            message: args.message,
            events,
            workdir: PathBuf::new(),
            project_tools: Vec::new(),
            project_hosts: Vec::new(),
            session_id: args.session_id,
            stdin: None,
            pid: None,
            generation: 0,
            pending_turns: 0,
            last_user_text: None,
            last_summary: None,
            state_kind: None,
            idle_period: 0,
            closing: false,
            interrupted: false,
            keep_open: false,
            approvals: HashMap::new(),
            restarts: args.restarts,
            restart_reasons: args.restart_reason.into_iter().collect(),
            api_retries: 0,
            ending: None,
            stderr_tail: VecDeque::new(),
            stderr_seen: 0,
            tasks: Vec::new(),
            panicked_once: false,
            output_bytes: 0,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let outcome = begin(&myself, state).await;
        settle(&myself, state, outcome).await
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let outcome = match message {
            SessionMsg::Line(generation, line) if generation == state.generation => {
                state.output_bytes += line.len() as u64 + 1;
                let limit = state.settings.max_output_bytes;
                if state.output_bytes > limit && state.ending.is_none() {
                    let message = format!("the CLI wrote more than {limit} bytes of output");
                    stop_agent(
                        &myself,
                        state,
                        Ending::Limit(failure::OUTPUT_LIMIT, message),
                    );
                }
                if state.ending.is_some() {
                    Ok(Flow::Continue)
                } else {
                    on_line(&myself, state, line).await.map(|()| Flow::Continue)
                }
            }
            SessionMsg::LineTooLong(generation) if generation == state.generation => {
                let limit = state.settings.max_line_bytes;
                append(
                    state,
                    EventBody::CliGarbage {
                        error: format!("an output line longer than {limit} bytes was dropped"),
                    },
                    None,
                )
                .await
                .map(|()| Flow::Continue)
            }
            SessionMsg::Stderr(generation, line) if generation == state.generation => {
                on_stderr(state, line).await.map(|()| Flow::Continue)
            }
            SessionMsg::Exited(generation, status) if generation == state.generation => {
                on_exit(&myself, state, &status).await
            }
            SessionMsg::SandboxNotes(generation, notes) if generation == state.generation => {
                let mut outcome = Ok(Flow::Continue);
                for (notice, detail) in notes {
                    if let Err(e) =
                        append(state, EventBody::SandboxNotice { notice, detail }, None).await
                    {
                        outcome = Err(e);
                        break;
                    }
                }
                outcome
            }
            SessionMsg::Control(envelope) => {
                if state.settings.fault_injection
                    && !state.panicked_once
                    && matches!(&envelope.request, ControlRequest::Message { text, .. } if text.contains("paddock-fault:panic"))
                {
                    state.panicked_once = true;
                    panic!("fault injected into session {}", state.spec.id);
                }
                on_control(&myself, state, envelope)
                    .await
                    .map(|()| Flow::Continue)
            }
            SessionMsg::KillNow(generation) => {
                if generation == state.generation
                    && let Some(pid) = state.pid
                {
                    agent::signal_group(pid, Signal::SIGKILL);
                }
                Ok(Flow::Continue)
            }
            SessionMsg::TimedOut => {
                let message = format!(
                    "the job ran longer than its limit of {} s",
                    state.settings.max_duration.unwrap_or_default().as_secs()
                );
                stop_agent(&myself, state, Ending::Limit(failure::TIMEOUT, message));
                Ok(Flow::Continue)
            }
            SessionMsg::HandBack => {
                stop_agent(&myself, state, Ending::HandedBack);
                Ok(Flow::Continue)
            }
            SessionMsg::IdleTimeout(period) => {
                if period == state.idle_period
                    && state.state_kind == Some(SessionStateKind::Idle)
                    && state.ending.is_none()
                {
                    tracing::info!(job = %state.spec.id, "idle timeout: ending the session");
                    state.closing = true;
                    state.stdin = None;
                }
                Ok(Flow::Continue)
            }
            SessionMsg::ApprovalDeadline(request_id) => {
                let timeout = state.approval_timeout();
                let reason = format!("nobody answered within {} s", timeout.as_secs());
                resolve_approval(state, &request_id, false, "timeout", Some(reason))
                    .await
                    .map(|()| Flow::Continue)
            }
            SessionMsg::Relaunch => {
                if state.ending.is_some() {
                    Ok(Flow::Continue)
                } else {
                    let resend = (state.pending_turns > 0)
                        .then(|| state.last_user_text.clone())
                        .flatten();
                    launch(&myself, state, resend).await
                }
            }
            SessionMsg::ResendTurn => {
                if let Some(text) = state.last_user_text.clone() {
                    write_stdin(state, &agent::user_turn(&text)).await;
                }
                Ok(Flow::Continue)
            }
            // A message from an earlier process of this session.
            SessionMsg::Line(..)
            | SessionMsg::LineTooLong(_)
            | SessionMsg::Stderr(..)
            | SessionMsg::SandboxNotes(..)
            | SessionMsg::Exited(..) => Ok(Flow::Continue),
        };
        settle(&myself, state, outcome).await
    }
}

/// What to do after a step.
enum Flow {
    Continue,
    Stop,
}

async fn settle(
    myself: &ActorRef<SessionMsg>,
    state: &mut SessionState,
    outcome: Result<Flow, PortError>,
) -> Result<(), ActorProcessingErr> {
    match outcome {
        Ok(Flow::Continue) => Ok(()),
        Ok(Flow::Stop) => {
            myself.stop(None);
            Ok(())
        }
        Err(PortError::JobEnded(kind)) => {
            tracing::warn!(job = %state.spec.id, kind, "job ended by another writer; stopping the agent");
            if let Some(pid) = state.pid.take() {
                agent::signal_group(pid, Signal::SIGKILL);
            }
            state.message.ack().await?;
            myself.stop(None);
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

async fn append(
    state: &mut SessionState,
    body: EventBody,
    raw: Option<String>,
) -> Result<(), PortError> {
    state
        .events
        .append(state.attempt, body, raw)
        .await
        .map(|_| ())
}

async fn set_state(state: &mut SessionState, kind: SessionStateKind) -> Result<(), PortError> {
    if state.state_kind == Some(kind) {
        return Ok(());
    }
    state.state_kind = Some(kind);
    append(state, EventBody::SessionState { state: kind }, None).await
}

/// Records a terminal event and removes the job from the queue.
async fn end_job(state: &mut SessionState, body: EventBody) -> Result<Flow, PortError> {
    append(state, body, None).await?;
    state.message.ack().await?;
    Ok(Flow::Stop)
}

async fn fail(state: &mut SessionState, reason: &str, message: String) -> Result<Flow, PortError> {
    tracing::warn!(job = %state.spec.id, reason, %message, "job failed");
    end_job(
        state,
        EventBody::Failed {
            reason: reason.to_string(),
            message,
            summary: None,
        },
    )
    .await
}

async fn begin(myself: &ActorRef<SessionMsg>, state: &mut SessionState) -> Result<Flow, PortError> {
    let job = state.spec.id;
    if let Some(last) = state.events.last_event()
        && last.is_terminal()
    {
        tracing::info!(%job, kind = last.kind(), "claimed a job that has already ended");
        state.message.ack().await?;
        return Ok(Flow::Stop);
    }
    let settings = state.settings.clone();
    let restarted_actor = !state.restart_reasons.is_empty() && state.restarts > 0;
    if state.attempt > settings.max_attempts {
        return fail(
            state,
            failure::TOO_MANY_ATTEMPTS,
            format!(
                "delivered {} times; the limit is {}",
                state.attempt, settings.max_attempts
            ),
        )
        .await;
    }
    if !restarted_actor
        && let Some(last) = state.events.last_event()
        && (last.attempt > 0 || state.attempt > 1)
    {
        let reason = match &last.node {
            Some(node) => format!(
                "attempt {} on node {node} ended without a result",
                last.attempt
            ),
            None => "an earlier attempt ended without a result".to_string(),
        };
        append(
            state,
            EventBody::Retrying {
                attempt: state.attempt,
                reason,
            },
            None,
        )
        .await?;
    }
    let Some(project) = settings.projects.get(&state.spec.project).cloned() else {
        let project = state.spec.project.clone();
        return fail(
            state,
            failure::UNKNOWN_PROJECT,
            format!(
                "project {project:?} is not configured on node {}",
                settings.node
            ),
        )
        .await;
    };
    state.workdir = match resolve_workdir(&project.path, state.spec.options.subdir.as_deref()) {
        Ok(dir) => dir,
        Err(message) => return fail(state, failure::BAD_JOB, message).await,
    };
    state.project_tools = project.allowed_tools.clone();
    state.project_hosts = project.hosts.clone();
    if let Some(resume) = &state.spec.resume
        && let Ok(mut id) = state.session_id.lock()
        && id.is_none()
    {
        *id = Some(resume.session_id.clone());
    }

    // Control requests are taken before the start is announced, so a client that sees
    // `job.started` can steer the job.
    let mut control = state.ports.open_control(job).await?;
    let relay = myself.clone();
    state.tasks.push(tokio::spawn(async move {
        while let Some(envelope) = control.recv().await {
            if relay.cast(SessionMsg::Control(envelope)).is_err() {
                break;
            }
        }
    }));

    if restarted_actor {
        let reason = state.restart_reasons.last().cloned().unwrap_or_default();
        append(
            state,
            EventBody::Restarting {
                restart: state.restarts,
                reason,
                delay_ms: 0,
            },
            None,
        )
        .await?;
    } else {
        append(
            state,
            EventBody::Started {
                node: settings.node.clone(),
                attempt: state.attempt,
            },
            None,
        )
        .await?;
    }

    let claim = state.message.clone();
    let interval = settings.progress_interval;
    state.tasks.push(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            if let Err(e) = claim.progress().await {
                tracing::warn!(%job, error = %e, "could not renew the job's claim");
            }
        }
    }));
    if let Some(limit) = settings.max_duration {
        state.tasks.push(tokio::spawn(send_later(
            myself.clone(),
            limit,
            SessionMsg::TimedOut,
        )));
    }

    // A restarted actor resumes the CLI session and waits for the next message (what
    // the crashed actor was doing is not known); a new job sends its prompt.
    if restarted_actor && state.known_session_id().is_some() {
        state.keep_open = true;
        let flow = launch(myself, state, None).await?;
        go_idle(myself, state).await?;
        return Ok(flow);
    }
    let prompt = state.spec.prompt.clone();
    launch(myself, state, Some(prompt)).await
}

/// The session waits for a follow-up until its idle timeout.
async fn go_idle(myself: &ActorRef<SessionMsg>, state: &mut SessionState) -> Result<(), PortError> {
    set_state(state, SessionStateKind::Idle).await?;
    state.idle_period += 1;
    let period = state.idle_period;
    let idle = state.idle_timeout();
    state.tasks.push(tokio::spawn(send_later(
        myself.clone(),
        idle,
        SessionMsg::IdleTimeout(period),
    )));
    Ok(())
}

/// Starts a CLI process for the session (resuming it when its id is known) and writes
/// `turn` to it when given.
async fn launch(
    myself: &ActorRef<SessionMsg>,
    state: &mut SessionState,
    turn: Option<String>,
) -> Result<Flow, PortError> {
    let job = state.spec.id;
    let settings = state.settings.clone();
    state.generation += 1;
    let generation = state.generation;
    // Resume a session whose transcript exists; a session that died before the CLI
    // wrote one starts again under the same id.
    let known = state.known_session_id();
    let has_transcript = known.as_ref().is_some_and(|id| {
        agent::transcript_path(&settings.launch.home, &state.workdir, id).exists()
    });
    let run = AgentRun {
        workdir: state.workdir.clone(),
        options: state.spec.options.clone(),
        project_tools: state.project_tools.clone(),
        resume: known.clone().filter(|_| has_transcript),
        session_id: known.filter(|_| !has_transcript),
        ask_permissions: state.spec.options.approval == ApprovalMode::Ask,
        run_name: format!("{job}-{generation}"),
        project_hosts: state.project_hosts.clone(),
    };
    let started = match agent::start_agent(&settings.launch, &run).await {
        Ok(started) => started,
        Err(e) => {
            let program = settings.launch.program.display().to_string();
            return fail(
                state,
                failure::SPAWN_FAILED,
                format!("cannot start {program}: {e}"),
            )
            .await;
        }
    };
    let agent::StartedAgent {
        mut child,
        stdin,
        stdout,
        stderr,
        pid,
        sandbox,
        proxy,
    } = started;
    state.pid = Some(pid);
    state.stdin = Some(stdin);
    state.closing = false;
    tracing::info!(%job, pid, attempt = state.attempt, resume = ?run.resume, "agent started");

    let max_line = settings.max_line_bytes;
    let out = myself.clone();
    let stdout_task = tokio::spawn(async move {
        let mut lines = FramedRead::new(stdout, LinesCodec::new_with_max_length(max_line));
        while let Some(line) = lines.next().await {
            let message = match line {
                Ok(line) => SessionMsg::Line(generation, line),
                Err(LinesCodecError::MaxLineLengthExceeded) => SessionMsg::LineTooLong(generation),
                Err(LinesCodecError::Io(e)) => {
                    tracing::warn!(error = %e, "reading the agent's output failed");
                    break;
                }
            };
            if out.cast(message).is_err() {
                break;
            }
        }
    });
    let err = myself.clone();
    let stderr_task = tokio::spawn(async move {
        let mut lines = FramedRead::new(stderr, LinesCodec::new_with_max_length(16 * 1024));
        while let Some(Ok(line)) = lines.next().await {
            if err.cast(SessionMsg::Stderr(generation, line)).is_err() {
                break;
            }
        }
    });
    let exit = myself.clone();
    state.tasks.push(tokio::spawn(async move {
        // Every output line is in the mailbox before the exit is.
        let _ = stdout_task.await;
        let _ = stderr_task.await;
        let status = match child.wait().await {
            Ok(status) => describe_exit(status),
            Err(e) => format!("unknown exit ({e})"),
        };
        let notes = sandbox_notes(sandbox, proxy).await;
        if !notes.is_empty() {
            let _ = exit.cast(SessionMsg::SandboxNotes(generation, notes));
        }
        let _ = exit.cast(SessionMsg::Exited(generation, status));
    }));

    if let Some(text) = turn {
        if state.pending_turns == 0 {
            state.pending_turns = 1;
        }
        state.last_user_text = Some(text.clone());
        write_stdin(state, &agent::user_turn(&text)).await;
        set_state(state, SessionStateKind::Running).await?;
    }
    Ok(Flow::Continue)
}

/// Cleans up after a sandboxed run and says what the sandbox stopped.
async fn sandbox_notes(
    guard: Option<paddock_sandbox::SandboxGuard>,
    proxy: Option<agent::RunningProxy>,
) -> Vec<(String, String)> {
    let mut notes: Vec<(String, String)> = Vec::new();
    if let Some(proxy) = &proxy {
        for refusal in proxy.proxy.refusals() {
            notes.push((
                "egress_refused".into(),
                format!("{}: {}", refusal.target, refusal.reason),
            ));
        }
    }
    if let Some(guard) = guard
        && let Ok(report) = tokio::task::spawn_blocking(move || guard.finish()).await
    {
        for moved in report.quarantined {
            notes.push((
                "quarantined".into(),
                format!(
                    "{} moved to {}",
                    moved.path.display(),
                    moved.moved_to.display()
                ),
            ));
        }
        if let Some(cgroup) = report.cgroup {
            if cgroup.pids_limit_hits > 0 {
                notes.push((
                    "limit_hit".into(),
                    format!("the process limit refused {} forks", cgroup.pids_limit_hits),
                ));
            }
            if cgroup.memory_limit_hits > 0 {
                notes.push((
                    "limit_hit".into(),
                    format!(
                        "the memory limit was hit {} times",
                        cgroup.memory_limit_hits
                    ),
                ));
            }
        }
    }
    drop(proxy);
    notes
}

async fn write_stdin(state: &mut SessionState, line: &str) {
    if let Some(stdin) = state.stdin.as_mut()
        && let Err(e) = stdin.write_all(line.as_bytes()).await
    {
        tracing::warn!(job = %state.spec.id, error = %e, "could not write to the agent");
    }
}

async fn send_later(actor: ActorRef<SessionMsg>, after: Duration, message: SessionMsg) {
    tokio::time::sleep(after).await;
    let _ = actor.cast(message);
}

fn describe_exit(status: std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "unknown exit".to_string(),
    }
}

async fn on_line(
    myself: &ActorRef<SessionMsg>,
    state: &mut SessionState,
    line: String,
) -> Result<(), PortError> {
    let parsed = parse_line(&line);
    if let Some(request) = parsed.control {
        return on_cli_request(myself, state, request, line).await;
    }
    let mut raw = Some(line);
    for event in parsed.events {
        if let EventBody::SessionInit { session_id, .. } = &event
            && !session_id.is_empty()
            && let Ok(mut id) = state.session_id.lock()
        {
            *id = Some(session_id.clone());
        }
        // The raw line rides on the first event made from it.
        append(state, event, raw.take()).await?;
    }
    if let Some(summary) = parsed.result {
        let line = raw.clone().unwrap_or_default();
        if let Some(raw) = raw.take() {
            append(
                state,
                EventBody::CliOutput {
                    line_type: Some("result".into()),
                },
                Some(raw),
            )
            .await?;
        }
        on_result(myself, state, summary, &line).await?;
    }
    Ok(())
}

async fn on_result(
    myself: &ActorRef<SessionMsg>,
    state: &mut SessionState,
    summary: RunSummary,
    line: &str,
) -> Result<(), PortError> {
    state.pending_turns = state.pending_turns.saturating_sub(1);
    let value: serde_json::Value = serde_json::from_str(line).unwrap_or_default();
    if stream_json::is_retryable_api_error(&value)
        && !state.interrupted
        && state.api_retries < state.settings.max_api_retries
    {
        state.api_retries += 1;
        let delay = backoff(
            state.settings.restart_backoff,
            state.settings.max_restart_backoff,
            state.api_retries - 1,
        );
        let reason = summary
            .result
            .clone()
            .unwrap_or_else(|| "the model API failed the turn".into());
        append(
            state,
            EventBody::TurnRetrying {
                retry: state.api_retries,
                reason,
                delay_ms: delay.as_millis() as u64,
            },
            None,
        )
        .await?;
        state.pending_turns += 1;
        state.tasks.push(tokio::spawn(send_later(
            myself.clone(),
            delay,
            SessionMsg::ResendTurn,
        )));
        return Ok(());
    }
    if !summary.is_error {
        state.api_retries = 0;
    }
    if let (Some(limit), Some(cost)) = (state.spec.limits.max_cost_usd, summary.total_cost_usd)
        && cost > limit
    {
        state.last_summary = Some(summary);
        let message = format!(
            "the job's model cost ${cost:.4} passed the ${limit:.4} left of the daily budget"
        );
        stop_agent(myself, state, Ending::Limit(failure::COST_BUDGET, message));
        return Ok(());
    }
    if summary.subtype.as_deref() == Some("error_max_turns") {
        state.last_summary = Some(summary);
        let turns = state.spec.options.max_turns.unwrap_or_default();
        let message = format!("the job reached its limit of {turns} turns");
        stop_agent(myself, state, Ending::Limit(failure::MAX_TURNS, message));
        return Ok(());
    }
    if std::mem::take(&mut state.interrupted) {
        state.keep_open = true;
    }
    state.last_summary = Some(summary.clone());
    if state.pending_turns > 0 {
        // A follow-up is queued in the CLI: it runs next.
        append(state, EventBody::TurnCompleted { summary }, None).await?;
        return set_state(state, SessionStateKind::Running).await;
    }
    let idle = state.idle_timeout();
    if idle.is_zero() {
        // A one-shot job: closing stdin after the result lets the CLI exit 0.
        state.closing = true;
        state.stdin = None;
        return Ok(());
    }
    append(state, EventBody::TurnCompleted { summary }, None).await?;
    go_idle(myself, state).await
}

async fn on_cli_request(
    myself: &ActorRef<SessionMsg>,
    state: &mut SessionState,
    request: stream_json::CliRequest,
    raw: String,
) -> Result<(), PortError> {
    if request.subtype != "can_use_tool" || state.spec.options.approval != ApprovalMode::Ask {
        let reply = agent::refuse_request(&request.request_id, "not supported by this node");
        write_stdin(state, &reply).await;
        return append(
            state,
            EventBody::CliOutput {
                line_type: Some(format!("control_request/{}", request.subtype)),
            },
            Some(raw),
        )
        .await;
    }
    let timeout = state.approval_timeout();
    let deadline_ms = paddock_contract::now_unix_ms() + timeout.as_millis() as i64;
    state.approvals.insert(
        request.request_id.clone(),
        PendingApproval {
            input: request.input.clone(),
        },
    );
    append(
        state,
        EventBody::ApprovalRequested {
            request_id: request.request_id.clone(),
            tool_name: request.tool_name,
            input: request.input,
            deadline_ms,
        },
        Some(raw),
    )
    .await?;
    set_state(state, SessionStateKind::WaitingApproval).await?;
    state.tasks.push(tokio::spawn(send_later(
        myself.clone(),
        timeout,
        SessionMsg::ApprovalDeadline(request.request_id),
    )));
    Ok(())
}

/// Answers a pending approval; unknown or already answered ids are ignored.
async fn resolve_approval(
    state: &mut SessionState,
    request_id: &str,
    allow: bool,
    by: &str,
    reason: Option<String>,
) -> Result<(), PortError> {
    let Some(pending) = state.approvals.remove(request_id) else {
        return Ok(());
    };
    let line = if allow {
        agent::allow_tool(request_id, &pending.input)
    } else {
        let why = reason.clone().unwrap_or_else(|| format!("refused by {by}"));
        agent::deny_tool(request_id, &why)
    };
    write_stdin(state, &line).await;
    append(
        state,
        EventBody::ApprovalResolved {
            request_id: request_id.to_string(),
            allowed: allow,
            by: by.to_string(),
            reason,
        },
        None,
    )
    .await?;
    if state.approvals.is_empty() {
        set_state(state, SessionStateKind::Running).await?;
    }
    Ok(())
}

async fn on_stderr(state: &mut SessionState, line: String) -> Result<(), PortError> {
    state.stderr_seen += 1;
    state
        .stderr_tail
        .push_back(stream_json::truncate(line.clone(), 500));
    if state.stderr_tail.len() > 5 {
        state.stderr_tail.pop_front();
    }
    if state.stderr_seen <= state.settings.max_stderr_events {
        append(
            state,
            EventBody::CliStderr {
                line: stream_json::truncate(line, 4096),
            },
            None,
        )
        .await?;
    }
    Ok(())
}

async fn on_control(
    myself: &ActorRef<SessionMsg>,
    state: &mut SessionState,
    envelope: ControlEnvelope,
) -> Result<(), PortError> {
    let live = state.ending.is_none() && !state.closing && state.stdin.is_some();
    let (reply, outcome) = match envelope.request {
        ControlRequest::Cancel { by } => {
            if state.ending.is_none() {
                tracing::info!(job = %state.spec.id, %by, "cancel requested");
                stop_agent(myself, state, Ending::Cancelled(by));
            }
            (ControlReply::Accepted, Ok(()))
        }
        ControlRequest::Message { text, by } if live => {
            state.pending_turns += 1;
            state.last_user_text = Some(text.clone());
            state.idle_period += 1;
            write_stdin(state, &agent::user_turn(&text)).await;
            let outcome = match append(state, EventBody::UserMessage { text, by }, None).await {
                Ok(()) => set_state(state, SessionStateKind::Running).await,
                Err(e) => Err(e),
            };
            (ControlReply::Accepted, outcome)
        }
        ControlRequest::Message { .. } => (
            ControlReply::Refused {
                reason: "the session has ended".into(),
            },
            Ok(()),
        ),
        ControlRequest::Approve {
            request_id,
            allow,
            reason,
            by,
        } => {
            if state.approvals.contains_key(&request_id) {
                let outcome = resolve_approval(state, &request_id, allow, &by, reason).await;
                (ControlReply::Accepted, outcome)
            } else {
                (
                    ControlReply::Refused {
                        reason: format!("no approval request {request_id:?} is waiting"),
                    },
                    Ok(()),
                )
            }
        }
        ControlRequest::Interrupt { by } if live && state.pending_turns > 0 => {
            state.interrupted = true;
            let line = agent::interrupt(&format!("interrupt-{}", uuid::Uuid::new_v4().simple()));
            write_stdin(state, &line).await;
            let outcome = append(state, EventBody::Interrupted { by }, None).await;
            (ControlReply::Accepted, outcome)
        }
        ControlRequest::Interrupt { .. } => (
            ControlReply::Refused {
                reason: "no turn is running".into(),
            },
            Ok(()),
        ),
    };
    let _ = envelope.reply.send(reply);
    outcome
}

/// SIGTERM to the agent's process group now, SIGKILL after the grace period.
fn stop_agent(myself: &ActorRef<SessionMsg>, state: &mut SessionState, ending: Ending) {
    if state.ending.is_none() {
        state.ending = Some(ending);
    }
    state.stdin = None;
    if let Some(pid) = state.pid {
        agent::signal_group(pid, Signal::SIGTERM);
        state.tasks.push(tokio::spawn(send_later(
            myself.clone(),
            state.settings.kill_grace,
            SessionMsg::KillNow(state.generation),
        )));
    } else if matches!(
        state.ending,
        Some(Ending::Cancelled(_)) | Some(Ending::HandedBack)
    ) {
        // Between restarts there is no process: settle at once.
        let _ = myself.cast(SessionMsg::Exited(state.generation, "not running".into()));
    }
}

/// The CLI has exited: restart it, or record how the job ended and settle its message.
async fn on_exit(
    myself: &ActorRef<SessionMsg>,
    state: &mut SessionState,
    status: &str,
) -> Result<Flow, PortError> {
    state.pid = None;
    state.stdin = None;
    let summary = state.last_summary.take();
    let outcome = match state.ending.take() {
        Some(Ending::HandedBack) => {
            tracing::info!(job = %state.spec.id, "handing the job back to the queue");
            state.message.nak().await?;
            return Ok(Flow::Stop);
        }
        Some(Ending::Cancelled(by)) => EventBody::Cancelled { by, summary },
        Some(Ending::Limit(reason, message)) => EventBody::Failed {
            reason: reason.into(),
            message,
            summary,
        },
        None if state.closing || (summary.is_some() && state.pending_turns == 0) => match summary {
            Some(summary) if !summary.is_error => EventBody::Completed { summary },
            Some(summary) => EventBody::Failed {
                reason: failure::AGENT_ERROR.into(),
                message: summary
                    .result
                    .clone()
                    .unwrap_or_else(|| "the CLI reported an error".into()),
                summary: Some(summary),
            },
            None => EventBody::Failed {
                reason: failure::AGENT_EXITED.into(),
                message: format!("the CLI ended ({status}) without a result"),
                summary: None,
            },
        },
        None => {
            // Died mid-session: restart it, resuming the same CLI session.
            state.last_summary = summary;
            let tail: Vec<&str> = state.stderr_tail.iter().map(String::as_str).collect();
            let reason = if tail.is_empty() {
                format!("the CLI ended ({status}) without a result")
            } else {
                format!(
                    "the CLI ended ({status}) without a result; stderr: {}",
                    tail.join(" | ")
                )
            };
            state.restart_reasons.push(reason.clone());
            for request_id in state.approvals.keys().cloned().collect::<Vec<_>>() {
                state.approvals.remove(&request_id);
                append(
                    state,
                    EventBody::ApprovalResolved {
                        request_id,
                        allowed: false,
                        by: "restart".into(),
                        reason: Some("the agent restarted".into()),
                    },
                    None,
                )
                .await?;
            }
            if state.restarts >= state.settings.max_restarts {
                let reasons = state
                    .restart_reasons
                    .iter()
                    .enumerate()
                    .map(|(i, r)| format!("{}: {r}", i + 1))
                    .collect::<Vec<_>>()
                    .join("; ");
                return fail(
                    state,
                    failure::AGENT_CRASHED,
                    format!(
                        "the CLI died {} times without a result ({reasons})",
                        state.restart_reasons.len()
                    ),
                )
                .await;
            }
            state.restarts += 1;
            let delay = backoff(
                state.settings.restart_backoff,
                state.settings.max_restart_backoff,
                state.restarts - 1,
            );
            append(
                state,
                EventBody::Restarting {
                    restart: state.restarts,
                    reason,
                    delay_ms: delay.as_millis() as u64,
                },
                None,
            )
            .await?;
            state.tasks.push(tokio::spawn(send_later(
                myself.clone(),
                delay,
                SessionMsg::Relaunch,
            )));
            return Ok(Flow::Continue);
        }
    };
    end_job(state, outcome).await
}
#[cfg(test)]
mod tests {
    use super::resolve_workdir;

    #[test]
    fn workdir_stays_inside_the_project() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("sub")).expect("mkdir");
        let canonical = root.path().canonicalize().expect("canonical");
        assert_eq!(resolve_workdir(root.path(), None), Ok(canonical.clone()));
        assert_eq!(
            resolve_workdir(root.path(), Some("sub")),
            Ok(canonical.join("sub"))
        );
        for bad in ["../x", "/etc", "sub/../../x"] {
            assert!(resolve_workdir(root.path(), Some(bad)).is_err(), "{bad}");
        }
        std::os::unix::fs::symlink("/", root.path().join("escape")).expect("symlink");
        assert!(resolve_workdir(root.path(), Some("escape")).is_err());
    }
}
