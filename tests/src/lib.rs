//! The cluster harness for cross-component tests: a real nats-server, the real
//! coordinator, gateway and node agent processes (built from this workspace), a SQLite
//! or PostgreSQL ledger, and either the real Claude Code CLI pointed at the project's
//! Messages API double or the small fake agent. Everything stops and is removed on drop;
//! a failing test prints each process's log.

use futures::StreamExt;
use paddock_cli::client::{Client, Trust};
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
    /// TOML keys added to the gateway's `[auth]` table (e.g. `access_token_ttl = "4s"`).
    pub gateway_auth_keys: String,
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
    /// The gateway serves HTTPS only, with the development certificate `paddock up`
    /// makes; `Cluster::url` is then `https://…` and `Cluster::ca_cert` its CA.
    pub tls: bool,
    /// An OTLP/HTTP collector the gateway, coordinator and nodes export spans to
    /// (`otlp_endpoint`); the harness makes them send every 100 ms.
    pub otlp_endpoint: Option<String>,
    /// The control plane's actor cluster: the coordinator runs its node server and
    /// every node joins it (off by default: nodes work through NATS alone).
    pub actor_cluster: ActorCluster,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            agent: Agent::Fake,
            database_url: None,
            slots: 2,
            gateway_tables: String::new(),
            gateway_auth_keys: String::new(),
            node_keys: String::new(),
            ack_wait_secs: None,
            nats_cluster: false,
            sandbox: false,
            tls: false,
            otlp_endpoint: None,
            actor_cluster: ActorCluster::Off,
        }
    }
}

/// How the coordinator's actor cluster (ractor_cluster) is set up in a test cluster.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ActorCluster {
    #[default]
    Off,
    /// Plain TCP on loopback (`insecure_loopback = true`).
    Loopback,
    /// TLS with a certificate made for the test, nodes trusting its CA.
    Tls,
}

/// The cluster secret of the test clusters' actor cluster.
pub const CLUSTER_SECRET: &str = "actor cluster secret of the tests";

/// Writes `secret` into `path`, readable by its owner only.
pub fn write_secret_file(path: &Path, secret: &str) {
    use std::os::unix::fs::PermissionsExt;
    write(path, secret);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// The `[cluster]` tables of the coordinator and of the nodes, their files written.
struct ActorClusterTables {
    port: u16,
    coordinator: String,
    node: String,
}

fn actor_cluster_tables(mode: ActorCluster, dir: &Path) -> Option<ActorClusterTables> {
    let quote = |p: &Path| serde_json::to_string(&p.display().to_string()).unwrap_or_default();
    let port = free_port();
    let secret_file = dir.join("cluster-secret");
    let mut coordinator = format!("[cluster]\nlisten = \"127.0.0.1:{port}\"\n");
    let mut node = format!("[cluster]\ncoordinator = \"127.0.0.1:{port}\"\n");
    match mode {
        ActorCluster::Off => return None,
        ActorCluster::Loopback => {
            coordinator.push_str("insecure_loopback = true\n");
            node.push_str("insecure_loopback = true\n");
        }
        ActorCluster::Tls => {
            let certificate = paddock_cli::dev_cert::ensure(&dir.join("cluster-tls"), &[])
                .unwrap_or_else(|e| panic!("cluster certificate: {e:#}"));
            coordinator.push_str(&format!(
                "cert_file = {}\nkey_file = {}\n",
                quote(&certificate.cert_file),
                quote(&certificate.key_file)
            ));
            node.push_str(&format!("ca_file = {}\n", quote(&certificate.ca_file)));
        }
    }
    write_secret_file(&secret_file, CLUSTER_SECRET);
    coordinator.push_str(&format!("secret_file = {}\n", quote(&secret_file)));
    node.push_str(&format!("secret_file = {}\n", quote(&secret_file)));
    Some(ActorClusterTables {
        port,
        coordinator,
        node,
    })
}

pub const TOKEN: &str = "test-token-0123456789";
pub const PROJECT: &str = "demo";
/// The password of the gateway's first admin, `admin`.
pub const ADMIN_PASSWORD: &str = "cluster admin password";

pub struct Cluster {
    pub url: String,
    /// The CA certificate clients must trust, with `ClusterOptions::tls`.
    pub ca_cert: Option<PathBuf>,
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
    /// Port of the gateway's `/metrics` (its `metrics_listen`).
    pub gateway_metrics_port: u16,
    pub double: Option<ChildProcess>,
    /// Nodes started with [`Cluster::add_node`].
    pub extra_nodes: Vec<ChildProcess>,
    /// Ports of their `/metrics`, in the same order.
    pub extra_node_metrics_ports: Vec<u16>,
    /// Port of the coordinator's actor cluster node server, with `actor_cluster`.
    pub coordinator_cluster_port: Option<u16>,
    template: NodeTemplate,
    dir: tempfile::TempDir,
}

/// A gateway started with [`Cluster::start_another_gateway`]; stopped on drop.
pub struct ExtraGateway {
    pub process: ChildProcess,
    pub url: String,
    /// Port of its `/metrics`.
    pub metrics_port: u16,
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
    /// The node's `[cluster]` table (empty: no actor cluster).
    cluster_table: String,
    /// Labels the node carries besides `machine = <name>`, as inline-table entries
    /// (`, xcode = "16"`).
    extra_labels: String,
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
             labels = {{ machine = \"{name}\"{} }}\n\
             [nats]\nurl = {}\n[agent]\nprogram = {}\nhome = {}\nanthropic_api_key = \"test-key\"\n",
            self.extra_labels,
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
        config.push_str(&self.cluster_table);
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

        // A top-level key of every binary's config.
        let otlp = options
            .otlp_endpoint
            .as_deref()
            .map(|endpoint| format!("otlp_endpoint = {}\n", quote(endpoint)))
            .unwrap_or_default();
        let coordinator_file = dir.path().join("coordinator.toml");
        let coordinator_metrics_port = free_port();
        write(
            &coordinator_file,
            &format!(
                "database_url = {}\nmetrics_listen = \"127.0.0.1:{coordinator_metrics_port}\"\n{otlp}\
                 [nats]\nurl = {}\n{streams}\
                 [ledger_writer]\nack_wait = \"3s\"\ngap_wait = \"5s\"\n",
                quote(&database_url),
                quote(&nats_url)
            ),
        );
        let port = free_port();
        let gateway_metrics_port = free_port();
        // The first admin, for tests that sign in (`paddock login`).
        let admin_password_file = dir.path().join("admin-password");
        write(&admin_password_file, ADMIN_PASSWORD);
        let gateway_file = dir.path().join("gateway.toml");
        write(
            &gateway_file,
            &format!(
                "listen = \"127.0.0.1:{port}\"\ndatabase_url = {}\ndata_dir = {}\n\
                 metrics_listen = \"127.0.0.1:{gateway_metrics_port}\"\n{otlp}[nats]\nurl = {}\n\
                 [auth]\nadmin_password_file = {}\n\
                 password_cost = {{ memory_kib = 8, iterations = 1, parallelism = 1 }}\n\
                 {auth_keys}\n\
                 [[api_tokens]]\nuser = \"alice\"\ntoken = \"{TOKEN}\"\n\
                 scopes = [\"jobs:read\", \"jobs:submit\", \"tools:approve\", \"nodes:admin\"]\n\
                 [[api_tokens]]\nuser = \"bob\"\ntoken = \"bob-token-0123456789\"\n\
                 [[projects]]\nname = \"{PROJECT}\"\n{streams}",
                quote(&database_url),
                quote(&dir.path().join("gateway").display().to_string()),
                quote(&nats_url),
                quote(&admin_password_file.display().to_string()),
                auth_keys = options.gateway_auth_keys,
            ),
        );
        let gateway_text = std::fs::read_to_string(&gateway_file).unwrap_or_default();
        write(
            &gateway_file,
            &format!("{gateway_text}\n{}\n", options.gateway_tables),
        );
        let ca_cert = options.tls.then(|| {
            let certificate = paddock_cli::dev_cert::ensure(&dir.path().join("tls"), &[])
                .unwrap_or_else(|e| panic!("development certificate: {e:#}"));
            let gateway_text = std::fs::read_to_string(&gateway_file).unwrap_or_default();
            write(
                &gateway_file,
                &format!(
                    "{gateway_text}\n[tls]\ncert_file = {}\nkey_file = {}\n",
                    quote(&certificate.cert_file.display().to_string()),
                    quote(&certificate.key_file.display().to_string())
                ),
            );
            certificate.ca_file
        });
        let actor_cluster = actor_cluster_tables(options.actor_cluster, dir.path());
        if let Some(tables) = &actor_cluster {
            let text = std::fs::read_to_string(&coordinator_file).unwrap_or_default();
            write(&coordinator_file, &format!("{text}{}", tables.coordinator));
        }
        let template = NodeTemplate {
            keys: format!("{otlp}{}", options.node_keys),
            ack_wait_secs: options.ack_wait_secs,
            sandbox: options.sandbox,
            nats_url: nats_url.clone(),
            replicas: if options.nats_cluster { 3 } else { 1 },
            program: program.clone(),
            base_url: base_url.clone(),
            project_dir: project_dir.clone(),
            dir: dir.path().to_path_buf(),
            cluster_table: actor_cluster
                .as_ref()
                .map(|tables| tables.node.clone())
                .unwrap_or_default(),
            extra_labels: String::new(),
        };
        let (node_file, node_metrics_port) = template.write("node-a", options.slots);

        let coordinator = start_binary("paddock-coordinator", &coordinator_file);
        let gateway = start_binary("paddock-gateway", &gateway_file);
        let node = start_binary("paddock-node", &node_file);
        let scheme = if ca_cert.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://127.0.0.1:{port}");
        let trust = Trust::new(ca_cert.as_deref()).unwrap_or_else(|e| panic!("trust: {e:#}"));
        let http = trust
            .http_client(None)
            .unwrap_or_else(|e| panic!("http: {e:#}"));
        let client =
            Client::with_trust(&url, TOKEN, trust).unwrap_or_else(|e| panic!("client: {e}"));
        let ready = format!("{url}/readyz");
        eventually(Duration::from_secs(30), "the gateway to be ready", || {
            let (http, ready) = (http.clone(), ready.clone());
            async move {
                http.get(&ready)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        })
        .await;
        Cluster {
            url,
            ca_cert,
            client,
            project_dir,
            nats,
            nats_cluster,
            gateway,
            coordinator,
            node,
            coordinator_metrics_port,
            node_metrics_port,
            gateway_metrics_port,
            double,
            extra_nodes: Vec::new(),
            extra_node_metrics_ports: Vec::new(),
            coordinator_cluster_port: actor_cluster.as_ref().map(|tables| tables.port),
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

    /// Kills the coordinator (SIGKILL) and starts it again with the same config.
    pub async fn kill_and_restart_coordinator(&mut self) {
        self.coordinator.kill();
        self.coordinator = start_binary(
            "paddock-coordinator",
            &self.dir.path().join("coordinator.toml"),
        );
    }

    /// [`Cluster::add_node`] with its own `[cluster]` table (empty: no actor cluster).
    pub async fn add_node_with_cluster_table(&mut self, name: &str, slots: usize, table: &str) {
        let normal = std::mem::replace(&mut self.template.cluster_table, table.to_string());
        self.add_node(name, slots).await;
        self.template.cluster_table = normal;
    }

    /// [`Cluster::add_node`] carrying `labels` as well (`machine` is always its name).
    pub async fn add_node_with_labels(
        &mut self,
        name: &str,
        slots: usize,
        labels: &[(&str, &str)],
    ) {
        let quote = |s: &str| serde_json::to_string(s).unwrap_or_default();
        let extra: String = labels
            .iter()
            .map(|(key, value)| format!(", {key} = {}", quote(value)))
            .collect();
        let normal = std::mem::replace(&mut self.template.extra_labels, extra);
        self.add_node(name, slots).await;
        self.template.extra_labels = normal;
    }

    /// Starts another node agent (same pool and project) and waits for its heartbeat.
    pub async fn add_node(&mut self, name: &str, slots: usize) {
        let (file, metrics_port) = self.template.write(name, slots);
        self.extra_nodes.push(start_binary("paddock-node", &file));
        self.extra_node_metrics_ports.push(metrics_port);
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

    /// Starts another gateway with the first one's config (the same NATS, database,
    /// data folder and keys, as several gateways behind a load balancer have) on
    /// ports of its own, and waits until it is ready.
    pub async fn start_another_gateway(&self) -> ExtraGateway {
        let text = std::fs::read_to_string(self.dir.path().join("gateway.toml"))
            .unwrap_or_else(|e| panic!("the gateway's config: {e}"));
        let port = free_port();
        let metrics_port = free_port();
        let text: Vec<String> = text
            .lines()
            .map(|line| {
                if line.starts_with("listen = ") {
                    format!("listen = \"127.0.0.1:{port}\"")
                } else if line.starts_with("metrics_listen = ") {
                    format!("metrics_listen = \"127.0.0.1:{metrics_port}\"")
                } else {
                    line.to_string()
                }
            })
            .collect();
        let file = self.dir.path().join(format!("gateway-{port}.toml"));
        write(&file, &text.join("\n"));
        let process = start_binary("paddock-gateway", &file);
        let scheme = if self.ca_cert.is_some() {
            "https"
        } else {
            "http"
        };
        let url = format!("{scheme}://127.0.0.1:{port}");
        let http = Trust::new(self.ca_cert.as_deref())
            .and_then(|trust| trust.http_client(None))
            .unwrap_or_else(|e| panic!("http: {e:#}"));
        let ready = format!("{url}/readyz");
        eventually(
            Duration::from_secs(30),
            "the other gateway to be ready",
            || {
                let (http, ready) = (http.clone(), ready.clone());
                async move {
                    let response = http.get(&ready).send().await.ok()?;
                    response.status().is_success().then_some(())
                }
            },
        )
        .await;
        ExtraGateway {
            process,
            url,
            metrics_port,
        }
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
    // OTEL_BSP_SCHEDULE_DELAY: spans reach a test's collector within 100 ms (it
    // matters only with `otlp_endpoint`).
    command
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100");
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
