//! A node agent's metrics: its slots and state, the jobs it runs, how its agent
//! sessions behave (restarts, time to first output, tool calls) and approvals waiting
//! for a person. Every series carries the constant label `node`. Most of them are
//! recorded from the job events the node appends, by [`crate::observer::JobObserver`];
//! slots, state, approvals and quotas by one call where they change.

use super::{
    APPROVAL_WAIT_BUCKETS, FIRST_OUTPUT_BUCKETS, JobOutcome, MetricGroup, counter, counter_vec,
    gauge, gauge_vec, histogram, histogram_vec, quota_refusals, seconds,
};
use crate::TelemetryError;
use crate::labels::BoundedLabel;
use prometheus::core::Collector;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};
use std::time::{Duration, Instant};

/// Distinct tool names tracked (MCP tools can be many) before the rest are `other`.
const MAX_TOOLS: usize = 100;
/// Distinct quotas tracked.
const MAX_QUOTAS: usize = 32;

/// Where a node is in its life, as it reports itself and as the coordinator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// Connected, not yet claiming.
    Starting,
    /// Claiming jobs while it has free slots.
    Ready,
    /// Claims nothing new; running jobs finish or move.
    Draining,
    /// Draining, and no job is left.
    Drained,
    /// Claims nothing new; running jobs go on (an operator's hold).
    Cordoned,
    /// Shutting down.
    Stopping,
    /// No heartbeat for too long (only the coordinator says so).
    Lost,
}

impl NodeState {
    pub const ALL: [NodeState; 7] = [
        NodeState::Starting,
        NodeState::Ready,
        NodeState::Draining,
        NodeState::Drained,
        NodeState::Cordoned,
        NodeState::Stopping,
        NodeState::Lost,
    ];

    /// The `state` label.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Starting => "starting",
            NodeState::Ready => "ready",
            NodeState::Draining => "draining",
            NodeState::Drained => "drained",
            NodeState::Cordoned => "cordoned",
            NodeState::Stopping => "stopping",
            NodeState::Lost => "lost",
        }
    }
}

impl From<paddock_contract::node::NodeState> for NodeState {
    /// The state a node reports in its heartbeat, or the registry lists it in.
    fn from(state: paddock_contract::node::NodeState) -> Self {
        use paddock_contract::node::NodeState as Reported;
        match state {
            Reported::Ready => NodeState::Ready,
            Reported::Draining => NodeState::Draining,
            Reported::Drained => NodeState::Drained,
            Reported::Cordoned => NodeState::Cordoned,
            Reported::Lost => NodeState::Lost,
        }
    }
}

/// How an approval request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApprovalOutcome {
    Approved,
    Refused,
    /// Nobody answered in time.
    TimedOut,
    /// The job ended (cancelled, failed, handed back) while waiting.
    Abandoned,
}

impl ApprovalOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalOutcome::Approved => "approved",
            ApprovalOutcome::Refused => "refused",
            ApprovalOutcome::TimedOut => "timed_out",
            ApprovalOutcome::Abandoned => "abandoned",
        }
    }
}

/// One node agent's metrics. Clones share the same series.
#[derive(Clone, Debug)]
pub struct NodeMetrics {
    slots: IntGauge,
    state: IntGaugeVec,
    running: IntGauge,
    started: IntCounter,
    finished: IntCounterVec,
    released: IntCounter,
    session_restarts: IntCounter,
    turn_retries: IntCounter,
    first_output: Histogram,
    tool_calls: IntCounterVec,
    tool_denials: IntCounterVec,
    approvals_pending: IntGauge,
    approval_wait: HistogramVec,
    quota_refusals: IntCounterVec,
    tools: BoundedLabel,
    quotas: BoundedLabel,
}

impl NodeMetrics {
    /// Creates the metrics of node `node` (its configured name) and registers them.
    pub fn register(registry: &Registry, node: &str) -> Result<Self, TelemetryError> {
        let metrics = Self::new(node)?;
        metrics.register_in(registry)?;
        Ok(metrics)
    }

    pub(crate) fn new(node: &str) -> Result<Self, TelemetryError> {
        let opts = |name: &str, help: &str| Opts::new(name, help).const_label("node", node);
        let histogram_opts = |name: &str, help: &str, buckets: &[f64]| {
            HistogramOpts::new(name, help)
                .const_label("node", node)
                .buckets(buckets.to_vec())
        };
        let metrics = NodeMetrics {
            slots: gauge(opts(
                "paddock_node_slots",
                "Jobs this node runs at once at most.",
            ))?,
            state: gauge_vec(
                opts(
                    "paddock_node_state",
                    "1 for the state the node is in (starting, ready, draining, drained, cordoned, stopping), 0 for the others.",
                ),
                &["state"],
            )?,
            running: gauge(opts(
                "paddock_node_jobs_running",
                "Jobs running on this node now.",
            ))?,
            started: counter(opts(
                "paddock_node_jobs_started_total",
                "Job attempts started on this node (job.started events it recorded).",
            ))?,
            finished: counter_vec(
                opts(
                    "paddock_node_jobs_finished_total",
                    "Job attempts this node ended with a terminal event, by status (completed, failed, cancelled).",
                ),
                &["status"],
            )?,
            released: counter(opts(
                "paddock_node_jobs_released_total",
                "Job attempts that left this node without an ending: handed back at shutdown, or their session stopped.",
            ))?,
            session_restarts: counter(opts(
                "paddock_node_session_restarts_total",
                "Agent processes restarted within a job with --resume after dying without a result (job.restarting).",
            ))?,
            turn_retries: counter(opts(
                "paddock_node_turn_retries_total",
                "Turns sent again after the model API failed them (turn.retrying).",
            ))?,
            first_output: histogram(histogram_opts(
                "paddock_node_time_to_first_output_seconds",
                "From job.started to the agent's first text or tool call.",
                FIRST_OUTPUT_BUCKETS,
            ))?,
            tool_calls: counter_vec(
                opts(
                    "paddock_node_tool_calls_total",
                    "Tool calls made by agents on this node, by tool.",
                ),
                &["tool"],
            )?,
            tool_denials: counter_vec(
                opts(
                    "paddock_node_tool_denials_total",
                    "Tool calls the agent was not allowed to make, by tool.",
                ),
                &["tool"],
            )?,
            approvals_pending: gauge(opts(
                "paddock_node_approvals_pending",
                "Tool calls waiting for a person's approval now.",
            ))?,
            approval_wait: histogram_vec(
                histogram_opts(
                    "paddock_node_approval_wait_seconds",
                    "How long tool calls waited for approval, by outcome (approved, refused, timed_out, abandoned).",
                    APPROVAL_WAIT_BUCKETS,
                ),
                &["outcome"],
            )?,
            quota_refusals: quota_refusals(&[("node", node)])?,
            tools: BoundedLabel::new(MAX_TOOLS),
            quotas: BoundedLabel::new(MAX_QUOTAS),
        };
        metrics.set_state(NodeState::Starting);
        Ok(metrics)
    }

    /// The node's slots (its configured capacity).
    pub fn set_slots(&self, slots: usize) {
        self.slots.set(i64::try_from(slots).unwrap_or(i64::MAX));
    }

    /// The node's state changed.
    pub fn set_state(&self, state: NodeState) {
        for each in NodeState::ALL {
            self.state
                .with_label_values(&[each.as_str()])
                .set(i64::from(each == state));
        }
    }

    /// A job attempt started here. Every start is followed by exactly one
    /// [`NodeMetrics::job_finished`] or [`NodeMetrics::job_released`].
    pub fn job_started(&self) {
        self.started.inc();
        self.running.inc();
    }

    /// A job attempt ended here with a terminal event.
    pub fn job_finished(&self, outcome: JobOutcome<'_>) {
        self.finished.with_label_values(&[outcome.status()]).inc();
        self.running.dec();
    }

    /// A job attempt left without an ending (handed back, or its session stopped).
    pub fn job_released(&self) {
        self.released.inc();
        self.running.dec();
    }

    /// An agent session was restarted within a job.
    pub fn session_restarted(&self) {
        self.session_restarts.inc();
    }

    /// A turn is sent again after the model API failed it.
    pub fn turn_retried(&self) {
        self.turn_retries.inc();
    }

    /// The agent's first output came `after` the job started.
    pub fn first_output(&self, after: Duration) {
        self.first_output.observe(seconds(after));
    }

    /// The agent called `tool`.
    pub fn tool_called(&self, tool: &str) {
        self.tool_calls
            .with_label_values(&[&self.tools.value(tool)])
            .inc();
    }

    /// The agent was refused `tool`.
    pub fn tool_denied(&self, tool: &str) {
        self.tool_denials
            .with_label_values(&[&self.tools.value(tool)])
            .inc();
    }

    /// A tool call waits for approval; resolve the returned guard when it is answered.
    /// A guard dropped unresolved counts as [`ApprovalOutcome::Abandoned`].
    pub fn approval_requested(&self) -> ApprovalWait {
        self.approvals_pending.inc();
        ApprovalWait {
            metrics: self.clone(),
            since: Instant::now(),
            resolved: false,
        }
    }

    /// A job was stopped by a per-job quota (the failure reasons `cost_budget`,
    /// `output_limit`, `max_turns`, `timeout`).
    pub fn quota_refused(&self, quota: &str) {
        self.quota_refusals
            .with_label_values(&[&self.quotas.value(quota)])
            .inc();
    }

    fn approval_resolved(&self, outcome: ApprovalOutcome, waited: Duration) {
        self.approvals_pending.dec();
        self.approval_wait
            .with_label_values(&[outcome.as_str()])
            .observe(seconds(waited));
    }
}

impl MetricGroup for NodeMetrics {
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.slots.clone()),
            Box::new(self.state.clone()),
            Box::new(self.running.clone()),
            Box::new(self.started.clone()),
            Box::new(self.finished.clone()),
            Box::new(self.released.clone()),
            Box::new(self.session_restarts.clone()),
            Box::new(self.turn_retries.clone()),
            Box::new(self.first_output.clone()),
            Box::new(self.tool_calls.clone()),
            Box::new(self.tool_denials.clone()),
            Box::new(self.approvals_pending.clone()),
            Box::new(self.approval_wait.clone()),
            Box::new(self.quota_refusals.clone()),
        ]
    }
}

/// One tool call waiting for approval (`paddock_node_approvals_pending`).
#[derive(Debug)]
pub struct ApprovalWait {
    metrics: NodeMetrics,
    since: Instant,
    resolved: bool,
}

impl ApprovalWait {
    /// The approval was answered (or timed out).
    pub fn resolve(mut self, outcome: ApprovalOutcome) {
        self.resolved = true;
        self.metrics
            .approval_resolved(outcome, self.since.elapsed());
    }
}

impl Drop for ApprovalWait {
    fn drop(&mut self) {
        if !self.resolved {
            self.metrics
                .approval_resolved(ApprovalOutcome::Abandoned, self.since.elapsed());
        }
    }
}
