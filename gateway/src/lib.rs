//! Paddock's gateway: the REST and WebSocket API that phones, laptops and the
//! `paddock` CLI talk to. It authenticates callers, checks what they submit, records a
//! submission in the ledger and the job's event log and queues it on the jobs stream,
//! reads jobs from the ledger and events from the events stream, relays cancel
//! requests to the node that runs a job, and streams events live over WebSockets. It
//! keeps no state of its own, so several gateways can run behind a load balancer.
//!
//! Map: [`config`] (what it is told), [`auth`] (who calls) and [`access`] (what they
//! may see), [`routes`] (the HTTP surface, one file per concern), [`ws`] (live
//! events), [`validate`] (checks on submissions), [`error`] (every failure's code and
//! status), [`extract`] (request parsing with those errors), [`state`] (what handlers
//! share). The wire types are `paddock_contract::api`; NATS plumbing is `paddock_bus`;
//! the ledger is `paddock_ledger`.

pub mod access;
pub mod auth;
pub mod config;
pub mod control;
pub mod error;
pub mod extract;
pub mod routes;
pub mod state;
pub mod validate;
pub mod ws;

pub use config::{ApiToken, ConfigOverrides, GatewayConfig, ProjectConfig};

use anyhow::Context;
use async_nats::jetstream;
use paddock_bus::EventLog;
use paddock_ledger::Ledger;
use state::{AppState, StateParts};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for WebSocket sessions to close.
const SESSION_GRACE: Duration = Duration::from_secs(10);

/// Serves the API on `listener` until `shutdown` is cancelled, then stops accepting,
/// finishes requests in flight, closes WebSockets and returns.
pub async fn run(
    listener: tokio::net::TcpListener,
    config: GatewayConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.validate()?;
    let state = tokio::select! {
        state = connect(config, shutdown.clone()) => state?,
        () = shutdown.cancelled() => return Ok(()),
    };
    let address = listener
        .local_addr()
        .context("reading the listener's address")?;
    tracing::info!(%address, "gateway listening");
    axum::serve(listener, routes::router(state.clone()))
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .context("serving HTTP")?;
    state.sessions().close();
    if tokio::time::timeout(SESSION_GRACE, state.sessions().wait())
        .await
        .is_err()
    {
        tracing::warn!("websocket sessions did not close in time");
    }
    if let Err(e) = state.nats().flush().await {
        tracing::warn!(error = %e, "flushing NATS at shutdown failed");
    }
    tracing::info!("gateway stopped");
    Ok(())
}

/// Connects to NATS (ensuring the streams) and the ledger.
async fn connect(config: GatewayConfig, shutdown: CancellationToken) -> anyhow::Result<AppState> {
    let nats = paddock_bus::connect(&config.nats, "paddock-gateway").await?;
    let jetstream = jetstream::new(nats.clone());
    paddock_bus::ensure_streams(&jetstream, &config.streams).await?;
    let events = EventLog::open(jetstream.clone()).await?;
    let ledger = Ledger::connect(&config.database_url)
        .await
        .context("opening the job ledger (database_url)")?;
    Ok(AppState::new(StateParts {
        config,
        nats,
        jetstream,
        events,
        ledger,
        sessions: TaskTracker::new(),
        shutdown,
    }))
}
