//! Per-user quotas, checked at submission against the ledger: concurrent jobs (queued
//! or running), jobs per day and model cost per day (UTC days). A submission over a
//! quota is refused with 429, naming the quota and when it frees or resets. What is
//! left of the cost budget goes to the node as the job's cost limit, so a running job
//! that crosses it is stopped there (`cost_budget`).

use crate::error::ApiError;
use crate::state::AppState;
use paddock_contract::{JobLimits, now_unix_ms};
use serde::{Deserialize, Serialize};

const DAY_MS: i64 = 24 * 3600 * 1000;

/// Quotas every user has; unset means unlimited.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    /// Jobs one user may have queued or running at once.
    pub max_concurrent_jobs: Option<u32>,
    /// Jobs one user may submit per UTC day.
    pub max_jobs_per_day: Option<u32>,
    /// Model cost (the CLI's `total_cost_usd`) one user may spend per UTC day.
    pub max_cost_per_day_usd: Option<f64>,
}

impl QuotaConfig {
    pub fn is_unlimited(&self) -> bool {
        self == &QuotaConfig::default()
    }
}

/// Admits one more job for `user` or says which quota refuses it; returns the limits
/// the job carries to its node.
pub async fn admit(state: &AppState, user: &str) -> Result<JobLimits, ApiError> {
    let quotas = &state.config().quotas;
    if quotas.is_unlimited() {
        return Ok(JobLimits::default());
    }
    let now = now_unix_ms();
    let day_start = now - now.rem_euclid(DAY_MS);
    let reset_in_secs = u64::try_from((day_start + DAY_MS - now) / 1000)
        .unwrap_or(0)
        .max(1);
    let usage = state.ledger().usage(user, day_start).await?;
    if let Some(max) = quotas.max_concurrent_jobs
        && usage.active_jobs >= max
    {
        return Err(ApiError::QuotaExceeded {
            message: format!(
                "quota max_concurrent_jobs: {user} has {} jobs queued or running and may have {max}; submit again when one ends",
                usage.active_jobs
            ),
            retry_after_secs: 5,
        });
    }
    if let Some(max) = quotas.max_jobs_per_day
        && usage.jobs_since >= max
    {
        return Err(ApiError::QuotaExceeded {
            message: format!(
                "quota max_jobs_per_day: {user} has submitted {} jobs today and may submit {max}; it resets at 00:00 UTC, in {reset_in_secs} s",
                usage.jobs_since
            ),
            retry_after_secs: reset_in_secs,
        });
    }
    let mut limits = JobLimits::default();
    if let Some(max) = quotas.max_cost_per_day_usd {
        if usage.cost_since_usd >= max {
            return Err(ApiError::QuotaExceeded {
                message: format!(
                    "quota max_cost_per_day_usd: {user} has spent ${:.4} of ${max:.4} today; it resets at 00:00 UTC, in {reset_in_secs} s",
                    usage.cost_since_usd
                ),
                retry_after_secs: reset_in_secs,
            });
        }
        limits.max_cost_usd = Some(max - usage.cost_since_usd);
    }
    Ok(limits)
}
