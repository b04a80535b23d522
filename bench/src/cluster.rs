//! The benchmark's own loopback cluster: a nats-server from `paddock_testkit`, the
//! coordinator and the gateway on a SQLite ledger, and one or more node agents
//! (`node-a`, `node-b`, …) in the same pool, each running the fake agent. Config files
//! are written the way the cross-component tests write them; every process is a
//! `ChildProcess`, killed when the cluster is dropped. Only 127.0.0.1 is used.

use crate::api::{Api, PROJECT};
use anyhow::{Context, bail};
use paddock_testkit::{ChildProcess, NatsServer, free_port};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Users of the gateway; each throughput run uses its own so that its jobs can be
/// listed apart (a plain user sees only the jobs they submitted).
pub const USERS: [(&str, &str); 4] = [
    ("bench-dispatch", "bench-token-dispatch-0123456789"),
    ("bench-run-1", "bench-token-run-1-0123456789"),
    ("bench-run-2", "bench-token-run-2-0123456789"),
    ("bench-warm", "bench-token-warm-0123456789"),
];

/// Where the workspace's binaries are and what plays the agent.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub dir: PathBuf,
}

impl Binaries {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Fails with a useful message when a binary the cluster needs is not built.
    pub fn check(&self) -> anyhow::Result<()> {
        for name in [
            "paddock-coordinator",
            "paddock-gateway",
            "paddock-node",
            "paddock-fake-agent",
        ] {
            let path = self.path(name);
            if !path.is_file() {
                bail!(
                    "{} is missing: build the binaries first (cargo build [--release] --bins)",
                    path.display()
                );
            }
        }
        let nats = paddock_testkit::tools_bin().join("nats-server");
        if !nats.is_file() {
            bail!("{} is missing: run ops/install-deps.sh", nats.display());
        }
        Ok(())
    }
}

pub struct Cluster {
    pub url: String,
    pub project_dir: PathBuf,
    binaries: Binaries,
    slots: usize,
    /// Dropped first: the node agents, then the services, then NATS.
    nodes: Vec<ChildProcess>,
    gateway: ChildProcess,
    coordinator: ChildProcess,
    nats: NatsServer,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts NATS, the coordinator, the gateway and one node agent with `slots`, and
    /// waits until the gateway answers `/readyz` and the node says it is ready.
    pub async fn start(binaries: Binaries, slots: usize) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("paddock-bench-")
            .tempdir()
            .context("temp dir")?;
        let project_dir = dir.path().join("projects").join(PROJECT);
        std::fs::create_dir_all(&project_dir).context("creating the project folder")?;
        let nats = NatsServer::start().await;
        let database_url = format!("sqlite://{}", dir.path().join("ledger.db").display());

        let coordinator_file = dir.path().join("coordinator.toml");
        write(
            &coordinator_file,
            &format!(
                "database_url = {}\nmetrics_listen = \"127.0.0.1:0\"\n[nats]\nurl = {}\n",
                quote(&database_url),
                quote(&nats.url())
            ),
        )?;
        let port = free_port();
        let mut gateway_config = format!(
            "listen = \"127.0.0.1:{port}\"\ndatabase_url = {}\n[nats]\nurl = {}\n",
            quote(&database_url),
            quote(&nats.url())
        );
        for (user, token) in USERS {
            gateway_config.push_str(&format!(
                "[[api_tokens]]\nuser = \"{user}\"\ntoken = \"{token}\"\n"
            ));
        }
        gateway_config.push_str(&format!("[[projects]]\nname = \"{PROJECT}\"\n"));
        let gateway_file = dir.path().join("gateway.toml");
        write(&gateway_file, &gateway_config)?;

        let coordinator = start_binary(&binaries, "paddock-coordinator", &coordinator_file);
        let gateway = start_binary(&binaries, "paddock-gateway", &gateway_file);
        let url = format!("http://127.0.0.1:{port}");
        let mut cluster = Cluster {
            url,
            project_dir,
            binaries,
            slots,
            nodes: Vec::new(),
            gateway,
            coordinator,
            nats,
            dir,
        };
        cluster.wait_ready().await?;
        cluster.start_nodes(1).await?;
        Ok(cluster)
    }

    /// A client of the gateway as user `index` of [`USERS`].
    pub fn client(&self, index: usize) -> anyhow::Result<Api> {
        Api::new(&self.url, self.token(index)?)
    }

    pub fn token(&self, index: usize) -> anyhow::Result<&'static str> {
        USERS
            .get(index)
            .map(|(_, token)| *token)
            .context("no such benchmark user")
    }

    /// The cluster's temporary folder.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Stops every node agent (SIGTERM: an idle node stops at once).
    pub fn stop_nodes(&mut self) {
        for node in &mut self.nodes {
            node.terminate(Duration::from_secs(10));
        }
        self.nodes.clear();
    }

    /// Starts node agents until `count` run (`node-a`, `node-b`, …, all in the same
    /// pool), each waited for until it logs that it is ready.
    pub async fn start_nodes(&mut self, count: usize) -> anyhow::Result<()> {
        while self.nodes.len() < count {
            self.add_node().await?;
        }
        Ok(())
    }

    /// Starts one more node agent and waits for it to log that it is ready.
    async fn add_node(&mut self) -> anyhow::Result<()> {
        let name = node_name(self.nodes.len());
        let home = self.dir.path().join(format!("agent-home-{name}"));
        std::fs::create_dir_all(&home).context("creating the agent's home")?;
        let config = format!(
            "name = \"{name}\"\npool = \"default\"\nslots = {}\nmetrics_listen = \"127.0.0.1:0\"\n\
             [sandbox]\nmode = \"off\"\n\
             [nats]\nurl = {}\n\
             [agent]\nprogram = {}\nhome = {}\nanthropic_api_key = \"bench\"\n\
             [[projects]]\nname = \"{PROJECT}\"\npath = {}\n",
            self.slots,
            quote(&self.nats.url()),
            quote(
                &self
                    .binaries
                    .path("paddock-fake-agent")
                    .display()
                    .to_string()
            ),
            quote(&home.display().to_string()),
            quote(&self.project_dir.display().to_string()),
        );
        let file = self.dir.path().join(format!("{name}.toml"));
        write(&file, &config)?;
        let node = start_binary(&self.binaries, "paddock-node", &file);
        self.nodes.push(node);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let Some(node) = self.nodes.last_mut() else {
                bail!("the node list is empty");
            };
            if node.output().contains("node agent ready") {
                return Ok(());
            }
            if !node.is_running() {
                bail!("{name} exited at start:\n{}", node.output());
            }
            if Instant::now() >= deadline {
                bail!("{name} was not ready within 30 s:\n{}", node.output());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let ready = format!("{}/readyz", self.url);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .context("HTTP client")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = http.get(&ready).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            for (name, process) in [
                ("gateway", &mut self.gateway),
                ("coordinator", &mut self.coordinator),
            ] {
                if !process.is_running() {
                    bail!("the {name} exited at start:\n{}", process.output());
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "the gateway was not ready within 30 s:\n{}",
                    self.gateway.output()
                );
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Process ids of nats-server, the services and the nodes, with their names.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let mut pids = Vec::new();
        if let Some(pid) = crate::cpu::child_named("nats-server") {
            pids.push(("nats-server".to_string(), pid));
        }
        let named = [
            ("gateway", &self.gateway),
            ("coordinator", &self.coordinator),
        ];
        for (name, process) in named {
            if let Some(pid) = process.pid() {
                pids.push((name.to_string(), pid));
            }
        }
        for (i, node) in self.nodes.iter().enumerate() {
            if let Some(pid) = node.pid() {
                pids.push((node_name(i), pid));
            }
        }
        pids
    }

    /// The logs of every process, for a failure report.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        let named = [
            ("gateway", &self.gateway),
            ("coordinator", &self.coordinator),
        ];
        for (name, process) in named {
            text.push_str(&format!(
                "----- {name} -----\n{}\n",
                tail(&process.output())
            ));
        }
        for (i, node) in self.nodes.iter().enumerate() {
            text.push_str(&format!("----- node {i} -----\n{}\n", tail(&node.output())));
        }
        text
    }
}

impl Drop for Cluster {
    /// Node agents get a SIGTERM first (a graceful stop hands running work back at
    /// once); whatever is left is killed by the `ChildProcess` handles.
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.terminate(Duration::from_secs(5));
        }
        self.gateway.terminate(Duration::from_secs(5));
        self.coordinator.terminate(Duration::from_secs(5));
    }
}

/// `node-a`, `node-b`, … for the `index`th node.
fn node_name(index: usize) -> String {
    let letter = char::from(b'a' + u8::try_from(index.min(25)).unwrap_or(25));
    format!("node-{letter}")
}

/// The last 40 lines of a log.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(40);
    lines[start..].join("\n")
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn start_binary(binaries: &Binaries, name: &str, config: &Path) -> ChildProcess {
    let mut command = Command::new(binaries.path(name));
    // The level a deployment runs with by default: its logging is part of the cost.
    command.arg("--config").arg(config).env("RUST_LOG", "info");
    ChildProcess::spawn(name, command)
}
