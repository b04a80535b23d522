//! Managing users and reading the audit log, for admins (`users:admin`):
//!
//! | route | what |
//! | --- | --- |
//! | `GET /v1/users` | every user |
//! | `POST /v1/users` | `{name, password, scopes?}` → 201 and the user |
//! | `PATCH /v1/users/{name}` | `{scopes?, password?, disabled?, reset_totp?}` |
//! | `GET /v1/audit` | the audit log, newest first, filtered by `actor`, `action` (exact, or a prefix ending in `.`), `target`, `outcome`, `since_ms`, `until_ms`, paged by `before` and `limit` |
//!
//! An admin cannot take `users:admin` from themselves or disable themselves, so the
//! last admin cannot lock everyone out by mistake. Disabling a user revokes all their
//! devices at once.

use crate::audit::{clean, record};
use crate::auth::{Caller, Scope, ScopeSet};
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use paddock_accounts::{AuditEntry, AuditPage, AuditQuery, Outcome, User};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub struct UserList {
    pub users: Vec<User>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    pub password: String,
    /// `jobs:read jobs:submit tools:approve` when left out.
    #[serde(default)]
    pub scopes: Option<ScopeSet>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    #[serde(default)]
    pub scopes: Option<ScopeSet>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub disabled: Option<bool>,
    /// Removes the user's second factor (they lost their phone).
    #[serde(default)]
    pub reset_totp: bool,
}

fn entry(caller: &Caller, action: &str, target: &str) -> AuditEntry {
    AuditEntry::new(action, Outcome::Success)
        .actor(caller.user.clone())
        .device(caller.device_id().map(str::to_string))
        .address(caller.address.clone())
        .target(clean(target))
}

pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<UserList>, ApiError> {
    Ok(Json(UserList {
        users: state.auth().accounts().list_users().await?,
    }))
}

pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<NewUser>,
) -> Result<(StatusCode, Json<User>), ApiError> {
    let scopes = body.scopes.unwrap_or_else(ScopeSet::default_user);
    let created = state
        .auth()
        .accounts()
        .create_user(&body.name, &body.password, &scopes)
        .await;
    let audit = entry(&caller, "user.create", &body.name).detail(format!("scopes: {scopes}"));
    match created {
        Ok(user) => {
            record(&state, audit).await;
            Ok((StatusCode::CREATED, Json(user)))
        }
        Err(error) => {
            record(
                &state,
                AuditEntry {
                    outcome: Some(Outcome::Failure),
                    detail: Some(error.to_string()),
                    ..audit
                },
            )
            .await;
            Err(error.into())
        }
    }
}

pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    ApiJson(change): ApiJson<UserChange>,
) -> Result<Json<User>, ApiError> {
    let accounts = state.auth().accounts();
    let is_self = name == caller.user && caller.user_id().is_some();
    if is_self && change.disabled == Some(true) {
        return Err(ApiError::Conflict("you cannot disable yourself".into()));
    }
    if is_self
        && change
            .scopes
            .as_ref()
            .is_some_and(|scopes| !scopes.contains(Scope::UsersAdmin))
    {
        return Err(ApiError::Conflict(
            "you cannot take users:admin from yourself; another admin can".into(),
        ));
    }
    let mut user = accounts
        .user_by_name(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no user named {:?}", clean(&name))))?;
    let mut changed = Vec::new();
    if let Some(scopes) = &change.scopes {
        user = accounts.set_scopes(&name, scopes).await?;
        changed.push(format!("scopes: {scopes}"));
    }
    if let Some(password) = &change.password {
        user = accounts.set_password(&name, password).await?;
        changed.push("password".to_string());
    }
    if let Some(disabled) = change.disabled {
        user = accounts.set_disabled(&name, disabled).await?;
        changed.push(if disabled { "disabled" } else { "enabled" }.to_string());
    }
    if change.reset_totp {
        user = accounts.disable_totp(&name).await?;
        changed.push("totp reset".to_string());
    }
    if !changed.is_empty() {
        record(
            &state,
            entry(&caller, "user.update", &name).detail(changed.join(", ")),
        )
        .await;
    }
    Ok(Json(user))
}

/// Query of `GET /v1/audit`.
#[derive(Debug, Default, Deserialize)]
pub struct AuditParams {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    outcome: Option<String>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    before: Option<String>,
    limit: Option<u32>,
}

pub async fn audit_log(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Json<AuditPage>, ApiError> {
    let outcome = params
        .outcome
        .filter(|o| !o.is_empty())
        .map(|o| o.parse::<Outcome>())
        .transpose()
        .map_err(ApiError::BadRequest)?;
    if params.limit.is_some_and(|l| !(1..=500).contains(&l)) {
        return Err(ApiError::BadRequest(
            "limit must be between 1 and 500".into(),
        ));
    }
    let non_empty = |value: Option<String>| value.filter(|v| !v.is_empty());
    let query = AuditQuery {
        actor: non_empty(params.actor),
        action: non_empty(params.action),
        target: non_empty(params.target),
        outcome,
        since_ms: params.since_ms,
        until_ms: params.until_ms,
        before: non_empty(params.before),
        limit: params.limit,
    };
    Ok(Json(state.auth().accounts().audit_query(&query).await?))
}
