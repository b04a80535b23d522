//! Steering a live session: follow-ups, tool approvals and interrupts, over REST here
//! and over the WebSocket (`ws.rs` calls the same functions).
//!
//! | route | what |
//! | --- | --- |
//! | `POST /v1/jobs/{id}/messages` `{text}` | a follow-up: to the running CLI, or, once the session has ended, a new job that resumes it with `--resume` on the node that holds its transcript (409 `node_gone` when that node is not connected) |
//! | `POST /v1/jobs/{id}/approvals/{request_id}` `{allow, reason}` | answers an `approval.requested` event |
//! | `POST /v1/jobs/{id}/interrupt` | stops the current turn; the session goes on |

use crate::access::visible_job;
use crate::auth::{Caller, Scope};
use crate::control::{self, ControlOutcome};
use crate::error::ApiError;
use crate::extract::{ApiJson, JobIdPath};
use crate::routes::submit::{publish, record_queued};
use crate::state::AppState;
use crate::validate::check_prompt;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use paddock_contract::api::{
    ApprovalDecision, ErrorBody, JobAccepted, JobView, MessageAccepted, SendMessage,
};
use paddock_contract::control::ControlRequest;
use paddock_contract::{
    CONTRACT_VERSION, EventBody, JobId, JobSpec, JobStatus, ResumeFrom, now_unix_ms,
};

/// A follow-up into the job's session: to the running CLI, or, once the session has
/// ended, a new job that resumes it on the node holding its transcript.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/messages",
    tag = "sessions",
    params(("id" = JobId, Path, description = "The job's id")),
    request_body = SendMessage,
    security(("access_token" = ["jobs:submit"]), ("api_token" = ["jobs:submit"])),
    responses(
        (status = 202, description = "Sent: into the live session (`resumed: false`) or as a new job (`resumed: true`)", body = MessageAccepted),
        (status = 404, description = "`not_found`: no such job, or another user's", body = ErrorBody),
        (status = 409, description = "`conflict`: the job has not started, is ending or never had a session; `node_gone`: the node holding the session is not connected", body = ErrorBody),
    )
)]
pub async fn post_message(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
    ApiJson(body): ApiJson<SendMessage>,
) -> Result<(StatusCode, Json<MessageAccepted>), ApiError> {
    let accepted = send_message(&state, &caller, id, body.text).await?;
    Ok((StatusCode::ACCEPTED, Json(accepted)))
}

/// Answers an `approval.requested` event of the job.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/approvals/{request_id}",
    tag = "sessions",
    params(
        ("id" = JobId, Path, description = "The job's id"),
        ("request_id" = String, Path, description = "The `request_id` of the `approval.requested` event"),
    ),
    request_body = ApprovalDecision,
    security(("access_token" = ["tools:approve"]), ("api_token" = ["tools:approve"])),
    responses(
        (status = 202, description = "The decision reached the job's node", body = JobAccepted),
        (status = 404, description = "`not_found`: no such job, or another user's", body = ErrorBody),
        (status = 409, description = "`already_ended`: the job has ended; `conflict`: no node runs it or the node refused the answer", body = ErrorBody),
    )
)]
pub async fn post_approval(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, request_id)): Path<(String, String)>,
    ApiJson(body): ApiJson<ApprovalDecision>,
) -> Result<(StatusCode, Json<JobAccepted>), ApiError> {
    let id: JobId = id
        .parse()
        .map_err(|_| ApiError::BadRequest(format!("{id:?} is not a job id")))?;
    decide(&state, &caller, id, request_id, body.allow, body.reason).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(JobAccepted {
            job_id: id,
            status: JobStatus::Running,
        }),
    ))
}

/// Interrupts the job's current turn; the session goes on.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/interrupt",
    tag = "sessions",
    params(("id" = JobId, Path, description = "The job's id")),
    security(("access_token" = ["jobs:submit"]), ("api_token" = ["jobs:submit"])),
    responses(
        (status = 202, description = "The interrupt reached the job's node", body = JobAccepted),
        (status = 404, description = "`not_found`: no such job, or another user's", body = ErrorBody),
        (status = 409, description = "`already_ended`: the job has ended; `conflict`: no node runs it or the node refused", body = ErrorBody),
    )
)]
pub async fn post_interrupt(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
) -> Result<(StatusCode, Json<JobAccepted>), ApiError> {
    interrupt(&state, &caller, id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(JobAccepted {
            job_id: id,
            status: JobStatus::Running,
        }),
    ))
}

/// A follow-up into the job's session.
pub async fn send_message(
    state: &AppState,
    caller: &Caller,
    id: JobId,
    text: String,
) -> Result<MessageAccepted, ApiError> {
    // The WebSocket reaches this with a `jobs:read` socket: check the scope here too.
    caller.require(Scope::JobsSubmit)?;
    check_prompt(&text, state.config().max_prompt_bytes)?;
    let job = visible_job(state, caller, id).await?;
    if !job.status.is_terminal() {
        let request = ControlRequest::Message {
            text: text.clone(),
            by: caller.user.clone(),
        };
        match control::send(state, id, &request).await? {
            ControlOutcome::Accepted => {
                return Ok(MessageAccepted {
                    job_id: id,
                    resumed: false,
                });
            }
            // The session is ending: resume it below once the job has ended.
            ControlOutcome::Refused(reason) => {
                return Err(ApiError::Conflict(format!(
                    "job {id} is ending ({reason}); send the message again in a moment to resume its session"
                )));
            }
            ControlOutcome::NoResponder if job.status == JobStatus::Queued => {
                return Err(ApiError::Conflict(format!(
                    "job {id} has not started yet; send follow-ups once it runs"
                )));
            }
            ControlOutcome::NoResponder => {
                return Err(ApiError::NodeGone(format!(
                    "no node answers for job {id}: its node may have died; it will be retried"
                )));
            }
        }
    }
    resume(state, caller, &job, text).await
}

/// Starts a new job that continues the ended job's session on the node that holds it.
async fn resume(
    state: &AppState,
    caller: &Caller,
    job: &JobView,
    text: String,
) -> Result<MessageAccepted, ApiError> {
    let (Some(session_id), Some(node)) = (job.session_id.clone(), job.node.clone()) else {
        return Err(ApiError::Conflict(format!(
            "job {} never started a session, so there is none to resume",
            job.id
        )));
    };
    if !control::node_answers(state, &node).await {
        return Err(ApiError::NodeGone(format!(
            "node {node}, which holds session {session_id} of job {}, is not connected; the session can only resume there",
            job.id
        )));
    }
    let first = state.events().read_all(job.id).await?;
    let options = first
        .first()
        .and_then(|event| match &event.body {
            EventBody::Queued { options, .. } => Some(options.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let pool = state
        .config()
        .projects
        .iter()
        .find(|p| p.name == job.project)
        .map(|p| p.pool.clone())
        .unwrap_or_else(|| "default".into());
    let limits = crate::quotas::admit(state, &caller.user).await?;
    let spec = JobSpec {
        version: CONTRACT_VERSION,
        id: JobId::new(),
        project: job.project.clone(),
        prompt: text,
        options,
        pool,
        submitted_by: caller.user.clone(),
        submitted_at_ms: now_unix_ms(),
        resume: Some(ResumeFrom {
            job: job.id,
            session_id,
            node,
        }),
        limits,
    };
    state.ledger().record_submission(&spec).await?;
    record_queued(state, &spec).await?;
    publish(state, &spec).await?;
    tracing::info!(job = %spec.id, resumes = %job.id, user = %caller.user, "session resumed in a new job");
    Ok(MessageAccepted {
        job_id: spec.id,
        resumed: true,
    })
}

/// Answers an approval request of the job.
pub async fn decide(
    state: &AppState,
    caller: &Caller,
    id: JobId,
    request_id: String,
    allow: bool,
    reason: Option<String>,
) -> Result<(), ApiError> {
    caller.require(Scope::ToolsApprove)?;
    let job = visible_job(state, caller, id).await?;
    if job.status.is_terminal() {
        return Err(ApiError::AlreadyEnded(format!(
            "job {id} has already ended"
        )));
    }
    let request = ControlRequest::Approve {
        request_id,
        allow,
        reason,
        by: caller.user.clone(),
    };
    expect_accepted(control::send(state, id, &request).await?, id)
}

/// Interrupts the job's current turn.
pub async fn interrupt(state: &AppState, caller: &Caller, id: JobId) -> Result<(), ApiError> {
    caller.require(Scope::JobsSubmit)?;
    let job = visible_job(state, caller, id).await?;
    if job.status.is_terminal() {
        return Err(ApiError::AlreadyEnded(format!(
            "job {id} has already ended"
        )));
    }
    let request = ControlRequest::Interrupt {
        by: caller.user.clone(),
    };
    expect_accepted(control::send(state, id, &request).await?, id)
}

fn expect_accepted(outcome: ControlOutcome, id: JobId) -> Result<(), ApiError> {
    match outcome {
        ControlOutcome::Accepted => Ok(()),
        ControlOutcome::Refused(reason) => Err(ApiError::Conflict(reason)),
        ControlOutcome::NoResponder => Err(ApiError::Conflict(format!(
            "no node runs job {id} right now"
        ))),
    }
}
