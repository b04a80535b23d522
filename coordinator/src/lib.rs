//! Paddock's coordinator, the control plane. It is the ledger writer: it reads
//! every job event from the events stream and keeps the SQL job ledger up to date.
//! With `cluster.listen` it also runs the actor cluster node agents join
//! ([`membership`]): it sees members join and leave and nudges them to reconcile when
//! their desired state changes. With `join.listen` it admits new machines (`POST
//! /v1/join`) and keeps the NATS users file of their credentials ([`join`]).
//! Each runs beside `ledger_writer`, started from [`run`]
//! and stopped by the same token.
//!
//! It is also where the paddock is observed as a whole, on `metrics_listen`
//! (`/metrics`, `/healthz`, `/readyz`: NATS connected, the database answers): the job
//! lifecycle as the ledger records it (each start and ending counted once), the
//! queue as JetStream holds it (`QueueSampler`), and every node as the registry lists
//! it ([`fleet`]).
//!
//! The coordinator talks to NATS through `paddock_bus`, to SQL through
//! `paddock_ledger`, and spells no subject: names come from `paddock_contract`.

pub mod config;
pub mod fleet;
pub mod join;
pub mod ledger_writer;
pub mod membership;

pub use config::{CoordinatorConfig, Flags, LedgerWriterSettings};

use anyhow::Context as _;
use paddock_ledger::Ledger;
use paddock_telemetry::metrics::MembershipMetrics;
use paddock_telemetry::{
    CoordinatorMetrics, FleetView, NatsMetrics, QueueMetrics, QueueSampler, Readiness,
    ReadinessCheck, checks, new_registry,
};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Name shown in the NATS server's connection list.
const CLIENT_NAME: &str = "paddock-coordinator";
/// How often the queue gauges are read from JetStream.
const QUEUE_SAMPLE_EVERY: Duration = Duration::from_secs(5);

/// Runs the coordinator until `shutdown` is cancelled, then returns `Ok` once every
/// task has stopped. Fails at start when the config, the database or NATS is not
/// usable; after start, NATS and database outages are waited out.
pub async fn run(config: CoordinatorConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    config.validate()?;
    // Both of rustls' crypto back ends are compiled in (ractor_cluster brings the
    // second): name the one used where nothing else chooses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Bound first: a port in use is a configuration error, reported before anything
    // else starts.
    let operations_listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .with_context(|| format!("metrics_listen: cannot listen on {}", config.metrics_listen))?;
    let join_listener = match config.join.listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address)
                .await
                .with_context(|| format!("join.listen: cannot listen on {address}"))?,
        ),
        None => None,
    };
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

    let registry = new_registry("paddock-coordinator")?;
    let metrics = CoordinatorMetrics::register(&registry)?;
    NatsMetrics::register(&registry, client.clone())?;
    let fleet = FleetView::register(&registry)?;
    let queue = QueueMetrics::register(&registry)?;
    let membership_metrics = MembershipMetrics::register(&registry)?;
    // Stopped when `run` returns, whichever way: after the ledger writer.
    let operations_stop = CancellationToken::new();
    let _operations_guard = operations_stop.clone().drop_guard();
    let operations = tokio::spawn(serve_operations(
        operations_listener,
        registry,
        readiness(&client, &ledger),
        operations_stop.clone(),
    ));
    let sampler = QueueSampler::new(js.clone(), queue).spawn(QUEUE_SAMPLE_EVERY, shutdown.clone());
    // The actor cluster nodes join (membership, the fast path of drain and cordon).
    let actor_cluster = membership::start(
        &config.cluster,
        js.clone(),
        membership_metrics,
        shutdown.clone(),
    )
    .await
    .context("starting the actor cluster")?;
    // Machines joining, and the NATS users file kept from the credentials in SQL.
    let join_tasks = join_listener.map(|listener| {
        let service = join::JoinService::new(
            ledger.clone(),
            config.join.clone(),
            config.nats.clone(),
            config.streams.replicas,
        );
        let reconciler = tokio::spawn(join::reconcile(service.clone(), shutdown.clone()));
        let stop = shutdown.clone();
        let server = tokio::spawn(async move {
            if let Err(error) = join::serve(listener, service, stop).await {
                tracing::error!(error = format!("{error:#}"), "the join endpoint stopped");
            }
        });
        [reconciler, server]
    });
    let fleet_task = tokio::spawn(fleet::run(
        js.clone(),
        config.streams.replicas,
        fleet,
        fleet::REFRESH_EVERY,
        shutdown.clone(),
    ));
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
        metrics,
        shutdown.clone(),
    )
    .await;
    // Both watch `shutdown`; a sample or read in flight is dropped.
    sampler.abort();
    fleet_task.abort();
    if let Some(actor_cluster) = actor_cluster {
        actor_cluster.stop().await;
    }
    for task in join_tasks.into_iter().flatten() {
        task.abort();
    }
    operations_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_millis(500), operations).await;

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

/// What `/readyz` checks: NATS connected, and the ledger database answers.
pub fn readiness(client: &async_nats::Client, ledger: &Ledger) -> Readiness {
    let ledger = ledger.clone();
    Readiness::new()
        .with_check(checks::nats_connected(client.clone()))
        .with_check(ReadinessCheck::new("database", move || {
            let ledger = ledger.clone();
            async move { ledger.ping().await.map_err(|e| e.to_string()) }
        }))
}

/// Serves `/metrics`, `/healthz` and `/readyz` until `stop`.
async fn serve_operations(
    listener: tokio::net::TcpListener,
    registry: prometheus::Registry,
    readiness: Readiness,
    stop: CancellationToken,
) {
    if let Err(error) = paddock_telemetry::http::serve(listener, registry, readiness, stop).await {
        tracing::error!(%error, "the metrics and health listener stopped");
    }
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
