//! Job events: the one record of what happened to a job. Each job's events form a
//! log on its own subject with a contiguous per-job sequence starting at 1; a client
//! that saw sequence `k` resumes with everything after `k`, exactly once, in order.

use crate::job::{JobId, JobStatus};
use serde::{Deserialize, Serialize};

/// One event of one job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobEvent {
    pub version: u32,
    pub job_id: JobId,
    /// Per-job sequence number: 1 for `job.queued`, then +1 for each event.
    pub seq: u64,
    pub at_ms: i64,
    /// The node that published the event, if a node did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Delivery attempt of the job the event belongs to (0 before any node took it).
    #[serde(default)]
    pub attempt: u32,
    #[serde(flatten)]
    pub body: EventBody,
    /// The CLI's output line this event was made from, verbatim, when it came from one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<String>,
}

impl JobEvent {
    /// The status the job has once this event is applied, if the event changes it.
    pub fn status_after(&self) -> Option<JobStatus> {
        match &self.body {
            EventBody::Queued { .. } | EventBody::Waiting { .. } => Some(JobStatus::Queued),
            EventBody::Started { .. } | EventBody::Retrying { .. } => Some(JobStatus::Running),
            EventBody::Completed { .. } => Some(JobStatus::Completed),
            EventBody::Failed { .. } => Some(JobStatus::Failed),
            EventBody::Cancelled { .. } => Some(JobStatus::Cancelled),
            _ => None,
        }
    }

    pub fn is_terminal(&self) -> bool {
        self.status_after().is_some_and(JobStatus::is_terminal)
    }

    /// The dotted name of the event's kind, as on the wire (`job.started`, …).
    pub fn kind(&self) -> &'static str {
        self.body.kind()
    }
}

/// What happened. Serialised with a `kind` tag beside the envelope fields.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind")]
pub enum EventBody {
    #[serde(rename = "job.queued")]
    Queued {
        project: String,
        prompt: String,
        pool: String,
        submitted_by: String,
        /// The job whose session this one resumes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resumes: Option<JobId>,
        /// The job's options, so a follow-up that resumes the session keeps them.
        #[serde(default)]
        options: crate::job::JobOptions,
    },
    /// The job is queued but no node can take it now (no live node carries the labels
    /// it requires, or those that do take no work); it runs once one can. Follows
    /// `job.queued`; the job stays queued.
    #[serde(rename = "job.waiting")]
    Waiting { reason: String },
    /// The body's fields repeat the envelope's `node` and `attempt` under their own
    /// names: the body is flattened into the envelope, so the same key twice would make
    /// the event unreadable.
    #[serde(rename = "job.started")]
    Started {
        #[serde(rename = "started_on")]
        node: String,
        #[serde(rename = "started_attempt")]
        attempt: u32,
    },
    /// A new delivery of a job whose earlier attempt ended without a result.
    #[serde(rename = "job.retrying")]
    Retrying {
        #[serde(rename = "retry_attempt")]
        attempt: u32,
        reason: String,
    },
    /// The agent process died without a result and is started again with `--resume`.
    #[serde(rename = "job.restarting")]
    Restarting {
        restart: u32,
        reason: String,
        delay_ms: u64,
    },
    /// Where the live session stands.
    #[serde(rename = "session.state")]
    SessionState { state: SessionStateKind },
    /// A person's message into the session (a follow-up).
    #[serde(rename = "user.message")]
    UserMessage { text: String, by: String },
    /// A turn ended and the session stays open for follow-ups.
    #[serde(rename = "turn.completed")]
    TurnCompleted { summary: RunSummary },
    /// The model API failed the turn; it is sent again after a delay.
    #[serde(rename = "turn.retrying")]
    TurnRetrying {
        retry: u32,
        reason: String,
        delay_ms: u64,
    },
    /// The current turn was interrupted; the session goes on.
    #[serde(rename = "turn.interrupted")]
    Interrupted { by: String },
    /// The agent asks whether it may use a tool.
    #[serde(rename = "approval.requested")]
    ApprovalRequested {
        request_id: String,
        tool_name: String,
        input: serde_json::Value,
        /// When the request is denied if nobody answers (unix ms).
        deadline_ms: i64,
    },
    #[serde(rename = "approval.resolved")]
    ApprovalResolved {
        request_id: String,
        allowed: bool,
        /// Who decided: a user name, or `timeout`.
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// What the sandbox stopped: a refused network request (`egress_refused`), a
    /// process or memory limit hit (`limit_hit`), a protected path the agent created
    /// and that was moved aside (`quarantined`).
    #[serde(rename = "sandbox.notice")]
    SandboxNotice { notice: String, detail: String },
    #[serde(rename = "session.init")]
    SessionInit {
        session_id: String,
        #[serde(default)]
        model: Option<String>,
        #[serde(default)]
        cwd: Option<String>,
        #[serde(default)]
        tools: Vec<String>,
    },
    #[serde(rename = "assistant.text")]
    AssistantText { text: String },
    #[serde(rename = "tool.call")]
    ToolCall {
        tool_use_id: String,
        name: String,
        input: serde_json::Value,
    },
    #[serde(rename = "tool.result")]
    ToolResult {
        tool_use_id: String,
        is_error: bool,
        /// The result's text, cut to a bounded length.
        content: String,
    },
    /// The CLI refused a tool call (permission mode or allow list).
    #[serde(rename = "tool.denied")]
    ToolDenied {
        tool_name: String,
        tool_use_id: String,
    },
    /// A line of the CLI's output with no normalised form (other system lines, lines
    /// of kinds this version does not know). The raw line is on the envelope.
    #[serde(rename = "cli.output")]
    CliOutput {
        #[serde(default)]
        line_type: Option<String>,
    },
    /// Something the CLI wrote that was not JSON, or was JSON of no known shape.
    #[serde(rename = "cli.garbage")]
    CliGarbage { error: String },
    /// A line of the CLI's standard error.
    #[serde(rename = "cli.stderr")]
    CliStderr { line: String },
    #[serde(rename = "job.completed")]
    Completed { summary: RunSummary },
    #[serde(rename = "job.failed")]
    Failed {
        reason: String,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        summary: Option<RunSummary>,
    },
    #[serde(rename = "job.cancelled")]
    Cancelled {
        by: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        summary: Option<RunSummary>,
    },
}

impl EventBody {
    pub fn kind(&self) -> &'static str {
        match self {
            EventBody::Queued { .. } => "job.queued",
            EventBody::Waiting { .. } => "job.waiting",
            EventBody::Started { .. } => "job.started",
            EventBody::Restarting { .. } => "job.restarting",
            EventBody::SessionState { .. } => "session.state",
            EventBody::UserMessage { .. } => "user.message",
            EventBody::TurnCompleted { .. } => "turn.completed",
            EventBody::TurnRetrying { .. } => "turn.retrying",
            EventBody::Interrupted { .. } => "turn.interrupted",
            EventBody::ApprovalRequested { .. } => "approval.requested",
            EventBody::ApprovalResolved { .. } => "approval.resolved",
            EventBody::SandboxNotice { .. } => "sandbox.notice",
            EventBody::Retrying { .. } => "job.retrying",
            EventBody::SessionInit { .. } => "session.init",
            EventBody::AssistantText { .. } => "assistant.text",
            EventBody::ToolCall { .. } => "tool.call",
            EventBody::ToolResult { .. } => "tool.result",
            EventBody::ToolDenied { .. } => "tool.denied",
            EventBody::CliOutput { .. } => "cli.output",
            EventBody::CliGarbage { .. } => "cli.garbage",
            EventBody::CliStderr { .. } => "cli.stderr",
            EventBody::Completed { .. } => "job.completed",
            EventBody::Failed { .. } => "job.failed",
            EventBody::Cancelled { .. } => "job.cancelled",
        }
    }
}

/// The states of a live session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SessionStateKind {
    /// A turn is running.
    Running,
    /// A tool call waits for a person's decision.
    WaitingApproval,
    /// The turn is over; the session waits for a follow-up until its idle timeout.
    Idle,
}

impl SessionStateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStateKind::Running => "running",
            SessionStateKind::WaitingApproval => "waiting_approval",
            SessionStateKind::Idle => "idle",
        }
    }
}

/// What the CLI reported about a run in its `result` line.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default)]
pub struct RunSummary {
    pub session_id: Option<String>,
    pub num_turns: Option<u32>,
    pub duration_ms: Option<u64>,
    pub total_cost_usd: Option<f64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub is_error: bool,
    /// The CLI's `subtype`: `success`, `error_during_execution`, …
    pub subtype: Option<String>,
    /// The final text, cut to a bounded length.
    pub result: Option<String>,
}

/// Reasons a job fails, as stable strings in events, the ledger and metrics.
pub mod failure {
    /// The CLI exited with no `result` line or with a non-zero status.
    pub const AGENT_EXITED: &str = "agent_exited";
    /// The CLI's `result` reported an error.
    pub const AGENT_ERROR: &str = "agent_error";
    /// The CLI could not be started.
    pub const SPAWN_FAILED: &str = "spawn_failed";
    /// The job message could not be understood.
    pub const BAD_JOB: &str = "bad_job";
    /// The project is not configured on the node that claimed the job.
    pub const UNKNOWN_PROJECT: &str = "unknown_project";
    /// The job was delivered more times than the stream allows.
    pub const TOO_MANY_ATTEMPTS: &str = "too_many_attempts";
    /// The agent kept dying without a result, past the restart limit.
    pub const AGENT_CRASHED: &str = "agent_crashed";
    /// The job ran longer than its wall-clock limit.
    pub const TIMEOUT: &str = "timeout";
    /// The job's model cost passed what the submitter's daily budget had left.
    pub const COST_BUDGET: &str = "cost_budget";
    /// The CLI wrote more output than a job may.
    pub const OUTPUT_LIMIT: &str = "output_limit";
    /// The CLI stopped at the job's turn limit.
    pub const MAX_TURNS: &str = "max_turns";
    /// The node agent itself failed while running the job (an actor crashed).
    pub const NODE_ERROR: &str = "node_error";
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(body: EventBody) -> JobEvent {
        JobEvent {
            version: crate::CONTRACT_VERSION,
            job_id: JobId::new(),
            seq: 3,
            at_ms: 1,
            node: Some("n1".into()),
            attempt: 1,
            body,
            raw: None,
        }
    }

    #[test]
    fn events_serialise_with_a_kind_tag_beside_the_envelope() {
        let e = event(EventBody::AssistantText { text: "hi".into() });
        let json = serde_json::to_value(&e).expect("serialise");
        assert_eq!(json["kind"], "assistant.text");
        assert_eq!(json["seq"], 3);
        assert_eq!(json["text"], "hi");
        let back: JobEvent = serde_json::from_value(json).expect("parse");
        assert_eq!(back, e);
    }

    #[test]
    fn kind_matches_the_serialised_tag() {
        let bodies = [
            EventBody::Started {
                node: "n".into(),
                attempt: 1,
            },
            EventBody::Completed {
                summary: RunSummary::default(),
            },
            EventBody::CliGarbage { error: "x".into() },
        ];
        for body in bodies {
            let e = event(body);
            let json = serde_json::to_value(&e).expect("serialise");
            assert_eq!(json["kind"], e.kind());
        }
    }

    #[test]
    fn every_kind_of_event_reads_back_as_written() {
        let bodies = vec![
            EventBody::Queued {
                project: "p".into(),
                prompt: "x".into(),
                pool: "default".into(),
                submitted_by: "u".into(),
                resumes: Some(JobId::new()),
                options: Default::default(),
            },
            EventBody::Waiting {
                reason: "no live node has xcode=17".into(),
            },
            EventBody::Restarting {
                restart: 1,
                reason: "killed".into(),
                delay_ms: 5,
            },
            EventBody::SessionState {
                state: SessionStateKind::WaitingApproval,
            },
            EventBody::UserMessage {
                text: "more".into(),
                by: "u".into(),
            },
            EventBody::TurnCompleted {
                summary: RunSummary::default(),
            },
            EventBody::TurnRetrying {
                retry: 1,
                reason: "529".into(),
                delay_ms: 5,
            },
            EventBody::Interrupted { by: "u".into() },
            EventBody::SandboxNotice {
                notice: "egress_refused".into(),
                detail: "example.com:443".into(),
            },
            EventBody::ApprovalRequested {
                request_id: "r".into(),
                tool_name: "Bash".into(),
                input: serde_json::json!({}),
                deadline_ms: 9,
            },
            EventBody::ApprovalResolved {
                request_id: "r".into(),
                allowed: false,
                by: "timeout".into(),
                reason: Some("late".into()),
            },
            EventBody::Started {
                node: "n".into(),
                attempt: 2,
            },
            EventBody::Retrying {
                attempt: 2,
                reason: "lost".into(),
            },
            EventBody::SessionInit {
                session_id: "s".into(),
                model: None,
                cwd: None,
                tools: vec![],
            },
            EventBody::AssistantText { text: "t".into() },
            EventBody::ToolCall {
                tool_use_id: "t".into(),
                name: "Bash".into(),
                input: serde_json::json!({"command": "ls"}),
            },
            EventBody::ToolResult {
                tool_use_id: "t".into(),
                is_error: false,
                content: "c".into(),
            },
            EventBody::ToolDenied {
                tool_name: "Bash".into(),
                tool_use_id: "t".into(),
            },
            EventBody::CliOutput {
                line_type: Some("x".into()),
            },
            EventBody::CliGarbage { error: "e".into() },
            EventBody::CliStderr { line: "l".into() },
            EventBody::Completed {
                summary: RunSummary::default(),
            },
            EventBody::Failed {
                reason: "r".into(),
                message: "m".into(),
                summary: None,
            },
            EventBody::Cancelled {
                by: "u".into(),
                summary: None,
            },
        ];
        for body in bodies {
            let e = event(body);
            let bytes = serde_json::to_vec(&e).expect("serialise");
            let back: JobEvent = serde_json::from_slice(&bytes)
                .unwrap_or_else(|err| panic!("{} does not read back: {err}", e.kind()));
            assert_eq!(back, e);
        }
    }

    #[test]
    fn terminal_events_are_the_three_endings() {
        assert!(
            event(EventBody::Cancelled {
                by: "u".into(),
                summary: None
            })
            .is_terminal()
        );
        assert!(
            !event(EventBody::Retrying {
                attempt: 2,
                reason: "x".into()
            })
            .is_terminal()
        );
    }
}
