//! One row of the `jobs` table, in memory and in SQL: the column list, reading a row
//! (checking every stored value, since another version may have written it), and the
//! parameters that write it back. The lifecycle rules live in `lifecycle.rs`.
//!
//! Portable types only: TEXT, BIGINT, DOUBLE PRECISION; times are unix milliseconds;
//! the job id is the hyphenated lowercase UUID, which sorts by submission time (v7).

use crate::LedgerError;
use paddock_contract::api::JobView;
use paddock_contract::{JobId, JobSpec, JobStatus};
use sqlx::Row;
use sqlx::any::{Any, AnyArguments, AnyRow};

/// Every column of `jobs`, in the order of [`JobRow::bind_all`].
pub(crate) const COLUMNS: &str = "id, project, prompt, pool, submitted_by, status, node, \
     attempts, attempt_reasons, created_at_ms, started_at_ms, finished_at_ms, updated_at_ms, \
     exit_reason, exit_message, session_id, num_turns, cost_usd, input_tokens, output_tokens, \
     last_seq, session_state";

/// How many columns [`COLUMNS`] names (`$1`…`$22` in an insert).
pub(crate) const COLUMN_COUNT: usize = 22;

type Query<'q> = sqlx::query::Query<'q, Any, AnyArguments>;

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct JobRow {
    pub id: JobId,
    pub project: String,
    pub prompt: String,
    pub pool: Option<String>,
    pub submitted_by: String,
    pub status: JobStatus,
    pub node: Option<String>,
    pub attempts: u32,
    /// The reason of every retry, oldest first (a JSON array in SQL).
    pub attempt_reasons: Vec<String>,
    pub created_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub updated_at_ms: i64,
    pub exit_reason: Option<String>,
    pub exit_message: Option<String>,
    pub session_id: Option<String>,
    pub num_turns: Option<u32>,
    pub cost_usd: Option<f64>,
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub last_seq: u64,
    /// The live session's state while it runs (`running`, `waiting_approval`, `idle`).
    pub session_state: Option<String>,
}

impl JobRow {
    /// The row of a job the ledger learns about from an event other than its first:
    /// queued, with nothing known but its id and a time.
    pub fn minimal(id: JobId, at_ms: i64) -> JobRow {
        JobRow {
            id,
            project: String::new(),
            prompt: String::new(),
            pool: None,
            submitted_by: String::new(),
            status: JobStatus::Queued,
            node: None,
            attempts: 0,
            attempt_reasons: Vec::new(),
            created_at_ms: at_ms,
            started_at_ms: None,
            finished_at_ms: None,
            updated_at_ms: at_ms,
            exit_reason: None,
            exit_message: None,
            session_id: None,
            num_turns: None,
            cost_usd: None,
            input_tokens: None,
            output_tokens: None,
            last_seq: 0,
            session_state: None,
        }
    }

    /// The row recorded when a job is submitted, before any event.
    pub fn submitted(spec: &JobSpec) -> JobRow {
        JobRow {
            project: spec.project.clone(),
            prompt: spec.prompt.clone(),
            pool: Some(spec.pool.clone()),
            submitted_by: spec.submitted_by.clone(),
            ..JobRow::minimal(spec.id, spec.submitted_at_ms)
        }
    }

    pub fn view(&self) -> JobView {
        JobView {
            id: self.id,
            project: self.project.clone(),
            prompt: self.prompt.clone(),
            status: self.status,
            node: self.node.clone(),
            attempts: self.attempts,
            submitted_by: self.submitted_by.clone(),
            created_at_ms: self.created_at_ms,
            started_at_ms: self.started_at_ms,
            finished_at_ms: self.finished_at_ms,
            exit_reason: self.exit_reason.clone(),
            exit_message: self.exit_message.clone(),
            session_id: self.session_id.clone(),
            num_turns: self.num_turns,
            cost_usd: self.cost_usd,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            last_seq: self.last_seq,
            session_state: self.session_state.clone(),
            attempt_reasons: self.attempt_reasons.clone(),
        }
    }

    /// Reads a row selected with [`COLUMNS`].
    pub fn decode(row: &AnyRow) -> Result<JobRow, LedgerError> {
        let id_text: String = get(row, "?", "id")?;
        let job = id_text.as_str();
        let id = id_text.parse::<JobId>().map_err(|e| LedgerError::Corrupt {
            job: job.to_string(),
            detail: format!("id is not a UUID: {e}"),
        })?;
        let status_text: String = get(row, job, "status")?;
        let status = status_text
            .parse::<JobStatus>()
            .map_err(|detail| LedgerError::Corrupt {
                job: job.to_string(),
                detail,
            })?;
        let reasons_text: String = get(row, job, "attempt_reasons")?;
        let attempt_reasons: Vec<String> =
            serde_json::from_str(&reasons_text).map_err(|e| LedgerError::Corrupt {
                job: job.to_string(),
                detail: format!("attempt_reasons is not a JSON array of strings: {e}"),
            })?;
        Ok(JobRow {
            id,
            project: get(row, job, "project")?,
            prompt: get(row, job, "prompt")?,
            pool: get(row, job, "pool")?,
            submitted_by: get(row, job, "submitted_by")?,
            status,
            node: get(row, job, "node")?,
            attempts: unsigned(job, "attempts", get(row, job, "attempts")?)?,
            attempt_reasons,
            created_at_ms: get(row, job, "created_at_ms")?,
            started_at_ms: get(row, job, "started_at_ms")?,
            finished_at_ms: get(row, job, "finished_at_ms")?,
            updated_at_ms: get(row, job, "updated_at_ms")?,
            exit_reason: get(row, job, "exit_reason")?,
            exit_message: get(row, job, "exit_message")?,
            session_id: get(row, job, "session_id")?,
            num_turns: optional_unsigned(job, "num_turns", get(row, job, "num_turns")?)?,
            cost_usd: get(row, job, "cost_usd")?,
            input_tokens: optional_unsigned(job, "input_tokens", get(row, job, "input_tokens")?)?,
            output_tokens: optional_unsigned(
                job,
                "output_tokens",
                get(row, job, "output_tokens")?,
            )?,
            last_seq: unsigned(job, "last_seq", get(row, job, "last_seq")?)?,
            session_state: get(row, job, "session_state")?,
        })
    }

    /// Binds every column, in the order of [`COLUMNS`], as `$1`…`$21`.
    ///
    /// The statement is not kept prepared: sqlx 0.9's `Any` driver sends a NULL
    /// `f64` to PostgreSQL as a `float4` parameter, and a statement prepared with that
    /// type then refuses a real cost (`incorrect binary data format`). Preparing on
    /// each call gives every call its own parameter types.
    pub fn bind_all<'q>(&self, query: Query<'q>) -> Query<'q> {
        query
            .persistent(false)
            .bind(self.id.to_string())
            .bind(self.project.clone())
            .bind(self.prompt.clone())
            .bind(self.pool.clone())
            .bind(self.submitted_by.clone())
            .bind(self.status.as_str())
            .bind(self.node.clone())
            .bind(i64::from(self.attempts))
            .bind(reasons_json(&self.attempt_reasons))
            .bind(self.created_at_ms)
            .bind(self.started_at_ms)
            .bind(self.finished_at_ms)
            .bind(self.updated_at_ms)
            .bind(self.exit_reason.clone())
            .bind(self.exit_message.clone())
            .bind(self.session_id.clone())
            .bind(self.num_turns.map(i64::from))
            .bind(self.cost_usd)
            .bind(self.input_tokens.map(saturating_i64))
            .bind(self.output_tokens.map(saturating_i64))
            .bind(saturating_i64(self.last_seq))
            .bind(self.session_state.clone())
    }
}

fn reasons_json(reasons: &[String]) -> String {
    // A Vec<String> always serialises; the fallback only keeps this total.
    serde_json::to_string(reasons).unwrap_or_else(|_| "[]".to_string())
}

pub(crate) fn saturating_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn get<'r, T>(row: &'r AnyRow, job: &str, column: &'static str) -> Result<T, LedgerError>
where
    T: sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    row.try_get(column).map_err(|e| LedgerError::Corrupt {
        job: job.to_string(),
        detail: format!("column {column}: {e}"),
    })
}

fn unsigned<T: TryFrom<i64>>(job: &str, column: &str, value: i64) -> Result<T, LedgerError> {
    T::try_from(value).map_err(|_| LedgerError::Corrupt {
        job: job.to_string(),
        detail: format!("column {column} holds {value}, out of range"),
    })
}

fn optional_unsigned<T: TryFrom<i64>>(
    job: &str,
    column: &str,
    value: Option<i64>,
) -> Result<Option<T>, LedgerError> {
    value.map(|v| unsigned(job, column, v)).transpose()
}
