//! `paddock`: the command-line client of a paddock (run a prompt and watch it live,
//! list jobs, read a job's log, cancel) and `paddock up`, which starts a whole
//! single-machine cluster.

mod keychain;
mod login;
mod node_tokens;
mod up;
mod users;

use paddock_cli::{client, render};

use anyhow::Context;
use clap::{Parser, Subcommand};
use futures::StreamExt;
use paddock_contract::api::SubmitJob;
use paddock_contract::{ApprovalMode, EventBody, JobId, JobOptions};
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(
    name = "paddock",
    version,
    about = "Run Claude Code on your paddock of machines"
)]
struct Cli {
    /// The gateway's URL.
    #[arg(
        long,
        global = true,
        env = "PADDOCK_URL",
        default_value = "https://127.0.0.1:8080"
    )]
    url: String,
    /// A CA certificate (PEM) to trust for the gateway's TLS certificate, besides the
    /// system's: the one `paddock up` prints. `paddock login` remembers it.
    #[arg(long, global = true, env = "PADDOCK_CA_CERT", value_name = "FILE")]
    ca_cert: Option<std::path::PathBuf>,
    /// API token (printed by `paddock up`).
    #[arg(
        long,
        global = true,
        env = "PADDOCK_TOKEN",
        hide_env_values = true,
        default_value = ""
    )]
    token: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Submit a prompt and watch Claude Code work on it, live.
    Run {
        #[arg(long, short)]
        project: String,
        prompt: String,
        /// Tools the job may use without approval (repeat, or comma separated).
        #[arg(long = "allow", value_delimiter = ',')]
        allowed_tools: Vec<String>,
        #[arg(long)]
        model: Option<String>,
        #[arg(long)]
        max_turns: Option<u32>,
        /// Work in this sub-directory of the project.
        #[arg(long)]
        subdir: Option<String>,
        /// Print the job id and return without watching.
        #[arg(long)]
        detach: bool,
        /// Ask at this terminal before tools outside the allow list run.
        #[arg(long)]
        ask: bool,
        /// Keep the session open this many seconds after each turn for `paddock say`.
        #[arg(long)]
        idle: Option<u32>,
        /// Run only on a node with this label (repeat for several): `xcode=16`;
        /// `pool=NAME` picks the pool.
        #[arg(long = "require", value_name = "KEY=VALUE", value_parser = parse_label)]
        requires: Vec<(String, String)>,
    },
    /// Send a follow-up into a job's session (resumed on its node if it has ended).
    Say {
        id: JobId,
        text: String,
        /// Return without watching the answer.
        #[arg(long)]
        detach: bool,
    },
    /// Answer a tool approval request.
    Approve {
        id: JobId,
        request_id: String,
        /// Refuse instead of allowing.
        #[arg(long)]
        deny: bool,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Interrupt a job's current turn; the session goes on.
    Interrupt { id: JobId },
    /// Watch a job's events from a sequence number on (0: from the start).
    Watch {
        id: JobId,
        #[arg(long, default_value_t = 0)]
        after_seq: u64,
    },
    /// List jobs, newest first.
    Jobs {
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show a job's status and its full event log.
    Job {
        id: JobId,
        /// Print the events as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job.
    Cancel { id: JobId },
    /// List the paddock's machines, or drain, undrain or cordon one.
    Nodes {
        #[command(subcommand)]
        action: Option<NodeAction>,
    },
    /// Start a whole single-machine paddock (NATS, coordinator, gateway, one node).
    Up(up::UpArgs),
    /// Sign in to the gateway (the sign-in is kept in your config folder), or
    /// approve another device's sign-in code.
    Login(login::LoginArgs),
    /// Sign out: ends this machine's sign-in and forgets its tokens.
    Logout,
    /// Manage users and read the audit log (admins).
    Users {
        #[command(subcommand)]
        action: users::UsersAction,
    },
}

#[derive(Subcommand, Debug)]
enum NodeAction {
    /// Stop claiming at once; running jobs finish (or are handed back at the deadline).
    Drain {
        name: String,
        /// e.g. 30m, 90s, 2h: after this, running jobs are handed back to the queue.
        #[arg(long, value_parser = parse_deadline)]
        deadline: Option<u64>,
    },
    /// Take work again.
    Undrain { name: String },
    /// No new work; running jobs are left alone.
    Cordon { name: String },
    #[command(flatten)]
    Credentials(node_tokens::CredentialAction),
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() && !value.is_empty() => {
            Ok((key.to_string(), value.to_string()))
        }
        _ => Err(format!("{text:?}: expected KEY=VALUE, e.g. xcode=16")),
    }
}

fn parse_deadline(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected e.g. 30m"))?;
    match unit {
        "" | "s" => Ok(n),
        "m" => Ok(n * 60),
        "h" => Ok(n * 3600),
        _ => Err(format!("{text:?}: the unit is s, m or h")),
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let code = match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("paddock: {e:#}");
            2
        }
    };
    std::process::exit(code);
}

async fn run(cli: Cli) -> anyhow::Result<i32> {
    if let Command::Up(args) = cli.command {
        return up::up(args).await.map(|()| 0);
    }
    // The CA to trust: given now, else the one the sign-in to this gateway remembers.
    let given = cli.ca_cert.as_deref().filter(|f| !f.as_os_str().is_empty());
    let ca_cert = match given {
        Some(file) => Some(
            std::path::absolute(file)
                .with_context(|| format!("locating {} (--ca-cert)", file.display()))?,
        ),
        None => login::saved_ca_cert(&cli.url),
    };
    let trust = client::Trust::new(ca_cert.as_deref()).with_context(|| match given {
        Some(_) => "the CA certificate given with --ca-cert or PADDOCK_CA_CERT".to_string(),
        None => format!(
            "the CA certificate your sign-in to {} remembers: give another with --ca-cert",
            cli.url
        ),
    })?;
    trust.install();
    if let Command::Login(args) = cli.command {
        return login::login(&cli.url, &cli.token, ca_cert, args).await;
    }
    if let Command::Logout = cli.command {
        return login::logout(&cli.url, &cli.token).await;
    }
    let token = login::token_for(&cli.url, &cli.token).await?;
    if let Command::Users { action } = cli.command {
        return users::run(&cli.url, &token, action).await;
    }
    if let Command::Nodes {
        action: Some(NodeAction::Credentials(action)),
    } = cli.command
    {
        return node_tokens::run(&cli.url, &token, action).await;
    }
    let mut client = client::Client::new(&cli.url, &token)?;
    if cli.token.is_empty() {
        let url = cli.url.clone();
        client = client.renewing_sign_in(std::sync::Arc::new(move || {
            let url = url.clone();
            Box::pin(async move { login::token_for(&url, "").await })
        }));
    }
    match cli.command {
        Command::Run {
            project,
            prompt,
            allowed_tools,
            model,
            max_turns,
            subdir,
            detach,
            ask,
            idle,
            requires,
        } => {
            let accepted = client
                .submit(&SubmitJob {
                    project,
                    prompt,
                    options: JobOptions {
                        model,
                        max_turns,
                        allowed_tools,
                        subdir,
                        approval: if ask {
                            ApprovalMode::Ask
                        } else {
                            ApprovalMode::AllowListed
                        },
                        idle_timeout_secs: idle,
                        requires: requires.into_iter().collect(),
                        ..Default::default()
                    },
                    job_id: Some(JobId::new()),
                })
                .await?;
            if detach {
                println!("{}", accepted.job_id);
                return Ok(0);
            }
            let prompter = ask.then(|| client.clone());
            watch(&client, accepted.job_id, 0, true, prompter, idle.is_some()).await
        }
        Command::Say { id, text, detach } => {
            let accepted = client.say(id, &text).await?;
            if accepted.resumed {
                eprintln!(
                    "(the session had ended; resuming it in job {})",
                    accepted.job_id
                );
            }
            if detach {
                println!("{}", accepted.job_id);
                return Ok(0);
            }
            let after = if accepted.resumed {
                0
            } else {
                client.job(id).await?.last_seq
            };
            watch(&client, accepted.job_id, after, false, None, true).await
        }
        Command::Approve {
            id,
            request_id,
            deny,
            reason,
        } => {
            client.approve(id, &request_id, !deny, reason).await?;
            println!("{} {request_id}", if deny { "denied" } else { "allowed" });
            Ok(0)
        }
        Command::Interrupt { id } => {
            client.interrupt(id).await?;
            println!("interrupt sent to {id}");
            Ok(0)
        }
        Command::Watch { id, after_seq } => watch(&client, id, after_seq, false, None, false).await,
        Command::Jobs { status, limit } => {
            let page = client.jobs(status.as_deref(), limit).await?;
            println!(
                "{:<36}  {:<10} {:<12} {:>6} {:>9}  PROMPT",
                "JOB", "STATUS", "PROJECT", "TURNS", "COST"
            );
            for job in page.jobs {
                let prompt: String = job.prompt.chars().take(40).collect();
                println!(
                    "{:<36}  {:<10} {:<12} {:>6} {:>9}  {}",
                    job.id,
                    job.status.as_str(),
                    job.project,
                    job.num_turns.map(|t| t.to_string()).unwrap_or_default(),
                    job.cost_usd.map(|c| format!("${c:.4}")).unwrap_or_default(),
                    prompt.replace('\n', " ")
                );
            }
            Ok(0)
        }
        Command::Job { id, json } => {
            let job = client.job(id).await?;
            let events = client.events(id).await?;
            if json {
                for event in events {
                    println!("{}", serde_json::to_string(&event)?);
                }
                return Ok(0);
            }
            println!("job      {}", job.id);
            println!("status   {}", job.status);
            println!("project  {}", job.project);
            if let Some(node) = &job.node {
                println!("node     {node} (attempts: {})", job.attempts);
            }
            if let Some(session) = &job.session_id {
                println!("session  {session}");
            }
            if let Some(reason) = &job.exit_reason {
                println!(
                    "ended    {reason}{}",
                    job.exit_message
                        .as_ref()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                );
            }
            println!();
            for event in &events {
                if let Some(text) = render::render(event) {
                    println!("{:>4}  {text}", event.seq);
                }
            }
            Ok(0)
        }
        Command::Cancel { id } => {
            client.cancel(id).await?;
            println!("cancel requested for {id}");
            Ok(0)
        }
        Command::Nodes { action: None } => {
            let nodes = client.nodes().await?;
            println!(
                "{:<16} {:<9} {:<9} {:>5} {:>5}  {:<10} {:<12} LABELS",
                "NODE", "STATE", "WANTED", "USED", "SLOTS", "VERSION", "LAST SEEN"
            );
            let now = paddock_contract::now_unix_ms();
            for node in nodes {
                let seen = node
                    .last_seen_ms
                    .map(|at| format!("{} s ago", (now - at).max(0) / 1000))
                    .unwrap_or_else(|| "never".into());
                let labels: Vec<String> = node
                    .labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                println!(
                    "{:<16} {:<9} {:<9} {:>5} {:>5}  {:<10} {:<12} {}",
                    node.name,
                    format!("{:?}", node.state).to_lowercase(),
                    format!("{:?}", node.desired).to_lowercase(),
                    node.used,
                    node.slots,
                    node.version.unwrap_or_default(),
                    seen,
                    labels.join(",")
                );
            }
            Ok(0)
        }
        Command::Nodes {
            action: Some(action),
        } => {
            let (name, verb, deadline) = match action {
                NodeAction::Drain { name, deadline } => (name, "drain", deadline),
                NodeAction::Undrain { name } => (name, "undrain", None),
                NodeAction::Cordon { name } => (name, "cordon", None),
                NodeAction::Credentials(_) => return Ok(0),
            };
            client.set_node(&name, verb, deadline).await?;
            println!("{name}: {verb} requested");
            Ok(0)
        }
        Command::Up(_) | Command::Login(_) | Command::Logout | Command::Users { .. } => Ok(0),
    }
}

/// Follows a job to its end (or, with `until_turn`, to the end of the current turn),
/// reconnecting from the last sequence seen when the connection drops. Ctrl-C cancels
/// the job (a second one leaves without waiting). With a `prompter`, approval requests
/// are asked at the terminal. Exit code: 0 completed, 1 failed, 130 cancelled.
async fn watch(
    client: &client::Client,
    job: JobId,
    after_seq: u64,
    cancel_on_interrupt: bool,
    prompter: Option<client::Client>,
    until_turn: bool,
) -> anyhow::Result<i32> {
    let mut last_seq = after_seq;
    let mut interrupted = false;
    let mut failures = 0;
    loop {
        let stream = match client.follow(job, last_seq).await {
            Ok(stream) => stream,
            Err(e) if failures < 10 => {
                failures += 1;
                eprintln!("(connection lost: {e:#}; reconnecting)");
                tokio::time::sleep(Duration::from_millis(500 * failures)).await;
                continue;
            }
            Err(e) => return Err(e).context("following the job"),
        };
        futures::pin_mut!(stream);
        loop {
            let next = tokio::select! {
                next = stream.next() => next,
                _ = tokio::signal::ctrl_c() => {
                    if interrupted || !cancel_on_interrupt {
                        eprintln!("(left job {job}; it goes on: paddock watch {job} --after-seq {last_seq})");
                        return Ok(130);
                    }
                    interrupted = true;
                    eprintln!("(cancelling {job}; Ctrl-C again to leave)");
                    if let Err(e) = client.cancel(job).await {
                        eprintln!("(cancel failed: {e:#})");
                    }
                    continue;
                }
            };
            match next {
                Some(Ok(event)) => {
                    failures = 0;
                    last_seq = event.seq;
                    if let Some(text) = render::render(&event) {
                        println!("{text}");
                    }
                    if let (Some(prompter), EventBody::ApprovalRequested { request_id, .. }) =
                        (&prompter, &event.body)
                    {
                        ask_at_terminal(prompter, job, request_id.clone()).await;
                    }
                    match event.body {
                        EventBody::TurnCompleted { .. } if until_turn => return Ok(0),
                        EventBody::Completed { .. } => return Ok(0),
                        EventBody::Failed { .. } => return Ok(1),
                        EventBody::Cancelled { .. } => return Ok(130),
                        _ => {}
                    }
                }
                Some(Err(e)) => {
                    eprintln!("(connection lost: {e:#}; resuming after event {last_seq})");
                    break;
                }
                None => break,
            }
        }
    }
}

/// Asks "allow?" at the terminal and sends the answer.
async fn ask_at_terminal(client: &client::Client, job: JobId, request_id: String) {
    eprint!("  allow it? [y/N] ");
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await;
    let allow = matches!(answer, Ok(Ok(line)) if line.trim().eq_ignore_ascii_case("y"));
    let reason = (!allow).then(|| "refused at the terminal".to_string());
    if let Err(e) = client.approve(job, &request_id, allow, reason).await {
        eprintln!("  (could not answer: {e:#})");
    }
}
