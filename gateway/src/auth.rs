//! Who is calling, and may they. Two kinds of bearer token become a [`Caller`]:
//!
//! - **access tokens** (JWTs from `POST /v1/auth/login` or `/refresh`, see
//!   [`crate::jwt`]): verified, then their device is looked up, so a revoked device, a
//!   disabled user or a logout ends the token at once rather than at its expiry;
//! - **service tokens** from the config's `api_tokens` (scripts, CI), compared in
//!   constant time, each acting as the user and with the scopes it names.
//!
//! The [`Caller`] extractor reads only the `Authorization: Bearer …` header;
//! [`WsCaller`] also accepts `?access_token=` because browsers cannot set headers on a
//! WebSocket. Both then apply the route's policy from [`crate::access::ROUTES`]: its
//! scope (403 without it) and its rate limit (429). Handlers of routes not in that
//! table check their scope themselves with [`Caller::require`]. Tokens never reach a
//! log: they are not `Debug`, and the request log records paths without queries.

use crate::access::{self, Access};
use crate::config::{ApiToken, GatewayConfig};
use crate::error::ApiError;
use crate::jwt::TokenKeys;
use crate::limits::{LimitKey, RateLimits};
use crate::state::AppState;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Query};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::{Extensions, HeaderMap};
use paddock_accounts::{Accounts, SessionState};
pub use paddock_accounts::{Scope, ScopeSet};
use serde::Deserialize;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// What a caller may do beyond their own jobs: admins (the `users:admin` scope) see
/// and steer every user's jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    Admin,
}

/// How a caller proved who they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// A signed-in user's access token, issued to one device.
    Account { user_id: String, device_id: String },
    /// A static service token from the config.
    Service,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The user's name: what jobs record as their submitter.
    pub user: String,
    pub role: Role,
    pub scopes: ScopeSet,
    pub identity: Identity,
    /// The client's IP address, when known.
    pub address: Option<String>,
}

impl Caller {
    /// A caller with these scopes (the role follows from them).
    pub fn new(user: impl Into<String>, scopes: ScopeSet, identity: Identity) -> Caller {
        let role = if scopes.contains(Scope::UsersAdmin) {
            Role::Admin
        } else {
            Role::User
        };
        Caller {
            user: user.into(),
            role,
            scopes,
            identity,
            address: None,
        }
    }

    pub fn has(&self, scope: Scope) -> bool {
        self.scopes.contains(scope)
    }

    /// 403 `forbidden` naming the scope unless the caller has it.
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        if self.has(scope) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this needs the {scope} scope, which your token does not have"
            )))
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn user_id(&self) -> Option<&str> {
        match &self.identity {
            Identity::Account { user_id, .. } => Some(user_id),
            Identity::Service => None,
        }
    }

    pub fn device_id(&self) -> Option<&str> {
        match &self.identity {
            Identity::Account { device_id, .. } => Some(device_id),
            Identity::Service => None,
        }
    }

    /// The account behind an access token; 403 for a service token.
    pub fn account(&self) -> Result<(&str, &str), ApiError> {
        match &self.identity {
            Identity::Account { user_id, device_id } => Ok((user_id, device_id)),
            Identity::Service => Err(ApiError::Forbidden(
                "this needs a signed-in account, not a service token".into(),
            )),
        }
    }

    /// The keys this caller's requests are rate-limited under.
    pub fn limit_keys(&self) -> Vec<LimitKey> {
        let mut keys = vec![LimitKey::User(self.user.clone())];
        if let Some(device) = self.device_id() {
            keys.push(LimitKey::Device(device.to_string()));
        }
        if let Some(address) = &self.address {
            keys.push(LimitKey::Address(address.clone()));
        }
        keys
    }
}

/// Tokens and their checks; held in the app state.
pub struct Authenticator {
    service_tokens: Vec<(String, Vec<u8>, ScopeSet)>,
    keys: TokenKeys,
    accounts: Accounts,
    limits: RateLimits,
    trust_forwarded_for: bool,
}

impl Authenticator {
    pub fn new(config: &GatewayConfig, accounts: Accounts, keys: TokenKeys) -> Self {
        Authenticator {
            service_tokens: service_tokens(&config.api_tokens),
            keys,
            accounts,
            limits: RateLimits::new(&config.rate_limits),
            trust_forwarded_for: config.auth.trust_forwarded_for,
        }
    }

    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    pub fn keys(&self) -> &TokenKeys {
        &self.keys
    }

    pub fn limits(&self) -> &RateLimits {
        &self.limits
    }

    /// The caller a presented service token belongs to. Every configured token is
    /// compared, in constant time, whether or not an earlier one matched.
    pub fn service_caller(&self, presented: &str) -> Option<Caller> {
        find_service_caller(&self.service_tokens, presented)
    }

    /// The caller behind a bearer token, or 401.
    pub async fn authenticate(&self, presented: &str) -> Result<Caller, ApiError> {
        if presented.split('.').count() != 3 {
            return self.service_caller(presented).ok_or(ApiError::Unauthorized);
        }
        let claims = self.keys.verify(presented).map_err(|e| {
            tracing::debug!(error = %e, "access token refused");
            ApiError::Unauthorized
        })?;
        let scopes = ScopeSet::parse_list(&claims.scope).map_err(|_| ApiError::Unauthorized)?;
        match self.accounts.session_state(&claims.did).await? {
            SessionState::Active => {}
            state => {
                tracing::debug!(device = %claims.did, ?state, "access token of an ended session");
                return Err(ApiError::Unauthorized);
            }
        }
        Ok(Caller::new(
            claims.name,
            scopes,
            Identity::Account {
                user_id: claims.sub,
                device_id: claims.did,
            },
        ))
    }

    /// The client's address: the peer's IP, or the last `X-Forwarded-For` entry when
    /// the config trusts a proxy to set it.
    pub fn client_address(&self, headers: &HeaderMap, extensions: &Extensions) -> Option<String> {
        if self.trust_forwarded_for
            && let Some(forwarded) = headers
                .get("x-forwarded-for")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit(',').next())
                .map(str::trim)
                .filter(|v| v.parse::<std::net::IpAddr>().is_ok())
        {
            return Some(forwarded.to_string());
        }
        extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip().to_string())
    }
}

fn service_tokens(tokens: &[ApiToken]) -> Vec<(String, Vec<u8>, ScopeSet)> {
    tokens
        .iter()
        .map(|t| {
            (
                t.user.clone(),
                t.token.as_bytes().to_vec(),
                ScopeSet::new(t.scopes.iter().copied()),
            )
        })
        .collect()
}

fn find_service_caller(tokens: &[(String, Vec<u8>, ScopeSet)], presented: &str) -> Option<Caller> {
    let presented = presented.as_bytes();
    let mut matched = u32::MAX;
    for (index, (_, token, _)) in tokens.iter().enumerate() {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        let equal = token.as_slice().ct_eq(presented);
        matched.conditional_assign(&index, equal);
    }
    let (user, _, scopes) = tokens.get(usize::try_from(matched).ok()?)?;
    Some(Caller::new(user.clone(), scopes.clone(), Identity::Service))
}

/// The token of an `Authorization: Bearer <token>` header, if there is one.
fn bearer_token(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Where the audit middleware learns who made a request it records: the extractor
/// fills it once the caller is known.
#[derive(Clone, Default)]
pub struct CallerSlot(Arc<OnceLock<Caller>>);

impl CallerSlot {
    pub fn get(&self) -> Option<&Caller> {
        self.0.get()
    }
}

/// Authenticates `token`, then applies the route's policy (scope, rate limit).
async fn authorize(parts: &Parts, state: &AppState, token: &str) -> Result<Caller, ApiError> {
    let auth = state.auth();
    let mut caller = auth.authenticate(token).await?;
    caller.address = auth.client_address(&parts.headers, &parts.extensions);
    if let Some(slot) = parts.extensions.get::<CallerSlot>() {
        let _ = slot.0.set(caller.clone());
    }
    let policy = parts
        .extensions
        .get::<MatchedPath>()
        .and_then(|path| access::route_policy(&parts.method, path.as_str()));
    if let Some(policy) = policy {
        if let Access::Scope(scope) = policy.access {
            caller.require(scope)?;
        }
        if let Some(kind) = policy.limit {
            auth.limits().check(kind, &caller.limit_keys())?;
        }
    }
    Ok(caller)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts).ok_or(ApiError::Unauthorized)?;
        authorize(parts, state, token).await
    }
}

/// A caller authenticated by header or by the `access_token` query parameter.
pub struct WsCaller(pub Caller);

#[derive(Deserialize)]
struct AccessToken {
    access_token: Option<String>,
}

impl FromRequestParts<AppState> for WsCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(token) = bearer_token(parts) {
            return authorize(parts, state, token).await.map(WsCaller);
        }
        let query =
            Query::<AccessToken>::try_from_uri(&parts.uri).map_err(|_| ApiError::Unauthorized)?;
        let token = query.0.access_token.ok_or(ApiError::Unauthorized)?;
        authorize(parts, state, &token).await.map(WsCaller)
    }
}

/// The client's address, for routes that take no token (login, refresh).
pub struct ClientAddress(pub Option<String>);

impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, std::convert::Infallible> {
        Ok(ClientAddress(
            state
                .auth()
                .client_address(&parts.headers, &parts.extensions),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> Vec<(String, Vec<u8>, ScopeSet)> {
        service_tokens(&[
            ApiToken {
                user: "ada".into(),
                token: "token-a".into(),
                scopes: vec![Scope::JobsRead],
            },
            ApiToken {
                user: "bob".into(),
                token: "token-b".into(),
                scopes: vec![Scope::JobsRead, Scope::UsersAdmin],
            },
        ])
    }

    fn service_caller(presented: &str) -> Option<Caller> {
        find_service_caller(&tokens(), presented)
    }

    #[test]
    fn each_service_token_names_its_user_and_scopes() {
        let ada = service_caller("token-a").expect("ada");
        assert_eq!(ada.user, "ada");
        assert_eq!(ada.role, Role::User);
        assert!(ada.require(Scope::JobsRead).is_ok());
        assert_eq!(
            ada.require(Scope::JobsSubmit).map_err(|e| e.code()),
            Err("forbidden")
        );
        let bob = service_caller("token-b").expect("bob");
        assert!(bob.is_admin());
        for wrong in ["", "token-", "token-ab", "TOKEN-A", "token-c"] {
            assert!(service_caller(wrong).is_none(), "{wrong:?}");
        }
    }

    #[test]
    fn a_service_caller_has_no_account() {
        let ada = service_caller("token-a").expect("ada");
        assert!(ada.account().is_err());
        assert_eq!(ada.limit_keys(), vec![LimitKey::User("ada".into())]);
        let account = Caller::new(
            "ada",
            ScopeSet::default_user(),
            Identity::Account {
                user_id: "u".into(),
                device_id: "d".into(),
            },
        );
        assert_eq!(account.account().ok(), Some(("u", "d")));
        assert_eq!(account.device_id(), Some("d"));
    }

    fn parts_with(header: Option<&str>) -> Parts {
        let mut builder = axum::http::Request::builder().uri("/v1/jobs");
        if let Some(value) = header {
            builder = builder.header(AUTHORIZATION, value);
        }
        let (parts, ()) = builder
            .body(())
            .unwrap_or_else(|e| panic!("request: {e}"))
            .into_parts();
        parts
    }

    #[test]
    fn only_bearer_headers_carry_a_token() {
        assert_eq!(bearer_token(&parts_with(Some("Bearer abc"))), Some("abc"));
        assert_eq!(bearer_token(&parts_with(Some("bearer  abc "))), Some("abc"));
        assert_eq!(bearer_token(&parts_with(Some("Basic abc"))), None);
        assert_eq!(bearer_token(&parts_with(Some("Bearer"))), None);
        assert_eq!(bearer_token(&parts_with(None)), None);
    }
}
