//! The cluster harness for cross-component tests: a real nats-server, the real
//! coordinator, gateway and node agent processes (built from this workspace), a SQLite
//! or PostgreSQL ledger, and either the real Claude Code CLI pointed at the project's
//! Messages API double or the small fake agent. Everything stops and is removed on drop;
//! a failing test prints each process's log.

use futures::StreamExt;
use paddock_cli::client::Client;
use paddock_contract::api::{JobView, SubmitJob};
use paddock_contract::{JobEvent, JobId, JobOptions};
use paddock_testkit::{
    ChildProcess, NatsCluster, NatsServer, eventually, free_port, workspace_binary,
};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// What plays the agent on the nodes.
pub enum Agent {
    /// The real CLI against the Messages API double playing this script (JSON).
    RealCli { script: serde_json::Value },
    /// The fake agent (behaviour chosen by `fake:` words in the prompt).
    Fake,
}

pub struct ClusterOptions {
    pub agent: Agent,
    /// Ledger URL; a SQLite file in the cluster's folder by default.
    pub database_url: Option<String>,
    pub slots: usize,
    /// TOML tables appended to the gateway's config (e.g. `[quotas]`).
    pub gateway_tables: String,
    /// Top-level TOML keys put first in the node's config.
    pub node_keys: String,
    /// A short ack wait (with progress acks every second), so a lost node's job is
    /// delivered again quickly.
    pub ack_wait_secs: Option<u64>,
    /// Run on a three-server JetStream cluster with three replicas per stream.
    pub nats_cluster: bool,
    /// Run the agents in the sandbox (bubblewrap). Off by default: most tests are about
    /// other things, and `sandbox.rs` tests the sandboxed node on its own.
    pub sandbox: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            agent: Agent::Fake,
            database_url: None,
            slots: 2,
            gateway_tables: String::new(),
            node_keys: String::new(),
            ack_wait_secs: None,
            nats_cluster: false,
            sandbox: false,
        }
    }
}

pub const TOKEN: &str = "test-token-0123456789";
pub const PROJECT: &str = "demo";
/// The password of the gateway's first admin, `admin`.
pub const ADMIN_PASSWORD: &str = "cluster admin password";

pub struct Cluster {
    pub url: String,
    pub client: Client,
    pub project_dir: PathBuf,
    /// The NATS server, or the three-server cluster with `nats_cluster`.
    pub nats: Option<NatsServer>,
    pub nats_cluster: Option<NatsCluster>,
    pub gateway: ChildProcess,
    pub coordinator: ChildProcess,
    pub node: ChildProcess,
    /// Ports of the coordinator's and the first node's `/metrics`, `/healthz`, `/readyz`.
    pub coordinator_metrics_port: u16,
    pub node_metrics_port: u16,
    pub double: Option<ChildProcess>,
    /// Nodes started with [`Cluster::add_node`].
    pub extra_nodes: Vec<ChildProcess>,
    template: NodeTemplate,
    dir: tempfile::TempDir,
}

/// How every node of a test cluster is configured.
#[derive(Clone)]
struct NodeTemplate {
    keys: String,
    ack_wait_secs: Option<u64>,
    sandbox: bool,
    nats_url: String,
    replicas: usize,
    program: PathBuf,
    base_url: Option<String>,
    project_dir: PathBuf,
    dir: PathBuf,
}

impl NodeTemplate {
    /// Writes the config of node `name` and returns its path and metrics port.
    fn write(&self, name: &str, slots: usize) -> (PathBuf, u16) {
        let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let metrics_port = free_port();
        let mut config = format!(
            "{}\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n",
            self.keys
        );
        if self.ack_wait_secs.is_some() {
            config.push_str(
                "progress_interval_secs = 1\nheartbeat_interval_secs = 1\nheartbeat_ttl_secs = 3\n",
            );
        }
        config.push_str(&format!(
            "name = \"{name}\"\nslots = {slots}\nkill_grace_secs = 2\nshutdown_grace_secs = 2\nfetch_wait_secs = 1\n\
             max_restarts = 2\nrestart_backoff_ms = 50\nmax_restart_backoff_ms = 200\nfault_injection = true\n\
             labels = {{ machine = \"{name}\" }}\n\
             [nats]\nurl = {}\n[agent]\nprogram = {}\nhome = {}\nanthropic_api_key = \"test-key\"\n",
            quote(&self.nats_url),
            quote(&self.program.display().to_string()),
            quote(&self.dir.join(format!("agent-home-{name}")).display().to_string()),
        ));
        if let Some(url) = &self.base_url {
            config.push_str(&format!("anthropic_base_url = {}\n", quote(url)));
            config.push_str("env = { CLAUDE_CODE_MAX_RETRIES = \"1\" }\n");
        }
        config.push_str(&format!("[streams]\nreplicas = {}\n", self.replicas));
        if let Some(ack_wait) = self.ack_wait_secs {
            config.push_str(&format!("ack_wait = {ack_wait}\n"));
        }
        if self.sandbox {
            config.push_str(&format!(
                "[sandbox]\nruntime_dir = {}\n",
                quote(
                    &self
                        .dir
                        .join(format!("sandbox-{name}"))
                        .display()
                        .to_string()
                )
            ));
        } else {
            config.push_str("[sandbox]\nmode = \"off\"\n");
        }
        config.push_str(&format!(
            "[[projects]]\nname = \"{PROJECT}\"\npath = {}\n",
            quote(&self.project_dir.display().to_string())
        ));
        let file = self.dir.join(format!("{name}.toml"));
        write(&file, &config);
        (file, metrics_port)
    }
}

impl Cluster {
    pub async fn start(options: ClusterOptions) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("paddock-cluster-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let project_dir = dir.path().join("projects/demo");
        std::fs::create_dir_all(&project_dir).unwrap_or_else(|e| panic!("mkdir: {e}"));
        let (nats, nats_cluster) = if options.nats_cluster {
            (None, Some(NatsCluster::start(3).await))
        } else {
            (Some(NatsServer::start().await), None)
        };
        let nats_url = match (&nats, &nats_cluster) {
            (Some(server), _) => server.url(),
            (None, Some(cluster)) => cluster.url(),
            (None, None) => unreachable!("one of the two is started"),
        };
        let streams = if options.nats_cluster {
            "[streams]\nreplicas = 3\n"
        } else {
            ""
        };
        let database_url = options
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", dir.path().join("ledger.db").display()));
        let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();

        let (program, double, base_url) = match &options.agent {
            Agent::RealCli { script } => {
                let script_file = dir.path().join("script.json");
                std::fs::write(&script_file, script.to_string()).unwrap_or_else(|e| panic!("{e}"));
                let (double, url) = start_double(&script_file).await;
                (paddock_testkit::claude_cli(), Some(double), Some(url))
            }
            Agent::Fake => (workspace_binary("paddock-fake-agent"), None, None),
        };

        let coordinator_file = dir.path().join("coordinator.toml");
        let coordinator_metrics_port = free_port();
        write(
            &coordinator_file,
            &format!(
                "database_url = {}\nmetrics_listen = \"127.0.0.1:{coordinator_metrics_port}\"\n\
                 [nats]\nurl = {}\n{streams}\
                 [ledger_writer]\nack_wait = \"3s\"\ngap_wait = \"5s\"\n",
                quote(&database_url),
                quote(&nats_url)
            ),
        );
        let port = free_port();
        // The first admin, for tests that sign in (`paddock login`).
        let admin_password_file = dir.path().join("admin-password");
        write(&admin_password_file, ADMIN_PASSWORD);
        let gateway_file = dir.path().join("gateway.toml");
        write(
            &gateway_file,
            &format!(
                "listen = \"127.0.0.1:{port}\"\ndatabase_url = {}\ndata_dir = {}\n[nats]\nurl = {}\n\
                 [auth]\nadmin_password_file = {}\n\
                 password_cost = {{ memory_kib = 8, iterations = 1, parallelism = 1 }}\n\
                 [[api_tokens]]\nuser = \"alice\"\ntoken = \"{TOKEN}\"\n\
                 scopes = [\"jobs:read\", \"jobs:submit\", \"tools:approve\", \"nodes:admin\"]\n\
                 [[api_tokens]]\nuser = \"bob\"\ntoken = \"bob-token-0123456789\"\n\
                 [[projects]]\nname = \"{PROJECT}\"\n{streams}",
                quote(&database_url),
                quote(&dir.path().join("gateway").display().to_string()),
                quote(&nats_url),
                quote(&admin_password_file.display().to_string()),
            ),
        );
        let gateway_text = std::fs::read_to_string(&gateway_file).unwrap_or_default();
        write(
            &gateway_file,
            &format!("{gateway_text}\n{}\n", options.gateway_tables),
        );
        let template = NodeTemplate {
            keys: options.node_keys.clone(),
            ack_wait_secs: options.ack_wait_secs,
            sandbox: options.sandbox,
            nats_url: nats_url.clone(),
            replicas: if options.nats_cluster { 3 } else { 1 },
            program: program.clone(),
            base_url: base_url.clone(),
            project_dir: project_dir.clone(),
            dir: dir.path().to_path_buf(),
        };
        let (node_file, node_metrics_port) = template.write("node-a", options.slots);

        let coordinator = start_binary("paddock-coordinator", &coordinator_file);
        let gateway = start_binary("paddock-gateway", &gateway_file);
        let node = start_binary("paddock-node", &node_file);
        let url = format!("http://127.0.0.1:{port}");
        let client = Client::new(&url, TOKEN).unwrap_or_else(|e| panic!("client: {e}"));
        let ready = format!("{url}/readyz");
        eventually(Duration::from_secs(30), "the gateway to be ready", || {
            let ready = ready.clone();
            async move {
                reqwest::get(&ready)
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        })
        .await;
        Cluster {
            url,
            client,
            project_dir,
            nats,
            nats_cluster,
            gateway,
            coordinator,
            node,
            coordinator_metrics_port,
            node_metrics_port,
            double,
            extra_nodes: Vec::new(),
            template,
            dir,
        }
    }

    /// Stops the coordinator (SIGTERM) and starts it again with the same config.
    pub async fn restart_coordinator(&mut self) {
        self.coordinator.terminate(Duration::from_secs(10));
        self.coordinator = start_binary(
            "paddock-coordinator",
            &self.dir.path().join("coordinator.toml"),
        );
    }

    /// Starts another node agent (same pool and project) and waits for its heartbeat.
    pub async fn add_node(&mut self, name: &str, slots: usize) {
        let (file, _) = self.template.write(name, slots);
        self.extra_nodes.push(start_binary("paddock-node", &file));
        let name = name.to_string();
        eventually(
            Duration::from_secs(20),
            "the new node's heartbeat",
            || async {
                let nodes = self.client.nodes().await.ok()?;
                nodes
                    .iter()
                    .any(|n| n.name == name && n.last_seen_ms.is_some())
                    .then_some(())
            },
        )
        .await;
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub async fn submit(&self, prompt: &str, options: JobOptions) -> JobId {
        self.client
            .submit(&SubmitJob {
                project: PROJECT.into(),
                prompt: prompt.into(),
                options,
                job_id: None,
            })
            .await
            .unwrap_or_else(|e| panic!("submit: {e:#}"))
            .job_id
    }

    /// Follows the job over the WebSocket from `after_seq` until its terminal event.
    pub async fn follow_to_end(
        &self,
        job: JobId,
        after_seq: u64,
        timeout: Duration,
    ) -> Vec<JobEvent> {
        let stream = self
            .client
            .follow(job, after_seq)
            .await
            .unwrap_or_else(|e| panic!("follow: {e:#}"));
        futures::pin_mut!(stream);
        let mut events = Vec::new();
        let collect = async {
            while let Some(event) = stream.next().await {
                let event = event.unwrap_or_else(|e| panic!("event stream: {e:#}"));
                let done = event.is_terminal();
                events.push(event);
                if done {
                    break;
                }
            }
        };
        if tokio::time::timeout(timeout, collect).await.is_err() {
            panic!("job {job} did not end within {timeout:?}; events so far: {events:#?}");
        }
        events
    }

    /// Waits until the ledger reports the job in a terminal state.
    pub async fn ledger_final(&self, job: JobId) -> JobView {
        eventually(
            Duration::from_secs(60),
            "the ledger to record the job's end",
            || async {
                self.client
                    .job(job)
                    .await
                    .ok()
                    .filter(|view| view.status.is_terminal())
            },
        )
        .await
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn start_binary(name: &str, config: &Path) -> ChildProcess {
    let mut command = Command::new(workspace_binary(name));
    command.arg("--config").arg(config).env("RUST_LOG", "info");
    ChildProcess::spawn(name, command)
}

async fn start_double(script: &Path) -> (ChildProcess, String) {
    let mut command = Command::new(workspace_binary("paddock-model-double"));
    command
        .args(["--listen", "127.0.0.1:0", "--script"])
        .arg(script);
    let process = ChildProcess::spawn("model-double", command);
    let url = eventually(
        Duration::from_secs(10),
        "the model double to listen",
        || {
            let output = process.output();
            async move {
                output
                    .lines()
                    .find_map(|line| line.strip_prefix("listening on "))
                    .map(|url| url.trim().to_string())
            }
        },
    )
    .await;
    (process, url)
}

/// A live follower of one job's events that tests read step by step.
pub struct Follower {
    stream: std::pin::Pin<Box<dyn futures::Stream<Item = anyhow::Result<JobEvent>> + Send>>,
    /// Every event seen so far, in order.
    pub seen: Vec<JobEvent>,
}

impl Follower {
    pub async fn start(client: &Client, job: JobId) -> Follower {
        let stream = client
            .follow(job, 0)
            .await
            .unwrap_or_else(|e| panic!("follow: {e:#}"));
        Follower {
            stream: Box::pin(stream),
            seen: Vec::new(),
        }
    }

    /// Reads events until one matches `wanted` (which it returns), failing after
    /// `timeout` with the events seen.
    pub async fn until(
        &mut self,
        what: &str,
        timeout: Duration,
        wanted: impl Fn(&JobEvent) -> bool,
    ) -> JobEvent {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next()).await;
            match next {
                Ok(Some(Ok(event))) => {
                    self.seen.push(event.clone());
                    if wanted(&event) {
                        return event;
                    }
                    if event.is_terminal() {
                        panic!("the job ended before {what}: {:#?}", kinds(&self.seen));
                    }
                }
                Ok(Some(Err(e))) => panic!("event stream failed waiting for {what}: {e:#}"),
                Ok(None) => panic!("event stream ended waiting for {what}"),
                Err(_) => panic!(
                    "timed out waiting for {what}; seen: {:?}",
                    kinds(&self.seen)
                ),
            }
        }
    }

    /// Reads to the job's terminal event and returns it.
    pub async fn to_end(&mut self, timeout: Duration) -> JobEvent {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.next()).await {
                Ok(Some(Ok(event))) => {
                    self.seen.push(event.clone());
                    if event.is_terminal() {
                        return event;
                    }
                }
                Ok(Some(Err(e))) => panic!("event stream failed: {e:#}"),
                Ok(None) => panic!("event stream ended before the job did"),
                Err(_) => panic!(
                    "the job did not end in {timeout:?}; seen: {:?}",
                    kinds(&self.seen)
                ),
            }
        }
    }
}

/// The kinds of `events`, for messages.
pub fn kinds(events: &[JobEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind()).collect()
}

/// Pids of the running processes whose parent is `parent` and whose command name
/// contains `name` (Linux /proc).
pub fn child_processes(parent: u32, name: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // comm is in parentheses; the fields after it are state, ppid, …
            let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
                return false;
            };
            let comm = &stat[open + 1..close];
            let ppid = stat[close + 1..]
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u32>().ok());
            ppid == Some(parent) && comm.contains(name)
        })
        .collect()
}
