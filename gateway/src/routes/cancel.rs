//! `POST /v1/jobs/{id}/cancel`. A job that has ended cannot be cancelled (409
//! `already_ended`). Otherwise the gateway asks the node that runs the job, by NATS
//! request on the job's control subject; a node that takes the request answers
//! `accepted` and records `job.cancelled` itself once the CLI has stopped (202,
//! status `running`). When no node answers (the job is still queued, or its node died
//! and JetStream will deliver it again), the gateway records `job.cancelled` in the
//! job's event log (202, status `cancelled`); the node that claims the job later sees
//! the terminal event and drops it.
//!
//! The event log's appends are conditional on its last entry. If a node started the
//! job between the control request and the append, the append lands after the node's
//! events (the writer re-reads and carries on), so the log still ends with the
//! cancellation, and the node's next append fails because the job has ended. The
//! gateway then sends the control request once more so the node stops at once.

use crate::access::visible_job;
use crate::auth::Caller;
use crate::control::{self, ControlOutcome};
use crate::error::ApiError;
use crate::extract::JobIdPath;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use paddock_contract::api::{ErrorBody, JobAccepted};
use paddock_contract::control::ControlRequest;
use paddock_contract::{EventBody, JobId, JobStatus};

/// Cancels the job: the node running it stops it, or, when none does, the gateway
/// records the cancellation.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/cancel",
    tag = "jobs",
    params(("id" = JobId, Path, description = "The job's id")),
    security(("access_token" = ["jobs:submit"]), ("api_token" = ["jobs:submit"])),
    responses(
        (status = 202, description = "Cancelling: `running` while its node stops it, `cancelled` when recorded here", body = JobAccepted),
        (status = 404, description = "`not_found`: no such job, or another user's", body = ErrorBody),
        (status = 409, description = "`already_ended`: the job has ended", body = ErrorBody),
    )
)]
pub async fn cancel_job(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
) -> Result<(StatusCode, Json<JobAccepted>), ApiError> {
    let job = visible_job(&state, &caller, id).await?;
    if job.status.is_terminal() {
        return Err(ended(id, job.status.as_str()));
    }
    let by = caller.user.clone();
    let accepted = |status| {
        Ok((
            StatusCode::ACCEPTED,
            Json(JobAccepted { job_id: id, status }),
        ))
    };

    match request_cancel(&state, id, &by).await? {
        ControlOutcome::Accepted => return accepted(JobStatus::Running),
        ControlOutcome::Refused(reason) => return Err(ended(id, &reason)),
        ControlOutcome::NoResponder => {}
    }

    // No node runs the job: record the cancellation in its log.
    let writer_id = format!("gateway-{}", uuid::Uuid::new_v4());
    let mut writer = state.events().writer(id, writer_id).await?;
    let (seen_seq, attempt) = match writer.last_event() {
        Some(last) if last.is_terminal() => return Err(ended(id, last.kind())),
        Some(last) => (last.seq, last.attempt),
        None => (0, 0),
    };
    let body = EventBody::Cancelled {
        by: by.clone(),
        summary: None,
    };
    let event = writer.append(None, attempt, body, None).await?;
    if event.seq != seen_seq + 1 {
        // Another writer appended in between: a node may have started the job.
        match request_cancel(&state, id, &by).await {
            Ok(outcome) => {
                tracing::info!(job = %id, ?outcome, "cancel raced with a node; told it again")
            }
            Err(e) => {
                tracing::warn!(job = %id, error = %e, "cancel raced with a node that did not answer")
            }
        }
    }
    tracing::info!(job = %id, user = %by, seq = event.seq, "queued job cancelled");
    accepted(JobStatus::Cancelled)
}

fn ended(id: JobId, how: &str) -> ApiError {
    ApiError::AlreadyEnded(format!("job {id} has already ended ({how})"))
}

/// Sends `Cancel` to whichever node serves the job's control subject.
async fn request_cancel(state: &AppState, id: JobId, by: &str) -> Result<ControlOutcome, ApiError> {
    control::send(state, id, &ControlRequest::Cancel { by: by.to_string() }).await
}
