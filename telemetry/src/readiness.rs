//! Readiness: a list of named async checks (NATS connected, the database answers, the
//! sandbox back end works) that `/readyz` runs concurrently, each with a deadline. A
//! service is ready when every check passes. Checks are closures, so this crate knows
//! nothing of the ledger or the sandbox: each binary lists its own.
//!
//! ```ignore
//! let readiness = Readiness::new()
//!     .with_check(checks::nats_connected(client.clone()))
//!     .with_check(ReadinessCheck::new("database", move || {
//!         let ledger = ledger.clone();
//!         async move { ledger.ping().await.map_err(|e| e.to_string()) }
//!     }));
//! ```

use futures::future::BoxFuture;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How long one check may take before it counts as failed.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

type CheckFn = dyn Fn() -> BoxFuture<'static, Result<(), String>> + Send + Sync;

/// One named check: `Ok` when the dependency is usable, else a reason for the log
/// and the `/readyz` body.
#[derive(Clone)]
pub struct ReadinessCheck {
    name: String,
    check: Arc<CheckFn>,
}

impl std::fmt::Debug for ReadinessCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadinessCheck")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ReadinessCheck {
    pub fn new<F, Fut>(name: impl Into<String>, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        ReadinessCheck {
            name: name.into(),
            check: Arc::new(move || Box::pin(check())),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// The checks of one service. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    checks: Vec<ReadinessCheck>,
    timeout: Option<Duration>,
}

/// The outcome of every check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReadinessReport {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// Each check's name and `ok` or the reason it failed.
    pub checks: BTreeMap<String, String>,
}

impl ReadinessReport {
    pub fn is_ready(&self) -> bool {
        self.status == "ready"
    }
}

impl Readiness {
    /// No checks: always ready.
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_check(mut self, check: ReadinessCheck) -> Self {
        self.checks.push(check);
        self
    }

    /// Changes the deadline of each check (default [`CHECK_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Runs every check concurrently.
    pub async fn evaluate(&self) -> ReadinessReport {
        let timeout = self.timeout.unwrap_or(CHECK_TIMEOUT);
        let runs = self.checks.iter().map(|check| async move {
            let outcome = match tokio::time::timeout(timeout, (check.check)()).await {
                Ok(Ok(())) => "ok".to_string(),
                Ok(Err(reason)) => reason,
                Err(_) => format!("no answer within {timeout:?}"),
            };
            (check.name.clone(), outcome)
        });
        let checks: BTreeMap<String, String> =
            futures::future::join_all(runs).await.into_iter().collect();
        let ready = checks.values().all(|outcome| outcome == "ok");
        ReadinessReport {
            status: if ready { "ready" } else { "not_ready" },
            checks,
        }
    }
}

/// Ready-made checks.
pub mod checks {
    use super::ReadinessCheck;

    /// `nats`: the client is connected now.
    pub fn nats_connected(client: async_nats::Client) -> ReadinessCheck {
        ReadinessCheck::new("nats", move || {
            let state = client.connection_state();
            async move {
                if state == async_nats::connection::State::Connected {
                    Ok(())
                } else {
                    Err(format!("not connected to NATS ({state:?})"))
                }
            }
        })
    }

    /// `jetstream`: the JetStream API answers (an account info request).
    pub fn jetstream(js: async_nats::jetstream::Context) -> ReadinessCheck {
        ReadinessCheck::new("jetstream", move || {
            let js = js.clone();
            async move {
                js.query_account()
                    .await
                    .map(|_| ())
                    .map_err(|e| format!("JetStream does not answer: {e}"))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_failing_check_makes_the_service_not_ready() {
        let readiness = Readiness::new()
            .with_check(ReadinessCheck::new("fine", || async { Ok(()) }))
            .with_check(ReadinessCheck::new("broken", || async {
                Err("disk on fire".to_string())
            }));
        let report = readiness.evaluate().await;
        assert!(!report.is_ready());
        assert_eq!(report.checks["fine"], "ok");
        assert_eq!(report.checks["broken"], "disk on fire");
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_that_hangs_fails_after_the_deadline() {
        let readiness = Readiness::new()
            .with_timeout(Duration::from_secs(1))
            .with_check(ReadinessCheck::new("hangs", || {
                std::future::pending::<Result<(), String>>()
            }));
        let report = readiness.evaluate().await;
        assert!(!report.is_ready());
        assert!(report.checks["hangs"].starts_with("no answer"));
    }

    #[tokio::test]
    async fn no_checks_is_ready() {
        assert!(Readiness::new().evaluate().await.is_ready());
    }
}
