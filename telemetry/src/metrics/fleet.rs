//! The paddock's nodes as the coordinator sees them, for the alerts a lost node cannot
//! raise itself: each node's heartbeat age, state, slots, running jobs and drain
//! deadline. The coordinator reports what its node registry says here (each heartbeat
//! with [`FleetView::heartbeat`], or the whole registry every few seconds with
//! [`FleetView::observe_node`] (or [`FleetView::observe`]) and [`FleetView::retain`]); ages are computed when Prometheus
//! scrapes, so a node that stopped beating shows an age that keeps growing.

use super::{MetricGroup, float_gauge_vec, gauge_vec};
use crate::TelemetryError;
use crate::metrics::NodeState;
use paddock_contract::node::NodeView;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{GaugeVec, IntGaugeVec, Opts, Registry};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// What a node says about itself in a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeReport {
    pub state: NodeState,
    pub slots: usize,
    pub running: usize,
}

#[derive(Clone, Debug)]
struct NodeEntry {
    report: NodeReport,
    /// `None` for a node listed without ever having been heard (no age to show).
    last_heartbeat: Option<SystemTime>,
    drain_deadline: Option<SystemTime>,
}

#[derive(Debug)]
struct Series {
    heartbeat_age: GaugeVec,
    state: IntGaugeVec,
    slots: IntGaugeVec,
    running: IntGaugeVec,
    drain_deadline: GaugeVec,
}

/// The coordinator's view of every node. Clones share it; register it once.
#[derive(Clone, Debug)]
pub struct FleetView {
    nodes: Arc<Mutex<BTreeMap<String, NodeEntry>>>,
    series: Arc<Series>,
}

impl FleetView {
    /// Creates the view and registers it in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, TelemetryError> {
        let view = Self::new()?;
        view.register_in(registry)?;
        Ok(view)
    }

    pub(crate) fn new() -> Result<Self, TelemetryError> {
        let series = Series {
            heartbeat_age: float_gauge_vec(
                Opts::new(
                    "paddock_fleet_node_heartbeat_age_seconds",
                    "Seconds since the coordinator last heard a node's heartbeat.",
                ),
                &["node"],
            )?,
            state: gauge_vec(
                Opts::new(
                    "paddock_fleet_node_state",
                    "1 for the state the coordinator sees a node in (starting, ready, draining, drained, cordoned, stopping, lost), 0 for the others.",
                ),
                &["node", "state"],
            )?,
            slots: gauge_vec(
                Opts::new(
                    "paddock_fleet_node_slots",
                    "A node's slots, from its last heartbeat.",
                ),
                &["node"],
            )?,
            running: gauge_vec(
                Opts::new(
                    "paddock_fleet_node_jobs_running",
                    "Jobs running on a node, from its last heartbeat.",
                ),
                &["node"],
            )?,
            drain_deadline: float_gauge_vec(
                Opts::new(
                    "paddock_fleet_node_drain_deadline_timestamp_seconds",
                    "When a draining node's running jobs must have finished or moved (Unix time); present only while it drains with a deadline.",
                ),
                &["node"],
            )?,
        };
        Ok(FleetView {
            nodes: Arc::new(Mutex::new(BTreeMap::new())),
            series: Arc::new(series),
        })
    }

    /// A heartbeat arrived from `node` just now.
    pub fn heartbeat(&self, node: &str, report: NodeReport) {
        let mut nodes = self.lock();
        let now = SystemTime::now();
        let entry = nodes.entry(node.to_string()).or_insert_with(|| NodeEntry {
            report,
            last_heartbeat: Some(now),
            drain_deadline: None,
        });
        entry.report = report;
        entry.last_heartbeat = Some(now);
        if !matches!(report.state, NodeState::Draining) {
            entry.drain_deadline = None;
        }
    }

    /// The whole of what the control plane knows of `node`, as its registry lists it:
    /// its state (`lost` when its heartbeat expired), capacity, when it was last
    /// heard and, while it drains, its deadline. For a coordinator that reads the
    /// registry periodically rather than watching each heartbeat.
    pub fn observe(
        &self,
        node: &str,
        report: NodeReport,
        last_seen: SystemTime,
        drain_deadline: Option<SystemTime>,
    ) {
        self.lock().insert(
            node.to_string(),
            NodeEntry {
                report,
                last_heartbeat: Some(last_seen),
                drain_deadline: drain_deadline.filter(|_| report.state == NodeState::Draining),
            },
        );
    }

    /// [`FleetView::observe`] for one node as `NodeRegistry::list` lists it. A node
    /// listed without a heartbeat (its entry aged out: `lost`) keeps the time it was
    /// last heard here, so its heartbeat age keeps growing; one never heard shows
    /// its state alone, without an age.
    pub fn observe_node(&self, view: &NodeView) {
        let report = NodeReport {
            state: view.state.into(),
            slots: usize::try_from(view.slots).unwrap_or(usize::MAX),
            running: usize::try_from(view.used).unwrap_or(usize::MAX),
        };
        let drain_deadline = view.drain_deadline_ms.map(unix_ms);
        let mut nodes = self.lock();
        let last_heartbeat = view
            .last_seen_ms
            .map(unix_ms)
            .or_else(|| nodes.get(&view.name).and_then(|e| e.last_heartbeat));
        nodes.insert(
            view.name.clone(),
            NodeEntry {
                report,
                last_heartbeat,
                drain_deadline: drain_deadline.filter(|_| report.state == NodeState::Draining),
            },
        );
    }

    /// Keeps only the nodes in `names` (the registry's list), forgetting the others.
    pub fn retain<S: AsRef<str>>(&self, names: &[S]) {
        self.lock()
            .retain(|node, _| names.iter().any(|name| name.as_ref() == node));
    }

    /// The coordinator decided a node's state (`lost` after missed heartbeats,
    /// `draining` on an operator's drain) without waiting for its next heartbeat.
    pub fn set_state(&self, node: &str, state: NodeState) {
        if let Some(entry) = self.lock().get_mut(node) {
            entry.report.state = state;
            if state != NodeState::Draining {
                entry.drain_deadline = None;
            }
        }
    }

    /// An operator drained `node`: its jobs must have finished or moved by `deadline`.
    pub fn drain_started(&self, node: &str, deadline: SystemTime) {
        if let Some(entry) = self.lock().get_mut(node) {
            entry.report.state = NodeState::Draining;
            entry.drain_deadline = Some(deadline);
        }
    }

    /// `node` left the paddock for good (removed by an operator): its series go.
    pub fn forget(&self, node: &str) {
        self.lock().remove(node);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, NodeEntry>> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Rewrites every series from the nodes as they are now.
    fn refresh(&self, nodes: &BTreeMap<String, NodeEntry>) {
        let series = &self.series;
        series.heartbeat_age.reset();
        series.state.reset();
        series.slots.reset();
        series.running.reset();
        series.drain_deadline.reset();
        let now = SystemTime::now();
        for (name, entry) in nodes {
            if let Some(last_heartbeat) = entry.last_heartbeat {
                // A heartbeat stamped by a clock a little ahead of ours counts as fresh.
                let age = now
                    .duration_since(last_heartbeat)
                    .map(|age| age.as_secs_f64())
                    .unwrap_or(0.0);
                series.heartbeat_age.with_label_values(&[name]).set(age);
            }
            for state in NodeState::ALL {
                series
                    .state
                    .with_label_values(&[name, state.as_str()])
                    .set(i64::from(state == entry.report.state));
            }
            series
                .slots
                .with_label_values(&[name])
                .set(i64::try_from(entry.report.slots).unwrap_or(i64::MAX));
            series
                .running
                .with_label_values(&[name])
                .set(i64::try_from(entry.report.running).unwrap_or(i64::MAX));
            if let (NodeState::Draining, Some(deadline)) =
                (entry.report.state, entry.drain_deadline)
            {
                let unix = deadline
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0);
                series.drain_deadline.with_label_values(&[name]).set(unix);
            }
        }
    }
}

/// A wire timestamp (ms since the epoch) as a time; one before the epoch counts as
/// the epoch.
fn unix_ms(ms: i64) -> SystemTime {
    UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl Collector for FleetView {
    fn desc(&self) -> Vec<&Desc> {
        let series = &self.series;
        let mut descs = Vec::new();
        descs.extend(series.heartbeat_age.desc());
        descs.extend(series.state.desc());
        descs.extend(series.slots.desc());
        descs.extend(series.running.desc());
        descs.extend(series.drain_deadline.desc());
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // Held while collecting, so that two scrapes at once do not interleave their
        // resets and refills.
        let nodes = self.lock();
        self.refresh(&nodes);
        let series = &self.series;
        let mut families = Vec::new();
        families.extend(series.heartbeat_age.collect());
        families.extend(series.state.collect());
        families.extend(series.slots.collect());
        families.extend(series.running.collect());
        families.extend(series.drain_deadline.collect());
        families
    }
}

impl MetricGroup for FleetView {
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![Box::new(self.clone())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::render;
    use std::time::Duration;

    fn report(state: NodeState) -> NodeReport {
        NodeReport {
            state,
            slots: 2,
            running: 1,
        }
    }

    #[test]
    fn a_silent_node_ages_and_a_forgotten_one_disappears() {
        let registry = Registry::new();
        let fleet = FleetView::register(&registry).expect("fleet");
        let long_ago = SystemTime::now() - Duration::from_secs(300);
        fleet.observe("old", report(NodeState::Lost), long_ago, None);
        fleet.heartbeat("fresh", report(NodeState::Ready));
        let text = render(&registry).expect("render");
        let age = |node: &str| -> f64 {
            let prefix = format!("paddock_fleet_node_heartbeat_age_seconds{{node=\"{node}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
                .unwrap_or(-1.0)
        };
        assert!(age("old") >= 300.0, "{text}");
        assert!((0.0..5.0).contains(&age("fresh")), "{text}");
        assert!(text.contains(r#"paddock_fleet_node_state{node="old",state="lost"} 1"#));

        fleet.retain(&["fresh"]);
        let text = render(&registry).expect("render");
        assert!(!text.contains("\"old\""), "{text}");
    }

    fn listed(
        name: &str,
        state: paddock_contract::node::NodeState,
        last_seen_ms: Option<i64>,
    ) -> NodeView {
        NodeView {
            name: name.into(),
            state,
            desired: paddock_contract::node::DesiredState::Draining,
            pool: Some("default".into()),
            labels: Default::default(),
            slots: 4,
            used: 3,
            running: Vec::new(),
            version: None,
            last_seen_ms,
            drain_deadline_ms: Some(2_000_000),
        }
    }

    #[test]
    fn a_listed_node_is_observed_as_the_registry_says() {
        use paddock_contract::node::NodeState as Listed;
        let registry = Registry::new();
        let fleet = FleetView::register(&registry).expect("fleet");
        let now_ms = i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("after the epoch")
                .as_millis(),
        )
        .expect("fits");
        fleet.observe_node(&listed("busy", Listed::Draining, Some(now_ms - 10_000)));
        fleet.observe_node(&listed("never", Listed::Lost, None));
        let text = render(&registry).expect("render");
        for expected in [
            r#"paddock_fleet_node_state{node="busy",state="draining"} 1"#,
            r#"paddock_fleet_node_slots{node="busy"} 4"#,
            r#"paddock_fleet_node_jobs_running{node="busy"} 3"#,
            r#"paddock_fleet_node_drain_deadline_timestamp_seconds{node="busy"} 2000"#,
            r#"paddock_fleet_node_state{node="never",state="lost"} 1"#,
        ] {
            assert!(text.contains(expected), "{expected} missing from {text}");
        }
        assert!(
            !text.contains(r#"paddock_fleet_node_heartbeat_age_seconds{node="never"}"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"paddock_fleet_node_drain_deadline_timestamp_seconds{node="never"}"#),
            "{text}"
        );

        // Its heartbeat aged out: lost, and still ageing from when it was last heard.
        fleet.observe_node(&listed("busy", Listed::Lost, None));
        let text = render(&registry).expect("render");
        assert!(
            text.contains(r#"paddock_fleet_node_state{node="busy",state="lost"} 1"#),
            "{text}"
        );
        let age = text
            .lines()
            .find_map(|l| {
                l.strip_prefix(r#"paddock_fleet_node_heartbeat_age_seconds{node="busy"} "#)?
                    .parse::<f64>()
                    .ok()
            })
            .unwrap_or(-1.0);
        assert!(age >= 10.0, "{text}");
    }

    #[test]
    fn the_drain_deadline_shows_only_while_draining() {
        let registry = Registry::new();
        let fleet = FleetView::register(&registry).expect("fleet");
        fleet.heartbeat("n", report(NodeState::Ready));
        fleet.drain_started("n", UNIX_EPOCH + Duration::from_secs(1_000));
        let text = render(&registry).expect("render");
        assert!(
            text.contains(r#"paddock_fleet_node_drain_deadline_timestamp_seconds{node="n"} 1000"#),
            "{text}"
        );
        fleet.heartbeat("n", report(NodeState::Ready));
        let text = render(&registry).expect("render");
        assert!(
            !text.contains("drain_deadline_timestamp_seconds{"),
            "{text}"
        );
    }
}
