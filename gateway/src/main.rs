//! The `paddock-gateway` binary: parses flags, loads the config (file, environment,
//! flags), starts logging, binds the listen address and serves (HTTPS with `[tls]`)
//! until SIGINT or SIGTERM; SIGHUP reloads the certificate. Everything else is in the
//! library.

use anyhow::Context;
use clap::Parser;
use paddock_gateway::{ConfigOverrides, GatewayConfig};
use std::net::SocketAddr;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// Paddock's HTTP and WebSocket API.
///
/// Settings come from the config file, then PADDOCK_GATEWAY_* environment variables
/// (nested keys joined by `__`, e.g. PADDOCK_GATEWAY_NATS__URL), then these flags.
#[derive(Debug, Parser)]
#[command(name = "paddock-gateway", version)]
struct Args {
    /// TOML config file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Address to listen on (`listen`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// NATS URL(s), comma separated (`nats.url`).
    #[arg(long, value_name = "URL")]
    nats_url: Option<String>,
    /// Ledger database URL (`database_url`). Prefer the environment for one with a password.
    #[arg(long, value_name = "URL")]
    database_url: Option<String>,
    /// Log JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let overrides = ConfigOverrides {
        listen: args.listen,
        nats_url: args.nats_url,
        database_url: args.database_url,
    };
    let config = GatewayConfig::load(args.config.as_deref(), &overrides)?;
    // Logs, and traces over OTLP when configured; the guard flushes them at exit.
    let _telemetry = paddock_telemetry::init(
        "paddock-gateway",
        config.otlp_endpoint.clone(),
        args.log_json,
    )?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {} (listen)", config.listen))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    paddock_gateway::run(listener, config, shutdown).await
}

async fn stop_on_signal(shutdown: CancellationToken) {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                tokio::select! {
                    _ = interrupt => {}
                    _ = terminate.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; stopping on SIGINT only");
                let _ = interrupt.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("stopping");
    shutdown.cancel();
}
