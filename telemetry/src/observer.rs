//! The node's metrics and spans read off the job events it appends. Every event a
//! node records passes through its `JobEvents` port, so one call there,
//! [`JobObserver::observe`], keeps the node's job metrics and trace spans without the
//! actors knowing about either:
//!
//! - `job.started` starts the attempt (`paddock_node_jobs_running` up) and a
//!   `job.run` span; the first `assistant.text` or `tool.call` after it gives the time
//!   to first output; `job.restarting` is a session restart, `turn.retrying` a turn
//!   sent again;
//! - `tool.call` opens a `tool` span (a child of `job.run`) that its `tool.result`
//!   closes, marked as an error when the tool failed; `tool.denied` counts a denial;
//! - `approval.requested` adds a pending approval that its `approval.resolved` ends
//!   (approved, refused, or timed out when decided `by` `timeout`);
//! - a terminal event ends the attempt (a failure for a quota reason counts as a
//!   quota refusal); an observer dropped before one (the job was handed back, the
//!   session stopped) counts the attempt as released. Approvals still pending then
//!   count as abandoned.
//!
//! [`ClaimSpans`] carries the trace from the claimed job message to the session: the
//! feed that pulls a job makes its `job.claim` span a child of the submission's span
//! (from the message's headers) and the port that opens the job's events takes it as
//! the observer's parent.

use crate::metrics::{ApprovalOutcome, ApprovalWait, JobOutcome, NodeMetrics};
use async_nats::HeaderMap;
use paddock_contract::event::failure;
use paddock_contract::{EventBody, JobEvent, JobId};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// Tool calls of one attempt whose results have not come yet, at most: an agent that
/// never reports results cannot grow the map without bound.
const MAX_OPEN_TOOL_SPANS: usize = 256;
/// Approvals of one attempt pending at once, at most.
const MAX_PENDING_APPROVALS: usize = 64;
/// Failure reasons that are per-job quotas: counted in `paddock_quota_refusals_total`.
const QUOTA_REASONS: &[&str] = &[
    failure::COST_BUDGET,
    failure::OUTPUT_LIMIT,
    failure::MAX_TURNS,
    failure::TIMEOUT,
];

/// Watches one job attempt's events on a node.
#[derive(Debug)]
pub struct JobObserver {
    metrics: NodeMetrics,
    parent: tracing::Span,
    run: Option<tracing::Span>,
    started_at: Option<Instant>,
    first_output_seen: bool,
    ended: bool,
    tools: HashMap<String, tracing::Span>,
    approvals: HashMap<String, ApprovalWait>,
}

impl JobObserver {
    /// An observer whose spans are children of `parent` (the job's `job.claim` span
    /// from [`ClaimSpans::take`], or `tracing::Span::current()`).
    pub fn new(metrics: NodeMetrics, parent: tracing::Span) -> Self {
        JobObserver {
            metrics,
            parent,
            run: None,
            started_at: None,
            first_output_seen: false,
            ended: false,
            tools: HashMap::new(),
            approvals: HashMap::new(),
        }
    }

    /// The span the attempt's work belongs to now: `job.run` once started, the parent
    /// before. Enter it around a publish so that the event carries it to the client.
    pub fn span(&self) -> &tracing::Span {
        self.run.as_ref().unwrap_or(&self.parent)
    }

    /// Records what `event`, just appended by this node, means.
    pub fn observe(&mut self, event: &JobEvent) {
        match &event.body {
            EventBody::Started { node, attempt } => self.started(&event.job_id, node, *attempt),
            EventBody::Restarting { .. } => self.metrics.session_restarted(),
            EventBody::TurnRetrying { .. } => self.metrics.turn_retried(),
            EventBody::ApprovalRequested { request_id, .. }
                if self.approvals.len() < MAX_PENDING_APPROVALS =>
            {
                let wait = self.metrics.approval_requested();
                self.approvals.insert(request_id.clone(), wait);
            }
            EventBody::ApprovalResolved {
                request_id,
                allowed,
                by,
                ..
            } => {
                if let Some(wait) = self.approvals.remove(request_id) {
                    wait.resolve(match (*allowed, by.as_str()) {
                        (true, _) => ApprovalOutcome::Approved,
                        (false, "timeout") => ApprovalOutcome::TimedOut,
                        (false, _) => ApprovalOutcome::Refused,
                    });
                }
            }
            EventBody::AssistantText { .. } => self.output(),
            EventBody::ToolCall {
                tool_use_id, name, ..
            } => {
                self.output();
                self.metrics.tool_called(name);
                self.open_tool_span(tool_use_id, name);
            }
            EventBody::ToolResult {
                tool_use_id,
                is_error,
                ..
            } => {
                if let Some(span) = self.tools.remove(tool_use_id)
                    && *is_error
                {
                    span.record("otel.status_code", "ERROR");
                }
            }
            EventBody::ToolDenied { tool_name, .. } => self.metrics.tool_denied(tool_name),
            _ => {}
        }
        if let Some(outcome) = JobOutcome::of(event) {
            self.finished(outcome);
        }
    }

    fn started(&mut self, job: &JobId, node: &str, attempt: u32) {
        if self.started_at.is_some() {
            return;
        }
        self.started_at = Some(Instant::now());
        self.metrics.job_started();
        self.run = Some(tracing::info_span!(
            parent: &self.parent,
            "job.run",
            job = %job,
            node = %node,
            attempt,
            otel.status_code = tracing::field::Empty,
        ));
    }

    fn output(&mut self) {
        if self.first_output_seen {
            return;
        }
        if let Some(started) = self.started_at {
            self.first_output_seen = true;
            self.metrics.first_output(started.elapsed());
        }
    }

    fn open_tool_span(&mut self, tool_use_id: &str, name: &str) {
        if self.tools.len() >= MAX_OPEN_TOOL_SPANS {
            return;
        }
        let span = tracing::info_span!(
            parent: self.span(),
            "tool",
            otel.name = %format!("tool {name}"),
            tool.name = %name,
            tool.use_id = %tool_use_id,
            otel.status_code = tracing::field::Empty,
        );
        self.tools.insert(tool_use_id.to_string(), span);
    }

    fn finished(&mut self, outcome: JobOutcome<'_>) {
        if self.ended {
            return;
        }
        self.ended = true;
        self.tools.clear();
        self.approvals.clear();
        if let JobOutcome::Failed { reason } = outcome
            && QUOTA_REASONS.contains(&reason)
        {
            self.metrics.quota_refused(reason);
        }
        if let Some(run) = &self.run {
            if matches!(outcome, JobOutcome::Failed { .. }) {
                run.record("otel.status_code", "ERROR");
            }
            // Counted as running only between job.started and the ending: a job
            // that failed before it started (unknown project, too many attempts) ends
            // without having run.
            self.metrics.job_finished(outcome);
        }
        self.run = None;
    }
}

impl Drop for JobObserver {
    fn drop(&mut self) {
        if self.started_at.is_some() && !self.ended {
            self.metrics.job_released();
        }
    }
}

/// The `job.claim` spans of jobs pulled but not yet opened by a session, by job id.
/// Bounded: a claim never taken (a message that was not a job) is forgotten after
/// [`ClaimSpans::CAPACITY`] newer ones.
#[derive(Clone, Debug, Default)]
pub struct ClaimSpans {
    spans: Arc<Mutex<VecDeque<(JobId, tracing::Span)>>>,
}

impl ClaimSpans {
    pub const CAPACITY: usize = 1024;

    /// Starts the `job.claim` span of `job` on `node` as a child of the span that
    /// published the job message (from its headers) and keeps it for
    /// [`ClaimSpans::take`]. Returns a handle to the span.
    pub fn claim(&self, job: JobId, node: &str, headers: Option<&HeaderMap>) -> tracing::Span {
        let span = tracing::info_span!(parent: None, "job.claim", job = %job, node = %node);
        crate::propagation::set_parent(&span, headers);
        let mut spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        if spans.len() >= Self::CAPACITY {
            spans.pop_front();
        }
        spans.push_back((job, span.clone()));
        span
    }

    /// The claim span of `job`, removed from the set; `None` if it was never claimed
    /// here or was forgotten.
    pub fn take(&self, job: JobId) -> Option<tracing::Span> {
        let mut spans = self.spans.lock().unwrap_or_else(PoisonError::into_inner);
        let index = spans.iter().position(|(id, _)| *id == job)?;
        spans.remove(index).map(|(_, span)| span)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::render;
    use paddock_contract::CONTRACT_VERSION;

    fn event(job: JobId, body: EventBody) -> JobEvent {
        JobEvent {
            version: CONTRACT_VERSION,
            job_id: job,
            seq: 2,
            at_ms: 0,
            node: Some("n".into()),
            attempt: 1,
            body,
            raw: None,
        }
    }

    fn started() -> EventBody {
        EventBody::Started {
            node: "n".into(),
            attempt: 1,
        }
    }

    fn sample(registry: &prometheus::Registry, series: &str) -> String {
        let text = render(registry).expect("render");
        text.lines()
            .find_map(|line| {
                line.strip_prefix(series)?
                    .strip_prefix(' ')
                    .map(str::to_string)
            })
            .unwrap_or_else(|| panic!("no {series} in {text}"))
    }

    #[test]
    fn a_job_that_fails_before_it_starts_never_runs() {
        let registry = prometheus::Registry::new();
        let metrics = NodeMetrics::register(&registry, "n").expect("metrics");
        let job = JobId::new();
        let mut observer = JobObserver::new(metrics, tracing::Span::none());
        observer.observe(&event(
            job,
            EventBody::Failed {
                reason: failure::UNKNOWN_PROJECT.into(),
                message: "no such project".into(),
                summary: None,
            },
        ));
        drop(observer);
        assert_eq!(
            sample(&registry, r#"paddock_node_jobs_running{node="n"}"#),
            "0"
        );
        assert_eq!(
            sample(&registry, r#"paddock_node_jobs_started_total{node="n"}"#),
            "0"
        );
        assert_eq!(
            sample(&registry, r#"paddock_node_jobs_released_total{node="n"}"#),
            "0"
        );
    }

    #[test]
    fn an_attempt_dropped_while_running_is_released_with_its_approvals() {
        let registry = prometheus::Registry::new();
        let metrics = NodeMetrics::register(&registry, "n").expect("metrics");
        let job = JobId::new();
        let mut observer = JobObserver::new(metrics, tracing::Span::none());
        observer.observe(&event(job, started()));
        observer.observe(&event(
            job,
            EventBody::ApprovalRequested {
                request_id: "r".into(),
                tool_name: "Bash".into(),
                input: serde_json::json!({}),
                deadline_ms: 0,
            },
        ));
        assert_eq!(
            sample(&registry, r#"paddock_node_jobs_running{node="n"}"#),
            "1"
        );
        assert_eq!(
            sample(&registry, r#"paddock_node_approvals_pending{node="n"}"#),
            "1"
        );
        drop(observer);
        assert_eq!(
            sample(&registry, r#"paddock_node_jobs_running{node="n"}"#),
            "0"
        );
        assert_eq!(
            sample(&registry, r#"paddock_node_jobs_released_total{node="n"}"#),
            "1"
        );
        assert_eq!(
            sample(&registry, r#"paddock_node_approvals_pending{node="n"}"#),
            "0"
        );
        assert_eq!(
            sample(
                &registry,
                r#"paddock_node_approval_wait_seconds_count{node="n",outcome="abandoned"}"#
            ),
            "1"
        );
    }

    #[test]
    fn a_second_start_or_ending_counts_once() {
        let registry = prometheus::Registry::new();
        let metrics = NodeMetrics::register(&registry, "n").expect("metrics");
        let job = JobId::new();
        let mut observer = JobObserver::new(metrics, tracing::Span::none());
        let done = EventBody::Cancelled {
            by: "ada".into(),
            summary: None,
        };
        for body in [started(), started(), done.clone(), done] {
            observer.observe(&event(job, body));
        }
        drop(observer);
        assert_eq!(
            sample(&registry, r#"paddock_node_jobs_started_total{node="n"}"#),
            "1"
        );
        assert_eq!(
            sample(
                &registry,
                r#"paddock_node_jobs_finished_total{node="n",status="cancelled"}"#
            ),
            "1"
        );
        assert_eq!(
            sample(&registry, r#"paddock_node_jobs_running{node="n"}"#),
            "0"
        );
    }

    #[test]
    fn claims_are_taken_once_and_bounded() {
        let claims = ClaimSpans::default();
        let first = JobId::new();
        claims.claim(first, "n", None);
        assert!(claims.take(first).is_some());
        assert!(claims.take(first).is_none(), "a claim is taken once");
        let oldest = JobId::new();
        claims.claim(oldest, "n", None);
        for _ in 0..ClaimSpans::CAPACITY {
            claims.claim(JobId::new(), "n", None);
        }
        assert!(
            claims.take(oldest).is_none(),
            "the oldest claim was forgotten"
        );
    }
}
