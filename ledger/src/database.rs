//! Opening the ledger's database through sqlx's `Any` driver: which back end a URL
//! names, what SQLite needs before the first query (its folder, `mode=rwc` so the file
//! is created, WAL so the gateway can read while the coordinator writes), and how a
//! write transaction begins on each back end.
//!
//! SQLite keeps sqlx's default busy timeout (5 s): two processes on one machine share
//! the file, and a writer waits for the other instead of failing at once.

use crate::LedgerError;
use crate::error::redact_url;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, Transaction};
use std::path::Path;
use std::time::Duration;

/// The database behind a ledger URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// A URL ready for sqlx, and what it points at.
#[derive(Debug, PartialEq)]
pub(crate) struct Target {
    pub backend: Backend,
    /// The URL given to sqlx (for SQLite, with `mode=rwc` added when no mode is set).
    pub connect_url: String,
    /// The URL as messages show it.
    pub shown_url: String,
    /// The SQLite file, when the URL names one.
    pub sqlite_file: Option<String>,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, LedgerError> {
        let shown_url = redact_url(url);
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(Target {
                backend: Backend::Postgres,
                connect_url: url.to_string(),
                shown_url,
                sqlite_file: None,
            });
        }
        let Some(rest) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        else {
            return Err(LedgerError::UnsupportedUrl { url: shown_url });
        };
        let (path, params) = match rest.split_once('?') {
            Some((path, params)) => (path, Some(params)),
            None => (rest, None),
        };
        let in_memory = path.is_empty() || path == ":memory:";
        let has_mode = params.is_some_and(|p| p.split('&').any(|kv| kv.starts_with("mode=")));
        let connect_url = match (has_mode, in_memory, params) {
            (true, _, _) | (false, true, _) => url.to_string(),
            (false, false, Some(params)) => format!("sqlite://{path}?{params}&mode=rwc"),
            (false, false, None) => format!("sqlite://{path}?mode=rwc"),
        };
        Ok(Target {
            backend: Backend::Sqlite,
            connect_url,
            shown_url,
            sqlite_file: (!in_memory).then(|| path.to_string()),
        })
    }

    /// Creates the SQLite file's folder if it is missing (the default URL points into
    /// `.paddock/`, which a first start has not made yet).
    pub fn prepare(&self) -> Result<(), LedgerError> {
        let Some(file) = &self.sqlite_file else {
            return Ok(());
        };
        match Path::new(file).parent() {
            Some(folder) if !folder.as_os_str().is_empty() => std::fs::create_dir_all(folder)
                .map_err(|source| LedgerError::SqliteFolder {
                    url: self.shown_url.clone(),
                    source,
                }),
            _ => Ok(()),
        }
    }

    pub async fn open_pool(&self) -> Result<AnyPool, LedgerError> {
        sqlx::any::install_default_drivers();
        self.prepare()?;
        let max_connections = match self.backend {
            Backend::Sqlite => 4,
            Backend::Postgres => 8,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&self.connect_url)
            .await
            .map_err(|source| LedgerError::Connect {
                url: self.shown_url.clone(),
                source,
            })?;
        if self.backend == Backend::Sqlite && self.sqlite_file.is_some() {
            self.use_wal(&pool).await?;
        }
        Ok(pool)
    }

    /// Switches the file to write-ahead logging, once for all connections (the mode is
    /// stored in the file). Another process switching at the same moment holds the lock
    /// this needs, and SQLite does not wait for it, so a busy answer (or the old mode)
    /// is retried for a few seconds.
    async fn use_wal(&self, pool: &AnyPool) -> Result<(), LedgerError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mode: Result<String, sqlx::Error> = sqlx::query_scalar("PRAGMA journal_mode = WAL")
                .fetch_one(pool)
                .await;
            match mode {
                Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
                // SQLite answers with the old mode when it could not switch now.
                Ok(_) if attempt < 50 => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Ok(mode) => {
                    tracing::warn!(url = %self.shown_url, %mode, "SQLite refused WAL mode; the ledger works, with less concurrency");
                    return Ok(());
                }
                Err(source) if attempt < 50 && is_busy(&source) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(source) => {
                    return Err(LedgerError::Migrate {
                        url: self.shown_url.clone(),
                        step: "PRAGMA journal_mode = WAL",
                        source,
                    });
                }
            }
        }
    }

    /// Begins a transaction that will write. SQLite takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so the busy timeout applies; a deferred transaction that
    /// reads first could not upgrade its lock while another process writes.
    pub async fn begin_write(
        &self,
        pool: &AnyPool,
    ) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => pool.begin().await,
        }
    }
}

fn is_busy(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|e| e.message().contains("locked") || e.message().contains("busy"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_create_the_file_unless_a_mode_is_given() {
        let t = Target::parse("sqlite:///var/lib/paddock/ledger.db").expect("parse");
        assert_eq!(t.backend, Backend::Sqlite);
        assert_eq!(
            t.connect_url,
            "sqlite:///var/lib/paddock/ledger.db?mode=rwc"
        );
        assert_eq!(t.sqlite_file.as_deref(), Some("/var/lib/paddock/ledger.db"));

        let t = Target::parse("sqlite://.paddock/ledger.db").expect("parse");
        assert_eq!(t.connect_url, "sqlite://.paddock/ledger.db?mode=rwc");
        assert_eq!(t.sqlite_file.as_deref(), Some(".paddock/ledger.db"));

        let t = Target::parse("sqlite://ledger.db?cache=shared").expect("parse");
        assert_eq!(t.connect_url, "sqlite://ledger.db?cache=shared&mode=rwc");

        let t = Target::parse("sqlite://ledger.db?mode=ro").expect("parse");
        assert_eq!(t.connect_url, "sqlite://ledger.db?mode=ro");
    }

    #[test]
    fn postgres_urls_pass_through_and_others_are_refused() {
        let t = Target::parse("postgres://p:secret@db/paddock").expect("parse");
        assert_eq!(t.backend, Backend::Postgres);
        assert_eq!(t.connect_url, "postgres://p:secret@db/paddock");
        assert!(!t.shown_url.contains("secret"));

        let err = Target::parse("mysql://u:secret@db/x").expect_err("refused");
        let message = err.to_string();
        assert!(message.contains("mysql://u:***@db/x"), "{message}");
        assert!(!message.contains("secret"));
    }
}
