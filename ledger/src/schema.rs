//! The ledger's schema and its migrations, applied at connect. Each migration is a list
//! of statements in SQL that SQLite and PostgreSQL both accept; `ledger_schema_version`
//! records which ones ran. Several services may connect at once (the gateway and the
//! coordinator share one database), so migrating holds the database's write lock:
//! `BEGIN IMMEDIATE` on SQLite, a transaction-scoped advisory lock on PostgreSQL.
//!
//! A migration, once released, is never edited: add the next one.

use crate::LedgerError;
use crate::database::{Backend, Target};
use sqlx::AnyPool;

/// Migrations by version, oldest first.
const MIGRATIONS: &[(i64, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE IF NOT EXISTS jobs (
            id TEXT PRIMARY KEY,
            project TEXT NOT NULL,
            prompt TEXT NOT NULL,
            pool TEXT,
            submitted_by TEXT NOT NULL,
            status TEXT NOT NULL,
            node TEXT,
            attempts BIGINT NOT NULL DEFAULT 0,
            attempt_reasons TEXT NOT NULL DEFAULT '[]',
            created_at_ms BIGINT NOT NULL,
            started_at_ms BIGINT,
            finished_at_ms BIGINT,
            updated_at_ms BIGINT NOT NULL,
            exit_reason TEXT,
            exit_message TEXT,
            session_id TEXT,
            num_turns BIGINT,
            cost_usd DOUBLE PRECISION,
            input_tokens BIGINT,
            output_tokens BIGINT,
            last_seq BIGINT NOT NULL DEFAULT 0
        )",
            "CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, id)",
            "CREATE INDEX IF NOT EXISTS jobs_by_submitter ON jobs (submitted_by, id)",
            "CREATE INDEX IF NOT EXISTS jobs_by_project ON jobs (project, id)",
        ],
    ),
    (2, &["ALTER TABLE jobs ADD COLUMN session_state TEXT"]),
    (
        3,
        &[
            // Join tokens, kept only as a hash of the secret (`join_tokens.rs`).
            "CREATE TABLE IF NOT EXISTS node_join_tokens (
            id TEXT PRIMARY KEY,
            token_hash TEXT NOT NULL UNIQUE,
            created_by TEXT NOT NULL,
            created_at_ms BIGINT NOT NULL,
            expires_at_ms BIGINT NOT NULL,
            uses BIGINT NOT NULL,
            uses_left BIGINT NOT NULL,
            pool TEXT,
            labels TEXT NOT NULL DEFAULT '{}',
            revoked_at_ms BIGINT,
            last_used_at_ms BIGINT,
            last_used_by TEXT
        )",
            // Each node's NATS credentials (public keys); at most one in force per node.
            "CREATE TABLE IF NOT EXISTS node_credentials (
            public_key TEXT PRIMARY KEY,
            node TEXT NOT NULL,
            token_id TEXT,
            issued_at_ms BIGINT NOT NULL,
            revoked_at_ms BIGINT,
            revoked_by TEXT
        )",
            "CREATE UNIQUE INDEX IF NOT EXISTS node_credentials_in_force
            ON node_credentials (node) WHERE revoked_at_ms IS NULL",
        ],
    ),
];

/// The newest schema version this build knows.
pub const CURRENT_VERSION: i64 = 3;

/// An arbitrary constant that names the ledger's migration lock on PostgreSQL.
const POSTGRES_MIGRATION_LOCK: i64 = 0x5061_6464_6f63_6b4c; // "PaddockL"

/// Creates or upgrades the schema; does nothing when it is current.
pub(crate) async fn migrate(target: &Target, pool: &AnyPool) -> Result<(), LedgerError> {
    let fail = |step: &'static str| {
        let url = target.shown_url.clone();
        move |source| LedgerError::Migrate { url, step, source }
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
        "CREATE TABLE IF NOT EXISTS ledger_schema_version (
            version BIGINT PRIMARY KEY,
            applied_at_ms BIGINT NOT NULL
        )",
    )
    .execute(&mut *tx)
    .await
    .map_err(fail("create ledger_schema_version"))?;
    let found: Option<i64> = sqlx::query_scalar(
        "SELECT version FROM ledger_schema_version ORDER BY version DESC LIMIT 1",
    )
    .fetch_optional(&mut *tx)
    .await
    .map_err(fail("read the schema version"))?;
    let found = found.unwrap_or(0);
    if found > CURRENT_VERSION {
        return Err(LedgerError::SchemaTooNew {
            url: target.shown_url.clone(),
            found,
            known: CURRENT_VERSION,
        });
    }
    for (version, statements) in MIGRATIONS.iter().filter(|(v, _)| *v > found) {
        tracing::info!(url = %target.shown_url, version, "migrating the ledger schema");
        for statement in *statements {
            sqlx::query(*statement)
                .execute(&mut *tx)
                .await
                .map_err(fail("apply a migration"))?;
        }
        sqlx::query("INSERT INTO ledger_schema_version (version, applied_at_ms) VALUES ($1, $2)")
            .bind(*version)
            .bind(paddock_contract::now_unix_ms())
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
