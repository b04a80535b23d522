//! Web Push for the caller's own browsers (see [`crate::push`]):
//!
//! | route | what |
//! | --- | --- |
//! | `GET /v1/push/key` | the VAPID public key a page passes to `pushManager.subscribe` |
//! | `POST /v1/push/subscriptions` | registers the browser's `PushSubscription` JSON → 201 `{ "id" }` |
//! | `DELETE /v1/push/subscriptions` | `{ "endpoint" }` → 204: that browser hears no more |
//!
//! Any signed-in user may call them; registering and removing need an account (a
//! service token has no browser) and act on the caller's own subscriptions only.
//! Registering is idempotent per endpoint (the same id comes back, the keys are
//! updated) and a page should do it after every sign-in: a subscription belongs to
//! the sign-in (device) that registered it and ends with it. With `push.enabled =
//! false` the key and registering answer 404 `not_found`, so a page hides its button.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::push::{check_endpoint, normalised_keys};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use paddock_accounts::{NewPushSubscription, PushRegistration};
use paddock_contract::api::ErrorBody;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /v1/push/key`.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct PushKey {
    /// The VAPID public key: an uncompressed P-256 point, base64url.
    pub public_key: String,
}

/// `POST /v1/push/subscriptions`: a browser's `PushSubscription.toJSON()`. Other
/// fields (`expirationTime`) are accepted and ignored.
#[derive(Deserialize, ToSchema)]
pub struct SubscriptionRequest {
    /// The push service's URL for this browser (https).
    pub endpoint: String,
    pub keys: SubscriptionKeys,
}

#[derive(Deserialize, ToSchema)]
pub struct SubscriptionKeys {
    /// The browser's P-256 public key (uncompressed point), base64url.
    pub p256dh: String,
    /// The browser's 16-byte authentication secret, base64url.
    pub auth: String,
}

/// The answer to a registration.
#[derive(Serialize, Deserialize, ToSchema)]
pub struct Subscribed {
    pub id: String,
}

/// `DELETE /v1/push/subscriptions`.
#[derive(Deserialize, ToSchema)]
pub struct Unsubscribe {
    pub endpoint: String,
}

fn push_off() -> ApiError {
    ApiError::NotFound("push notifications are off on this gateway (push.enabled)".into())
}

/// The VAPID public key.
#[utoipa::path(
    get,
    path = "/v1/push/key",
    tag = "push",
    security(("access_token" = []), ("api_token" = [])),
    responses(
        (status = 200, description = "The key to subscribe with", body = PushKey),
        (status = 404, description = "`not_found`: push notifications are off", body = ErrorBody),
    )
)]
pub async fn public_key(
    State(state): State<AppState>,
    _caller: Caller,
) -> Result<Json<PushKey>, ApiError> {
    let key = state.push_key().ok_or_else(push_off)?;
    Ok(Json(PushKey {
        public_key: key.public_key().to_string(),
    }))
}

/// Registers the caller's browser for notifications.
#[utoipa::path(
    post,
    path = "/v1/push/subscriptions",
    tag = "push",
    request_body = SubscriptionRequest,
    security(("access_token" = []), ("api_token" = [])),
    responses(
        (status = 201, description = "Registered (again: the same id)", body = Subscribed),
        (status = 400, description = "`bad_request`: the endpoint is not an https push service, or the keys are malformed", body = ErrorBody),
        (status = 404, description = "`not_found`: push notifications are off", body = ErrorBody),
        (status = 409, description = "`conflict`: the caller has as many subscriptions as allowed", body = ErrorBody),
    )
)]
pub async fn subscribe(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<SubscriptionRequest>,
) -> Result<(StatusCode, Json<Subscribed>), ApiError> {
    if state.push_key().is_none() {
        return Err(push_off());
    }
    let (user_id, device_id) = caller.account()?;
    let settings = &state.config().push;
    check_endpoint(&body.endpoint, settings.allow_loopback_http).map_err(ApiError::BadRequest)?;
    let (p256dh, auth) =
        normalised_keys(&body.keys.p256dh, &body.keys.auth).map_err(ApiError::BadRequest)?;
    let registration = state
        .auth()
        .accounts()
        .save_push_subscription(
            &NewPushSubscription {
                user_id,
                device_id: Some(device_id),
                endpoint: &body.endpoint,
                p256dh: &p256dh,
                auth: &auth,
            },
            settings.max_subscriptions_per_user,
        )
        .await?;
    match registration {
        PushRegistration::Saved(subscription) => Ok((
            StatusCode::CREATED,
            Json(Subscribed {
                id: subscription.id,
            }),
        )),
        PushRegistration::TooMany { max } => Err(ApiError::Conflict(format!(
            "you have {max} push subscriptions, the most allowed; remove one first"
        ))),
    }
}

/// Stops notifications to one of the caller's browsers.
#[utoipa::path(
    delete,
    path = "/v1/push/subscriptions",
    tag = "push",
    request_body = Unsubscribe,
    security(("access_token" = []), ("api_token" = [])),
    responses(
        (status = 204, description = "Removed (or there was none of the caller's with this endpoint)"),
    )
)]
pub async fn unsubscribe(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(body): ApiJson<Unsubscribe>,
) -> Result<StatusCode, ApiError> {
    let (user_id, _) = caller.account()?;
    state
        .auth()
        .accounts()
        .delete_push_subscription(user_id, &body.endpoint)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
