//! `paddock-node`: parse flags, load the config, start logging and tracing (OTLP
//! export when `otlp_endpoint` is set), run the node agent.
//! SIGTERM or Ctrl-C stops it gracefully; a second one stops it at once.
//! `paddock-node service print|install` renders or installs the system service.

use clap::Parser;
use paddock_node::{Shutdown, config::NodeConfig};
use paddock_telemetry::TracingSetup;
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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Join the paddock with a join token: writes this node's config and its own
    /// NATS credential.
    Join(paddock_node::join::JoinArgs),
    /// The node agent as a system service (systemd on Linux, launchd on macOS).
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
}

#[derive(clap::Subcommand, Debug)]
enum ServiceAction {
    /// Print the service file `install` would write.
    Print(ServiceFlags),
    /// Write the service file and load it (as root).
    Install(ServiceFlags),
}

#[derive(clap::Args, Debug)]
struct ServiceFlags {
    /// The node's config file (absolute path).
    #[arg(long)]
    node_config: PathBuf,
    /// The dedicated, unprivileged user the agent runs as.
    #[arg(long, default_value = "_paddock")]
    user: String,
    #[arg(long)]
    group: Option<String>,
    /// A root-only file holding the model credential.
    #[arg(long)]
    credential_file: PathBuf,
    #[arg(long, default_value = "/var/log/paddock")]
    log_dir: PathBuf,
    #[arg(long, value_enum)]
    platform: Option<paddock_node::service::Platform>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let flags = Flags::parse();
    if let Some(Command::Join(args)) = &flags.command {
        let joined = paddock_node::join::join(args).await?;
        println!(
            "joined the paddock as {} (pool {})\nconfig: {}\nNATS credential: {} (mode 0600)\n\
             next: add [agent] and [[projects]] to the config, then run paddock-node --config {}",
            joined.name,
            joined.pool,
            joined.config.display(),
            joined.credential_file.display(),
            joined.config.display()
        );
        return Ok(());
    }
    if let Some(Command::Service { action }) = flags.command {
        let _telemetry = paddock_telemetry::init("paddock-node", None, false)?;
        return service(action);
    }
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
    // Kept to the end: dropping it exports the spans still batched.
    let telemetry = TracingSetup::new("paddock-node")
        .otlp_endpoint(config.otlp_endpoint.clone())
        .json_logs(config.log_json)
        .resource_attribute("paddock.node", config.name.clone())
        .init()?;
    let shutdown = Shutdown::default();
    tokio::spawn(watch_signals(shutdown.clone()));
    if let Err(e) = paddock_node::run(config, shutdown).await {
        tracing::error!(error = format!("{e:#}"), "node agent failed");
        eprintln!("paddock-node: {e:#}");
        drop(telemetry);
        std::process::exit(1);
    }
    drop(telemetry);
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

fn service(action: ServiceAction) -> anyhow::Result<()> {
    use paddock_node::service::{Platform, ServiceParams, install, render};
    let (flags, installing) = match action {
        ServiceAction::Print(flags) => (flags, false),
        ServiceAction::Install(flags) => (flags, true),
    };
    let config = NodeConfig::load(Some(&flags.node_config))?;
    let params = ServiceParams {
        binary: std::env::current_exe()?,
        config: flags.node_config.clone(),
        group: flags.group.clone().unwrap_or_else(|| flags.user.clone()),
        user: flags.user,
        credential_file: flags.credential_file,
        log_dir: flags.log_dir,
        stop_timeout_secs: config.shutdown_grace_secs + config.kill_grace_secs + 15,
    };
    let platform = flags.platform.unwrap_or_else(Platform::current);
    if installing {
        let path = install(platform, &params)?;
        println!("installed and started {}", path.display());
    } else {
        print!("{}", render(platform, &params));
    }
    Ok(())
}
