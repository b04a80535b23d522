//! The control plane's actor cluster (ractor_cluster), from both ends. The coordinator
//! records its members ([`MembershipMetrics`]): how many there are, each member's join
//! time (the member list, one series per node while it is a member), joins and leaves,
//! and the `Reconcile` nudges it sends. A node records its link to the coordinator
//! ([`ClusterLinkMetrics`]): whether it is joined, its attempts to join, and the nudges
//! it received. Membership is not liveness: a node is lost when its heartbeat ages out
//! (see [`super::FleetView`]), whatever its session says.

use super::{MetricGroup, counter, counter_vec, float_gauge_vec, gauge};
use crate::TelemetryError;
use crate::labels::BoundedLabel;
use prometheus::core::Collector;
use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::time::{SystemTime, UNIX_EPOCH};

/// Most distinct node names kept as label values; later newcomers share `other`.
const MAX_NODES: usize = 1024;

/// Why the coordinator nudged a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReconcileReason {
    /// The member (re)joined: it reads its desired state at once.
    Joined,
    /// The node's desired state changed in the registry (drain, cordon, undrain).
    DesiredChanged,
}

impl ReconcileReason {
    pub const ALL: [ReconcileReason; 2] =
        [ReconcileReason::Joined, ReconcileReason::DesiredChanged];

    pub fn as_str(self) -> &'static str {
        match self {
            ReconcileReason::Joined => "joined",
            ReconcileReason::DesiredChanged => "desired_changed",
        }
    }
}

/// The coordinator's view of the actor cluster. Clones share the same series.
#[derive(Clone, Debug)]
pub struct MembershipMetrics {
    members: IntGauge,
    events: IntCounterVec,
    joined_at: GaugeVec,
    reconciles: IntCounterVec,
    nodes: BoundedLabel,
}

impl MembershipMetrics {
    /// Creates the membership metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, TelemetryError> {
        let metrics = Self::new()?;
        metrics.register_in(registry)?;
        Ok(metrics)
    }

    pub(crate) fn new() -> Result<Self, TelemetryError> {
        let metrics = MembershipMetrics {
            members: gauge(Opts::new(
                "paddock_cluster_members",
                "Nodes joined to the coordinator's actor cluster now.",
            ))?,
            events: counter_vec(
                Opts::new(
                    "paddock_cluster_membership_events_total",
                    "Nodes joining (or rejoining) and leaving the coordinator's actor cluster, by event (joined, left).",
                ),
                &["event"],
            )?,
            joined_at: float_gauge_vec(
                Opts::new(
                    "paddock_cluster_member_joined_timestamp_seconds",
                    "When a member of the actor cluster last joined (Unix time), by node; present only while it is a member: the member list.",
                ),
                &["node"],
            )?,
            reconciles: counter_vec(
                Opts::new(
                    "paddock_cluster_reconciles_sent_total",
                    "Reconcile nudges the coordinator sent to members, by reason (joined, desired_changed).",
                ),
                &["reason"],
            )?,
            nodes: BoundedLabel::new(MAX_NODES),
        };
        for event in ["joined", "left"] {
            metrics.events.with_label_values(&[event]);
        }
        for reason in ReconcileReason::ALL {
            metrics.reconciles.with_label_values(&[reason.as_str()]);
        }
        Ok(metrics)
    }

    /// `node` joined (or rejoined) at `at`; `members` are the members now.
    pub fn joined(&self, node: &str, at: SystemTime, members: usize) {
        self.events.with_label_values(&["joined"]).inc();
        let unix = at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        self.joined_at
            .with_label_values(&[&self.nodes.value(node)])
            .set(unix);
        self.set_members(members);
    }

    /// `node` left (its session dropped); `members` are the members now.
    pub fn left(&self, node: &str, members: usize) {
        self.events.with_label_values(&["left"]).inc();
        let _ = self
            .joined_at
            .remove_label_values(&[&self.nodes.value(node)]);
        self.set_members(members);
    }

    /// A `Reconcile` was sent to a member.
    pub fn reconcile_sent(&self, reason: ReconcileReason) {
        self.reconciles.with_label_values(&[reason.as_str()]).inc();
    }

    fn set_members(&self, members: usize) {
        self.members.set(i64::try_from(members).unwrap_or(i64::MAX));
    }
}

impl MetricGroup for MembershipMetrics {
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.members.clone()),
            Box::new(self.events.clone()),
            Box::new(self.joined_at.clone()),
            Box::new(self.reconciles.clone()),
        ]
    }
}

/// How a node's attempt to join the coordinator ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JoinOutcome {
    /// The session is up and the process groups are exchanged.
    Joined,
    /// The coordinator closed the session before it was ready (a wrong cluster
    /// secret, or a coordinator stopping).
    Refused,
    /// The coordinator could not be reached, or TLS failed.
    Unreachable,
}

impl JoinOutcome {
    pub const ALL: [JoinOutcome; 3] = [
        JoinOutcome::Joined,
        JoinOutcome::Refused,
        JoinOutcome::Unreachable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JoinOutcome::Joined => "joined",
            JoinOutcome::Refused => "refused",
            JoinOutcome::Unreachable => "unreachable",
        }
    }
}

/// A node's link to the coordinator's actor cluster. Clones share the same series.
#[derive(Clone, Debug)]
pub struct ClusterLinkMetrics {
    joined: IntGauge,
    attempts: IntCounterVec,
    reconciles: IntCounter,
}

impl ClusterLinkMetrics {
    /// Creates the link metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, TelemetryError> {
        let metrics = Self::new()?;
        metrics.register_in(registry)?;
        Ok(metrics)
    }

    pub(crate) fn new() -> Result<Self, TelemetryError> {
        let metrics = ClusterLinkMetrics {
            joined: gauge(Opts::new(
                "paddock_cluster_joined",
                "1 while this node is joined to the coordinator's actor cluster, else 0.",
            ))?,
            attempts: counter_vec(
                Opts::new(
                    "paddock_cluster_join_attempts_total",
                    "This node's attempts to join the coordinator's actor cluster, by outcome (joined, refused, unreachable).",
                ),
                &["outcome"],
            )?,
            reconciles: counter(Opts::new(
                "paddock_cluster_reconciles_received_total",
                "Reconcile nudges this node received from the coordinator over the actor cluster.",
            ))?,
        };
        for outcome in JoinOutcome::ALL {
            metrics.attempts.with_label_values(&[outcome.as_str()]);
        }
        Ok(metrics)
    }

    /// An attempt to join ended with `outcome`.
    pub fn attempt(&self, outcome: JoinOutcome) {
        self.attempts.with_label_values(&[outcome.as_str()]).inc();
        if outcome == JoinOutcome::Joined {
            self.joined.set(1);
        }
    }

    /// The session to the coordinator dropped.
    pub fn disconnected(&self) {
        self.joined.set(0);
    }

    /// A `Reconcile` arrived from the coordinator.
    pub fn reconcile_received(&self) {
        self.reconciles.inc();
    }
}

impl MetricGroup for ClusterLinkMetrics {
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.joined.clone()),
            Box::new(self.attempts.clone()),
            Box::new(self.reconciles.clone()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::render;
    use std::time::Duration;

    #[test]
    fn the_member_list_follows_joins_and_leaves() {
        let registry = Registry::new();
        let metrics = MembershipMetrics::register(&registry).expect("metrics");
        metrics.joined("mini-1", UNIX_EPOCH + Duration::from_secs(1_000), 1);
        metrics.joined("mini-2", UNIX_EPOCH + Duration::from_secs(2_000), 2);
        metrics.reconcile_sent(ReconcileReason::Joined);
        let text = render(&registry).expect("render");
        for expected in [
            "paddock_cluster_members 2",
            r#"paddock_cluster_member_joined_timestamp_seconds{node="mini-1"} 1000"#,
            r#"paddock_cluster_member_joined_timestamp_seconds{node="mini-2"} 2000"#,
            r#"paddock_cluster_membership_events_total{event="joined"} 2"#,
            r#"paddock_cluster_membership_events_total{event="left"} 0"#,
            r#"paddock_cluster_reconciles_sent_total{reason="joined"} 1"#,
            r#"paddock_cluster_reconciles_sent_total{reason="desired_changed"} 0"#,
        ] {
            assert!(text.contains(expected), "{expected} missing from {text}");
        }
        metrics.left("mini-1", 1);
        let text = render(&registry).expect("render");
        assert!(text.contains("paddock_cluster_members 1"), "{text}");
        assert!(!text.contains(r#"node="mini-1""#), "{text}");
        assert!(
            text.contains(r#"paddock_cluster_membership_events_total{event="left"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn a_node_reports_its_link() {
        let registry = Registry::new();
        let metrics = ClusterLinkMetrics::register(&registry).expect("metrics");
        let text = render(&registry).expect("render");
        assert!(text.contains("paddock_cluster_joined 0"), "{text}");
        assert!(
            text.contains(r#"paddock_cluster_join_attempts_total{outcome="refused"} 0"#),
            "{text}"
        );
        metrics.attempt(JoinOutcome::Unreachable);
        metrics.attempt(JoinOutcome::Joined);
        metrics.reconcile_received();
        let text = render(&registry).expect("render");
        for expected in [
            "paddock_cluster_joined 1",
            r#"paddock_cluster_join_attempts_total{outcome="joined"} 1"#,
            r#"paddock_cluster_join_attempts_total{outcome="unreachable"} 1"#,
            "paddock_cluster_reconciles_received_total 1",
        ] {
            assert!(text.contains(expected), "{expected} missing from {text}");
        }
        metrics.disconnected();
        let text = render(&registry).expect("render");
        assert!(text.contains("paddock_cluster_joined 0"), "{text}");
    }
}
