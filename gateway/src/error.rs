//! Every failure a client can see, in one place: each maps to a stable machine code
//! and an HTTP status, and is sent as `api::ErrorBody` JSON. axum's own rejections
//! (JSON syntax, content type, body size, path and query parsing) are converted here
//! too, so no client ever gets a plain-text error. Failures of NATS or the database
//! are logged with their detail and reported as `unavailable` without it.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use paddock_bus::EventLogError;
use paddock_contract::api::{ErrorBody, ErrorDetail};
use paddock_ledger::LedgerError;
use paddock_telemetry::http::Refusal;

/// The stable error codes of the API.
pub mod code {
    pub const BAD_REQUEST: &str = "bad_request";
    pub const UNAUTHORIZED: &str = "unauthorized";
    pub const FORBIDDEN: &str = "forbidden";
    pub const NOT_FOUND: &str = "not_found";
    pub const METHOD_NOT_ALLOWED: &str = "method_not_allowed";
    pub const CONFLICT: &str = "conflict";
    pub const ALREADY_ENDED: &str = "already_ended";
    pub const PAYLOAD_TOO_LARGE: &str = "payload_too_large";
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    pub const UNKNOWN_PROJECT: &str = "unknown_project";
    pub const BAD_PATH: &str = "bad_path";
    pub const TOO_MANY_SUBSCRIPTIONS: &str = "too_many_subscriptions";
    pub const UNAVAILABLE: &str = "unavailable";
    pub const NODE_GONE: &str = "node_gone";
    pub const QUOTA_EXCEEDED: &str = "quota_exceeded";
    pub const INTERNAL: &str = "internal";
    pub const INVALID_CREDENTIALS: &str = "invalid_credentials";
    pub const TOTP_REQUIRED: &str = "totp_required";
    pub const INVALID_GRANT: &str = "invalid_grant";
    pub const RATE_LIMITED: &str = "rate_limited";
    /// RFC 8628 §3.5: the device grant is not decided yet.
    pub const AUTHORIZATION_PENDING: &str = "authorization_pending";
    /// RFC 8628 §3.5: poll less often.
    pub const SLOW_DOWN: &str = "slow_down";
    /// RFC 8628 §3.5: the user denied the device grant.
    pub const ACCESS_DENIED: &str = "access_denied";
    /// RFC 8628 §3.5: the device grant expired.
    pub const EXPIRED_TOKEN: &str = "expired_token";
    /// 422: a job requires labels that no live node carries (`crate::routing`).
    pub const NO_MATCHING_NODE: &str = "no_matching_node";

    /// Every code above: the values the OpenAPI document allows in `error.code`.
    pub const ALL: &[&str] = &[
        BAD_REQUEST,
        UNAUTHORIZED,
        FORBIDDEN,
        NOT_FOUND,
        METHOD_NOT_ALLOWED,
        CONFLICT,
        ALREADY_ENDED,
        PAYLOAD_TOO_LARGE,
        UNSUPPORTED_MEDIA_TYPE,
        UNKNOWN_PROJECT,
        BAD_PATH,
        TOO_MANY_SUBSCRIPTIONS,
        UNAVAILABLE,
        NODE_GONE,
        QUOTA_EXCEEDED,
        INTERNAL,
        INVALID_CREDENTIALS,
        TOTP_REQUIRED,
        INVALID_GRANT,
        RATE_LIMITED,
        AUTHORIZATION_PENDING,
        SLOW_DOWN,
        ACCESS_DENIED,
        EXPIRED_TOKEN,
        NO_MATCHING_NODE,
    ];
}

/// A client-facing failure. The message is for a person and never holds a secret.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("a valid bearer token is required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    AlreadyEnded(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    UnknownProject(String),
    #[error("{0}")]
    BadPath(String),
    #[error("{0}")]
    Unavailable(String),
    /// The node that holds a session is not connected.
    #[error("{0}")]
    NodeGone(String),
    /// A per-user quota refuses the request.
    #[error("{message}")]
    QuotaExceeded {
        message: String,
        retry_after_secs: u64,
    },
    #[error("internal error")]
    Internal,
    /// A login with a wrong user, password or TOTP code (which one is not said).
    #[error("the user name, password or one-time code is wrong")]
    InvalidCredentials,
    /// The password was right; this user also needs a TOTP code.
    #[error("this account needs a one-time code (totp)")]
    TotpRequired,
    /// A refresh token or device code that cannot be used.
    #[error("{0}")]
    InvalidGrant(String),
    /// Too many requests; try again after this many seconds.
    #[error("too many requests; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("the device authorization is not decided yet")]
    AuthorizationPending,
    #[error("polling too often; wait longer between polls")]
    SlowDown,
    #[error("the device authorization was denied")]
    AccessDenied,
    #[error("the device authorization expired; start again")]
    ExpiredToken,
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => code::BAD_REQUEST,
            ApiError::Unauthorized => code::UNAUTHORIZED,
            ApiError::Forbidden(_) => code::FORBIDDEN,
            ApiError::NotFound(_) => code::NOT_FOUND,
            ApiError::MethodNotAllowed => code::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => code::CONFLICT,
            ApiError::AlreadyEnded(_) => code::ALREADY_ENDED,
            ApiError::PayloadTooLarge(_) => code::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => code::UNSUPPORTED_MEDIA_TYPE,
            ApiError::UnknownProject(_) => code::UNKNOWN_PROJECT,
            ApiError::BadPath(_) => code::BAD_PATH,
            ApiError::Unavailable(_) => code::UNAVAILABLE,
            ApiError::NodeGone(_) => code::NODE_GONE,
            ApiError::QuotaExceeded { .. } => code::QUOTA_EXCEEDED,
            ApiError::Internal => code::INTERNAL,
            ApiError::InvalidCredentials => code::INVALID_CREDENTIALS,
            ApiError::TotpRequired => code::TOTP_REQUIRED,
            ApiError::InvalidGrant(_) => code::INVALID_GRANT,
            ApiError::RateLimited { .. } => code::RATE_LIMITED,
            ApiError::AuthorizationPending => code::AUTHORIZATION_PENDING,
            ApiError::SlowDown => code::SLOW_DOWN,
            ApiError::AccessDenied => code::ACCESS_DENIED,
            ApiError::ExpiredToken => code::EXPIRED_TOKEN,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::UnknownProject(_) | ApiError::BadPath(_) => {
                StatusCode::BAD_REQUEST
            }
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) | ApiError::AlreadyEnded(_) | ApiError::NodeGone(_) => {
                StatusCode::CONFLICT
            }
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::QuotaExceeded { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::InvalidCredentials | ApiError::TotpRequired | ApiError::InvalidGrant(_) => {
                StatusCode::UNAUTHORIZED
            }
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::AuthorizationPending
            | ApiError::SlowDown
            | ApiError::AccessDenied
            | ApiError::ExpiredToken => StatusCode::BAD_REQUEST,
        }
    }

    /// The JSON body sent for this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code().to_string(),
                message: self.to_string(),
            },
        }
    }

    /// A NATS failure: logged in full, reported without its detail.
    pub fn bus(context: &str, error: impl std::fmt::Display) -> ApiError {
        tracing::warn!(error = %error, "{context}");
        ApiError::Unavailable("the event bus is unavailable; try again".into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), Json(self.body())).into_response();
        // What the metrics middleware counts as a refusal.
        let refusal = match &self {
            ApiError::Unauthorized => Some(Refusal::Auth("unauthorized".into())),
            ApiError::Forbidden(_) => Some(Refusal::Auth("forbidden".into())),
            ApiError::RateLimited { .. } => Some(Refusal::RateLimit("request".into())),
            ApiError::QuotaExceeded { message, .. } => Some(Refusal::Quota(
                message
                    .split(':')
                    .next()
                    .and_then(|head| head.strip_prefix("quota "))
                    .unwrap_or("quota")
                    .to_string(),
            )),
            _ => None,
        };
        if let Some(refusal) = refusal {
            response.extensions_mut().insert(refusal);
        }
        if let ApiError::QuotaExceeded {
            retry_after_secs, ..
        } = &self
            && let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        if matches!(self, ApiError::Unauthorized) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ApiError::RateLimited { retry_after_secs } = self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs.max(1)),
            );
        }
        response
    }
}

impl From<LedgerError> for ApiError {
    fn from(error: LedgerError) -> Self {
        tracing::warn!(error = %error, "job ledger failed");
        ApiError::Unavailable("the job ledger is unavailable; try again".into())
    }
}

impl From<paddock_accounts::AccountsError> for ApiError {
    fn from(error: paddock_accounts::AccountsError) -> Self {
        use paddock_accounts::AccountsError as E;
        match error {
            E::Invalid { .. } => ApiError::BadRequest(error.to_string()),
            E::UserExists(_) => ApiError::Conflict(error.to_string()),
            E::NoSuchUser(_) | E::NoSuchDevice(_) => ApiError::NotFound(error.to_string()),
            other => {
                tracing::warn!(error = %other, "accounts store failed");
                ApiError::Unavailable("the accounts store is unavailable; try again".into())
            }
        }
    }
}

impl From<EventLogError> for ApiError {
    fn from(error: EventLogError) -> Self {
        match error {
            EventLogError::Ended { job, kind } => {
                ApiError::AlreadyEnded(format!("job {job} has already ended ({kind})"))
            }
            other => ApiError::bus("event log failed", other),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::PayloadTooLarge("the request body is too large".into())
            }
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::UnsupportedMediaType(
                "send the body as JSON with `Content-Type: application/json`".into(),
            ),
            _ => ApiError::BadRequest(rejection.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        ApiError::BadRequest(rejection.body_text())
    }
}

/// Answer for a path no route matches.
pub async fn no_route() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

/// Answer for a handler that panicked: a JSON 500, not a dropped connection. The
/// panic itself is logged; its text is not sent.
pub fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> axum::response::Response {
    tracing::error!("a request handler panicked");
    axum::response::IntoResponse::into_response(ApiError::Internal)
}

/// Answer for a known path with a method it does not take.
pub async fn wrong_method() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_statuses_are_stable() {
        let cases = [
            (ApiError::BadRequest("x".into()), 400, "bad_request"),
            (ApiError::Unauthorized, 401, "unauthorized"),
            (ApiError::Forbidden("x".into()), 403, "forbidden"),
            (ApiError::NotFound("x".into()), 404, "not_found"),
            (ApiError::Conflict("x".into()), 409, "conflict"),
            (ApiError::AlreadyEnded("x".into()), 409, "already_ended"),
            (
                ApiError::PayloadTooLarge("x".into()),
                413,
                "payload_too_large",
            ),
            (ApiError::UnknownProject("x".into()), 400, "unknown_project"),
            (ApiError::BadPath("x".into()), 400, "bad_path"),
            (ApiError::Unavailable("x".into()), 503, "unavailable"),
            (ApiError::Internal, 500, "internal"),
            (ApiError::InvalidCredentials, 401, "invalid_credentials"),
            (ApiError::TotpRequired, 401, "totp_required"),
            (ApiError::InvalidGrant("x".into()), 401, "invalid_grant"),
            (
                ApiError::RateLimited {
                    retry_after_secs: 3,
                },
                429,
                "rate_limited",
            ),
            (ApiError::AuthorizationPending, 400, "authorization_pending"),
            (ApiError::SlowDown, 400, "slow_down"),
            (ApiError::AccessDenied, 400, "access_denied"),
            (ApiError::ExpiredToken, 400, "expired_token"),
        ];
        for (error, status, code) in cases {
            assert_eq!(error.status().as_u16(), status, "{error:?}");
            assert_eq!(error.code(), code);
            assert_eq!(error.body().error.code, code);
            assert!(
                code::ALL.contains(&code),
                "{code} is missing from code::ALL"
            );
        }
    }
}
