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
//! | `GET /v1/nodes`, `POST /v1/nodes/{name}/drain`, `…/undrain`, `…/cordon` | [`nodes`] |
//! | `/v1/nodes/tokens…`, `GET /v1/nodes/credentials`, `POST /v1/nodes/{name}/revoke-credentials` | [`node_tokens`] |
//! | `/v1/auth/…`, `GET /.well-known/jwks.json` | [`auth`], [`auth_device`] |
//! | `/v1/users…`, `GET /v1/audit` | [`auth_users`] |
//! | `GET /v1/push/key`, `POST`/`DELETE /v1/push/subscriptions` | [`push`] |
//! | `GET /v1/openapi.json` | [`crate::openapi`] (no token) |
//! | `GET /`, the app's pages, `/sw.js`, `/manifest.webmanifest`, `/static/…` | [`crate::web`] (no token) |
//!
//! Who may call each route, its rate limit and its auditing are in
//! [`crate::access::ROUTES`]; the `Caller` extractor applies them, and the
//! [`crate::audit::record_changes`] layer records state changes.

pub mod auth;
pub mod auth_device;
pub mod auth_users;
pub mod cancel;
pub mod events;
pub mod health;
pub mod jobs;
pub mod node_tokens;
pub mod nodes;
pub mod push;
pub mod session;
pub mod submit;

use crate::error::{no_route, wrong_method};
use crate::state::AppState;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::Request;
use axum::routing::{delete, get, patch, post};
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
        .route("/v1/nodes", get(nodes::list_nodes))
        .route("/v1/nodes/{name}/drain", post(nodes::drain_node))
        .route("/v1/nodes/{name}/undrain", post(nodes::undrain_node))
        .route("/v1/nodes/{name}/cordon", post(nodes::cordon_node))
        .route(
            "/v1/nodes/tokens",
            post(node_tokens::create_token).get(node_tokens::list_tokens),
        )
        .route("/v1/nodes/tokens/{id}", delete(node_tokens::revoke_token))
        .route("/v1/nodes/credentials", get(node_tokens::list_credentials))
        .route(
            "/v1/nodes/{name}/revoke-credentials",
            post(node_tokens::revoke_credentials),
        )
        .route("/.well-known/jwks.json", get(auth::jwks))
        .route("/v1/openapi.json", get(crate::openapi::document))
        .route("/v1/auth/login", post(auth::login))
        .route("/v1/auth/refresh", post(auth::refresh))
        .route("/v1/auth/logout", post(auth::logout))
        .route("/v1/auth/me", get(auth::me))
        .route("/v1/auth/devices", get(auth::devices))
        .route("/v1/auth/devices/{id}", delete(auth::revoke_device))
        .route("/v1/auth/totp", post(auth::begin_totp))
        .route("/v1/auth/totp/confirm", post(auth::confirm_totp))
        .route("/v1/auth/totp/disable", post(auth::disable_totp))
        .route("/v1/auth/password", post(auth::change_password))
        .route("/v1/auth/device", post(auth_device::start))
        .route("/v1/auth/device/token", post(auth_device::token))
        .route("/v1/auth/device/approve", post(auth_device::approve))
        .route(
            "/v1/users",
            get(auth_users::list).post(auth_users::create),
        )
        .route("/v1/users/{name}", patch(auth_users::update))
        .route("/v1/audit", get(auth_users::audit_log))
        .route("/v1/push/key", get(push::public_key))
        .route(
            "/v1/push/subscriptions",
            post(push::subscribe).delete(push::unsubscribe),
        )
        // The web app: its shell, pages, service worker and files (`crate::web`).
        .merge(crate::web::router())
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        // Innermost, so a panicking handler's 500 is audited and counted like any other.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            crate::error::panicked,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::audit::record_changes,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics().clone(),
            paddock_telemetry::http::track_requests,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        // The span names the path only: a query may hold an access token.
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
            }),
        )
        .with_state(state)
}
