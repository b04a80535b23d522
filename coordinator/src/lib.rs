//! Paddock's coordinator, the control plane. Today it is the ledger writer: it reads
//! every job event from the events stream and keeps the SQL job ledger up to date.
//! Node membership, the registry, drain and the reaper join it later as their own
//! modules beside `ledger_writer`, started from [`run`] and stopped by the same token.
//!
//! The coordinator talks to NATS through `paddock_bus`, to SQL through
//! `paddock_ledger`, and spells no subject: names come from `paddock_contract`.

pub mod config;
pub mod ledger_writer;

pub use config::{CoordinatorConfig, Flags, LedgerWriterSettings};

use anyhow::Context as _;
use paddock_ledger::Ledger;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Name shown in the NATS server's connection list.
const CLIENT_NAME: &str = "paddock-coordinator";

/// Runs the coordinator until `shutdown` is cancelled, then returns `Ok` once every
/// task has stopped. Fails at start when the config, the database or NATS is not
/// usable; after start, NATS and database outages are waited out.
pub async fn run(config: CoordinatorConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    let Some(ledger) = until_shutdown(&shutdown, Ledger::connect(&config.database_url)).await
    else {
        return Ok(());
    };
    let ledger = ledger.context("opening the job ledger")?;
    let Some(client) =
        until_shutdown(&shutdown, paddock_bus::connect(&config.nats, CLIENT_NAME)).await
    else {
        ledger.close().await;
        return Ok(());
    };
    let client = client.context("connecting to NATS")?;
    let js = async_nats::jetstream::new(client.clone());
    match until_shutdown(&shutdown, paddock_bus::ensure_streams(&js, &config.streams)).await {
        None => {
            ledger.close().await;
            return Ok(());
        }
        Some(ensured) => ensured.context("creating or checking the streams")?,
    }
    tracing::info!(
        nats = %config.nats.url,
        ledger = %paddock_ledger::redact_url(&config.database_url),
        "coordinator running"
    );

    let outcome = ledger_writer::run(
        js,
        ledger.clone(),
        config.ledger_writer.clone(),
        config.streams.clone(),
        shutdown.clone(),
    )
    .await;

    // The last acknowledgements are in the client's buffer: send them before leaving.
    if tokio::time::timeout(Duration::from_millis(500), client.flush())
        .await
        .is_err()
    {
        tracing::warn!(
            "NATS did not take the last acknowledgements in time; they will be redelivered"
        );
    }
    ledger.close().await;
    tracing::info!("coordinator stopped");
    outcome
}

/// Runs `work` unless shutdown comes first (`None` then).
async fn until_shutdown<T>(
    shutdown: &CancellationToken,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        _ = shutdown.cancelled() => None,
        value = work => Some(value),
    }
}
