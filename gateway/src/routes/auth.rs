//! Signing in and the caller's own account:
//!
//! | route | what |
//! | --- | --- |
//! | `POST /v1/auth/login` | password (+ TOTP code) → access and refresh token, a new device |
//! | `POST /v1/auth/refresh` | refresh token → new access and refresh token (rotation) |
//! | `POST /v1/auth/logout` | ends the caller's device: its tokens stop working |
//! | `GET /v1/auth/me` | who the token belongs to |
//! | `GET /v1/auth/devices`, `DELETE /v1/auth/devices/{id}` | the caller's sign-ins |
//! | `POST /v1/auth/totp`, `…/totp/confirm`, `…/totp/disable` | the second factor |
//! | `POST /v1/auth/password` | a new password |
//! | `GET /.well-known/jwks.json` | the public keys of access tokens |
//!
//! Login failures all look alike to the client (`invalid_credentials`, after
//! `auth.login_failure_delay`), whatever was wrong; the audit log says what. A reused
//! refresh token revokes its whole family and device (`paddock_accounts`) and is
//! audited as `auth.refresh_reuse`.

use crate::audit::{clean, record};
use crate::auth::{Caller, ClientAddress, ScopeSet};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::limits::{LimitKey, LimitKind};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::IntoResponse;
use paddock_accounts::{
    AuditEntry, Device, Outcome, PasswordCheck, Rotation, TotpCheck, TotpEnrolment, User,
};
use paddock_contract::api::ErrorBody;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/auth/login`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub user: String,
    pub password: String,
    /// The 6-digit code, for users with TOTP.
    #[serde(default)]
    pub totp: Option<String>,
    /// How the device calls itself ("ada's phone"), shown in device lists.
    #[serde(default)]
    pub device_name: Option<String>,
}

/// `POST /v1/auth/refresh`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    pub refresh_token: String,
}

/// The answer to a login, a refresh or an approved device grant.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds the access token lives.
    pub expires_in: u64,
    /// Use once, at `POST /v1/auth/refresh`; its successor comes back.
    pub refresh_token: String,
    pub refresh_expires_at_ms: i64,
    pub device_id: String,
    pub user: String,
    #[schema(value_type = Vec<crate::openapi::foreign::Scope>)]
    pub scopes: ScopeSet,
}

/// `GET /v1/auth/me`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Me {
    pub user: String,
    pub user_id: Option<String>,
    pub device_id: Option<String>,
    #[schema(value_type = Vec<crate::openapi::foreign::Scope>)]
    pub scopes: ScopeSet,
    pub admin: bool,
    pub totp_enabled: bool,
    /// `account` or `service`.
    pub kind: String,
}

/// One of the caller's devices.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct DeviceView {
    pub id: String,
    pub name: String,
    pub created_at_ms: i64,
    pub last_seen_at_ms: i64,
    pub last_address: Option<String>,
    /// The device this request came from.
    pub current: bool,
}

/// `GET /v1/auth/devices`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct DeviceList {
    pub devices: Vec<DeviceView>,
}

/// `POST /v1/auth/totp/confirm`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpCode {
    /// The 6-digit code the app shows for the pending secret.
    #[schema(pattern = "^[0-9]{6}$")]
    pub code: String,
}

/// `POST /v1/auth/totp/disable`: the caller's password, once more.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordConfirmation {
    pub password: String,
}

/// `POST /v1/auth/password`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordChange {
    pub current_password: String,
    /// At least 12 characters, at most 1024 bytes.
    #[schema(min_length = 12)]
    pub new_password: String,
}

/// The answer of a change that returns nothing else.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Done {
    pub done: bool,
}

/// Issues the tokens of a sign-in.
pub(crate) fn tokens_for(
    state: &AppState,
    user: &User,
    device_id: &str,
    refresh: &paddock_accounts::IssuedRefresh,
) -> Result<TokenResponse, ApiError> {
    let access = state
        .auth()
        .keys()
        .issue(&user.id, &user.name, &user.scopes.to_string(), device_id)
        .map_err(|e| {
            tracing::error!(error = %e, "signing an access token failed");
            ApiError::Internal
        })?;
    Ok(TokenResponse {
        access_token: access.token,
        token_type: "Bearer".into(),
        expires_in: access.expires_in.as_secs(),
        refresh_token: refresh.token.clone(),
        refresh_expires_at_ms: refresh.expires_at_ms,
        device_id: device_id.to_string(),
        user: user.name.clone(),
        scopes: user.scopes.clone(),
    })
}

fn now_secs() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// Signs in with a password (and a TOTP code when the account has one): an access
/// token, a refresh token and a new device.
#[utoipa::path(
    post,
    path = "/v1/auth/login",
    tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = TokenResponse),
        (status = 401, description = "`invalid_credentials`: the user, password or code is wrong (which is not said); `totp_required`: the account needs a one-time code", body = ErrorBody),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    ApiJson(body): ApiJson<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let attempted = clean(&body.user);
    let entry = || {
        AuditEntry::new("auth.login", Outcome::Denied)
            .actor(attempted.clone())
            .address(address.clone())
    };
    let mut keys = vec![LimitKey::User(attempted.clone())];
    keys.extend(address.clone().map(LimitKey::Address));
    if let Err(limited) = state.auth().limits().check(LimitKind::Login, &keys) {
        record(&state, entry().detail("rate limited")).await;
        return Err(limited);
    }
    let accounts = state.auth().accounts();
    let user = match accounts.check_password(&body.user, &body.password).await? {
        PasswordCheck::Valid(user) => user,
        PasswordCheck::Refused { reason, .. } => {
            return Err(refuse_login(&state, entry().detail(reason)).await);
        }
    };
    if user.totp_enabled {
        let Some(code) = &body.totp else {
            record(&state, entry().detail("totp required")).await;
            return Err(ApiError::TotpRequired);
        };
        match accounts.check_totp(&user.id, code, now_secs()).await? {
            TotpCheck::Valid => {}
            TotpCheck::Replayed => {
                return Err(refuse_login(&state, entry().detail("totp code replayed")).await);
            }
            TotpCheck::Invalid | TotpCheck::NotEnrolled => {
                return Err(refuse_login(&state, entry().detail("wrong totp code")).await);
            }
        }
    }
    let device_name = body.device_name.as_deref().unwrap_or("unnamed device");
    let session = accounts
        .start_session(&user, device_name, address.as_deref())
        .await?;
    let tokens = tokens_for(&state, &user, &session.device.id, &session.refresh)?;
    record(
        &state,
        AuditEntry::new("auth.login", Outcome::Success)
            .actor(user.name.clone())
            .device(Some(session.device.id.clone()))
            .address(address)
            .target(session.device.id.clone()),
    )
    .await;
    Ok(Json(tokens))
}

/// Audits a failed login, waits `auth.login_failure_delay`, and answers it.
async fn refuse_login(state: &AppState, entry: AuditEntry) -> ApiError {
    record(state, entry).await;
    tokio::time::sleep(state.config().auth.login_failure_delay).await;
    ApiError::InvalidCredentials
}

/// Trades a refresh token for a new access token and a new refresh token (rotation).
/// A used refresh token presented again revokes its whole sign-in.
#[utoipa::path(
    post,
    path = "/v1/auth/refresh",
    tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens; the presented refresh token is used up", body = TokenResponse),
        (status = 401, description = "`invalid_grant`: the refresh token is unknown, expired, revoked or reused", body = ErrorBody),
    )
)]
pub async fn refresh(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    ApiJson(body): ApiJson<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let accounts = state.auth().accounts();
    let limits = state.auth().limits();
    let mut keys: Vec<LimitKey> = address.clone().map(LimitKey::Address).into_iter().collect();
    if let Some(device) = accounts.refresh_device(&body.refresh_token).await? {
        keys.push(LimitKey::Device(device));
    }
    if let Err(limited) = limits.check(LimitKind::Refresh, &keys) {
        record(
            &state,
            AuditEntry::new("auth.refresh", Outcome::Denied)
                .address(address)
                .detail("rate limited"),
        )
        .await;
        return Err(limited);
    }
    let refused =
        || ApiError::InvalidGrant("the refresh token cannot be used; sign in again".into());
    match accounts
        .rotate_refresh(&body.refresh_token, address.as_deref())
        .await?
    {
        Rotation::Rotated {
            user,
            device_id,
            refresh,
        } => {
            let tokens = tokens_for(&state, &user, &device_id, &refresh)?;
            record(
                &state,
                AuditEntry::new("auth.refresh", Outcome::Success)
                    .actor(user.name.clone())
                    .device(Some(device_id.clone()))
                    .address(address)
                    .target(device_id),
            )
            .await;
            Ok(Json(tokens))
        }
        Rotation::Reused {
            user_name,
            device_id,
            family_id,
        } => {
            tracing::warn!(user = %user_name, device = %device_id, "a used refresh token was presented again; its sign-in is revoked");
            record(
                &state,
                AuditEntry::new("auth.refresh_reuse", Outcome::Denied)
                    .actor(user_name)
                    .device(Some(device_id.clone()))
                    .address(address)
                    .target(device_id)
                    .detail(format!(
                        "refresh token reused; family {family_id} and its device revoked"
                    )),
            )
            .await;
            Err(refused())
        }
        Rotation::Refused {
            reason,
            user_name,
            device_id,
        } => {
            record(
                &state,
                AuditEntry::new("auth.refresh", Outcome::Denied)
                    .actor(user_name)
                    .device(Some(device_id.clone()))
                    .address(address)
                    .target(device_id)
                    .detail(reason),
            )
            .await;
            Err(refused())
        }
        Rotation::Unknown => {
            record(
                &state,
                AuditEntry::new("auth.refresh", Outcome::Denied)
                    .address(address)
                    .detail("unknown refresh token"),
            )
            .await;
            Err(refused())
        }
    }
}

/// Ends the caller's device: its access and refresh tokens stop working.
#[utoipa::path(
    post,
    path = "/v1/auth/logout",
    tag = "auth",
    security(("access_token" = []), ("api_token" = [])),
    responses((status = 200, description = "Signed out", body = Done))
)]
pub async fn logout(State(state): State<AppState>, caller: Caller) -> Result<Json<Done>, ApiError> {
    let (_, device_id) = caller.account()?;
    let revoked = state
        .auth()
        .accounts()
        .revoke_device(device_id, "logout")
        .await?;
    record(
        &state,
        AuditEntry::new("auth.logout", Outcome::Success)
            .actor(caller.user.clone())
            .device(Some(device_id.to_string()))
            .address(caller.address.clone())
            .target(device_id.to_string()),
    )
    .await;
    Ok(Json(Done { done: revoked }))
}

/// Who the token belongs to.
#[utoipa::path(
    get,
    path = "/v1/auth/me",
    tag = "auth",
    security(("access_token" = []), ("api_token" = [])),
    responses((status = 200, description = "The caller", body = Me))
)]
pub async fn me(State(state): State<AppState>, caller: Caller) -> Result<Json<Me>, ApiError> {
    let totp_enabled = match caller.user_id() {
        Some(id) => state
            .auth()
            .accounts()
            .user_by_id(id)
            .await?
            .is_some_and(|user| user.totp_enabled),
        None => false,
    };
    Ok(Json(Me {
        user: caller.user.clone(),
        user_id: caller.user_id().map(str::to_string),
        device_id: caller.device_id().map(str::to_string),
        scopes: caller.scopes.clone(),
        admin: caller.is_admin(),
        totp_enabled,
        kind: if caller.user_id().is_some() {
            "account"
        } else {
            "service"
        }
        .into(),
    }))
}

/// The caller's sign-ins that are still valid.
#[utoipa::path(
    get,
    path = "/v1/auth/devices",
    tag = "auth",
    security(("access_token" = []), ("api_token" = [])),
    responses((status = 200, description = "The caller's devices", body = DeviceList))
)]
pub async fn devices(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<DeviceList>, ApiError> {
    let (user_id, current) = caller.account()?;
    let devices = state
        .auth()
        .accounts()
        .list_devices(user_id, false)
        .await?
        .into_iter()
        .map(|device: Device| DeviceView {
            current: device.id == current,
            id: device.id,
            name: device.name,
            created_at_ms: device.created_at_ms,
            last_seen_at_ms: device.last_seen_at_ms,
            last_address: device.last_address,
        })
        .collect();
    Ok(Json(DeviceList { devices }))
}

/// Revokes one of the caller's devices (an admin may revoke anyone's).
#[utoipa::path(
    delete,
    path = "/v1/auth/devices/{id}",
    tag = "auth",
    params(("id" = String, Path, description = "The device's id")),
    security(("access_token" = []), ("api_token" = [])),
    responses(
        (status = 200, description = "Revoked (`done: false`: it already was)", body = Done),
        (status = 404, description = "`not_found`: no such device of the caller's", body = ErrorBody),
    )
)]
pub async fn revoke_device(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Done>, ApiError> {
    let accounts = state.auth().accounts();
    let device = accounts.device(&id).await?;
    let allowed = device
        .as_ref()
        .is_some_and(|d| caller.is_admin() || caller.user_id() == Some(d.user_id.as_str()));
    let entry = AuditEntry::new("device.revoke", Outcome::Success)
        .actor(caller.user.clone())
        .device(caller.device_id().map(str::to_string))
        .address(caller.address.clone())
        .target(clean(&id));
    if !allowed {
        record(
            &state,
            AuditEntry {
                outcome: Some(Outcome::Denied),
                ..entry
            },
        )
        .await;
        return Err(ApiError::NotFound(format!("no device {}", clean(&id))));
    }
    let revoked = accounts.revoke_device(&id, "revoked").await?;
    record(&state, entry).await;
    Ok(Json(Done { done: revoked }))
}

/// Starts enrolling a second factor: a new secret, pending until confirmed.
#[utoipa::path(
    post,
    path = "/v1/auth/totp",
    tag = "auth",
    security(("access_token" = []), ("api_token" = [])),
    responses((status = 200, description = "The pending secret, shown once", body = crate::openapi::foreign::TotpEnrolment))
)]
pub async fn begin_totp(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<TotpEnrolment>, ApiError> {
    let (user_id, device_id) = caller.account()?;
    let enrolment = state.auth().accounts().begin_totp(user_id).await?;
    record(&state, own_change(&caller, device_id, "totp.begin")).await;
    Ok(Json(enrolment))
}

/// Confirms the pending second factor with a code from it; logins need a code from
/// then on.
#[utoipa::path(
    post,
    path = "/v1/auth/totp/confirm",
    tag = "auth",
    request_body = TotpCode,
    security(("access_token" = []), ("api_token" = [])),
    responses(
        (status = 200, description = "The second factor is on", body = Done),
        (status = 400, description = "`bad_request`: the code does not match, or nothing is pending", body = ErrorBody),
    )
)]
pub async fn confirm_totp(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<TotpCode>,
) -> Result<Json<Done>, ApiError> {
    let (user_id, device_id) = caller.account()?;
    let confirmed = state
        .auth()
        .accounts()
        .confirm_totp(user_id, &body.code, now_secs())
        .await?;
    let outcome = if confirmed {
        Outcome::Success
    } else {
        Outcome::Denied
    };
    let entry = AuditEntry {
        outcome: Some(outcome),
        ..own_change(&caller, device_id, "totp.enable")
    };
    record(&state, entry).await;
    if confirmed {
        Ok(Json(Done { done: true }))
    } else {
        Err(ApiError::BadRequest(
            "the code does not match the pending secret (or no enrolment is pending)".into(),
        ))
    }
}

/// Checks the caller's password again before a change to their own account, which
/// `entry` describes; a wrong password is audited as denied (after the login delay).
async fn reauthenticate(
    state: &AppState,
    caller: &Caller,
    password: &str,
    entry: &AuditEntry,
) -> Result<(), ApiError> {
    match state
        .auth()
        .accounts()
        .check_password(&caller.user, password)
        .await?
    {
        PasswordCheck::Valid(user) if Some(user.id.as_str()) == caller.user_id() => Ok(()),
        _ => {
            tokio::time::sleep(state.config().auth.login_failure_delay).await;
            let denied = AuditEntry {
                outcome: Some(Outcome::Denied),
                ..entry.clone()
            };
            record(state, denied).await;
            Err(ApiError::InvalidCredentials)
        }
    }
}

/// The audit entry of `action` by the caller on their own account.
fn own_change(caller: &Caller, device_id: &str, action: &str) -> AuditEntry {
    AuditEntry::new(action, Outcome::Success)
        .actor(caller.user.clone())
        .device(Some(device_id.to_string()))
        .address(caller.address.clone())
        .target(caller.user.clone())
}

/// Turns the caller's second factor off, after their password.
#[utoipa::path(
    post,
    path = "/v1/auth/totp/disable",
    tag = "auth",
    request_body = PasswordConfirmation,
    security(("access_token" = []), ("api_token" = [])),
    responses(
        (status = 200, description = "The second factor is off", body = Done),
        (status = 401, description = "`invalid_credentials`: the password is wrong", body = ErrorBody),
    )
)]
pub async fn disable_totp(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<PasswordConfirmation>,
) -> Result<Json<Done>, ApiError> {
    let (_, device_id) = caller.account()?;
    let entry = own_change(&caller, device_id, "totp.disable");
    reauthenticate(&state, &caller, &body.password, &entry).await?;
    state.auth().accounts().disable_totp(&caller.user).await?;
    record(&state, entry).await;
    Ok(Json(Done { done: true }))
}

/// Sets a new password, after the current one.
#[utoipa::path(
    post,
    path = "/v1/auth/password",
    tag = "auth",
    request_body = PasswordChange,
    security(("access_token" = []), ("api_token" = [])),
    responses(
        (status = 200, description = "The password is changed", body = Done),
        (status = 400, description = "`bad_request`: the new password is not acceptable", body = ErrorBody),
        (status = 401, description = "`invalid_credentials`: the current password is wrong", body = ErrorBody),
    )
)]
pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<PasswordChange>,
) -> Result<Json<Done>, ApiError> {
    let (_, device_id) = caller.account()?;
    let entry = own_change(&caller, device_id, "user.password");
    reauthenticate(&state, &caller, &body.current_password, &entry).await?;
    state
        .auth()
        .accounts()
        .set_password(&caller.user, &body.new_password)
        .await?;
    record(&state, entry).await;
    Ok(Json(Done { done: true }))
}

/// The public keys that verify access tokens, current and retired (RFC 7517).
#[utoipa::path(
    get,
    path = "/.well-known/jwks.json",
    tag = "auth",
    responses((status = 200, description = "The key set", body = crate::openapi::foreign::JwkSet))
)]
pub async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(state.auth().keys().jwks().clone()),
    )
}
