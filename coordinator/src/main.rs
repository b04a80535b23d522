//! `paddock-coordinator`: parses flags, loads and validates the configuration, starts
//! logging and tracing (OTLP export when `otlp_endpoint` is set), and runs the
//! coordinator until SIGINT or SIGTERM.

use anyhow::Context as _;
use clap::Parser;
use paddock_coordinator::{CoordinatorConfig, Flags};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    let config = CoordinatorConfig::load(&flags)?;
    if flags.print_config {
        println!("{}", config.redacted_json());
        return Ok(());
    }
    // Kept to the end: dropping it exports the spans still batched.
    let _telemetry = paddock_telemetry::init(
        "paddock-coordinator",
        config.otlp_endpoint.clone(),
        config.log_json,
    )?;

    let shutdown = CancellationToken::new();
    tokio::spawn(stop_on_signal(shutdown.clone()));
    paddock_coordinator::run(config, shutdown)
        .await
        .context("paddock-coordinator")
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM.
async fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let terminate = async {
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; stop with Ctrl-C");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate => {}
    }
    tracing::info!("shutting down");
    shutdown.cancel();
}
