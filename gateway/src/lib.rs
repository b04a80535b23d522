//! Paddock's gateway: the REST and WebSocket API that phones, laptops and the
//! `paddock` CLI talk to. It authenticates callers, checks what they submit, records a
//! submission in the ledger and the job's event log and queues it on the jobs stream,
//! reads jobs from the ledger and events from the events stream, relays cancel
//! requests to the node that runs a job, and streams events live over WebSockets. It
//! keeps no state of its own, so several gateways can run behind a load balancer.
//!
//! Map: [`config`] (what it is told), [`auth`] (who calls: access tokens from
//! [`jwt`], accounts from `paddock_accounts`) and [`access`] (what they may do and
//! see), [`limits`] (rate limits), [`audit`] (the audit log's entries), [`routes`] (the HTTP surface, one file per concern), [`ws`] (live
//! events), [`validate`] (checks on submissions), [`error`] (every failure's code and
//! status), [`extract`] (request parsing with those errors), [`state`] (what handlers
//! share), [`tls`] (HTTPS on the API listener), [`routing`] (where a job is queued),
//! [`openapi`] (the API's description), [`push`] (Web Push), [`web`] (the embedded
//! web app). The wire types are
//! `paddock_contract::api`; NATS plumbing is `paddock_bus`;
//! the ledger is `paddock_ledger`.

pub mod access;
pub mod audit;
pub mod auth;
pub mod config;
pub mod control;
pub mod error;
pub mod extract;
pub mod jwt;
pub mod limits;
pub mod openapi;
pub mod push;
pub mod quotas;
pub mod routes;
pub mod routing;
pub mod state;
pub mod tls;
pub mod validate;
pub mod web;
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
/// finishes requests in flight, closes WebSockets and returns. With `[tls]` the
/// listener speaks HTTPS only (HTTP/2 or HTTP/1.1 by ALPN; WebSockets over HTTP/1.1).
pub async fn run(
    listener: tokio::net::TcpListener,
    config: GatewayConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.validate()?;
    // Unusable certificate files stop the start before anything connects.
    let server_tls = config.tls.as_ref().map(tls::ServerTls::load).transpose()?;
    let (state, registry) = tokio::select! {
        state = connect(config, shutdown.clone()) => state?,
        () = shutdown.cancelled() => return Ok(()),
    };
    serve_metrics(&state, registry).await?;
    let address = listener
        .local_addr()
        .context("reading the listener's address")?;
    let forgetting = tokio::spawn(forget_idle_limits(state.clone(), shutdown.clone()));
    push::start(&state)?;
    // The client's address (`ConnectInfo`) is what rate limits and the audit log use.
    let app =
        routes::router(state.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let stopped = shutdown.clone().cancelled_owned();
    match server_tls {
        Some(server_tls) => {
            tracing::info!(%address, "gateway listening (HTTPS)");
            #[cfg(unix)]
            tokio::spawn(tls::reload_on_hangup(server_tls.clone(), shutdown.clone()));
            // TCP_NODELAY is set before each handshake. The no-op tap is what gives
            // axum the connection's `SocketAddr` for any listener type.
            let listener = axum::serve::ListenerExt::tap_io(
                tls::TlsListener::new(listener, server_tls)
                    .context("reading the listener's address")?,
                |_| {},
            );
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
                .context("serving HTTPS")?;
        }
        None => {
            if !address.ip().is_loopback() {
                tracing::warn!(
                    %address,
                    "serving plain HTTP on an address other machines can reach: tokens and \
                     prompts cross the network readable; set [tls] cert_file and key_file, or \
                     put a proxy that terminates TLS in front"
                );
            }
            tracing::info!(%address, "gateway listening (plain HTTP)");
            // Small WebSocket frames must not wait for the client's delayed ACK (Nagle).
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, app)
                .with_graceful_shutdown(stopped)
                .await
                .context("serving HTTP")?;
        }
    }
    forgetting.abort();
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

/// Drops the rate limiters' idle keys every minute, so memory follows the number of
/// recent clients, not of all clients ever.
async fn forget_idle_limits(state: AppState, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => state.auth().limits().forget_idle(),
        }
    }
}

/// Opens the accounts store, loads (or makes) the signing key and creates the first
/// admin when there is no user yet.
async fn open_auth(config: &GatewayConfig) -> anyhow::Result<auth::Authenticator> {
    let options = paddock_accounts::AccountsOptions {
        password_cost: config.auth.password_cost.into(),
        refresh_token_ttl: config.auth.refresh_token_ttl,
        refresh_family_ttl: config.auth.session_ttl,
        ..paddock_accounts::AccountsOptions::default()
    };
    let accounts =
        paddock_accounts::Accounts::connect_with(config.accounts_database_url(), options)
            .await
            .context("opening the accounts store (auth.database_url or database_url)")?;
    let key_file = config.signing_key_file();
    let keys = jwt::TokenKeys::load_or_generate(
        &key_file,
        &config.auth.retired_key_files,
        &config.auth.issuer,
        &config.auth.audience,
        config.auth.access_token_ttl,
    )
    .context("loading the JWT signing key (auth.signing_key_file)")?;
    create_first_admin(config, &accounts).await?;
    accounts.warm_up().await;
    Ok(auth::Authenticator::new(config, accounts, keys))
}

/// With no user at all, creates `auth.admin_user` with every scope. Its password
/// comes from `auth.admin_password_file`, or is generated and printed once on
/// standard error (never logged).
async fn create_first_admin(
    config: &GatewayConfig,
    accounts: &paddock_accounts::Accounts,
) -> anyhow::Result<()> {
    if accounts.user_count().await? > 0 {
        return Ok(());
    }
    let name = &config.auth.admin_user;
    let (password, generated) = match &config.auth.admin_password_file {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading auth.admin_password_file {}", file.display()))?;
            (text.trim_end_matches(['\r', '\n']).to_string(), false)
        }
        None => (paddock_accounts::new_token("")?, true),
    };
    if accounts
        .create_first_admin(name, &password)
        .await?
        .is_some()
    {
        tracing::info!(user = %name, "created the first admin");
        if generated {
            eprintln!(
                "paddock-gateway: created the admin user {name:?} with the password {password}\n\
                 paddock-gateway: it is shown only this once; sign in with `paddock login --user {name}` and change it"
            );
        }
    }
    Ok(())
}

/// Connects to NATS (ensuring the streams) and the ledger.
async fn connect(
    config: GatewayConfig,
    shutdown: CancellationToken,
) -> anyhow::Result<(AppState, prometheus::Registry)> {
    let auth = open_auth(&config).await?;
    let nats = paddock_bus::connect(&config.nats, "paddock-gateway").await?;
    let registry = paddock_telemetry::new_registry("paddock-gateway")?;
    let metrics = paddock_telemetry::GatewayMetrics::register(&registry)?;
    paddock_telemetry::NatsMetrics::register(&registry, nats.clone())?;
    let jetstream = jetstream::new(nats.clone());
    paddock_bus::ensure_streams(&jetstream, &config.streams).await?;
    let events = EventLog::open(jetstream.clone()).await?;
    let nodes = paddock_bus::NodeRegistry::open_reader(&jetstream, config.streams.replicas)
        .await
        .context("opening the node registry")?;
    let selectors = paddock_bus::SelectorStore::open(&jetstream, config.streams.replicas)
        .await
        .context("opening the label selectors bucket")?;
    let ledger = Ledger::connect(&config.database_url)
        .await
        .context("opening the job ledger (database_url)")?;
    let state = AppState::new(StateParts {
        config,
        auth,
        nats,
        jetstream,
        events,
        nodes,
        selectors,
        ledger,
        sessions: TaskTracker::new(),
        shutdown,
        metrics,
    });
    Ok((state, registry))
}

/// Serves `/metrics`, `/healthz` and `/readyz` for Prometheus on `metrics_listen`.
async fn serve_metrics(state: &AppState, registry: prometheus::Registry) -> anyhow::Result<()> {
    let Some(address) = state.config().metrics_listen else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address} (metrics_listen)"))?;
    let ledger = state.ledger().clone();
    let readiness = paddock_telemetry::Readiness::new()
        .with_check(paddock_telemetry::checks::nats_connected(
            state.nats().clone(),
        ))
        .with_check(paddock_telemetry::ReadinessCheck::new(
            "database",
            move || {
                let ledger = ledger.clone();
                async move { ledger.ping().await.map_err(|e| e.to_string()) }
            },
        ));
    let shutdown = state.shutdown().clone();
    tokio::spawn(async move {
        if let Err(e) =
            paddock_telemetry::http::serve(listener, registry, readiness, shutdown).await
        {
            tracing::warn!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(())
}
