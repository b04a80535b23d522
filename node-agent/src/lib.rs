//! The node agent: one per machine. It connects to NATS, checks the streams, builds
//! the actor tree of `paddock-actors` over NATS-backed ports, and runs jobs until told
//! to stop. A stop is graceful: claiming stops at once, running jobs get
//! `shutdown_grace_secs` to finish, then their agents are stopped and the jobs handed
//! back to the queue for another node; a second signal skips the wait.
//!
//! Operations: `metrics_listen` serves `/metrics` (the node's job metrics, its slots and
//! state, its NATS connection), `/healthz` and `/readyz` (NATS connected; the sandbox
//! back end joins through [`sandbox_readiness_check`]) until the node has stopped.

pub mod cluster;
pub mod config;
pub mod join;
pub mod labels;
pub mod nats_ports;
pub mod sandboxing;
pub mod service;

use anyhow::Context;
use config::NodeConfig;
use nats_ports::{ConsumerFeed, NodeFeed, NodePorts, StateGauge};
use paddock_actors::agent::AgentLaunch;
use paddock_actors::heartbeat::HeartbeatSettings;
use paddock_actors::{NodeArgs, NodeMsg, NodeStatus, NodeSupervisor, ProjectRoot, SessionSettings};
use paddock_telemetry::metrics::ClusterLinkMetrics;
use paddock_telemetry::{
    ClaimSpans, NatsMetrics, NodeMetrics, Readiness, ReadinessCheck, checks, new_registry,
};
use ractor::{Actor, ActorRef};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Signals from the binary: the first asks for a graceful stop, the second for an
/// immediate one.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    pub graceful: CancellationToken,
    pub immediate: CancellationToken,
}

/// Runs the node agent until `shutdown`.
pub async fn run(config: NodeConfig, shutdown: Shutdown) -> anyhow::Result<()> {
    config.validate()?;
    // Both of rustls' crypto back ends are compiled in (ractor_cluster brings the
    // second): name the one used where nothing else chooses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env = config.agent_env()?;
    let home = absolute(&config.agent.home)?;
    std::fs::create_dir_all(&home)
        .with_context(|| format!("agent.home: cannot create {}", home.display()))?;
    // Fail closed: a node whose sandbox does not work claims no job (unless the
    // operator set sandbox.mode = "off") and reports not ready, saying why.
    let sandbox = sandboxing::start(
        &config.sandbox,
        &config.proxy,
        &config.agent.program,
        env.get("ANTHROPIC_BASE_URL").map(String::as_str),
    )
    .await;
    // Bound first: a port in use is a configuration error, reported before anything
    // else starts.
    let operations_listener = tokio::net::TcpListener::bind(config.metrics_listen)
        .await
        .with_context(|| format!("metrics_listen: cannot listen on {}", config.metrics_listen))?;

    let client =
        paddock_bus::connect(&config.nats, &format!("paddock-node {}", config.name)).await?;
    let metrics_registry = new_registry("paddock-node")?;
    let metrics = NodeMetrics::register(&metrics_registry, &config.name)?;
    NatsMetrics::register(&metrics_registry, client.clone())?;
    let cluster_metrics = ClusterLinkMetrics::register(&metrics_registry)?;
    metrics.set_slots(config.slots);
    let state_gauge = StateGauge::new(metrics.clone());
    // Stopped when `run` returns, whichever way: after the supervisor has stopped.
    let operations_stop = CancellationToken::new();
    let _operations_guard = operations_stop.clone().drop_guard();
    tokio::spawn(serve_operations(
        operations_listener,
        metrics_registry,
        readiness(&client, &sandbox),
        operations_stop.clone(),
    ));
    let js = async_nats::jetstream::new(client.clone());
    paddock_bus::ensure_streams(&js, &config.streams).await?;
    let pool_consumer =
        paddock_bus::ensure_pool_consumer(&js, &config.pool, &config.streams).await?;
    let node_consumer =
        paddock_bus::ensure_node_consumer(&js, &config.name, &config.streams).await?;
    let ping = nats_ports::answer_pings(client.clone(), &config.name).await?;
    let registry = paddock_bus::NodeRegistry::open(
        &js,
        config.streams.replicas,
        Duration::from_secs(config.heartbeat_ttl_secs),
    )
    .await?;
    registry.ensure_known(&config.name).await?;
    // Jobs that require labels: claimed from every selector this node matches.
    let selector_feeds = labels::SelectorFeeds::default();
    let selector_stop = CancellationToken::new();
    let _selector_guard = selector_stop.clone().drop_guard();
    tokio::spawn(
        labels::SelectorFollower {
            js: js.clone(),
            store: paddock_bus::SelectorStore::open(&js, config.streams.replicas).await?,
            streams: config.streams.clone(),
            node: config.name.clone(),
            pool: config.pool.clone(),
            labels: config.labels.clone(),
            feeds: selector_feeds.clone(),
        }
        .run(selector_stop.clone()),
    );
    let log = paddock_bus::EventLog::open(js.clone()).await?;

    let mut projects = std::collections::BTreeMap::new();
    for project in &config.projects {
        projects.insert(
            project.name.clone(),
            ProjectRoot {
                path: absolute(&project.path)?,
                allowed_tools: project.allowed_tools.clone(),
                hosts: project.hosts.clone(),
            },
        );
    }
    let settings = Arc::new(SessionSettings {
        node: config.name.clone(),
        launch: AgentLaunch {
            program: config.agent.program.clone(),
            home,
            env,
            allowed_tools: config.agent.allowed_tools.clone(),
            sandbox: sandbox.context.clone(),
        },
        projects,
        progress_interval: Duration::from_secs(config.progress_interval_secs),
        kill_grace: Duration::from_secs(config.kill_grace_secs),
        max_attempts: config.streams.max_attempts,
        max_duration: (config.max_job_secs > 0).then(|| Duration::from_secs(config.max_job_secs)),
        max_line_bytes: 8 * 1024 * 1024,
        max_stderr_events: 200,
        max_restarts: config.max_restarts,
        restart_backoff: Duration::from_millis(config.restart_backoff_ms),
        max_restart_backoff: Duration::from_millis(config.max_restart_backoff_ms),
        max_api_retries: config.max_api_retries,
        approval_timeout: Duration::from_secs(config.approval_timeout_secs),
        max_idle: Duration::from_secs(config.max_idle_secs),
        fault_injection: config.fault_injection,
        max_output_bytes: config.max_output_bytes,
    });
    if config.fault_injection {
        tracing::warn!("fault_injection is on: a test may make sessions panic");
    }
    let claim_stop = CancellationToken::new();
    let claims = ClaimSpans::default();
    let args = NodeArgs {
        feed: Arc::new(NodeFeed {
            own: ConsumerFeed {
                consumer: node_consumer,
                wait: Duration::from_millis(50),
                node: config.name.clone(),
                claims: claims.clone(),
            },
            selectors: selector_feeds,
            pool: ConsumerFeed {
                consumer: pool_consumer,
                wait: Duration::from_secs(config.fetch_wait_secs.max(1)),
                node: config.name.clone(),
                claims: claims.clone(),
            },
        }),
        ports: Arc::new(NodePorts {
            node: config.name.clone(),
            client: client.clone(),
            log,
            metrics: metrics.clone(),
            claims,
        }),
        settings,
        slots: config.slots,
        max_restarts: 5,
        restart_period: Duration::from_secs(60),
        shutdown: claim_stop.clone(),
        heartbeat: Some(HeartbeatSettings {
            plane: Arc::new(nats_ports::RegistryPlane {
                registry: registry.clone(),
                node: config.name.clone(),
                state: state_gauge.clone(),
            }),
            interval: Duration::from_secs(config.heartbeat_interval_secs),
            node: config.name.clone(),
            pool: config.pool.clone(),
            labels: config.labels.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }),
    };
    let (supervisor, handle) =
        Actor::spawn(Some(format!("node-{}", config.name)), NodeSupervisor, args)
            .await
            .context("starting the node supervisor")?;
    if !sandbox.may_run_jobs {
        tracing::error!(reason = %sandbox.description, "claiming no jobs: the sandbox does not work");
        let _ = supervisor.cast(NodeMsg::SetPaused(true));
    }
    tracing::info!(node = %config.name, pool = %config.pool, slots = config.slots, "node agent ready");
    // The actor cluster's fast path, when configured; the node works without it.
    let cluster_link = cluster::start(&config.cluster, &config.name, cluster_metrics).await?;
    // A change of the desired state nudges the heartbeat at once (the fast path; the
    // periodic tick reconciles anyway).
    let nudge = {
        let mut changes = registry.watch_desired(&config.name).await?;
        let heartbeat_name = format!("heartbeat-{}", config.name);
        tokio::spawn(async move {
            use futures::StreamExt;
            while changes.next().await.is_some() {
                if let Some(cell) = ractor::registry::where_is(heartbeat_name.clone()) {
                    let _ = cell.send_message(paddock_actors::heartbeat::HeartbeatMsg::Tick);
                }
            }
        })
    };

    let handle = tokio::spawn(async move {
        let _ = handle.await;
    });
    tokio::pin!(handle);
    tokio::select! {
        _ = &mut handle => {
            claim_stop.cancel();
            anyhow::bail!("the node supervisor stopped unexpectedly");
        }
        _ = shutdown.graceful.cancelled() => {}
    }

    tracing::info!("stopping: no new jobs; waiting for running jobs");
    state_gauge.stopping();
    let _ = supervisor.cast(NodeMsg::SetPaused(true));
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    tokio::select! {
        _ = wait_idle(&supervisor, grace) => {}
        _ = shutdown.immediate.cancelled() => {}
    }
    if !is_idle(&supervisor).await {
        tracing::info!("handing running jobs back to the queue");
        let _ = supervisor.cast(NodeMsg::HandBackAll);
        wait_idle(&supervisor, Duration::from_secs(config.kill_grace_secs + 5)).await;
    }
    claim_stop.cancel();
    ping.abort();
    nudge.abort();
    if let Some(link) = cluster_link {
        link.stop().await;
    }
    selector_stop.cancel();
    supervisor.stop(None);
    let _ = tokio::time::timeout(Duration::from_secs(10), &mut handle).await;
    let _ = client.flush().await;
    operations_stop.cancel();
    tracing::info!("node agent stopped");
    Ok(())
}

/// What `/readyz` checks on a node: NATS connected, and the sandbox: a node whose
/// sandbox does not work is not ready (it claims no job); one whose operator turned the
/// sandbox off is, and says so in the logs.
pub fn readiness(client: &async_nats::Client, sandbox: &sandboxing::SandboxStart) -> Readiness {
    Readiness::new()
        .with_check(checks::nats_connected(client.clone()))
        .with_check(sandbox_readiness_check(sandbox))
}

/// The `sandbox` readiness check: the start-up probe's verdict.
pub fn sandbox_readiness_check(sandbox: &sandboxing::SandboxStart) -> ReadinessCheck {
    let verdict = if sandbox.may_run_jobs {
        Ok(())
    } else {
        Err(sandbox.description.clone())
    };
    ReadinessCheck::new("sandbox", move || {
        let verdict = verdict.clone();
        async move { verdict }
    })
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

async fn status(supervisor: &ActorRef<NodeMsg>) -> Option<NodeStatus> {
    ractor::call_t!(supervisor, NodeMsg::Status, 2000).ok()
}

async fn is_idle(supervisor: &ActorRef<NodeMsg>) -> bool {
    status(supervisor)
        .await
        .is_none_or(|s| s.running.is_empty())
}

async fn wait_idle(supervisor: &ActorRef<NodeMsg>, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if is_idle(supervisor).await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn absolute(path: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}
