//! `GET /healthz` (the process answers) and `GET /readyz` (it can serve: NATS is
//! connected and the ledger answers). Neither needs a token, so load balancers and
//! supervisors can probe them.

use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

pub async fn alive() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if state.nats().connection_state() != async_nats::connection::State::Connected {
        return Err(ApiError::Unavailable("not connected to NATS".into()));
    }
    state.ledger().ping().await?;
    Ok(Json(json!({ "status": "ready" })))
}
