//! The accounts schema and its migrations, applied at connect. Each migration is a
//! list of statements that SQLite and PostgreSQL both accept; `accounts_schema_version`
//! records which ran. Several gateways may start at once on one database, so migrating
//! holds the write lock: `BEGIN IMMEDIATE` on SQLite, a transaction-scoped advisory
//! lock on PostgreSQL. Times are milliseconds since the Unix epoch in `BIGINT`s;
//! flags are nullable times (`disabled_at_ms`, `revoked_at_ms`), never booleans, so
//! the `Any` driver reads them the same way on both back ends.
//!
//! Secrets are never stored in the clear: passwords as argon2id PHC strings, refresh
//! tokens and device codes as SHA-256 hashes. TOTP secrets must be readable to check
//! a code, so they are stored as they are; the database is a secret of its own.
//!
//! A migration, once released, is never edited: add the next one.

use crate::AccountsError;
use crate::database::{Backend, Target};
use sqlx::AnyPool;

const MIGRATIONS: &[(i64, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE IF NOT EXISTS users (
            id TEXT PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            password_hash TEXT NOT NULL,
            scopes TEXT NOT NULL,
            totp_secret TEXT,
            totp_pending_secret TEXT,
            totp_last_step BIGINT,
            disabled_at_ms BIGINT,
            created_at_ms BIGINT NOT NULL,
            updated_at_ms BIGINT NOT NULL
        )",
            "CREATE TABLE IF NOT EXISTS devices (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users (id),
            name TEXT NOT NULL,
            created_at_ms BIGINT NOT NULL,
            last_seen_at_ms BIGINT NOT NULL,
            last_address TEXT,
            revoked_at_ms BIGINT,
            revoked_reason TEXT
        )",
            "CREATE INDEX IF NOT EXISTS devices_by_user ON devices (user_id, created_at_ms)",
            "CREATE TABLE IF NOT EXISTS refresh_families (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users (id),
            device_id TEXT NOT NULL REFERENCES devices (id),
            created_at_ms BIGINT NOT NULL,
            expires_at_ms BIGINT NOT NULL,
            revoked_at_ms BIGINT,
            revoked_reason TEXT
        )",
            "CREATE INDEX IF NOT EXISTS refresh_families_by_device ON refresh_families (device_id)",
            "CREATE TABLE IF NOT EXISTS refresh_tokens (
            token_hash TEXT PRIMARY KEY,
            family_id TEXT NOT NULL REFERENCES refresh_families (id),
            issued_at_ms BIGINT NOT NULL,
            expires_at_ms BIGINT NOT NULL,
            used_at_ms BIGINT
        )",
            "CREATE INDEX IF NOT EXISTS refresh_tokens_by_family ON refresh_tokens (family_id)",
            "CREATE TABLE IF NOT EXISTS audit_log (
            id TEXT PRIMARY KEY,
            at_ms BIGINT NOT NULL,
            actor TEXT,
            device_id TEXT,
            address TEXT,
            action TEXT NOT NULL,
            target TEXT,
            outcome TEXT NOT NULL,
            detail TEXT
        )",
            "CREATE INDEX IF NOT EXISTS audit_by_actor ON audit_log (actor, id)",
            "CREATE INDEX IF NOT EXISTS audit_by_action ON audit_log (action, id)",
            "CREATE TABLE IF NOT EXISTS device_grants (
            device_code_hash TEXT PRIMARY KEY,
            user_code TEXT NOT NULL UNIQUE,
            client_name TEXT NOT NULL,
            address TEXT,
            created_at_ms BIGINT NOT NULL,
            expires_at_ms BIGINT NOT NULL,
            interval_ms BIGINT NOT NULL,
            last_polled_at_ms BIGINT,
            status TEXT NOT NULL,
            user_id TEXT,
            decided_at_ms BIGINT
        )",
        ],
    ),
    (
        2,
        &[
            // Web Push subscriptions (push.rs): one per browser endpoint, owned by a
            // user and the device (sign-in) that made it. The keys are public or
            // per-subscription values from the browser, base64url as it sent them.
            "CREATE TABLE IF NOT EXISTS push_subscriptions (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            device_id TEXT REFERENCES devices (id) ON DELETE CASCADE,
            endpoint TEXT NOT NULL UNIQUE,
            p256dh TEXT NOT NULL,
            auth TEXT NOT NULL,
            created_at_ms BIGINT NOT NULL,
            updated_at_ms BIGINT NOT NULL
        )",
            "CREATE INDEX IF NOT EXISTS push_subscriptions_by_user ON push_subscriptions (user_id)",
        ],
    ),
];

/// The newest schema version this build knows.
pub(crate) const CURRENT_VERSION: i64 = 2;

/// Names the accounts' migration lock on PostgreSQL ("PaddockA").
const POSTGRES_MIGRATION_LOCK: i64 = 0x5061_6464_6f63_6b41;

pub(crate) async fn migrate(target: &Target, pool: &AnyPool) -> Result<(), AccountsError> {
    let fail = |step: &'static str| {
        let url = target.shown_url.clone();
        move |source| AccountsError::Migrate { url, step, source }
    };
    let mut tx = target
        .begin_write(pool)
        .await
        .map_err(fail("begin the migration"))?;
    if target.backend == Backend::Postgres {
        // pg_advisory_xact_lock returns `void`, which the Any driver cannot decode.
        sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock($1)) AS migration_lock")
            .bind(POSTGRES_MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(fail("take the migration lock"))?;
    }
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS accounts_schema_version (
            version BIGINT PRIMARY KEY,
            applied_at_ms BIGINT NOT NULL
        )",
    )
    .execute(&mut *tx)
    .await
    .map_err(fail("create accounts_schema_version"))?;
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT version FROM accounts_schema_version ORDER BY version DESC LIMIT 1",
    )
    .fetch_optional(&mut *tx)
    .await
    .map_err(fail("read the schema version"))?;
    let found = found.unwrap_or(0);
    if found > CURRENT_VERSION {
        return Err(AccountsError::SchemaTooNew {
            url: target.shown_url.clone(),
            found,
            known: CURRENT_VERSION,
        });
    }
    for (version, statements) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tracing::info!(url = %target.shown_url, version, "migrating the accounts schema");
        for statement in *statements {
            sqlx::query(*statement)
                .execute(&mut *tx)
                .await
                .map_err(fail("apply a migration"))?;
        }
        sqlx::query("INSERT INTO accounts_schema_version (version, applied_at_ms) VALUES ($1, $2)")
            .bind(*version)
            .bind(crate::now_ms())
            .execute(&mut *tx)
            .await
            .map_err(fail("record the schema version"))?;
    }
    tx.commit().await.map_err(fail("commit the migration"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_up_to_the_current_version() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|(v, _)| *v).collect();
        let expected: Vec<i64> = (1..=CURRENT_VERSION).collect();
        assert_eq!(versions, expected);
    }
}
