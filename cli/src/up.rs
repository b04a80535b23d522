//! `paddock up`: one command that starts a whole single-machine paddock in a data
//! folder — nats-server with JetStream, the coordinator (SQLite ledger), the gateway
//! and one node agent — writes their config files, prints the URL and how to log in
//! (the gateway's first admin, `admin`, with a generated password kept in
//! `<data>/admin-password`; and a service token for scripts),
//! and stops everything in order on Ctrl-C or SIGTERM. The gateway serves HTTPS with
//! a self-signed certificate made once in `<data>/tls` ([`paddock_cli::dev_cert`]);
//! clients trust its CA file (`--ca-cert`, printed at start). The same binaries, given other
//! config files, run a paddock of several machines.

use anyhow::{Context, bail};
use paddock_cli::dev_cert::{self, DevCertificate};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Where state, configs and logs go.
    #[arg(long, default_value = ".paddock")]
    data_dir: PathBuf,
    /// The gateway's port.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// NATS port (not 4222, so that a system nats-server can keep it).
    #[arg(long, default_value_t = 4248)]
    nats_port: u16,
    /// Job slots of the node.
    #[arg(long, default_value_t = 2)]
    slots: usize,
    /// Projects as NAME=PATH (repeat). Without one, a `demo` project is made.
    #[arg(long = "project", value_parser = parse_project)]
    projects: Vec<(String, PathBuf)>,
    /// Tools jobs may use without approval.
    #[arg(
        long = "allow",
        value_delimiter = ',',
        default_value = "Bash,Edit,Write,Read,Glob,Grep"
    )]
    allowed_tools: Vec<String>,
    /// nats-server executable (default: .tools/bin/nats-server, then PATH).
    #[arg(long, env = "PADDOCK_NATS_SERVER")]
    nats_server: Option<PathBuf>,
    /// Claude Code executable (default: .tools/bin/claude, then PATH).
    #[arg(long, env = "PADDOCK_CLAUDE")]
    claude: Option<PathBuf>,
    /// Point the node at the project's Messages API double instead of Anthropic (no
    /// credential needed; for trying Paddock out).
    #[arg(long)]
    model_double: bool,
    /// Ledger database (default: SQLite in the data folder).
    #[arg(long)]
    database_url: Option<String>,
}

fn parse_project(text: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected NAME=PATH"))?;
    Ok((name.to_string(), PathBuf::from(path)))
}

struct Service {
    name: &'static str,
    child: Child,
}

pub async fn up(args: UpArgs) -> anyhow::Result<()> {
    let data = absolute(&args.data_dir)?;
    for dir in ["nats", "logs", "config", "agent-home", "projects/demo"] {
        std::fs::create_dir_all(data.join(dir))
            .with_context(|| format!("creating {}", data.join(dir).display()))?;
    }
    let token_file = data.join("token");
    let token = match std::fs::read_to_string(&token_file) {
        Ok(token) if !token.trim().is_empty() => token.trim().to_string(),
        _ => {
            let token = format!("pdk_{}", uuid::Uuid::new_v4().simple());
            paddock_cli::private_file::write(&token_file, token.as_bytes())?;
            token
        }
    };
    // The first admin's password: read by the gateway on its first start (when it has
    // no user yet), and shown here so the person who ran `paddock up` can sign in.
    let password_file = data.join("admin-password");
    let password = match std::fs::read_to_string(&password_file) {
        Ok(password) if !password.trim().is_empty() => password.trim().to_string(),
        _ => {
            let password = uuid::Uuid::new_v4().simple().to_string();
            paddock_cli::private_file::write(&password_file, password.as_bytes())?;
            password
        }
    };
    let projects: Vec<(String, PathBuf)> = if args.projects.is_empty() {
        vec![("demo".into(), data.join("projects/demo"))]
    } else {
        args.projects
            .iter()
            .map(|(n, p)| absolute(p).map(|p| (n.clone(), p)))
            .collect::<anyhow::Result<_>>()?
    };

    let certificate = dev_cert::ensure(&data.join("tls"), &dev_cert::host_names())
        .context("making the development TLS certificate")?;

    let nats_server = find_tool(args.nats_server.clone(), "nats-server")?;
    let claude = find_tool(args.claude.clone(), "claude")?;
    let mut services: Vec<Service> = Vec::new();
    let result = start_all(
        &args,
        &data,
        &token,
        &certificate,
        &projects,
        &nats_server,
        &claude,
        &mut services,
    )
    .await;
    if let Err(e) = result {
        stop_all(&mut services).await;
        return Err(e);
    }
    let url = format!("https://127.0.0.1:{}", args.port);
    let ca = certificate.ca_file.display();
    println!();
    println!("Paddock is up: {url}");
    println!(
        "  CA        {ca}   ({}self-signed for this machine: trust it with --ca-cert or PADDOCK_CA_CERT)",
        if certificate.new_ca { "new; " } else { "" }
    );
    println!(
        "  admin     user admin, password {password}   (also in {}; set on the first start)",
        password_file.display()
    );
    println!(
        "  token     {token}   (a service token for scripts; also in {})",
        token_file.display()
    );
    println!("  logs      {}", data.join("logs").display());
    println!();
    println!("  export PADDOCK_URL={url} PADDOCK_CA_CERT={ca}");
    println!(
        "  paddock login --user admin --password-file {}",
        password_file.display()
    );
    println!(
        "  paddock run --project {} \"add a test for the parser\"",
        projects[0].0
    );
    println!("  curl --cacert {ca} -H \"Authorization: Bearer {token}\" {url}/v1/jobs");
    println!();
    println!("Ctrl-C stops it.");

    let outcome = wait_for_stop(&mut services).await;
    println!("stopping…");
    stop_all(&mut services).await;
    outcome
}

#[allow(clippy::too_many_arguments)]
async fn start_all(
    args: &UpArgs,
    data: &Path,
    token: &str,
    certificate: &DevCertificate,
    projects: &[(String, PathBuf)],
    nats_server: &Path,
    claude: &Path,
    services: &mut Vec<Service>,
) -> anyhow::Result<()> {
    let bin_dir = std::env::current_exe()
        .context("locating the paddock executable")?
        .parent()
        .map(Path::to_path_buf)
        .context("locating the paddock executable's folder")?;
    let logs = data.join("logs");
    let config_dir = data.join("config");
    let nats_url = format!("nats://127.0.0.1:{}", args.nats_port);

    let mut nats = Command::new(nats_server);
    nats.args([
        "-a",
        "127.0.0.1",
        "-p",
        &args.nats_port.to_string(),
        "-js",
        "-sd",
    ])
    .arg(data.join("nats"));
    services.push(spawn("nats-server", nats, &logs)?);
    wait_port(args.nats_port, "nats-server", services).await?;

    let mut base_url = None;
    if args.model_double {
        let script = config_dir.join("model-double.json");
        if !script.exists() {
            std::fs::write(&script, DEFAULT_DOUBLE_SCRIPT)?;
        }
        let mut double = Command::new(bin_dir.join("paddock-model-double"));
        double
            .args(["--listen", "127.0.0.1:0", "--script"])
            .arg(&script);
        let (service, address) = spawn_reporting_address(double, &logs).await?;
        services.push(service);
        base_url = Some(address);
    } else if std::env::var("ANTHROPIC_API_KEY").is_err()
        && std::env::var("CLAUDE_CODE_OAUTH_TOKEN").is_err()
    {
        bail!(
            "no model credential: export ANTHROPIC_API_KEY, or CLAUDE_CODE_OAUTH_TOKEN from `claude setup-token`; \
             or pass --model-double to try Paddock against the built-in Messages API double"
        );
    }

    let database_url = args
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", data.join("ledger.db").display()));
    let toml_str = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let coordinator_file = config_dir.join("coordinator.toml");
    std::fs::write(
        &coordinator_file,
        format!(
            "database_url = {}\n\n[nats]\nurl = {}\n",
            toml_str(&database_url),
            toml_str(&nats_url)
        ),
    )?;
    let mut gateway = format!(
        "listen = \"127.0.0.1:{}\"\nmetrics_listen = \"127.0.0.1:9470\"\ndatabase_url = {}\ndata_dir = {}\n\n[nats]\nurl = {}\n\n\
         [tls]\ncert_file = {}\nkey_file = {}\n\n\
         [auth]\nadmin_password_file = {}\n\n\
         [[api_tokens]]\nuser = \"admin\"\ntoken = {}\n\
         scopes = [\"jobs:read\", \"jobs:submit\", \"tools:approve\", \"nodes:admin\"]\n",
        args.port,
        toml_str(&database_url),
        toml_str(&data.join("gateway").display().to_string()),
        toml_str(&nats_url),
        toml_str(&certificate.cert_file.display().to_string()),
        toml_str(&certificate.key_file.display().to_string()),
        toml_str(&data.join("admin-password").display().to_string()),
        toml_str(token)
    );
    let mut node = format!(
        "name = \"local\"\nslots = {}\n\n[nats]\nurl = {}\n\n[agent]\nprogram = {}\nhome = {}\nallowed_tools = {}\n",
        args.slots,
        toml_str(&nats_url),
        toml_str(&claude.display().to_string()),
        toml_str(&data.join("agent-home").display().to_string()),
        serde_json::to_string(&args.allowed_tools)?,
    );
    if let Some(url) = &base_url {
        node.push_str(&format!(
            "anthropic_base_url = {}\nanthropic_api_key = \"double\"\n",
            toml_str(url)
        ));
    }
    for (name, path) in projects {
        gateway.push_str(&format!("\n[[projects]]\nname = {}\n", toml_str(name)));
        node.push_str(&format!(
            "\n[[projects]]\nname = {}\npath = {}\n",
            toml_str(name),
            toml_str(&path.display().to_string())
        ));
    }
    let gateway_file = config_dir.join("gateway.toml");
    paddock_cli::private_file::write(&gateway_file, gateway.as_bytes())?;
    let node_file = config_dir.join("node.toml");
    std::fs::write(&node_file, node)?;

    let mut coordinator = Command::new(bin_dir.join("paddock-coordinator"));
    coordinator.arg("--config").arg(&coordinator_file);
    services.push(spawn("coordinator", coordinator, &logs)?);
    let mut gateway = Command::new(bin_dir.join("paddock-gateway"));
    gateway.arg("--config").arg(&gateway_file);
    services.push(spawn("gateway", gateway, &logs)?);
    let mut node = Command::new(bin_dir.join("paddock-node"));
    node.arg("--config").arg(&node_file);
    services.push(spawn("node", node, &logs)?);
    wait_port(args.port, "gateway", services).await?;
    Ok(())
}

/// What the double plays for any prompt: look at the project with a tool, then say
/// what it is. See model-double/ for the script format.
const DEFAULT_DOUBLE_SCRIPT: &str = r#"{"conversations": [{"match": "", "steps": [
  {"content": [{"type": "text", "text": "Let me look at the project first."},
               {"type": "tool_use", "name": "Bash", "input": {"command": "ls -la", "description": "List the project"}}]},
  {"content": [{"type": "text", "text": "This answer comes from Paddock's Messages API double. Start without --model-double, with ANTHROPIC_API_KEY or CLAUDE_CODE_OAUTH_TOKEN set, to use the real model."}]}
]}]}"#;

fn spawn(name: &'static str, mut command: Command, logs: &Path) -> anyhow::Result<Service> {
    let log = std::fs::File::create(logs.join(format!("{name}.log")))
        .with_context(|| format!("creating the log of {name}"))?;
    let child = command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {name}"))?;
    Ok(Service { name, child })
}

async fn spawn_reporting_address(
    mut command: Command,
    logs: &Path,
) -> anyhow::Result<(Service, String)> {
    let log = std::fs::File::create(logs.join("model-double.log"))?;
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting paddock-model-double")?;
    let stdout = child.stdout.take().context("model double's stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let address = tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(address) = line.strip_prefix("listening on ") {
                return Some(address.trim().to_string());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .context("the model double did not report its address")?;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((
        Service {
            name: "model-double",
            child,
        },
        address,
    ))
}

async fn wait_port(port: u16, name: &str, services: &mut [Service]) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        for service in services.iter_mut() {
            if let Ok(Some(status)) = service.child.try_wait() {
                bail!("{} exited ({status}); see its log", service.name);
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{name} is not listening on port {port} after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_stop(services: &mut [Service]) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = term.recv() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {
                for service in services.iter_mut() {
                    if let Ok(Some(status)) = service.child.try_wait() {
                        bail!("{} exited ({status}); see its log", service.name);
                    }
                }
            }
        }
    }
}

/// Stops services in reverse order of start: SIGTERM, then SIGKILL after a grace.
async fn stop_all(services: &mut Vec<Service>) {
    while let Some(mut service) = services.pop() {
        if let Some(pid) = service.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if tokio::time::timeout(Duration::from_secs(15), service.child.wait())
            .await
            .is_err()
        {
            let _ = service.child.kill().await;
        }
    }
}

/// A tool given by flag, else in `.tools/bin` of the checkout the executable was
/// built in, else on PATH.
fn find_tool(given: Option<PathBuf>, name: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = given {
        return Ok(path);
    }
    if let Ok(exe) = std::env::current_exe() {
        for dir in exe.ancestors().skip(1) {
            let candidate = dir.join(".tools/bin").join(name);
            if candidate.exists() {
                return Ok(candidate);
            }
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(name);
            if candidate.exists() {
                return Ok(candidate);
            }
        }
    }
    bail!("{name} not found: run ops/install-deps.sh, or pass --{name}")
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    })
}
