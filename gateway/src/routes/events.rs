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
use paddock_contract::api::EventPage;
use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
pub struct EventsParams {
    #[serde(default)]
    after_seq: u64,
}

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
