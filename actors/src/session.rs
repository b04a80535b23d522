//! `ClaudeSession`: the actor that runs one job. It records the job's start, starts the
//! CLI in the project's directory, turns every output line into events (published in
//! order, each before the next line is handled), keeps the job's queue claim alive, and
//! ends the job in exactly one recorded state: completed, failed with a reason, or
//! cancelled. Only then is the job message acknowledged; when the node hands a job back
//! (graceful stop) the message is given back to the queue instead.
//!
//! Long work runs in tasks the actor owns (reading the CLI's output, progress acks,
//! relaying control requests), so a cancel reaches the actor while a turn runs.

use crate::agent::{self, AgentLaunch, AgentRun};
use crate::ports::{ControlEnvelope, JobEvents, JobMessage, JobPorts, PortError};
use crate::stream_json::{self, parse_line};
use futures::StreamExt;
use nix::sys::signal::Signal;
use paddock_contract::control::{ControlReply, ControlRequest};
use paddock_contract::event::failure;
use paddock_contract::{EventBody, JobSpec, RunSummary};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use std::collections::{BTreeMap, VecDeque};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
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
}

/// What a session is started with.
pub struct SessionArgs {
    pub spec: JobSpec,
    pub message: Arc<dyn JobMessage>,
    pub ports: Arc<dyn JobPorts>,
    pub settings: Arc<SessionSettings>,
}

/// Messages of a session.
pub enum SessionMsg {
    /// A line the CLI wrote on stdout.
    Line(String),
    /// A stdout line longer than the limit was dropped.
    LineTooLong,
    /// A line the CLI wrote on stderr.
    Stderr(String),
    /// The CLI exited.
    Exited(String),
    Control(ControlEnvelope),
    /// The grace period after SIGTERM ran out.
    KillNow,
    /// The wall-clock limit ran out.
    TimedOut,
    /// The node is stopping: stop the CLI and give the job back to the queue.
    HandBack,
}

enum Ending {
    Cancelled(String),
    TimedOut,
    HandedBack,
}

pub struct SessionState {
    spec: JobSpec,
    settings: Arc<SessionSettings>,
    ports: Arc<dyn JobPorts>,
    attempt: u32,
    message: Arc<dyn JobMessage>,
    events: Box<dyn JobEvents>,
    stdin: Option<ChildStdin>,
    pid: Option<u32>,
    summary: Option<RunSummary>,
    ending: Option<Ending>,
    stderr_tail: VecDeque<String>,
    stderr_seen: usize,
    tasks: Vec<JoinHandle<()>>,
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
        _myself: ActorRef<Self::Msg>,
        args: SessionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let events = args.ports.open_events(args.spec.id).await?;
        Ok(SessionState {
            attempt: args.message.delivered(),
            spec: args.spec,
            settings: args.settings,
            ports: args.ports,
            message: args.message,
            events,
            stdin: None,
            pid: None,
            summary: None,
            ending: None,
            stderr_tail: VecDeque::new(),
            stderr_seen: 0,
            tasks: Vec::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match begin(&myself, state).await {
            Ok(Begun::Running) => Ok(()),
            Ok(Begun::Done) => {
                myself.stop(None);
                Ok(())
            }
            Err(PortError::JobEnded(kind)) => {
                tracing::info!(job = %state.spec.id, kind, "job ended elsewhere; dropping it");
                state.message.ack().await?;
                myself.stop(None);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let outcome = match message {
            SessionMsg::Line(line) => on_line(state, line).await,
            SessionMsg::LineTooLong => {
                let limit = state.settings.max_line_bytes;
                append(
                    state,
                    EventBody::CliGarbage {
                        error: format!("an output line longer than {limit} bytes was dropped"),
                    },
                    None,
                )
                .await
            }
            SessionMsg::Stderr(line) => on_stderr(state, line).await,
            SessionMsg::Exited(status) => {
                finish(state, &status).await?;
                myself.stop(None);
                Ok(())
            }
            SessionMsg::Control(envelope) => {
                on_control(&myself, state, envelope);
                Ok(())
            }
            SessionMsg::KillNow => {
                if let Some(pid) = state.pid {
                    agent::signal_group(pid, Signal::SIGKILL);
                }
                Ok(())
            }
            SessionMsg::TimedOut => {
                stop_agent(&myself, state, Ending::TimedOut);
                Ok(())
            }
            SessionMsg::HandBack => {
                stop_agent(&myself, state, Ending::HandedBack);
                Ok(())
            }
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(PortError::JobEnded(kind)) => {
                tracing::warn!(job = %state.spec.id, kind, "job ended by another writer; stopping the agent");
                state.message.ack().await?;
                myself.stop(None);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}

enum Begun {
    Running,
    Done,
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

/// Records a terminal event and removes the job from the queue.
async fn end_job(state: &mut SessionState, body: EventBody) -> Result<(), PortError> {
    append(state, body, None).await?;
    state.message.ack().await
}

async fn fail(state: &mut SessionState, reason: &str, message: String) -> Result<(), PortError> {
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

async fn begin(
    myself: &ActorRef<SessionMsg>,
    state: &mut SessionState,
) -> Result<Begun, PortError> {
    let job = state.spec.id;
    if let Some(last) = state.events.last_event()
        && last.is_terminal()
    {
        tracing::info!(%job, kind = last.kind(), "claimed a job that has already ended");
        state.message.ack().await?;
        return Ok(Begun::Done);
    }
    let settings = state.settings.clone();
    if state.attempt > settings.max_attempts {
        fail(
            state,
            failure::TOO_MANY_ATTEMPTS,
            format!(
                "delivered {} times; the limit is {}",
                state.attempt, settings.max_attempts
            ),
        )
        .await?;
        return Ok(Begun::Done);
    }
    if let Some(last) = state.events.last_event()
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
        fail(
            state,
            failure::UNKNOWN_PROJECT,
            format!(
                "project {project:?} is not configured on node {}",
                settings.node
            ),
        )
        .await?;
        return Ok(Begun::Done);
    };
    let workdir = match resolve_workdir(&project.path, state.spec.options.subdir.as_deref()) {
        Ok(dir) => dir,
        Err(message) => {
            fail(state, failure::BAD_JOB, message).await?;
            return Ok(Begun::Done);
        }
    };

    // Control requests are taken before the start is announced, so a client that sees
    // `job.started` can cancel.
    let mut control = state.ports.open_control(job).await?;
    let relay = myself.clone();
    state.tasks.push(tokio::spawn(async move {
        while let Some(envelope) = control.recv().await {
            if relay.cast(SessionMsg::Control(envelope)).is_err() {
                break;
            }
        }
    }));

    append(
        state,
        EventBody::Started {
            node: settings.node.clone(),
            attempt: state.attempt,
        },
        None,
    )
    .await?;

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

    let run = AgentRun {
        workdir,
        options: state.spec.options.clone(),
        project_tools: project.allowed_tools.clone(),
        resume: None,
    };
    let started = match agent::start_agent(&settings.launch, &run) {
        Ok(started) => started,
        Err(e) => {
            let program = settings.launch.program.display().to_string();
            fail(
                state,
                failure::SPAWN_FAILED,
                format!("cannot start {program}: {e}"),
            )
            .await?;
            return Ok(Begun::Done);
        }
    };
    let agent::StartedAgent {
        mut child,
        mut stdin,
        stdout,
        stderr,
        pid,
    } = started;
    state.pid = Some(pid);
    tracing::info!(%job, pid, attempt = state.attempt, "agent started");

    let max_line = settings.max_line_bytes;
    let out = myself.clone();
    let stdout_task = tokio::spawn(async move {
        let mut lines = FramedRead::new(stdout, LinesCodec::new_with_max_length(max_line));
        while let Some(line) = lines.next().await {
            let message = match line {
                Ok(line) => SessionMsg::Line(line),
                Err(LinesCodecError::MaxLineLengthExceeded) => SessionMsg::LineTooLong,
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
            if err.cast(SessionMsg::Stderr(line)).is_err() {
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
        let _ = exit.cast(SessionMsg::Exited(status));
    }));

    if let Some(limit) = settings.max_duration {
        state.tasks.push(tokio::spawn(send_later(
            myself.clone(),
            limit,
            SessionMsg::TimedOut,
        )));
    }

    let turn = agent::user_turn(&state.spec.prompt);
    if let Err(e) = stdin.write_all(turn.as_bytes()).await {
        tracing::warn!(%job, error = %e, "could not write the prompt to the agent");
    }
    state.stdin = Some(stdin);
    Ok(Begun::Running)
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

async fn on_line(state: &mut SessionState, line: String) -> Result<(), PortError> {
    let parsed = parse_line(&line);
    let mut raw = Some(line);
    for event in parsed.events {
        // The raw line rides on the first event made from it.
        append(state, event, raw.take()).await?;
    }
    if let Some(summary) = parsed.result {
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
        state.summary = Some(summary);
        // One prompt per job: closing stdin after the result lets the CLI exit 0.
        state.stdin = None;
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

fn on_control(myself: &ActorRef<SessionMsg>, state: &mut SessionState, envelope: ControlEnvelope) {
    let reply = match envelope.request {
        ControlRequest::Cancel { by } => {
            if state.ending.is_some() {
                ControlReply::Accepted
            } else {
                tracing::info!(job = %state.spec.id, %by, "cancel requested");
                stop_agent(myself, state, Ending::Cancelled(by));
                ControlReply::Accepted
            }
        }
    };
    let _ = envelope.reply.send(reply);
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
            SessionMsg::KillNow,
        )));
    }
}

/// The CLI has exited: record how the job ended and settle its queue message.
async fn finish(state: &mut SessionState, status: &str) -> Result<(), PortError> {
    state.pid = None;
    let summary = state.summary.take();
    let outcome = match state.ending.take() {
        Some(Ending::HandedBack) => {
            tracing::info!(job = %state.spec.id, "handing the job back to the queue");
            return state.message.nak().await;
        }
        Some(Ending::Cancelled(by)) => EventBody::Cancelled { by, summary },
        Some(Ending::TimedOut) => EventBody::Failed {
            reason: failure::TIMEOUT.into(),
            message: format!(
                "the job ran longer than its limit of {:?}",
                state.settings.max_duration.unwrap_or_default()
            ),
            summary,
        },
        None => match summary {
            Some(summary) if !summary.is_error => EventBody::Completed { summary },
            Some(summary) => EventBody::Failed {
                reason: failure::AGENT_ERROR.into(),
                message: summary
                    .result
                    .clone()
                    .unwrap_or_else(|| "the CLI reported an error".into()),
                summary: Some(summary),
            },
            None => {
                let tail: Vec<&str> = state.stderr_tail.iter().map(String::as_str).collect();
                EventBody::Failed {
                    reason: failure::AGENT_EXITED.into(),
                    message: if tail.is_empty() {
                        format!("the CLI ended ({status}) without a result")
                    } else {
                        format!(
                            "the CLI ended ({status}) without a result; stderr: {}",
                            tail.join(" | ")
                        )
                    },
                    summary: None,
                }
            }
        },
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
