//! The node registry on NATS key-value buckets: desired states (`paddock_nodes`, kept)
//! and heartbeats (`paddock_heartbeats`, whose entries age out after the heartbeat
//! time to live, which is how a lost node is noticed). Any service can list nodes or
//! set a desired state; nodes watch their own key and reconcile.
//!
//! Only nodes create the heartbeats bucket (with their `heartbeat_ttl`): a reader
//! ([`NodeRegistry::open_reader`], the gateway) binds to it once it exists, so it never
//! creates it with a time to live of its own.

use crate::BusError;
use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use paddock_contract::node::{NodeDesired, NodeHeartbeat, NodeState, NodeView};
use paddock_contract::subjects;
use std::collections::BTreeMap;
use std::time::Duration;

/// Handle on both buckets.
#[derive(Clone)]
pub struct NodeRegistry {
    desired: kv::Store,
    heartbeats: Heartbeats,
}

/// The heartbeats bucket: made by a node, or bound by a reader when it first exists.
#[derive(Clone)]
struct Heartbeats {
    /// Set for a reader: where to look the bucket up.
    js: Option<jetstream::Context>,
    store: std::sync::Arc<tokio::sync::OnceCell<kv::Store>>,
}

impl Heartbeats {
    fn owned(store: kv::Store) -> Heartbeats {
        Heartbeats {
            js: None,
            store: std::sync::Arc::new(tokio::sync::OnceCell::new_with(Some(store))),
        }
    }

    fn bound_later(js: &jetstream::Context) -> Heartbeats {
        Heartbeats {
            js: Some(js.clone()),
            store: Default::default(),
        }
    }

    /// The bucket, or `None` while no node has ever made it (no node is alive then).
    async fn store(&self) -> Option<&kv::Store> {
        let js = self.js.as_ref();
        match js {
            None => self.store.get(),
            Some(js) => self
                .store
                .get_or_try_init(|| js.get_key_value(subjects::HEARTBEATS_BUCKET))
                .await
                .ok(),
        }
    }
}

fn desired_config(replicas: usize) -> kv::Config {
    kv::Config {
        bucket: subjects::NODES_BUCKET.into(),
        description: "Paddock nodes' desired state".into(),
        history: 5,
        num_replicas: replicas,
        ..Default::default()
    }
}

async fn bucket(js: &jetstream::Context, config: kv::Config) -> Result<kv::Store, BusError> {
    let name = config.bucket.clone();
    match js.get_key_value(&name).await {
        Ok(store) => Ok(store),
        Err(_) => js
            .create_key_value(config)
            .await
            .map_err(|e| BusError::Stream {
                stream: name,
                detail: format!("cannot create the key-value bucket: {e}"),
            }),
    }
}

impl NodeRegistry {
    /// Opens (creating when missing) both buckets. `heartbeat_ttl` is how long a node
    /// counts as alive after its last heartbeat.
    pub async fn open(
        js: &jetstream::Context,
        replicas: usize,
        heartbeat_ttl: Duration,
    ) -> Result<NodeRegistry, BusError> {
        let desired = bucket(js, desired_config(replicas)).await?;
        let heartbeats = bucket(
            js,
            kv::Config {
                bucket: subjects::HEARTBEATS_BUCKET.into(),
                description: "Paddock node heartbeats".into(),
                history: 1,
                max_age: heartbeat_ttl,
                num_replicas: replicas,
                ..Default::default()
            },
        )
        .await?;
        Ok(NodeRegistry {
            desired,
            heartbeats: Heartbeats::owned(heartbeats),
        })
    }

    /// Opens the registry to read nodes and set desired states (creating the desired
    /// state bucket when missing), binding to the heartbeats bucket once a node has
    /// made it. Open it once and share it: it holds the bound buckets.
    pub async fn open_reader(
        js: &jetstream::Context,
        replicas: usize,
    ) -> Result<NodeRegistry, BusError> {
        let desired = bucket(js, desired_config(replicas)).await?;
        Ok(NodeRegistry {
            desired,
            heartbeats: Heartbeats::bound_later(js),
        })
    }

    pub async fn set_desired(&self, node: &str, desired: &NodeDesired) -> Result<(), BusError> {
        let value = serde_json::to_vec(desired).map_err(|e| registry_error(e.to_string()))?;
        self.desired
            .put(node, value.into())
            .await
            .map(|_| ())
            .map_err(|e| registry_error(format!("cannot set the desired state of {node}: {e}")))
    }

    /// Records the node as known (desired `ready`) unless it has a desired state, so that
    /// a node that stops reporting is listed as lost rather than forgotten.
    pub async fn ensure_known(&self, node: &str) -> Result<(), BusError> {
        let value = serde_json::to_vec(&NodeDesired::default())
            .map_err(|e| registry_error(e.to_string()))?;
        match self.desired.create(node, value.into()).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(registry_error(format!("cannot register {node}: {e}"))),
        }
    }

    /// The node's desired state; `ready` when none was ever set.
    pub async fn desired(&self, node: &str) -> Result<NodeDesired, BusError> {
        match self.desired.get(node).await {
            Ok(Some(value)) => serde_json::from_slice(&value)
                .map_err(|e| registry_error(format!("desired state of {node} unreadable: {e}"))),
            Ok(None) => Ok(NodeDesired::default()),
            Err(e) => Err(registry_error(format!(
                "cannot read the desired state of {node}: {e}"
            ))),
        }
    }

    /// A stream that yields whenever the node's desired state changes.
    pub async fn watch_desired(
        &self,
        node: &str,
    ) -> Result<impl futures::Stream<Item = ()> + Send + 'static, BusError> {
        let watch = self
            .desired
            .watch(node)
            .await
            .map_err(|e| registry_error(format!("cannot watch {node}: {e}")))?;
        Ok(watch.map(|_| ()))
    }

    pub async fn beat(&self, heartbeat: &NodeHeartbeat) -> Result<(), BusError> {
        let value = serde_json::to_vec(heartbeat).map_err(|e| registry_error(e.to_string()))?;
        let Some(heartbeats) = self.heartbeats.store().await else {
            return Err(registry_error("the heartbeats bucket is missing".into()));
        };
        heartbeats
            .put(&heartbeat.node, value.into())
            .await
            .map(|_| ())
            .map_err(|e| registry_error(format!("heartbeat of {} failed: {e}", heartbeat.node)))
    }

    /// The last heartbeat of every node that is alive (reported within its time to
    /// live), by node name: who could take work, with which pool and labels.
    pub async fn heartbeats(&self) -> Result<BTreeMap<String, NodeHeartbeat>, BusError> {
        let mut beats = BTreeMap::new();
        let Some(heartbeats) = self.heartbeats.store().await else {
            return Ok(beats);
        };
        for (key, value) in entries(heartbeats).await? {
            match serde_json::from_slice::<NodeHeartbeat>(&value) {
                Ok(beat) => {
                    beats.insert(key, beat);
                }
                Err(e) => tracing::warn!(%key, error = %e, "unreadable heartbeat"),
            }
        }
        Ok(beats)
    }

    /// Every node that has a desired state or a live heartbeat.
    pub async fn list(&self) -> Result<Vec<NodeView>, BusError> {
        let beats = self.heartbeats().await?;
        let mut desired: BTreeMap<String, NodeDesired> = BTreeMap::new();
        for (key, value) in entries(&self.desired).await? {
            if let Ok(state) = serde_json::from_slice::<NodeDesired>(&value) {
                desired.insert(key, state);
            }
        }
        let names: std::collections::BTreeSet<String> =
            beats.keys().chain(desired.keys()).cloned().collect();
        Ok(names
            .into_iter()
            .map(|name| {
                let want = desired.get(&name).cloned().unwrap_or_default();
                match beats.get(&name) {
                    Some(beat) => NodeView {
                        name,
                        state: beat.state,
                        desired: want.state,
                        pool: Some(beat.pool.clone()),
                        labels: beat.labels.clone(),
                        slots: beat.slots,
                        // Free permits are held by the claimer while it waits: count jobs.
                        used: u32::try_from(beat.running.len()).unwrap_or(u32::MAX),
                        running: beat.running.clone(),
                        version: Some(beat.version.clone()),
                        last_seen_ms: Some(beat.at_ms),
                        drain_deadline_ms: want.drain_deadline_ms,
                    },
                    None => NodeView {
                        name,
                        state: NodeState::Lost,
                        desired: want.state,
                        pool: None,
                        labels: BTreeMap::new(),
                        slots: 0,
                        used: 0,
                        running: Vec::new(),
                        version: None,
                        last_seen_ms: None,
                        drain_deadline_ms: want.drain_deadline_ms,
                    },
                }
            })
            .collect())
    }
}

/// Every live key and value of a bucket.
async fn entries(store: &kv::Store) -> Result<Vec<(String, bytes::Bytes)>, BusError> {
    let mut keys = match store.keys().await {
        Ok(keys) => keys,
        Err(e) => return Err(registry_error(format!("cannot list keys: {e}"))),
    };
    let mut out = Vec::new();
    while let Some(key) = keys.next().await {
        let Ok(key) = key else { continue };
        if let Ok(Some(value)) = store.get(&key).await {
            out.push((key, value));
        }
    }
    Ok(out)
}

fn registry_error(detail: String) -> BusError {
    BusError::Stream {
        stream: "node registry".into(),
        detail,
    }
}
