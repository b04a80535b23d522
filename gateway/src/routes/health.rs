//! `GET /healthz` (the process answers) and `GET /readyz` (it can serve: NATS is
//! connected and the ledger answers). Neither needs a token, so load balancers and
//! supervisors can probe them.

use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The answer of the health probes.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` (alive) or `ready`.
    pub status: String,
}

/// The process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "meta",
    responses((status = 200, description = "The gateway process answers", body = Health))
)]
pub async fn alive() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

/// The gateway can serve: NATS is connected and the ledger answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "meta",
    responses((status = 200, description = "Ready to serve", body = Health))
)]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Health>, ApiError> {
    if state.nats().connection_state() != async_nats::connection::State::Connected {
        return Err(ApiError::Unavailable("not connected to NATS".into()));
    }
    state.ledger().ping().await?;
    Ok(Json(Health {
        status: "ready".into(),
    }))
}
