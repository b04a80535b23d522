//! `POST /v1/jobs`: submitting a job. Everything is checked before anything is
//! written; then, in this order, so that each step can be repeated safely by a client
//! that retries with the same `job_id`:
//!
//! 1. the ledger gets a `queued` row (only if absent);
//! 2. the job's event log gets its `job.queued` event, only if the log is empty (a
//!    publish conditional on the subject having no message yet), then `job.waiting`
//!    if no node can take it now;
//! 3. the job message is published with the job id as `Nats-Msg-Id` to its pool's
//!    subject, or to its label selector's for a job that requires labels (see
//!    [`crate::routing`]), and JetStream's acknowledgement is awaited;
//! 4. 202 with the job id.
//!
//! A new job that requires labels no live node carries is refused before step 1
//! (422 `no_matching_node`) unless `[routing] unmatched = "wait"`.
//!
//! A retry after step 3 succeeded publishes again only while the job is still queued
//! (JetStream drops the duplicate within the stream's duplicate window); once a node
//! has taken the job nothing is published. A `job_id` that exists with a different
//! project, prompt or submitter is a 409 `conflict`.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::routing::SubmitError;
use crate::state::AppState;
use crate::validate::check_submission;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use paddock_contract::api::{JobAccepted, JobView, SubmitJob};
use paddock_contract::{
    CONTRACT_VERSION, EventBody, JobEvent, JobId, JobSpec, JobStatus, now_unix_ms, subjects,
};

/// Writer id in the message id of the `job.queued` event (`{job}.1.gateway-submit`),
/// the same in every gateway so that retried publishes of it are deduplicated.
const QUEUED_WRITER: &str = "gateway-submit";
/// Writer id of the `job.waiting` event, for the same reason.
const ROUTING_WRITER: &str = "gateway-routing";

#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    request_body = SubmitJob,
    security(("access_token" = ["jobs:submit"]), ("api_token" = ["jobs:submit"])),
    responses(
        (status = 202, description = "Queued (or, for a retried `job_id`, where the job stands)", body = JobAccepted),
        (status = 400, description = "`unknown_project`: no such project; `bad_path`: `options.subdir` leaves the project", body = paddock_contract::api::ErrorBody),
        (status = 409, description = "`conflict`: `job_id` exists with another project, prompt or submitter", body = paddock_contract::api::ErrorBody),
        (status = 422, description = "`no_matching_node`: the job requires labels no live node carries (unless the gateway queues such jobs to wait)", body = paddock_contract::api::ErrorBody),
    )
)]
pub async fn submit_job(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(submit): ApiJson<SubmitJob>,
) -> Result<(StatusCode, Json<JobAccepted>), SubmitError> {
    let project = check_submission(&submit, state.config())?;
    let id = submit.job_id.unwrap_or_else(JobId::new);
    let existing = match submit.job_id {
        Some(id) => state.ledger().get(id).await?,
        None => None,
    };
    if let Some(job) = &existing {
        ensure_same_job(job, &submit, &caller)?;
    }
    let limits = match &existing {
        // A retried submission was admitted the first time.
        Some(_) => paddock_contract::JobLimits::default(),
        None => crate::quotas::admit(&state, &caller.user).await?,
    };
    let spec = JobSpec {
        version: CONTRACT_VERSION,
        id,
        project: project.name.clone(),
        prompt: submit.prompt.clone(),
        options: submit.options.clone(),
        pool: submit
            .options
            .requires
            .get(paddock_contract::job::POOL_LABEL)
            .unwrap_or(&project.pool)
            .clone(),
        submitted_by: caller.user.clone(),
        // A retry republishes the message the first attempt built.
        submitted_at_ms: existing
            .as_ref()
            .map_or_else(now_unix_ms, |job| job.created_at_ms),
        resume: None,
        limits,
    };
    // A retried submission was routed the first time.
    let waiting = match &existing {
        Some(_) => None,
        None => crate::routing::admit(&state, &spec).await?,
    };

    state.ledger().record_submission(&spec).await?;
    if existing.is_none() && submit.job_id.is_some() {
        // The row is written only if absent: read back what won, in case a concurrent
        // submission of the same id came first with other content.
        match state.ledger().get(id).await? {
            Some(job) => ensure_same_job(&job, &submit, &caller)?,
            None => {
                tracing::error!(job = %id, "the ledger lost a row it just recorded");
                return Err(ApiError::Internal.into());
            }
        }
    }

    let status = match record_queued(&state, &spec).await? {
        Some(last) => last.status_after().unwrap_or(JobStatus::Running),
        None => {
            if let Some(reason) = waiting {
                // Before the job is published, so that it comes before the job's start.
                tracing::info!(job = %id, %reason, "job queued to wait");
                let mut writer = state.events().writer(id, ROUTING_WRITER).await?;
                writer
                    .append(None, 0, EventBody::Waiting { reason }, None)
                    .await?;
            }
            JobStatus::Queued
        }
    };
    if status == JobStatus::Queued {
        publish(&state, &spec).await?;
    }
    state.metrics().job_submitted(&spec.project);
    tracing::info!(job = %id, project = %spec.project, pool = %spec.pool, user = %caller.user, "job submitted");
    Ok((
        StatusCode::ACCEPTED,
        Json(JobAccepted { job_id: id, status }),
    ))
}

/// Makes `job.queued` the first event of the job's log unless the log has one
/// already. Returns the log's last event when it was not empty.
///
/// The append is conditional on the subject being empty and is not retried on a
/// conflict: `JobEventWriter::append` would re-read and append a second `job.queued`
/// after one written by a concurrent submission of the same job.
pub(crate) async fn record_queued(
    state: &AppState,
    spec: &JobSpec,
) -> Result<Option<JobEvent>, ApiError> {
    if let Some((last, _)) = state.events().last(&spec.id).await? {
        return Ok(Some(last));
    }
    let event = JobEvent {
        version: CONTRACT_VERSION,
        job_id: spec.id,
        seq: 1,
        at_ms: now_unix_ms(),
        node: None,
        attempt: 0,
        body: EventBody::Queued {
            project: spec.project.clone(),
            prompt: spec.prompt.clone(),
            pool: spec.pool.clone(),
            submitted_by: spec.submitted_by.clone(),
            resumes: spec.resume.as_ref().map(|resume| resume.job),
            options: spec.options.clone(),
        },
        raw: None,
    };
    let payload = serde_json::to_vec(&event).map_err(|e| {
        tracing::error!(job = %spec.id, error = %e, "cannot serialise a queued event");
        ApiError::Internal
    })?;
    let message = PublishMessage::build()
        .headers(paddock_telemetry::propagation::headers())
        .payload(payload.into())
        .message_id(format!("{}.1.{QUEUED_WRITER}", spec.id))
        .expected_last_subject_sequence(0);
    let outcome = match state
        .jetstream()
        .send_publish(subjects::job_events(&spec.id), message)
        .await
    {
        Ok(ack) => ack.await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(_) => Ok(None),
        Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
            // A concurrent submission of the same job wrote first.
            Ok(state.events().last(&spec.id).await?.map(|(last, _)| last))
        }
        Err(e) => Err(ApiError::bus("recording a queued event failed", e)),
    }
}

/// A resubmission must be the same job: same project, prompt and submitter.
fn ensure_same_job(job: &JobView, submit: &SubmitJob, caller: &Caller) -> Result<(), ApiError> {
    if job.project == submit.project
        && job.prompt == submit.prompt
        && job.submitted_by == caller.user
    {
        Ok(())
    } else {
        Err(ApiError::Conflict(format!(
            "job {} already exists with a different project, prompt or submitter",
            job.id
        )))
    }
}

/// Publishes the job message and waits for JetStream to store it: to the pool or the
/// label selector it requires, or to the one node that holds the session a resuming
/// job continues.
pub(crate) async fn publish(state: &AppState, spec: &JobSpec) -> Result<(), ApiError> {
    let payload = serde_json::to_vec(spec).map_err(|e| {
        tracing::error!(job = %spec.id, error = %e, "cannot serialise a job spec");
        ApiError::Internal
    })?;
    let message = PublishMessage::build()
        .headers(paddock_telemetry::propagation::headers())
        .payload(payload.into())
        .message_id(spec.id.to_string());
    let subject = match &spec.resume {
        Some(resume) => subjects::node_jobs(&resume.node),
        None => crate::routing::queue_subject(state, spec).await?,
    };
    let ack = state
        .jetstream()
        .send_publish(subject, message)
        .await
        .map_err(|e| ApiError::bus("publishing a job failed", e))?;
    let ack = ack
        .await
        .map_err(|e| ApiError::bus("the jobs stream did not acknowledge a job", e))?;
    if ack.duplicate {
        tracing::debug!(job = %spec.id, "job message was a duplicate; stored once");
    }
    Ok(())
}
