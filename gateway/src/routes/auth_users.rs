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
use paddock_contract::api::ErrorBody;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// `GET /v1/users`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct UserList {
    #[schema(value_type = Vec<crate::openapi::foreign::User>)]
    pub users: Vec<User>,
}

/// `POST /v1/users`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    /// 1 to 64 of `a-z 0-9 . _ -`, starting with a letter or digit.
    #[schema(pattern = "^[a-z0-9][a-z0-9._-]{0,63}$")]
    pub name: String,
    /// At least 12 characters, at most 1024 bytes.
    #[schema(min_length = 12)]
    pub password: String,
    /// `jobs:read jobs:submit tools:approve` when left out.
    #[serde(default)]
    #[schema(value_type = Option<Vec<crate::openapi::foreign::Scope>>)]
    pub scopes: Option<ScopeSet>,
}

/// `PATCH /v1/users/{name}`: what to change; what is left out stays.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserChange {
    #[serde(default)]
    #[schema(value_type = Option<Vec<crate::openapi::foreign::Scope>>)]
    pub scopes: Option<ScopeSet>,
    /// At least 12 characters, at most 1024 bytes.
    #[serde(default)]
    #[schema(min_length = 12)]
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

/// Every user.
#[utoipa::path(
    get,
    path = "/v1/users",
    tag = "users",
    security(("access_token" = ["users:admin"]), ("api_token" = ["users:admin"])),
    responses((status = 200, description = "Every user", body = UserList))
)]
pub async fn list(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<UserList>, ApiError> {
    Ok(Json(UserList {
        users: state.auth().accounts().list_users().await?,
    }))
}

/// Creates a user.
#[utoipa::path(
    post,
    path = "/v1/users",
    tag = "users",
    request_body = NewUser,
    security(("access_token" = ["users:admin"]), ("api_token" = ["users:admin"])),
    responses(
        (status = 201, description = "Created", body = crate::openapi::foreign::User),
        (status = 400, description = "`bad_request`: the name or password is not acceptable", body = ErrorBody),
        (status = 409, description = "`conflict`: a user of that name exists", body = ErrorBody),
    )
)]
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

/// Changes a user's scopes, password or state, or resets their second factor.
#[utoipa::path(
    patch,
    path = "/v1/users/{name}",
    tag = "users",
    params(("name" = String, Path, description = "The user's name")),
    request_body = UserChange,
    security(("access_token" = ["users:admin"]), ("api_token" = ["users:admin"])),
    responses(
        (status = 200, description = "The user after the change", body = crate::openapi::foreign::User),
        (status = 400, description = "`bad_request`: the password is not acceptable", body = ErrorBody),
        (status = 404, description = "`not_found`: no user of that name", body = ErrorBody),
        (status = 409, description = "`conflict`: an admin tried to disable themselves or take `users:admin` from themselves", body = ErrorBody),
    )
)]
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
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only entries of this user.
    actor: Option<String>,
    /// An exact action, or a prefix ending in `.` (`auth.` for every auth event).
    action: Option<String>,
    /// Only entries about this target (a device, a user, a job).
    target: Option<String>,
    #[param(value_type = Option<crate::openapi::foreign::Outcome>)]
    outcome: Option<String>,
    /// At or after this time (ms since the epoch).
    since_ms: Option<i64>,
    /// Before this time (ms since the epoch).
    until_ms: Option<i64>,
    /// Entries older than this one (the previous page's `next_before`).
    before: Option<String>,
    /// Page size (100 when left out).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// The audit log, newest first, filtered and paged.
#[utoipa::path(
    get,
    path = "/v1/audit",
    tag = "users",
    params(AuditParams),
    security(("access_token" = ["users:admin"]), ("api_token" = ["users:admin"])),
    responses((status = 200, description = "One page of entries", body = crate::openapi::foreign::AuditPage))
)]
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
