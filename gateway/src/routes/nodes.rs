//! The paddock's machines, for operators: `GET /v1/nodes` lists every node (state,
//! labels, slots used and free, running jobs, version, last seen); `POST
//! /v1/nodes/{name}/drain` (optional `deadline_secs`), `/undrain` and `/cordon` set a
//! node's desired state in the registry, which the node reconciles to. Listing needs
//! `jobs:read`; changing a node needs `nodes:admin`.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use paddock_accounts::Scope;
use paddock_contract::node::{DesiredState, DrainRequest, NodeDesired, NodeView};
use paddock_contract::now_unix_ms;

#[utoipa::path(
    get,
    path = "/v1/nodes",
    tag = "nodes",
    security(("access_token" = ["jobs:read"]), ("api_token" = ["jobs:read"])),
    responses((status = 200, description = "Every node", body = Vec<NodeView>))
)]
pub async fn list_nodes(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<NodeView>>, ApiError> {
    caller.require(Scope::JobsRead)?;
    let nodes = state
        .nodes()
        .list()
        .await
        .map_err(|e| ApiError::bus("listing nodes failed", e))?;
    Ok(Json(nodes))
}

async fn set(
    state: &AppState,
    caller: &Caller,
    name: &str,
    desired: NodeDesired,
) -> Result<(StatusCode, Json<NodeDesired>), ApiError> {
    caller.require(Scope::NodesAdmin)?;
    if !paddock_contract::subjects::is_valid_token(name) {
        return Err(ApiError::BadRequest(format!("{name:?} is not a node name")));
    }
    state
        .nodes()
        .set_desired(name, &desired)
        .await
        .map_err(|e| ApiError::bus("setting a node's desired state failed", e))?;
    tracing::info!(node = %name, state = ?desired.state, by = %caller.user, "node desired state set");
    Ok((StatusCode::ACCEPTED, Json(desired)))
}

fn desired(state: DesiredState, caller: &Caller, deadline_ms: Option<i64>) -> NodeDesired {
    NodeDesired {
        state,
        drain_deadline_ms: deadline_ms,
        updated_by: caller.user.clone(),
        updated_at_ms: now_unix_ms(),
    }
}

#[utoipa::path(
    post,
    path = "/v1/nodes/{name}/drain",
    tag = "nodes",
    params(("name" = String, Path, description = "The node's name")),
    request_body(content = Option<DrainRequest>, description = "Optional: `deadline_secs`"),
    security(("access_token" = ["nodes:admin"]), ("api_token" = ["nodes:admin"])),
    responses(
        (status = 202, description = "Drains the node: no new work; running jobs finish, or are handed back at the deadline; the desired state set", body = NodeDesired),
        (status = 400, description = "`bad_request`: not a node name", body = paddock_contract::api::ErrorBody),
    )
)]
pub async fn drain_node(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<NodeDesired>), ApiError> {
    // The body is optional: no body drains without a deadline.
    let request: DrainRequest = if body.iter().all(u8::is_ascii_whitespace) {
        DrainRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("not a drain request: {e}")))?
    };
    let deadline = request.deadline_secs.map(|secs| {
        now_unix_ms().saturating_add(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX))
    });
    let want = desired(DesiredState::Draining, &caller, deadline);
    set(&state, &caller, &name, want).await
}

#[utoipa::path(
    post,
    path = "/v1/nodes/{name}/undrain",
    tag = "nodes",
    params(("name" = String, Path, description = "The node's name")),
    security(("access_token" = ["nodes:admin"]), ("api_token" = ["nodes:admin"])),
    responses(
        (status = 202, description = "Makes the node ready again; the desired state set", body = NodeDesired),
        (status = 400, description = "`bad_request`: not a node name", body = paddock_contract::api::ErrorBody),
    )
)]
pub async fn undrain_node(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<NodeDesired>), ApiError> {
    let want = desired(DesiredState::Ready, &caller, None);
    set(&state, &caller, &name, want).await
}

#[utoipa::path(
    post,
    path = "/v1/nodes/{name}/cordon",
    tag = "nodes",
    params(("name" = String, Path, description = "The node's name")),
    security(("access_token" = ["nodes:admin"]), ("api_token" = ["nodes:admin"])),
    responses(
        (status = 202, description = "Cordons the node: no new work; running jobs are left alone; the desired state set", body = NodeDesired),
        (status = 400, description = "`bad_request`: not a node name", body = paddock_contract::api::ErrorBody),
    )
)]
pub async fn cordon_node(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<NodeDesired>), ApiError> {
    let want = desired(DesiredState::Cordoned, &caller, None);
    set(&state, &caller, &name, want).await
}
