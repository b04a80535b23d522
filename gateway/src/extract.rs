//! Request extractors whose rejections are [`ApiError`]s, so a malformed body, query
//! or job id comes back in the API's JSON error shape with a stable code.

use crate::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Path, Query};
use axum::http::request::Parts;
use paddock_contract::JobId;

/// `axum::Json` with the API's errors: 400 `bad_request` with serde's message, 413
/// `payload_too_large`, 415 `unsupported_media_type`.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `axum::extract::Query` with the API's errors (400 `bad_request`).
#[derive(FromRequestParts)]
#[from_request(via(Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The `{id}` of a job route; a malformed id is 400 `bad_request`.
pub struct JobIdPath(pub JobId);

impl<S: Send + Sync> FromRequestParts<S> for JobIdPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await?;
        raw.parse::<JobId>()
            .map(JobIdPath)
            .map_err(|_| ApiError::BadRequest("the job id in the path is not a UUID".into()))
    }
}
