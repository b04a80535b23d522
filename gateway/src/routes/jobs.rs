//! `GET /v1/jobs/{id}` and `GET /v1/jobs`: reading jobs from the ledger, which the
//! coordinator keeps up to date from the events stream. A caller sees only the jobs
//! [`crate::access`] lets them see.

use crate::access::{listing_scope, visible_job};
use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::{ApiQuery, JobIdPath};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use paddock_contract::api::{ErrorBody, JobPage, JobView};
use paddock_contract::{JobId, JobStatus};
use paddock_ledger::JobQuery;
use serde::Deserialize;
use utoipa::IntoParams;

/// Page size when the client names none.
pub const DEFAULT_PAGE: u32 = 50;
/// Largest page a client may ask for.
pub const MAX_PAGE: u32 = 200;

/// One job, if the caller may see it.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = JobId, Path, description = "The job's id")),
    security(("access_token" = ["jobs:read"]), ("api_token" = ["jobs:read"])),
    responses(
        (status = 200, description = "The job as the ledger knows it", body = JobView),
        (status = 404, description = "`not_found`: no such job, or another user's", body = ErrorBody),
    )
)]
pub async fn get_job(
    State(state): State<AppState>,
    caller: Caller,
    JobIdPath(id): JobIdPath,
) -> Result<Json<JobView>, ApiError> {
    visible_job(&state, &caller, id).await.map(Json)
}

/// Query of `GET /v1/jobs`. Values are parsed here for messages that name the field.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Only jobs in this state.
    #[param(value_type = Option<JobStatus>)]
    status: Option<String>,
    /// Only jobs of this project.
    project: Option<String>,
    /// Only jobs of this user: a plain user may name only themselves (403 otherwise);
    /// an admin sees everyone's by default.
    submitted_by: Option<String>,
    /// Jobs older than this one (the previous page's `next_before`).
    #[param(value_type = Option<JobId>)]
    before: Option<String>,
    /// Page size.
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
}

impl ListParams {
    fn into_query(self, caller: &Caller) -> Result<JobQuery, ApiError> {
        let status = self
            .status
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<JobStatus>())
            .transpose()
            .map_err(|_| {
                ApiError::BadRequest(
                    "status must be one of queued, running, completed, failed, cancelled".into(),
                )
            })?;
        let before = self
            .before
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<JobId>())
            .transpose()
            .map_err(|_| ApiError::BadRequest("before must be a job id (a UUID)".into()))?;
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(ApiError::BadRequest(format!(
                "limit must be between 1 and {MAX_PAGE}"
            )));
        }
        Ok(JobQuery {
            status,
            submitted_by: listing_scope(caller, self.submitted_by.filter(|s| !s.is_empty()))?,
            project: self.project.filter(|s| !s.is_empty()),
            before,
            limit,
        })
    }
}

/// The jobs the caller may see, newest first, one page at a time.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    params(ListParams),
    security(("access_token" = ["jobs:read"]), ("api_token" = ["jobs:read"])),
    responses(
        (status = 200, description = "One page of jobs", body = JobPage),
        (status = 403, description = "`forbidden`: a plain user asked for another user's jobs", body = ErrorBody),
    )
)]
pub async fn list_jobs(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<ListParams>,
) -> Result<Json<JobPage>, ApiError> {
    let query = params.into_query(&caller)?;
    Ok(Json(state.ledger().list(&query).await?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Identity, ScopeSet};

    fn ada() -> Caller {
        Caller::new("ada", ScopeSet::default_user(), Identity::Service)
    }

    #[test]
    fn a_listing_is_scoped_to_the_caller() {
        let query = ListParams::default().into_query(&ada()).expect("valid");
        assert_eq!(query.submitted_by.as_deref(), Some("ada"));
        assert_eq!(query.limit, DEFAULT_PAGE);
        assert!(query.status.is_none());
    }

    #[test]
    fn bad_parameters_are_bad_requests() {
        let cases = [
            ListParams {
                status: Some("done".into()),
                ..ListParams::default()
            },
            ListParams {
                before: Some("x".into()),
                ..ListParams::default()
            },
            ListParams {
                limit: Some(0),
                ..ListParams::default()
            },
            ListParams {
                limit: Some(MAX_PAGE + 1),
                ..ListParams::default()
            },
        ];
        for params in cases {
            let shown = format!("{params:?}");
            let error = params.into_query(&ada()).err();
            assert_eq!(error.map(|e| e.code()), Some("bad_request"), "{shown}");
        }
        let other = ListParams {
            submitted_by: Some("bob".into()),
            ..ListParams::default()
        };
        assert_eq!(
            other.into_query(&ada()).err().map(|e| e.code()),
            Some("forbidden")
        );
    }
}
