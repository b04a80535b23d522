//! The HTTP surface: every route, the body limit, the request log and the JSON
//! fallbacks for unknown paths and methods. Handlers live one concern per file.
//!
//! | route | handler |
//! | --- | --- |
//! | `GET /healthz`, `GET /readyz` | [`health`] (no token) |
//! | `POST /v1/jobs`, | [`submit`] |
//! | `GET /v1/jobs`, `GET /v1/jobs/{id}` | [`jobs`] |
//! | `GET /v1/jobs/{id}/events` | [`events`] |
//! | `POST /v1/jobs/{id}/cancel` | [`cancel`] |
//! | `POST /v1/jobs/{id}/messages`, `…/approvals/{request_id}`, `…/interrupt` | [`session`] |
//! | `GET /v1/ws` | [`crate::ws`] |

pub mod cancel;
pub mod events;
pub mod health;
pub mod jobs;
pub mod session;
pub mod submit;

use crate::error::{no_route, wrong_method};
use crate::state::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;

pub fn router(state: AppState) -> Router {
    let max_body = state.config().max_body_bytes;
    Router::new()
        .route("/healthz", get(health::alive))
        .route("/readyz", get(health::ready))
        .route("/v1/jobs", post(submit::submit_job).get(jobs::list_jobs))
        .route("/v1/jobs/{id}", get(jobs::get_job))
        .route("/v1/jobs/{id}/events", get(events::job_events))
        .route("/v1/jobs/{id}/cancel", post(cancel::cancel_job))
        .route("/v1/jobs/{id}/messages", post(session::post_message))
        .route(
            "/v1/jobs/{id}/approvals/{request_id}",
            post(session::post_approval),
        )
        .route("/v1/jobs/{id}/interrupt", post(session::post_interrupt))
        .route("/v1/ws", get(crate::ws::upgrade))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(max_body))
        // The span names the path only: a query may hold an access token.
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
            }),
        )
        .with_state(state)
}
