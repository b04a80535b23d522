//! The device authorization grant (RFC 8628), for the CLI on a machine without a
//! browser and for other screens:
//!
//! 1. `POST /v1/auth/device` `{client_name}` → `device_code` (secret), `user_code`
//!    (`BCDF-GHJK`), `verification_uri` (the web app's `/device` page) and
//!    `verification_uri_complete` (with the code), `expires_in`, `interval`;
//! 2. the user, signed in elsewhere, sends `POST /v1/auth/device/approve`
//!    `{user_code, approve}` (`paddock login --approve CODE` does);
//! 3. the device polls `POST /v1/auth/device/token` `{device_code}` every `interval`
//!    seconds: 400 `authorization_pending` until decided, `slow_down` if it polls too
//!    often, `access_denied` or `expired_token` at the end, or, once, the tokens of a
//!    new sign-in on a device named after the client.
//!
//! Starting a grant is limited like a login, polling like a refresh.

use crate::audit::{clean, record};
use crate::auth::{Caller, ClientAddress};
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::limits::{LimitKey, LimitKind};
use crate::routes::auth::{TokenResponse, tokens_for};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use paddock_accounts::{AuditEntry, GrantDecision, GrantPoll, Outcome};
use paddock_contract::api::ErrorBody;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /v1/auth/device`.
#[derive(Deserialize, Default, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartGrant {
    /// How the device calls itself; shown to the approving user.
    #[serde(default)]
    pub client_name: Option<String>,
}

/// A device grant started (RFC 8628 §3.2).
#[derive(Serialize, Deserialize, ToSchema)]
pub struct GrantStarted {
    pub device_code: String,
    pub user_code: String,
    /// The web app's page where a signed-in user approves the code (RFC 8628 §3.2).
    pub verification_uri: String,
    /// The same page with the code filled in.
    pub verification_uri_complete: String,
    pub expires_in: u64,
    pub interval: u64,
}

/// `POST /v1/auth/device/token`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PollGrant {
    pub device_code: String,
}

/// `POST /v1/auth/device/approve`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideGrant {
    pub user_code: String,
    pub approve: bool,
}

/// A device grant decided.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct GrantDecided {
    pub client_name: String,
    pub approved: bool,
}

fn address_keys(address: &Option<String>) -> Vec<LimitKey> {
    address.clone().map(LimitKey::Address).into_iter().collect()
}

/// Starts a device grant: a secret `device_code` for the device, a `user_code` for the
/// person who approves it elsewhere.
#[utoipa::path(
    post,
    path = "/v1/auth/device",
    tag = "auth",
    request_body = StartGrant,
    responses((status = 200, description = "The grant, pending", body = GrantStarted))
)]
pub async fn start(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    headers: HeaderMap,
    ApiJson(body): ApiJson<StartGrant>,
) -> Result<Json<GrantStarted>, ApiError> {
    state
        .auth()
        .limits()
        .check(LimitKind::Login, &address_keys(&address))?;
    let settings = &state.config().auth;
    let client_name = body
        .client_name
        .as_deref()
        .map(clean)
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| "device".to_string());
    let grant = state
        .auth()
        .accounts()
        .start_device_grant(
            &client_name,
            address.as_deref(),
            settings.device_grant_ttl,
            settings.device_grant_interval,
        )
        .await?;
    record(
        &state,
        AuditEntry::new("auth.device_start", Outcome::Success)
            .address(address)
            .target(grant.user_code.clone())
            .detail(client_name),
    )
    .await;
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(clean)
        .unwrap_or_else(|| state.config().listen.to_string());
    let scheme = if state.config().tls.is_some() {
        "https"
    } else {
        "http"
    };
    let verification_uri = format!("{scheme}://{host}/device");
    Ok(Json(GrantStarted {
        device_code: grant.device_code,
        verification_uri_complete: format!("{verification_uri}?code={}", grant.user_code),
        user_code: grant.user_code,
        verification_uri,
        expires_in: settings.device_grant_ttl.as_secs(),
        interval: grant.interval.as_secs().max(1),
    }))
}

/// Approves or denies a pending device grant by its user code.
#[utoipa::path(
    post,
    path = "/v1/auth/device/approve",
    tag = "auth",
    request_body = DecideGrant,
    security(("access_token" = []), ("api_token" = [])),
    responses(
        (status = 200, description = "Decided", body = GrantDecided),
        (status = 404, description = "`not_found`: no pending grant has this code", body = ErrorBody),
    )
)]
pub async fn approve(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<DecideGrant>,
) -> Result<Json<GrantDecided>, ApiError> {
    let (user_id, device_id) = caller.account()?;
    let accounts = state.auth().accounts();
    let user = accounts
        .user_by_id(user_id)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    let client_name = accounts.pending_grant_client(&body.user_code).await?;
    let decision = match &client_name {
        Some(_) => {
            accounts
                .decide_device_grant(&body.user_code, &user, body.approve)
                .await?
        }
        None => GrantDecision::NotPending,
    };
    let decided = decision == GrantDecision::Decided;
    record(
        &state,
        AuditEntry::new(
            "auth.device_approve",
            if decided {
                Outcome::Success
            } else {
                Outcome::Denied
            },
        )
        .actor(caller.user.clone())
        .device(Some(device_id.to_string()))
        .address(caller.address.clone())
        .target(clean(&body.user_code))
        .detail(if body.approve { "approve" } else { "deny" }),
    )
    .await;
    match (decided, client_name) {
        (true, Some(client_name)) => Ok(Json(GrantDecided {
            client_name,
            approved: body.approve,
        })),
        _ => Err(ApiError::NotFound(
            "no pending device authorization has this code".into(),
        )),
    }
}

/// Polls a device grant: the tokens of a new sign-in once it is approved.
#[utoipa::path(
    post,
    path = "/v1/auth/device/token",
    tag = "auth",
    request_body = PollGrant,
    responses(
        (status = 200, description = "Approved: a new sign-in (answered once)", body = TokenResponse),
        (status = 400, description = "RFC 8628 §3.5: `authorization_pending`, `slow_down`, `access_denied`, `expired_token`", body = ErrorBody),
        (status = 401, description = "`invalid_grant`: unknown or already used device code", body = ErrorBody),
    )
)]
pub async fn token(
    State(state): State<AppState>,
    ClientAddress(address): ClientAddress,
    ApiJson(body): ApiJson<PollGrant>,
) -> Result<Json<TokenResponse>, ApiError> {
    state
        .auth()
        .limits()
        .check(LimitKind::Refresh, &address_keys(&address))?;
    let accounts = state.auth().accounts();
    match accounts.poll_device_grant(&body.device_code).await? {
        GrantPoll::Pending => Err(ApiError::AuthorizationPending),
        GrantPoll::SlowDown => Err(ApiError::SlowDown),
        GrantPoll::Denied => Err(ApiError::AccessDenied),
        GrantPoll::Expired => Err(ApiError::ExpiredToken),
        GrantPoll::Unknown => Err(ApiError::InvalidGrant(
            "unknown or already used device code".into(),
        )),
        GrantPoll::Approved { user, client_name } => {
            let session = accounts
                .start_session(&user, &client_name, address.as_deref())
                .await?;
            let tokens = tokens_for(&state, &user, &session.device.id, &session.refresh)?;
            record(
                &state,
                AuditEntry::new("auth.device_login", Outcome::Success)
                    .actor(user.name.clone())
                    .device(Some(session.device.id.clone()))
                    .address(address)
                    .target(session.device.id.clone()),
            )
            .await;
            Ok(Json(tokens))
        }
    }
}
