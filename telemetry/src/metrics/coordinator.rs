//! The coordinator's job metrics: the lifecycle of every job as the ledger records
//! it. The ledger writer applies each job event once (`Ledger::apply` reports whether
//! the event changed the row), so counting there counts each start and each ending
//! exactly once across the paddock, with the job's project and submitter at hand from
//! the ledger row. Also the ledger writer's own health: events applied, held back,
//! write errors and write latency.
//!
//! Timings come from the events' own timestamps (`at_ms`): dispatch latency is
//! `job.started` minus the submission time the gateway recorded, duration is the
//! terminal event minus `job.started`. Gateway and node clocks may differ by a little;
//! a negative span counts as zero.

use super::{
    DISPATCH_LATENCY_BUCKETS, JOB_DURATION_BUCKETS, JobOutcome, LEDGER_WRITE_BUCKETS, MetricGroup,
    counter, counter_vec, float_counter_vec, histogram, histogram_vec, seconds, seconds_between,
};
use crate::TelemetryError;
use crate::labels::BoundedLabel;
use paddock_contract::api::JobView;
use paddock_contract::{EventBody, JobEvent};
use prometheus::core::Collector;
use prometheus::{
    CounterVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};
use std::time::Duration;

/// Distinct projects tracked before the rest are counted as `other`.
const MAX_PROJECTS: usize = 200;
/// Distinct users tracked for cost and tokens.
const MAX_USERS: usize = 500;
/// Distinct failure reasons and event kinds tracked.
const MAX_SMALL_SET: usize = 64;

/// The coordinator's metrics. Clones share the same series.
#[derive(Clone, Debug)]
pub struct CoordinatorMetrics {
    started: IntCounterVec,
    retried: IntCounterVec,
    finished: IntCounterVec,
    dispatch_latency: HistogramVec,
    duration: HistogramVec,
    cost: CounterVec,
    tokens: IntCounterVec,
    events_applied: IntCounterVec,
    events_held_back: IntCounter,
    write_errors: IntCounterVec,
    write_duration: Histogram,
    projects: BoundedLabel,
    users: BoundedLabel,
    small: BoundedLabel,
}

impl CoordinatorMetrics {
    /// Creates the coordinator's metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, TelemetryError> {
        let metrics = Self::new()?;
        metrics.register_in(registry)?;
        Ok(metrics)
    }

    pub(crate) fn new() -> Result<Self, TelemetryError> {
        Ok(CoordinatorMetrics {
            started: counter_vec(
                Opts::new(
                    "paddock_jobs_started_total",
                    "Job attempts started (job.started recorded in the ledger), by project.",
                ),
                &["project"],
            )?,
            retried: counter_vec(
                Opts::new(
                    "paddock_jobs_retried_total",
                    "Jobs delivered again after an attempt ended without a result (job.retrying), by project.",
                ),
                &["project"],
            )?,
            finished: counter_vec(
                Opts::new(
                    "paddock_jobs_finished_total",
                    "Jobs ended, by project, status (completed, failed, cancelled) and failure reason (none unless failed).",
                ),
                &["project", "status", "reason"],
            )?,
            dispatch_latency: histogram_vec(
                HistogramOpts::new(
                    "paddock_job_dispatch_latency_seconds",
                    "From submission to the first job.started, by project.",
                )
                .buckets(DISPATCH_LATENCY_BUCKETS.to_vec()),
                &["project"],
            )?,
            duration: histogram_vec(
                HistogramOpts::new(
                    "paddock_job_duration_seconds",
                    "From job.started to the job's ending, by project and status.",
                )
                .buckets(JOB_DURATION_BUCKETS.to_vec()),
                &["project", "status"],
            )?,
            cost: float_counter_vec(
                Opts::new(
                    "paddock_model_cost_usd_total",
                    "Model cost of ended jobs as the ledger records it (the CLI's total_cost_usd), in US dollars, by project and user.",
                ),
                &["project", "user"],
            )?,
            tokens: counter_vec(
                Opts::new(
                    "paddock_model_tokens_total",
                    "Model tokens of ended jobs as the ledger records them, by project, user and direction (input, output).",
                ),
                &["project", "user", "direction"],
            )?,
            events_applied: counter_vec(
                Opts::new(
                    "paddock_ledger_events_applied_total",
                    "Job events that changed the ledger, by kind.",
                ),
                &["kind"],
            )?,
            events_held_back: counter(Opts::new(
                "paddock_ledger_events_held_back_total",
                "Job events handed back to wait for a predecessor not yet in the ledger.",
            ))?,
            write_errors: counter_vec(
                Opts::new(
                    "paddock_ledger_write_errors_total",
                    "Failed ledger writes, by whether they are retried (true) or the event dropped (false).",
                ),
                &["retryable"],
            )?,
            write_duration: histogram(
                HistogramOpts::new(
                    "paddock_ledger_write_duration_seconds",
                    "Time to apply one job event to the ledger.",
                )
                .buckets(LEDGER_WRITE_BUCKETS.to_vec()),
            )?,
            projects: BoundedLabel::new(MAX_PROJECTS),
            users: BoundedLabel::new(MAX_USERS),
            small: BoundedLabel::new(MAX_SMALL_SET),
        })
    }

    /// Whether [`CoordinatorMetrics::job_event_applied`] needs the job's ledger row
    /// for `event`: only starts, retries and endings do, so the writer reads the row
    /// for those alone.
    pub fn needs_job_view(event: &JobEvent) -> bool {
        matches!(
            event.body,
            EventBody::Started { .. } | EventBody::Retrying { .. }
        ) || event.is_terminal()
    }

    /// Records what an event that changed the ledger means for the job metrics;
    /// `job` is the ledger's row after the event. Call it once per event that
    /// `Ledger::apply` reported as a change.
    pub fn job_event_applied(&self, event: &JobEvent, job: &JobView) {
        match &event.body {
            EventBody::Started { attempt, .. } => {
                let latency = (*attempt <= 1).then(|| {
                    Duration::from_secs_f64(seconds_between(job.created_at_ms, event.at_ms))
                });
                self.job_started(&job.project, latency);
            }
            EventBody::Retrying { .. } => self.job_retried(&job.project),
            _ => {}
        }
        if let Some(outcome) = JobOutcome::of(event) {
            let duration = job
                .started_at_ms
                .map(|started| Duration::from_secs_f64(seconds_between(started, event.at_ms)));
            self.job_finished(outcome, &job.project, duration);
            // The row holds the job's totals over all its turns and restarts, as the
            // CLI last reported them.
            self.model_usage(
                &job.project,
                &job.submitted_by,
                job.cost_usd,
                job.input_tokens,
                job.output_tokens,
            );
        }
    }

    /// A job attempt started; `dispatch_latency` (submission → start) for the first
    /// attempt only.
    pub fn job_started(&self, project: &str, dispatch_latency: Option<Duration>) {
        let project = self.projects.value(project);
        self.started.with_label_values(&[&project]).inc();
        if let Some(latency) = dispatch_latency {
            self.dispatch_latency
                .with_label_values(&[&project])
                .observe(seconds(latency));
        }
    }

    /// A job is being delivered again after an attempt without a result.
    pub fn job_retried(&self, project: &str) {
        self.retried
            .with_label_values(&[&self.projects.value(project)])
            .inc();
    }

    /// A job ended; `duration` from its start when it started at all.
    pub fn job_finished(&self, outcome: JobOutcome<'_>, project: &str, duration: Option<Duration>) {
        let project = self.projects.value(project);
        let reason = match outcome {
            JobOutcome::Failed { reason } => self.small.value(reason),
            _ => outcome.reason().to_string(),
        };
        self.finished
            .with_label_values(&[&project, outcome.status(), &reason])
            .inc();
        if let Some(duration) = duration {
            self.duration
                .with_label_values(&[&project, outcome.status()])
                .observe(seconds(duration));
        }
    }

    /// What an ended job cost in all, as the CLI reported it.
    pub fn model_usage(
        &self,
        project: &str,
        user: &str,
        cost_usd: Option<f64>,
        input_tokens: Option<u64>,
        output_tokens: Option<u64>,
    ) {
        let project = self.projects.value(project);
        let user = self.users.value(user);
        if let Some(cost) = cost_usd.filter(|c| c.is_finite() && *c >= 0.0) {
            self.cost.with_label_values(&[&project, &user]).inc_by(cost);
        }
        for (direction, tokens) in [("input", input_tokens), ("output", output_tokens)] {
            if let Some(tokens) = tokens {
                self.tokens
                    .with_label_values(&[&project, &user, direction])
                    .inc_by(tokens);
            }
        }
    }

    /// An event of `kind` changed the ledger; the write took `elapsed`.
    pub fn event_applied(&self, kind: &str, elapsed: Duration) {
        self.events_applied
            .with_label_values(&[&self.small.value(kind)])
            .inc();
        self.write_duration.observe(seconds(elapsed));
    }

    /// An event was handed back until its predecessor is in the ledger.
    pub fn event_held_back(&self) {
        self.events_held_back.inc();
    }

    /// A ledger write failed; `retryable` when the writer tries again.
    pub fn ledger_write_failed(&self, retryable: bool) {
        self.write_errors
            .with_label_values(&[if retryable { "true" } else { "false" }])
            .inc();
    }
}

impl MetricGroup for CoordinatorMetrics {
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.started.clone()),
            Box::new(self.retried.clone()),
            Box::new(self.finished.clone()),
            Box::new(self.dispatch_latency.clone()),
            Box::new(self.duration.clone()),
            Box::new(self.cost.clone()),
            Box::new(self.tokens.clone()),
            Box::new(self.events_applied.clone()),
            Box::new(self.events_held_back.clone()),
            Box::new(self.write_errors.clone()),
            Box::new(self.write_duration.clone()),
        ]
    }
}
