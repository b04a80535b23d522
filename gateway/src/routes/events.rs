//! `GET /v1/jobs/{id}/events?after_seq=N`: the job's events with a sequence above `N`
//! (all of them by default), read from the events stream, which is the record; the
//! ledger only says whether the caller may see the job.

use crate::access::visible_job;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiQuery, JobIdPath};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use paddock_contract::JobId;
use paddock_contract::api::ErrorBody;
use paddock_contract::api::EventPage;
use serde::Deserialize;
use utoipa::IntoParams;

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsParams {
    /// Only events with a sequence number above this one (0: all).
    #[serde(default)]
    #[param(required = false)]
    after_seq: u64,
}

/// The job's events, in order, from its log.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/events",
    tag = "jobs",
    params(("id" = JobId, Path, description = "The job's id"), EventsParams),
    security(("access_token" = ["jobs:read"]), ("api_token" = ["jobs:read"])),
    responses(
        (status = 200, description = "The job's events above `after_seq`", body = EventPage),
        (status = 404, description = "`not_found`: no such job, or another user's", body = ErrorBody),
    )
)]
pub async fn job_events(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
    ApiQuery(params): ApiQuery<EventsParams>,
) -> Result<Json<EventPage>, ApiError> {
    visible_job(&state, &caller, id).await?;
    let events = state
        .events()
        .read_all(id)
        .await?
        .into_iter()
        .filter(|event| event.seq > params.after_seq)
        .collect();
    Ok(Json(EventPage { events }))
}
