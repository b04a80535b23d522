//! The audit log: one row per state change and per authentication event — who (the
//! user's name, if known), from which device and address, what action on which
//! target, with what outcome, when. Rows are only ever inserted. Ids are UUIDv7, so
//! ordering by id is ordering by time, and a page's last id is the cursor for the next.
//!
//! Actions are dotted names (`auth.login`, `auth.refresh`, `auth.refresh_reuse`,
//! `user.create`, `job.submit`, …): the gateway's `audit` module lists them. The
//! detail is a short reason for people; it never holds a secret.

use crate::{Accounts, AccountsError, column, now_ms};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use std::fmt;
use std::str::FromStr;

/// Largest page [`Accounts::audit_query`] returns.
pub const MAX_AUDIT_PAGE: u32 = 500;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It happened.
    Success,
    /// It was refused: bad credentials, a missing scope, a limit.
    Denied,
    /// It was attempted and failed for another reason.
    Failure,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failure => "failure",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Outcome {
    type Err = String;

    fn from_str(text: &str) -> Result<Outcome, String> {
        match text {
            "success" => Ok(Outcome::Success),
            "denied" => Ok(Outcome::Denied),
            "failure" => Ok(Outcome::Failure),
            other => Err(format!(
                "unknown outcome {other:?} (success, denied or failure)"
            )),
        }
    }
}

/// One event to record.
#[derive(Clone, Debug, Default)]
pub struct AuditEntry {
    pub actor: Option<String>,
    pub device_id: Option<String>,
    pub address: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub outcome: Option<Outcome>,
    pub detail: Option<String>,
}

impl AuditEntry {
    pub fn new(action: impl Into<String>, outcome: Outcome) -> AuditEntry {
        AuditEntry {
            action: action.into(),
            outcome: Some(outcome),
            ..AuditEntry::default()
        }
    }

    pub fn actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }

    pub fn device(mut self, device_id: Option<String>) -> Self {
        self.device_id = device_id;
        self
    }

    pub fn address(mut self, address: Option<String>) -> Self {
        self.address = address;
        self
    }

    pub fn target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// A recorded event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub id: String,
    pub at_ms: i64,
    pub actor: Option<String>,
    pub device_id: Option<String>,
    pub address: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub outcome: Outcome,
    pub detail: Option<String>,
}

impl AuditRecord {
    fn decode(row: &AnyRow) -> Result<AuditRecord, AccountsError> {
        let what = "audit record";
        let outcome: String = column(row, what, "outcome")?;
        Ok(AuditRecord {
            id: column(row, what, "id")?,
            at_ms: column(row, what, "at_ms")?,
            actor: column(row, what, "actor")?,
            device_id: column(row, what, "device_id")?,
            address: column(row, what, "address")?,
            action: column(row, what, "action")?,
            target: column(row, what, "target")?,
            outcome: outcome
                .parse()
                .map_err(|detail| AccountsError::Corrupt { what, detail })?,
            detail: column(row, what, "detail")?,
        })
    }
}

const COLUMNS: &str = "id, at_ms, actor, device_id, address, action, target, outcome, detail";

/// Which records [`Accounts::audit_query`] returns; every filter is optional.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct AuditQuery {
    pub actor: Option<String>,
    /// An exact action, or a prefix ending in `.` (`auth.` for every auth event).
    pub action: Option<String>,
    pub target: Option<String>,
    pub outcome: Option<Outcome>,
    /// At or after this time (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Before this time.
    pub until_ms: Option<i64>,
    /// Older than this record (the previous page's `next_before`).
    pub before: Option<String>,
    /// 1..=500; 0 or none means 100.
    pub limit: Option<u32>,
}

/// A page of records, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    pub entries: Vec<AuditRecord>,
    pub next_before: Option<String>,
}

/// Escapes `%`, `_` and `\` for a LIKE pattern with `ESCAPE '\'`.
fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

impl Accounts {
    /// Records one event. The time is now.
    pub async fn audit(&self, entry: AuditEntry) -> Result<AuditRecord, AccountsError> {
        let record = AuditRecord {
            id: uuid::Uuid::now_v7().to_string(),
            at_ms: now_ms(),
            actor: entry.actor,
            device_id: entry.device_id,
            address: entry.address,
            action: entry.action,
            target: entry.target,
            outcome: entry.outcome.unwrap_or(Outcome::Success),
            detail: entry.detail,
        };
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO audit_log ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        )))
        .persistent(false)
        .bind(&record.id)
        .bind(record.at_ms)
        .bind(record.actor.clone())
        .bind(record.device_id.clone())
        .bind(record.address.clone())
        .bind(&record.action)
        .bind(record.target.clone())
        .bind(record.outcome.as_str())
        .bind(record.detail.clone())
        .execute(&self.pool)
        .await
        .map_err(self.failed("audit"))?;
        Ok(record)
    }

    /// A page of records matching `query`, newest first.
    pub async fn audit_query(&self, query: &AuditQuery) -> Result<AuditPage, AccountsError> {
        let limit = match query.limit {
            None | Some(0) => 100,
            Some(n) => n.min(MAX_AUDIT_PAGE),
        };
        // Assembled from fixed fragments; values are only ever bound.
        let mut conditions: Vec<String> = Vec::new();
        let mut texts: Vec<(usize, String)> = Vec::new();
        let mut numbers: Vec<(usize, i64)> = Vec::new();
        let mut next = 0;
        let mut placeholder = || {
            next += 1;
            next
        };
        if let Some(actor) = &query.actor {
            let n = placeholder();
            conditions.push(format!("actor = ${n}"));
            texts.push((n, actor.clone()));
        }
        if let Some(action) = &query.action {
            let n = placeholder();
            if action.ends_with('.') {
                conditions.push(format!("action LIKE ${n} ESCAPE '\\'"));
                texts.push((n, like_prefix(action)));
            } else {
                conditions.push(format!("action = ${n}"));
                texts.push((n, action.clone()));
            }
        }
        if let Some(target) = &query.target {
            let n = placeholder();
            conditions.push(format!("target = ${n}"));
            texts.push((n, target.clone()));
        }
        if let Some(outcome) = query.outcome {
            let n = placeholder();
            conditions.push(format!("outcome = ${n}"));
            texts.push((n, outcome.as_str().to_string()));
        }
        if let Some(since) = query.since_ms {
            let n = placeholder();
            conditions.push(format!("at_ms >= ${n}"));
            numbers.push((n, since));
        }
        if let Some(until) = query.until_ms {
            let n = placeholder();
            conditions.push(format!("at_ms < ${n}"));
            numbers.push((n, until));
        }
        if let Some(before) = &query.before {
            let n = placeholder();
            conditions.push(format!("id < ${n}"));
            texts.push((n, before.clone()));
        }
        let limit_placeholder = placeholder();
        let mut sql = format!("SELECT {COLUMNS} FROM audit_log");
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${limit_placeholder}"));
        // Bind in placeholder order.
        enum Value {
            Text(String),
            Number(i64),
        }
        let mut values: Vec<(usize, Value)> = texts
            .into_iter()
            .map(|(n, v)| (n, Value::Text(v)))
            .chain(numbers.into_iter().map(|(n, v)| (n, Value::Number(v))))
            .collect();
        values.sort_by_key(|(n, _)| *n);
        let mut select = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (_, value) in values {
            select = match value {
                Value::Text(text) => select.bind(text),
                Value::Number(number) => select.bind(number),
            };
        }
        let rows = select
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(self.failed("audit_query"))?;
        let mut entries = rows
            .iter()
            .map(AuditRecord::decode)
            .collect::<Result<Vec<_>, _>>()?;
        let next_before = if entries.len() > limit as usize {
            entries.truncate(limit as usize);
            entries.last().map(|entry| entry.id.clone())
        } else {
            None
        };
        Ok(AuditPage {
            entries,
            next_before,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_prefixes_escape_wildcards() {
        assert_eq!(like_prefix("auth."), "auth.%");
        assert_eq!(like_prefix("a_b%"), "a\\_b\\%%");
    }

    #[test]
    fn outcomes_round_trip() {
        for outcome in [Outcome::Success, Outcome::Denied, Outcome::Failure] {
            assert_eq!(outcome.as_str().parse::<Outcome>(), Ok(outcome));
        }
        assert!("ok".parse::<Outcome>().is_err());
    }
}
