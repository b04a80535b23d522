//! `paddock-node`: parse flags, load the config, start logging, run the node agent.
//! SIGTERM or Ctrl-C stops it gracefully; a second one stops it at once.

use clap::Parser;
use paddock_node::{Shutdown, config::NodeConfig};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "paddock-node",
    version,
    about = "Paddock node agent: runs Claude Code jobs on this machine"
)]
struct Flags {
    /// Configuration file (TOML).
    #[arg(long, short, env = "PADDOCK_NODE_CONFIG")]
    config: Option<PathBuf>,
    /// NATS URL (overrides the file).
    #[arg(long)]
    nats_url: Option<String>,
    /// Node name (overrides the file).
    #[arg(long)]
    name: Option<String>,
    /// Job slots (overrides the file).
    #[arg(long)]
    slots: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let flags = Flags::parse();
    let mut config = NodeConfig::load(flags.config.as_deref())?;
    if let Some(url) = flags.nats_url {
        config.nats.url = url;
    }
    if let Some(name) = flags.name {
        config.name = name;
    }
    if let Some(slots) = flags.slots {
        config.slots = slots;
    }
    let shutdown = Shutdown::default();
    tokio::spawn(watch_signals(shutdown.clone()));
    if let Err(e) = paddock_node::run(config, shutdown).await {
        eprintln!("paddock-node: {e:#}");
        std::process::exit(1);
    }
    Ok(())
}

async fn watch_signals(shutdown: Shutdown) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    let mut count = 0;
    loop {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        count += 1;
        if count == 1 {
            shutdown.graceful.cancel();
        } else {
            shutdown.immediate.cancel();
        }
    }
}
