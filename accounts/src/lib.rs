//! Paddock's accounts: users with argon2id password hashes and scopes, an optional
//! TOTP second factor, devices (one per signed-in client), refresh-token families
//! with rotation on every use and reuse detection (RFC 9700), device authorization
//! grants (RFC 8628), and the audit log. The gateway is its one user: it turns these
//! records into HTTP answers and JWT access tokens; this crate knows SQL and nothing
//! of HTTP, NATS or JWTs.
//!
//! One code path for SQLite (a file, the default on one machine) and PostgreSQL
//! (several gateways), through sqlx's `Any` driver with portable SQL and its own
//! `accounts_schema_version`, so it can share a database with the job ledger or live
//! in its own.
//!
//! Map: [`scope`] (what an account may do), `password` (argon2id), `secret` (random
//! tokens and their hashes), `users` (accounts and TOTP), `sessions` (devices and
//! refresh families), `grants` (device authorization), `audit` (the log), `push` (Web
//! Push subscriptions), `schema` (migrations), `database` (opening the pool).

mod audit;
mod database;
mod error;
mod grants;
mod password;
mod push;
mod schema;
pub mod scope;
mod secret;
mod sessions;
mod users;

pub use audit::{AuditEntry, AuditPage, AuditQuery, AuditRecord, Outcome};
pub use error::{AccountsError, redact_url};
pub use grants::{DeviceGrant, GrantDecision, GrantPoll, normalise_user_code};
pub use password::{MAX_PASSWORD_BYTES, MIN_PASSWORD_CHARS, PasswordCost};
pub use push::{MAX_ENDPOINT_BYTES, NewPushSubscription, PushRegistration, PushSubscription};
pub use scope::{Scope, ScopeSet, UnknownScope};
pub use secret::{new_token, token_hash};
pub use sessions::{Device, IssuedRefresh, Rotation, Session, SessionState};
pub use users::{PasswordCheck, TotpCheck, TotpEnrolment, User, check_user_name, totp_code};

use database::Target;
use password::Passwords;
use sqlx::any::AnyRow;
use sqlx::{Any, AnyPool, Row};
use std::sync::Arc;
use std::time::Duration;

/// How the store behaves; the defaults suit production.
#[derive(Clone, Debug)]
pub struct AccountsOptions {
    /// Cost of new password hashes.
    pub password_cost: PasswordCost,
    /// How long a refresh token stays usable if it is not used.
    pub refresh_token_ttl: Duration,
    /// How long a sign-in lasts at most, however often it is refreshed.
    pub refresh_family_ttl: Duration,
    /// The issuer shown by authenticator apps for TOTP.
    pub totp_issuer: String,
}

impl Default for AccountsOptions {
    fn default() -> Self {
        AccountsOptions {
            password_cost: PasswordCost::OWASP,
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            refresh_family_ttl: Duration::from_secs(90 * 24 * 3600),
            totp_issuer: "Paddock".into(),
        }
    }
}

/// A handle on the accounts database; cheap to clone (one pool behind it).
#[derive(Clone)]
pub struct Accounts {
    pool: AnyPool,
    target: Arc<Target>,
    passwords: Passwords,
    options: Arc<AccountsOptions>,
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts")
            .field("url", &self.target.shown_url)
            .finish_non_exhaustive()
    }
}

impl Accounts {
    /// Opens the database with the default options and creates or migrates the schema.
    pub async fn connect(url: &str) -> Result<Accounts, AccountsError> {
        Accounts::connect_with(url, AccountsOptions::default()).await
    }

    /// Opens the database and creates or migrates the schema.
    /// `url`: `sqlite:///abs/path.db`, `sqlite://relative.db` or `postgres://…`.
    pub async fn connect_with(
        url: &str,
        options: AccountsOptions,
    ) -> Result<Accounts, AccountsError> {
        let target = Target::parse(url)?;
        let passwords = Passwords::new(options.password_cost)?;
        let pool = target.open_pool().await?;
        schema::migrate(&target, &pool).await?;
        tracing::debug!(url = %target.shown_url, "accounts ready");
        Ok(Accounts {
            pool,
            target: Arc::new(target),
            passwords,
            options: Arc::new(options),
        })
    }

    /// The database URL with any password replaced by `***`.
    pub fn shown_url(&self) -> &str {
        &self.target.shown_url
    }

    pub fn options(&self) -> &AccountsOptions {
        &self.options
    }

    /// Succeeds when the database answers a query.
    pub async fn ping(&self) -> Result<(), AccountsError> {
        let _: i64 = sqlx::query_scalar("SELECT CAST(1 AS BIGINT)")
            .fetch_one(&self.pool)
            .await
            .map_err(self.failed("ping"))?;
        Ok(())
    }

    /// Closes the pool's connections, waiting for queries in progress.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) fn failed(
        &self,
        operation: &'static str,
    ) -> impl Fn(sqlx::Error) -> AccountsError + use<> {
        let url = self.target.shown_url.clone();
        move |source| AccountsError::Query {
            operation,
            url: url.clone(),
            source,
        }
    }

    pub(crate) async fn begin_write(
        &self,
        operation: &'static str,
    ) -> Result<sqlx::Transaction<'static, Any>, AccountsError> {
        self.target
            .begin_write(&self.pool)
            .await
            .map_err(self.failed(operation))
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

pub(crate) fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// A column of a row, or [`AccountsError::Corrupt`] naming it.
pub(crate) fn column<'r, T>(
    row: &'r AnyRow,
    what: &'static str,
    name: &str,
) -> Result<T, AccountsError>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    row.try_get(name).map_err(|e| AccountsError::Corrupt {
        what,
        detail: format!("column {name}: {e}"),
    })
}
