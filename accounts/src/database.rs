//! Opening the accounts database through sqlx's `Any` driver, the same way the
//! ledger opens its own: which back end a URL names, what SQLite needs before the
//! first query (its folder, `mode=rwc`, WAL so several processes share the file), and
//! how a write transaction begins on each back end (`BEGIN IMMEDIATE` on SQLite, so a
//! transaction that reads before it writes waits for the lock instead of failing).
//!
//! This duplicates a small part of `paddock-ledger`'s private `database` module on
//! purpose: the accounts store must not depend on the job ledger.

use crate::AccountsError;
use crate::error::redact_url;
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Transaction};
use std::path::Path;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, PartialEq)]
pub(crate) struct Target {
    pub backend: Backend,
    pub connect_url: String,
    pub shown_url: String,
    pub sqlite_file: Option<String>,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, AccountsError> {
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
            return Err(AccountsError::UnsupportedUrl { url: shown_url });
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

    pub async fn open_pool(&self) -> Result<AnyPool, AccountsError> {
        sqlx::any::install_default_drivers();
        if let Some(file) = &self.sqlite_file
            && let Some(folder) = Path::new(file).parent()
            && !folder.as_os_str().is_empty()
        {
            std::fs::create_dir_all(folder).map_err(|source| AccountsError::SqliteFolder {
                url: self.shown_url.clone(),
                source,
            })?;
        }
        let max_connections = match self.backend {
            Backend::Sqlite => 4,
            Backend::Postgres => 8,
        };
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&self.connect_url)
            .await
            .map_err(|source| AccountsError::Connect {
                url: self.shown_url.clone(),
                source,
            })?;
        if self.backend == Backend::Sqlite && self.sqlite_file.is_some() {
            self.use_wal(&pool).await?;
        }
        Ok(pool)
    }

    /// Switches the file to write-ahead logging; another process switching at the
    /// same moment makes SQLite answer busy or with the old mode, so that is retried.
    async fn use_wal(&self, pool: &AnyPool) -> Result<(), AccountsError> {
        for attempt in 1..=50 {
            let mode: Result<String, sqlx::Error> = sqlx::query_scalar("PRAGMA journal_mode = WAL")
                .fetch_one(pool)
                .await;
            match mode {
                Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
                Ok(_) if attempt < 50 => {}
                Ok(mode) => {
                    tracing::warn!(url = %self.shown_url, %mode, "SQLite refused WAL mode; accounts work, with less concurrency");
                    return Ok(());
                }
                Err(source) if attempt < 50 && is_busy(&source) => {}
                Err(source) => {
                    return Err(AccountsError::Migrate {
                        url: self.shown_url.clone(),
                        step: "PRAGMA journal_mode = WAL",
                        source,
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

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
    fn urls_name_their_back_end() {
        let t = Target::parse("sqlite:///var/lib/paddock/ledger.db").expect("parse");
        assert_eq!(t.backend, Backend::Sqlite);
        assert_eq!(
            t.connect_url,
            "sqlite:///var/lib/paddock/ledger.db?mode=rwc"
        );
        let t = Target::parse("postgres://p:secret@db/paddock").expect("parse");
        assert_eq!(t.backend, Backend::Postgres);
        assert!(!t.shown_url.contains("secret"));
        assert!(Target::parse("mysql://x/y").is_err());
    }
}
