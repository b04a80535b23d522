//! Adding and cutting off machines, for operators with `nodes:admin`: join tokens
//! (`POST /v1/nodes/tokens` shows a new token once; `GET` lists them without
//! secrets; `DELETE /v1/nodes/tokens/{id}` revokes one) and the NATS credentials
//! nodes were issued when they joined (`GET /v1/nodes/credentials`; `POST
//! /v1/nodes/{name}/revoke-credentials` withdraws a node's, and the coordinator removes
//! them from nats-server within its `join.reconcile_interval_secs`).
//!
//! Tokens and credentials live in the ledger database, which the coordinator (where
//! machines present the tokens) shares. Every change is audited by its handler with
//! the token's id or the node's name as the target; a token itself never reaches a log.

use crate::audit::{clean, record};
use crate::auth::{Caller, Scope};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use paddock_accounts::{AuditEntry, Outcome};
use paddock_contract::api::ErrorBody;
use paddock_contract::join::{
    CreateJoinToken, CredentialsRevoked, JoinTokenCreated, JoinTokenView, NodeCredentialView,
};
use paddock_contract::now_unix_ms;
use paddock_ledger::NewJoinToken;

/// A token's life when the request does not say: one hour.
pub const DEFAULT_EXPIRY_SECS: u64 = 3600;
/// The longest life a token may be given: seven days.
pub const MAX_EXPIRY_SECS: u64 = 7 * 24 * 3600;
/// Most machines one token may admit.
pub const MAX_USES: u32 = 100;

fn entry(caller: &Caller, action: &str, target: &str) -> AuditEntry {
    AuditEntry::new(action, Outcome::Success)
        .actor(caller.user.clone())
        .device(caller.device_id().map(str::to_string))
        .address(caller.address.clone())
        .target(clean(target))
}

/// Checks a token request; returns what to store.
fn validated(caller: &Caller, body: &CreateJoinToken) -> Result<NewJoinToken, ApiError> {
    let expires_in = body.expires_in_secs.unwrap_or(DEFAULT_EXPIRY_SECS);
    if expires_in == 0 || expires_in > MAX_EXPIRY_SECS {
        return Err(ApiError::BadRequest(format!(
            "expires_in_secs: {expires_in} is not between 1 and {MAX_EXPIRY_SECS} (seven days)"
        )));
    }
    let uses = body.uses.unwrap_or(1);
    if uses == 0 || uses > MAX_USES {
        return Err(ApiError::BadRequest(format!(
            "uses: {uses} is not between 1 and {MAX_USES}"
        )));
    }
    if let Some(pool) = &body.pool
        && !paddock_contract::subjects::is_valid_token(pool)
    {
        return Err(ApiError::BadRequest(format!(
            "pool: {pool:?} must be 1-64 letters, digits, '-' or '_'"
        )));
    }
    if body.labels.len() > 32
        || body
            .labels
            .iter()
            .any(|(k, v)| k.is_empty() || k.len() > 64 || v.len() > 256)
    {
        return Err(ApiError::BadRequest(
            "labels: at most 32, keys of 1-64 and values of at most 256 characters".into(),
        ));
    }
    let now = now_unix_ms();
    Ok(NewJoinToken {
        created_by: caller.user.clone(),
        created_at_ms: now,
        expires_at_ms: now.saturating_add(i64::try_from(expires_in * 1000).unwrap_or(i64::MAX)),
        uses,
        pool: body.pool.clone(),
        labels: body.labels.clone(),
    })
}

/// Creates a join token; the answer is the only place its secret appears.
#[utoipa::path(
    post,
    path = "/v1/nodes/tokens",
    tag = "nodes",
    request_body = CreateJoinToken,
    security(("access_token" = ["nodes:admin"]), ("api_token" = ["nodes:admin"])),
    responses(
        (status = 201, description = "Created: give `token` to `paddock-node join`", body = JoinTokenCreated),
        (status = 400, description = "`bad_request`: an expiry, use count, pool or label is out of range", body = ErrorBody),
    )
)]
pub async fn create_token(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateJoinToken>,
) -> Result<(StatusCode, Json<JoinTokenCreated>), ApiError> {
    caller.require(Scope::NodesAdmin)?;
    let new = validated(&caller, &body)?;
    let created = state.ledger().create_join_token(&new).await?;
    record(
        &state,
        entry(&caller, "node.token_create", &created.id).detail(format!(
            "uses {}, expires at {} ms, pool {}",
            new.uses,
            new.expires_at_ms,
            new.pool.as_deref().unwrap_or("default")
        )),
    )
    .await;
    tracing::info!(token = %created.id, by = %caller.user, uses = new.uses, "join token created");
    Ok((
        StatusCode::CREATED,
        Json(JoinTokenCreated {
            id: created.id,
            token: created.token,
            expires_at_ms: new.expires_at_ms,
            uses: new.uses,
        }),
    ))
}

/// Every join token, newest first, without secrets.
#[utoipa::path(
    get,
    path = "/v1/nodes/tokens",
    tag = "nodes",
    security(("access_token" = ["nodes:admin"]), ("api_token" = ["nodes:admin"])),
    responses((status = 200, description = "Every join token", body = [JoinTokenView]))
)]
pub async fn list_tokens(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<JoinTokenView>>, ApiError> {
    caller.require(Scope::NodesAdmin)?;
    Ok(Json(state.ledger().join_tokens().await?))
}

/// Revokes a join token: no machine may join with it any more.
#[utoipa::path(
    delete,
    path = "/v1/nodes/tokens/{id}",
    tag = "nodes",
    params(("id" = String, Path, description = "The token's id")),
    security(("access_token" = ["nodes:admin"]), ("api_token" = ["nodes:admin"])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "`not_found`: no token in force has this id", body = ErrorBody),
    )
)]
pub async fn revoke_token(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require(Scope::NodesAdmin)?;
    let revoked = state.ledger().revoke_join_token(&id, now_unix_ms()).await?;
    let audit = entry(&caller, "node.token_revoke", &id);
    if !revoked {
        record(
            &state,
            AuditEntry {
                outcome: Some(Outcome::Failure),
                detail: Some("no token in force has this id".into()),
                ..audit
            },
        )
        .await;
        return Err(ApiError::NotFound(format!(
            "no join token in force has the id {:?}",
            clean(&id)
        )));
    }
    record(&state, audit).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Every NATS credential issued to a node, in force or revoked (public keys only).
#[utoipa::path(
    get,
    path = "/v1/nodes/credentials",
    tag = "nodes",
    security(("access_token" = ["nodes:admin"]), ("api_token" = ["nodes:admin"])),
    responses((status = 200, description = "Every node credential", body = [NodeCredentialView]))
)]
pub async fn list_credentials(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<NodeCredentialView>>, ApiError> {
    caller.require(Scope::NodesAdmin)?;
    Ok(Json(state.ledger().node_credentials(false).await?))
}

/// Revokes a node's NATS credentials: the coordinator removes them from nats-server,
/// which drops that machine's connections. Other nodes are untouched.
#[utoipa::path(
    post,
    path = "/v1/nodes/{name}/revoke-credentials",
    tag = "nodes",
    params(("name" = String, Path, description = "The node's name")),
    security(("access_token" = ["nodes:admin"]), ("api_token" = ["nodes:admin"])),
    responses(
        (status = 202, description = "Revoked in the ledger; the coordinator applies it within its reconcile interval", body = CredentialsRevoked),
        (status = 400, description = "`bad_request`: not a node name", body = ErrorBody),
    )
)]
pub async fn revoke_credentials(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<CredentialsRevoked>), ApiError> {
    caller.require(Scope::NodesAdmin)?;
    if !paddock_contract::subjects::is_valid_token(&name) {
        return Err(ApiError::BadRequest(format!(
            "{:?} is not a node name",
            clean(&name)
        )));
    }
    let revoked = state
        .ledger()
        .revoke_node_credentials(&name, &caller.user, now_unix_ms())
        .await?;
    record(
        &state,
        entry(&caller, "node.credentials_revoke", &name).detail(format!("{revoked} revoked")),
    )
    .await;
    tracing::info!(node = %name, by = %caller.user, revoked, "node credentials revoked");
    Ok((
        StatusCode::ACCEPTED,
        Json(CredentialsRevoked {
            node: name,
            revoked,
        }),
    ))
}
