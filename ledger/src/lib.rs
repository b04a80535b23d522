//! The job ledger: one SQL row per job with its lifecycle (status, node, attempts,
//! times, outcome, cost), written from the events stream by the coordinator and read
//! by the gateway. The event log on NATS is the record; the ledger is a query-friendly
//! view of it that can be rebuilt by replaying the log, so every write is idempotent:
//! an event is applied only if its per-job sequence is above the row's `last_seq`.
//!
//! One code path for SQLite (a file, the default on one machine) and PostgreSQL
//! (several gateways or coordinators), through sqlx's `Any` driver with portable SQL.
//! This crate knows SQL and the wire contract, nothing of NATS or HTTP.
//!
//! Map: `database` opens the pool, `schema` migrates, `job_row` maps a row to SQL,
//! `lifecycle` holds the rules of how an event changes a row, `join_tokens` keeps the
//! tokens machines join with and the NATS credentials issued to nodes.

mod database;
mod error;
mod job_row;
mod join_tokens;
mod lifecycle;
mod schema;

pub use error::{LedgerError, redact_url};
pub use join_tokens::{CreatedJoinToken, NewJoinToken, RedeemError, hash_join_token};
/// The schema version this build migrates a database to.
pub use schema::CURRENT_VERSION as SCHEMA_VERSION;

use database::Target;
use job_row::{COLUMN_COUNT, COLUMNS, JobRow};
use paddock_contract::api::{JobPage, JobView};
use paddock_contract::{JobEvent, JobId, JobSpec, JobStatus};
use sqlx::AnyPool;
use std::sync::Arc;

/// What one user has used, for quotas.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Usage {
    pub active_jobs: u32,
    pub jobs_since: u32,
    pub cost_since_usd: f64,
}

/// Largest page [`Ledger::list`] returns.
pub const MAX_PAGE: u32 = 200;
/// The page size when a query asks for 0.
pub const DEFAULT_PAGE: u32 = 50;

/// How many times a write re-reads a row that another writer changed meanwhile.
const WRITE_ATTEMPTS: u32 = 10;

/// A handle on the ledger database; cheap to clone (one pool behind it).
#[derive(Clone)]
pub struct Ledger {
    pool: AnyPool,
    target: Arc<Target>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("url", &self.target.shown_url)
            .finish_non_exhaustive()
    }
}

/// Which jobs [`Ledger::list`] returns.
#[derive(Clone, Debug, Default)]
pub struct JobQuery {
    pub status: Option<JobStatus>,
    pub submitted_by: Option<String>,
    pub project: Option<String>,
    /// Only jobs older than this one (the previous page's `next_before`).
    pub before: Option<JobId>,
    /// 1..=200; 0 means 50, more means 200.
    pub limit: u32,
}

impl Ledger {
    /// Opens the database and creates or migrates the schema.
    /// `url`: `sqlite:///abs/path/ledger.db`, `sqlite://relative.db` or `postgres://…`.
    /// A SQLite file (and its folder) is created if missing and put in WAL mode.
    pub async fn connect(url: &str) -> Result<Ledger, LedgerError> {
        let target = Target::parse(url)?;
        let pool = target.open_pool().await?;
        schema::migrate(&target, &pool).await?;
        tracing::debug!(url = %target.shown_url, "ledger ready");
        Ok(Ledger {
            pool,
            target: Arc::new(target),
        })
    }

    /// Inserts the queued row for a submission if absent (idempotent).
    pub async fn record_submission(&self, spec: &JobSpec) -> Result<(), LedgerError> {
        let row = JobRow::submitted(spec);
        row.bind_all(sqlx::query(sqlx::AssertSqlSafe(insert_sql())))
            .execute(&self.pool)
            .await
            .map_err(self.failed("record_submission"))?;
        Ok(())
    }

    /// Applies one event idempotently: only if `event.seq` is above the row's
    /// `last_seq`. Returns whether it changed the row. One transaction; a job with no
    /// row gets one.
    pub async fn apply(&self, event: &JobEvent) -> Result<bool, LedgerError> {
        for _ in 0..WRITE_ATTEMPTS {
            if let Some(changed) = self.try_apply(event).await? {
                return Ok(changed);
            }
            tracing::debug!(job = %event.job_id, seq = event.seq, "ledger row changed under an apply; retrying");
        }
        Err(LedgerError::Contended {
            operation: "apply",
            job: event.job_id.to_string(),
            attempts: WRITE_ATTEMPTS,
        })
    }

    /// One attempt of [`Ledger::apply`]: `None` when another writer changed the row
    /// between the read and the write (the write is then rolled back).
    async fn try_apply(&self, event: &JobEvent) -> Result<Option<bool>, LedgerError> {
        let failed = self.failed("apply");
        let mut tx = self.target.begin_write(&self.pool).await.map_err(&failed)?;
        let existing = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM jobs WHERE id = $1"
        )))
        .bind(event.job_id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(&failed)?;
        let (mut row, stored_seq) = match existing {
            Some(existing) => {
                let row = JobRow::decode(&existing)?;
                let seq = row.last_seq;
                (row, Some(seq))
            }
            None => (JobRow::minimal(event.job_id, event.at_ms), None),
        };
        if !lifecycle::apply_event(&mut row, event) {
            tx.rollback().await.map_err(&failed)?;
            return Ok(Some(false));
        }
        let written = match stored_seq {
            // Compare-and-set on last_seq: a concurrent apply makes this match no row.
            Some(seq) => row
                .bind_all(sqlx::query(sqlx::AssertSqlSafe(update_sql())))
                .bind(job_row::saturating_i64(seq)),
            None => row.bind_all(sqlx::query(sqlx::AssertSqlSafe(insert_sql()))),
        }
        .execute(&mut *tx)
        .await
        .map_err(&failed)?;
        if written.rows_affected() != 1 {
            tx.rollback().await.map_err(&failed)?;
            return Ok(None);
        }
        tx.commit().await.map_err(&failed)?;
        Ok(Some(true))
    }

    pub async fn get(&self, id: JobId) -> Result<Option<JobView>, LedgerError> {
        Ok(self.get_row(id).await?.map(|row| row.view()))
    }

    /// What `user` has used: jobs queued or running now, and jobs submitted and model
    /// cost spent since `since_ms` (quotas are checked against these).
    pub async fn usage(&self, user: &str, since_ms: i64) -> Result<Usage, LedgerError> {
        let active: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE submitted_by = $1 AND status IN ('queued', 'running')",
        )
        .bind(user.to_string())
        .fetch_one(&self.pool)
        .await
        .map_err(self.failed("usage: active jobs"))?;
        let submitted: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs WHERE submitted_by = $1 AND created_at_ms >= $2",
        )
        .bind(user.to_string())
        .bind(since_ms)
        .fetch_one(&self.pool)
        .await
        .map_err(self.failed("usage: jobs submitted"))?;
        let cost: Option<f64> = sqlx::query_scalar(
            "SELECT SUM(cost_usd) FROM jobs WHERE submitted_by = $1 AND created_at_ms >= $2",
        )
        .bind(user.to_string())
        .bind(since_ms)
        .persistent(false)
        .fetch_one(&self.pool)
        .await
        .map_err(self.failed("usage: cost"))?;
        Ok(Usage {
            active_jobs: u32::try_from(active).unwrap_or(u32::MAX),
            jobs_since: u32::try_from(submitted).unwrap_or(u32::MAX),
            cost_since_usd: cost.unwrap_or(0.0),
        })
    }

    /// The reason of every retry of the job, oldest first (not part of [`JobView`]).
    pub async fn attempt_reasons(&self, id: JobId) -> Result<Option<Vec<String>>, LedgerError> {
        Ok(self.get_row(id).await?.map(|row| row.attempt_reasons))
    }

    /// The sequence of the last event applied to the job, or `None` for a job the
    /// ledger has no row for. The ledger writer uses it to notice an event that
    /// arrives before its predecessor.
    pub async fn last_seq(&self, id: JobId) -> Result<Option<u64>, LedgerError> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT last_seq FROM jobs WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(self.failed("last_seq"))?;
        seq.map(|seq| {
            u64::try_from(seq).map_err(|_| LedgerError::Corrupt {
                job: id.to_string(),
                detail: format!("last_seq is {seq}"),
            })
        })
        .transpose()
    }

    async fn get_row(&self, id: JobId) -> Result<Option<JobRow>, LedgerError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM jobs WHERE id = $1"
        )))
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(self.failed("get"))?;
        row.as_ref().map(JobRow::decode).transpose()
    }

    /// A page of jobs, newest first. `next_before` is set when older jobs match too.
    pub async fn list(&self, query: &JobQuery) -> Result<JobPage, LedgerError> {
        let limit = match query.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        // The statement is assembled from fixed fragments; values are only ever bound.
        let mut conditions: Vec<String> = Vec::new();
        let mut values: Vec<String> = Vec::new();
        let mut condition = |column: &str, value: String| {
            values.push(value);
            conditions.push(format!("{column} ${}", values.len()));
        };
        if let Some(status) = query.status {
            condition("status =", status.as_str().to_string());
        }
        if let Some(submitted_by) = &query.submitted_by {
            condition("submitted_by =", submitted_by.clone());
        }
        if let Some(project) = &query.project {
            condition("project =", project.clone());
        }
        if let Some(before) = query.before {
            condition("id <", before.to_string());
        }
        let mut sql = format!("SELECT {COLUMNS} FROM jobs");
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", values.len() + 1));
        let mut select = sqlx::query(sqlx::AssertSqlSafe(sql));
        for value in values {
            select = select.bind(value);
        }
        // One row more than the page tells whether another page follows.
        let rows = select
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(self.failed("list"))?;
        let mut jobs = rows
            .iter()
            .map(|row| JobRow::decode(row).map(|row| row.view()))
            .collect::<Result<Vec<_>, _>>()?;
        let next_before = if jobs.len() > limit as usize {
            jobs.truncate(limit as usize);
            jobs.last().map(|job| job.id)
        } else {
            None
        };
        Ok(JobPage { jobs, next_before })
    }

    /// Succeeds when the database answers a query.
    pub async fn ping(&self) -> Result<(), LedgerError> {
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

    fn failed(&self, operation: &'static str) -> impl Fn(sqlx::Error) -> LedgerError + use<> {
        let url = self.target.shown_url.clone();
        move |source| LedgerError::Query {
            operation,
            url: url.clone(),
            source,
        }
    }
}

fn insert_sql() -> String {
    let placeholders: Vec<String> = (1..=COLUMN_COUNT).map(|n| format!("${n}")).collect();
    format!(
        "INSERT INTO jobs ({COLUMNS}) VALUES ({}) ON CONFLICT (id) DO NOTHING",
        placeholders.join(", ")
    )
}

/// Writes every column but `id` of the row `$1`, if its `last_seq` is still `$22`.
fn update_sql() -> String {
    let assignments: Vec<String> = COLUMNS
        .split(',')
        .map(str::trim)
        .enumerate()
        .skip(1)
        .map(|(index, column)| format!("{column} = ${}", index + 1))
        .collect();
    format!(
        "UPDATE jobs SET {} WHERE id = $1 AND last_seq = ${}",
        assignments.join(", "),
        COLUMN_COUNT + 1
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_column_list_and_its_count_agree() {
        assert_eq!(COLUMNS.split(',').count(), COLUMN_COUNT);
        assert!(insert_sql().contains(&format!("${COLUMN_COUNT})")));
        assert!(update_sql().ends_with(&format!("last_seq = ${}", COLUMN_COUNT + 1)));
        assert!(update_sql().contains("project = $2,"));
        assert!(!update_sql().contains("SET id"));
    }
}
