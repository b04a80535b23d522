//! Who is calling: bearer tokens from the config, compared in constant time, turned
//! into a [`Caller`] by two extractors. [`Caller`] itself reads only the
//! `Authorization: Bearer …` header; [`WsCaller`] also accepts `?access_token=` because
//! browsers cannot set headers on a WebSocket. This module is the one to replace when
//! accounts and JWTs arrive: handlers only ever see a [`Caller`]. Tokens never reach a
//! log: they are not `Debug`, and the request log records paths without queries.

use crate::config::ApiToken;
use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{FromRequestParts, Query};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::Deserialize;
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// What a caller may do beyond their own jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    Admin,
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
    pub role: Role,
}

/// The configured tokens.
pub struct Authenticator {
    entries: Vec<(String, Vec<u8>)>,
}

impl Authenticator {
    pub fn new(tokens: &[ApiToken]) -> Self {
        Authenticator {
            entries: tokens
                .iter()
                .map(|t| (t.user.clone(), t.token.as_bytes().to_vec()))
                .collect(),
        }
    }

    /// The caller a presented token belongs to. Every configured token is compared,
    /// in constant time, whether or not an earlier one matched.
    pub fn authenticate(&self, presented: &str) -> Option<Caller> {
        let presented = presented.as_bytes();
        let mut matched = u32::MAX;
        for (index, (_, token)) in self.entries.iter().enumerate() {
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            let equal = token.as_slice().ct_eq(presented);
            matched.conditional_assign(&index, equal);
        }
        let (user, _) = self.entries.get(usize::try_from(matched).ok()?)?;
        // Every token is a plain user's until accounts with scopes arrive.
        Some(Caller {
            user: user.clone(),
            role: Role::User,
        })
    }
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

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer_token(parts).ok_or(ApiError::Unauthorized)?;
        state
            .auth()
            .authenticate(token)
            .ok_or(ApiError::Unauthorized)
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
            return state
                .auth()
                .authenticate(token)
                .map(WsCaller)
                .ok_or(ApiError::Unauthorized);
        }
        let query =
            Query::<AccessToken>::try_from_uri(&parts.uri).map_err(|_| ApiError::Unauthorized)?;
        let token = query.0.access_token.ok_or(ApiError::Unauthorized)?;
        state
            .auth()
            .authenticate(&token)
            .map(WsCaller)
            .ok_or(ApiError::Unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authenticator() -> Authenticator {
        Authenticator::new(&[
            ApiToken {
                user: "ada".into(),
                token: "token-a".into(),
            },
            ApiToken {
                user: "bob".into(),
                token: "token-b".into(),
            },
        ])
    }

    #[test]
    fn each_token_names_its_user() {
        let auth = authenticator();
        assert_eq!(
            auth.authenticate("token-a").map(|c| c.user),
            Some("ada".into())
        );
        assert_eq!(
            auth.authenticate("token-b").map(|c| c.user),
            Some("bob".into())
        );
        for wrong in ["", "token-", "token-ab", "TOKEN-A", "token-c"] {
            assert!(auth.authenticate(wrong).is_none(), "{wrong:?}");
        }
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
