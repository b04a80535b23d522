//! The state every handler shares: the validated config, the authenticator (accounts,
//! token keys, rate limits), the NATS client and JetStream context, the event log,
//! the ledger, the tracker and token that let WebSocket sessions (which outlive
//! their HTTP request) stop on shutdown, and the Web Push key.
//! Cheap to clone; holds nothing per request, so several gateways can run side by side.

use crate::auth::Authenticator;
use crate::config::GatewayConfig;
use async_nats::jetstream;
use paddock_bus::{EventLog, NodeRegistry, SelectorStore};
use paddock_ledger::Ledger;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    config: GatewayConfig,
    auth: Authenticator,
    nats: async_nats::Client,
    jetstream: jetstream::Context,
    events: EventLog,
    nodes: NodeRegistry,
    selectors: SelectorStore,
    ledger: Ledger,
    sessions: TaskTracker,
    shutdown: CancellationToken,
    metrics: paddock_telemetry::GatewayMetrics,
    /// The VAPID key of Web Push, set once by `crate::push::start` (never with
    /// `push.enabled = false`).
    push_key: std::sync::OnceLock<Arc<crate::push::VapidKey>>,
}

/// Everything [`AppState::new`] takes, named.
pub struct StateParts {
    pub config: GatewayConfig,
    /// Accounts, token keys and rate limits.
    pub auth: Authenticator,
    pub nats: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub events: EventLog,
    /// The node registry, opened once (it binds the heartbeats bucket when a node
    /// has made it).
    pub nodes: NodeRegistry,
    /// The label selectors of queued jobs (`crate::routing`).
    pub selectors: SelectorStore,
    pub ledger: Ledger,
    pub sessions: TaskTracker,
    pub shutdown: CancellationToken,
    pub metrics: paddock_telemetry::GatewayMetrics,
}

impl AppState {
    pub fn new(parts: StateParts) -> Self {
        AppState {
            inner: Arc::new(Inner {
                auth: parts.auth,
                config: parts.config,
                nats: parts.nats,
                jetstream: parts.jetstream,
                events: parts.events,
                nodes: parts.nodes,
                selectors: parts.selectors,
                ledger: parts.ledger,
                sessions: parts.sessions,
                shutdown: parts.shutdown,
                metrics: parts.metrics,
                push_key: std::sync::OnceLock::new(),
            }),
        }
    }

    pub fn nodes(&self) -> &NodeRegistry {
        &self.inner.nodes
    }

    pub fn selectors(&self) -> &SelectorStore {
        &self.inner.selectors
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.inner.config
    }

    pub fn auth(&self) -> &Authenticator {
        &self.inner.auth
    }

    pub fn nats(&self) -> &async_nats::Client {
        &self.inner.nats
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.inner.jetstream
    }

    pub fn events(&self) -> &EventLog {
        &self.inner.events
    }

    pub fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    /// Tracks WebSocket sessions so that shutdown can wait for them.
    pub fn sessions(&self) -> &TaskTracker {
        &self.inner.sessions
    }

    /// Cancelled when the gateway stops.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.inner.shutdown
    }

    pub fn metrics(&self) -> &paddock_telemetry::GatewayMetrics {
        &self.inner.metrics
    }

    /// The Web Push VAPID key; `None` while push notifications are off.
    pub fn push_key(&self) -> Option<&Arc<crate::push::VapidKey>> {
        self.inner.push_key.get()
    }

    /// Sets the Web Push key (once; a second call changes nothing).
    pub(crate) fn set_push_key(&self, key: Arc<crate::push::VapidKey>) {
        let _ = self.inner.push_key.set(key);
    }
}
