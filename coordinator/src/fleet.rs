//! The fleet as the coordinator sees it, for the alerts a lost node cannot raise
//! itself: every few seconds the node registry (`NodeRegistry::list`) is read into
//! the `FleetView` metrics (each node's state, slots, running jobs, heartbeat age and
//! drain deadline); nodes the registry no longer lists are forgotten.
//!
//! The coordinator only reads the registry: its buckets are created by the first node
//! (with that node's heartbeat time to live), so until they exist the fleet is empty.
//! A failed read keeps the last view, whose heartbeat ages keep growing.

use paddock_bus::NodeRegistry;
use paddock_contract::subjects;
use paddock_telemetry::FleetView;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How often the registry is read.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// Reads the registry into `fleet` every `every` until `shutdown`.
pub async fn run(
    js: async_nats::jetstream::Context,
    replicas: usize,
    fleet: FleetView,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut registry: Option<NodeRegistry> = None;
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if registry.is_none() {
            registry = tokio::select! {
                _ = shutdown.cancelled() => return,
                opened = open_existing(&js, replicas) => opened,
            };
        }
        let Some(nodes) = &registry else {
            continue;
        };
        let listed = tokio::select! {
            _ = shutdown.cancelled() => return,
            listed = nodes.list() => listed,
        };
        match listed {
            Ok(views) => {
                for view in &views {
                    fleet.observe_node(view);
                }
                let names: Vec<&str> = views.iter().map(|v| v.name.as_str()).collect();
                fleet.retain(&names);
            }
            Err(error) => {
                tracing::debug!(%error, "reading the node registry failed; keeping the last view");
            }
        }
    }
}

/// The registry when both of its buckets exist, without creating them: a bucket made
/// here would carry a heartbeat time to live the nodes did not choose.
async fn open_existing(
    js: &async_nats::jetstream::Context,
    replicas: usize,
) -> Option<NodeRegistry> {
    for bucket in [subjects::NODES_BUCKET, subjects::HEARTBEATS_BUCKET] {
        if js.get_key_value(bucket).await.is_err() {
            return None;
        }
    }
    // Both exist, so `open` only binds to them; the time to live is not used.
    match NodeRegistry::open(js, replicas, Duration::from_secs(20)).await {
        Ok(registry) => Some(registry),
        Err(error) => {
            tracing::debug!(%error, "opening the node registry failed");
            None
        }
    }
}
