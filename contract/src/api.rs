//! The gateway's public API: REST bodies and WebSocket messages. The CLI, the web
//! client and tests speak exactly these types.

use crate::event::JobEvent;
use crate::job::{JobId, JobOptions, JobStatus};
use serde::{Deserialize, Serialize};

/// `POST /v1/jobs`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SubmitJob {
    pub project: String,
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub prompt: String,
    #[serde(default)]
    pub options: JobOptions,
    /// A client-chosen id makes a retried submission idempotent.
    #[serde(default)]
    pub job_id: Option<JobId>,
}

/// Answer to `POST /v1/jobs` (202).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobAccepted {
    pub job_id: JobId,
    pub status: JobStatus,
}

/// A job as the ledger knows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobView {
    pub id: JobId,
    pub project: String,
    pub prompt: String,
    pub status: JobStatus,
    pub node: Option<String>,
    pub attempts: u32,
    pub submitted_by: String,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub exit_reason: Option<String>,
    pub exit_message: Option<String>,
    pub session_id: Option<String>,
    pub num_turns: Option<u32>,
    pub cost_usd: Option<f64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub last_seq: u64,
    /// The live session's state while the job runs: running, waiting_approval, idle.
    #[serde(default)]
    pub session_state: Option<String>,
    /// Why earlier attempts and restarts ended, in order.
    #[serde(default)]
    pub attempt_reasons: Vec<String>,
}

/// `POST /v1/jobs/{id}/messages`: a follow-up into the job's session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SendMessage {
    #[cfg_attr(feature = "openapi", schema(min_length = 1))]
    pub text: String,
}

/// Answer to a follow-up: the job that carries it (the same job while its session
/// lives, or a new job resuming the session on its node once it has ended).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MessageAccepted {
    pub job_id: JobId,
    pub resumed: bool,
}

/// `POST /v1/jobs/{id}/approvals/{request_id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApprovalDecision {
    pub allow: bool,
    #[serde(default)]
    pub reason: Option<String>,
}

/// `GET /v1/jobs`: one page, newest first; `next_before` pages on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobPage {
    pub jobs: Vec<JobView>,
    pub next_before: Option<JobId>,
}

/// `GET /v1/jobs/{id}/events`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventPage {
    pub events: Vec<JobEvent>,
}

/// Every error the API returns.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// Stable, machine-readable: `bad_request`, `unauthorized`, `not_found`, …
    pub code: String,
    /// For a person.
    pub message: String,
}

/// What a client sends on the WebSocket (`GET /v1/ws`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// Send every event of `job_id` with a sequence above `after_seq` (0: from the
    /// start), then live ones.
    Subscribe {
        job_id: JobId,
        #[serde(default)]
        after_seq: u64,
    },
    Unsubscribe {
        job_id: JobId,
    },
    /// A follow-up into the job's session (as `POST /v1/jobs/{id}/messages`).
    Message {
        job_id: JobId,
        text: String,
    },
    /// An answer to an approval request.
    Approve {
        job_id: JobId,
        request_id: String,
        allow: bool,
        #[serde(default)]
        reason: Option<String>,
    },
    /// Interrupt the job's current turn.
    Interrupt {
        job_id: JobId,
    },
    /// A fresh access token for this socket (from `POST /v1/auth/refresh`), sent
    /// before the one it was opened with expires. It must belong to the same user
    /// and carry the socket's scope; the gateway answers `authenticated`, or an
    /// `error` and keeps the old token.
    Authenticate {
        token: String,
    },
}

/// What the gateway sends on the WebSocket. Messages are built and serialised at once,
/// so the size difference between variants costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Subscribed {
        job_id: JobId,
        after_seq: u64,
    },
    Event {
        event: JobEvent,
    },
    Unsubscribed {
        job_id: JobId,
    },
    Error {
        code: String,
        message: String,
    },
    /// The socket's access token expires in `expires_in_secs`; send `authenticate`
    /// with a fresh one before then, or the socket is closed (code 4001).
    TokenExpiring {
        expires_in_secs: u64,
    },
    /// An `authenticate` was accepted; the socket now lives until the new token
    /// expires (`None`: a service token, which does not).
    Authenticated {
        expires_in_secs: Option<u64>,
    },
}
