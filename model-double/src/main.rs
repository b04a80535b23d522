//! `paddock-model-double`: serves a script of the Messages API double on an address.
//!
//! Thin by design: parse flags (or `PADDOCK_MODEL_DOUBLE_LISTEN` / `_SCRIPT`), load
//! the script, bind, print `listening on http://ADDR` on stdout (tests and benchmarks
//! wait for that line), serve until SIGTERM or Ctrl-C.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use paddock_model_double::{ModelDouble, Script};
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// A scripted double of the Anthropic Messages API.
#[derive(Debug, Parser)]
#[command(name = "paddock-model-double", version)]
struct Args {
    /// Address to listen on; port 0 picks a free one.
    #[arg(
        long,
        env = "PADDOCK_MODEL_DOUBLE_LISTEN",
        default_value = "127.0.0.1:0"
    )]
    listen: SocketAddr,
    /// The script (JSON). Without it every request gets a short text reply.
    #[arg(long, env = "PADDOCK_MODEL_DOUBLE_SCRIPT")]
    script: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let script = match &args.script {
        Some(path) => Script::load(path)?,
        None => Script::default(),
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    let address = listener.local_addr().context("reading the bound address")?;

    let shutdown = CancellationToken::new();
    let mut terminate = signal(SignalKind::terminate()).context("installing a SIGTERM handler")?;
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        on_signal.cancel();
    });

    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on http://{address}").context("writing to stdout")?;
    stdout.flush().context("flushing stdout")?;
    ModelDouble::new(script).serve(listener, shutdown).await
}
