//! The node agent's configuration: one typed struct, read from a TOML file, then
//! `PADDOCK_NODE_*` environment variables (nested keys with `__`, e.g.
//! `PADDOCK_NODE_NATS__URL`), then command-line flags; validated at start with
//! messages that name the bad key. Defaults run one node on one machine.
//! `paddock-node join` writes a first config (name, pool, labels, `[nats]` with the
//! node's own nkey seed file) from the coordinator's answer (`crate::join`).

use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use paddock_bus::{NatsSettings, StreamSettings};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's name: unique in the paddock, letters, digits, `-` and `_`.
    pub name: String,
    /// The pool whose jobs this node takes.
    pub pool: String,
    /// Jobs run at once.
    pub slots: usize,
    /// Labels the node carries (capabilities such as an Xcode version), shown in
    /// `paddock nodes`.
    pub labels: BTreeMap<String, String>,
    /// Seconds between heartbeats (and reconciliations with the desired state).
    pub heartbeat_interval_secs: u64,
    /// Seconds after its last heartbeat that a node counts as lost.
    pub heartbeat_ttl_secs: u64,
    pub nats: NatsSettings,
    pub streams: StreamSettings,
    pub agent: AgentConfig,
    pub projects: Vec<ProjectConfig>,
    /// How the agent is contained (`[sandbox]`); `mode = "off"` is the operator's
    /// explicit opt-out.
    pub sandbox: paddock_sandbox::SandboxSettings,
    /// The egress proxy's base allowlist (`[proxy]`): the model API by default.
    pub proxy: paddock_sandbox::proxy::ProxyConfig,
    /// Seconds between in-progress acks of a running job (under `streams.ack_wait`).
    pub progress_interval_secs: u64,
    /// Seconds between SIGTERM and SIGKILL when a job is stopped.
    pub kill_grace_secs: u64,
    /// Wall-clock limit of one job, in seconds (0: none).
    pub max_job_secs: u64,
    /// On a graceful stop, how long running jobs may finish before they are handed back.
    pub shutdown_grace_secs: u64,
    /// Seconds one pull for jobs waits.
    pub fetch_wait_secs: u64,
    /// Restarts of a CLI that dies without a result, and the first back-off in
    /// milliseconds (doubling up to `max_restart_backoff_ms`).
    pub max_restarts: u32,
    pub restart_backoff_ms: u64,
    pub max_restart_backoff_ms: u64,
    /// Retries of a turn the model API failed (overload, rate limit).
    pub max_api_retries: u32,
    /// Seconds an approval request waits for an answer when the job does not say.
    pub approval_timeout_secs: u64,
    /// Longest idle time a job may ask for, in seconds.
    pub max_idle_secs: u64,
    /// Test builds only: lets a test make a session actor panic. Never in production.
    pub fault_injection: bool,
    /// Most bytes of output one job's CLI may write.
    pub max_output_bytes: u64,
    /// Address of the operations listener: `/metrics` (Prometheus), `/healthz`,
    /// `/readyz`. Port 0 picks a free port (logged at start).
    pub metrics_listen: SocketAddr,
    /// An OTLP/HTTP collector to export traces to (`http://127.0.0.1:4318`); none:
    /// nothing is exported, trace ids are still made and carried in NATS headers.
    pub otlp_endpoint: Option<String>,
    /// Log JSON lines instead of text.
    pub log_json: bool,
    /// The control plane's actor cluster (`[cluster]`): off unless
    /// `cluster.coordinator` is set.
    pub cluster: ClusterConfig,
}

/// How the node joins the coordinator's actor cluster (ractor_cluster): a fast path
/// for drain and cordon, and membership the coordinator can see. Without it the node
/// works as well, through NATS alone. Production: `coordinator = "coordinator:9473"`,
/// `secret_file` (mode 0600) and `ca_file`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The coordinator's node server, `host:port`.
    pub coordinator: Option<String>,
    /// A file readable by its owner only holding the cluster secret. Never logged.
    pub secret_file: Option<PathBuf>,
    /// The CA certificate (PEM) the coordinator's certificate is checked against.
    pub ca_file: Option<PathBuf>,
    /// The name the coordinator's certificate must carry; the host of `coordinator`
    /// when not set.
    pub server_name: Option<String>,
    /// Join over plain TCP instead of TLS: only to a loopback address.
    pub insecure_loopback: bool,
}

impl ClusterConfig {
    /// The coordinator's host and port, when the actor cluster is on.
    pub fn coordinator_address(&self) -> anyhow::Result<Option<(String, u16)>> {
        let Some(address) = self.coordinator.as_deref() else {
            return Ok(None);
        };
        let parsed = address.rsplit_once(':').and_then(|(host, port)| {
            let host = host.trim_start_matches('[').trim_end_matches(']');
            Some((host.to_string(), port.parse::<u16>().ok()?)).filter(|(h, _)| !h.is_empty())
        });
        match parsed {
            Some(found) => Ok(Some(found)),
            None => bail!("cluster.coordinator: {address:?} is not host:port"),
        }
    }

    /// Checks what serde cannot; names the key at fault.
    pub fn validate(&self) -> anyhow::Result<()> {
        let Some((host, _)) = self.coordinator_address()? else {
            return Ok(());
        };
        if self.secret_file.is_none() {
            bail!("cluster.secret_file: required with cluster.coordinator");
        }
        if self.ca_file.is_none() {
            if !self.insecure_loopback {
                bail!(
                    "cluster.ca_file: the actor cluster needs TLS (the CA of the coordinator's certificate); \
                     plain TCP only with cluster.insecure_loopback = true to a loopback address"
                );
            }
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                bail!(
                    "cluster.insecure_loopback: plain TCP only to a loopback address, not to {host}; set cluster.ca_file"
                );
            }
        }
        Ok(())
    }
}

/// Where the node's metrics are scraped by default (`ops/prometheus/prometheus.yml`).
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9472);

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// The Claude Code executable.
    pub program: PathBuf,
    /// HOME of the agent (its sessions are kept below it).
    pub home: PathBuf,
    /// The model credential: an API key, or the long-lived token of `claude
    /// setup-token` for a subscription. Read from the node's own environment
    /// (`ANTHROPIC_API_KEY`, `CLAUDE_CODE_OAUTH_TOKEN`) when not set here.
    pub anthropic_api_key: Option<String>,
    pub claude_code_oauth_token: Option<String>,
    /// A file readable by its owner only that holds the credential (what a system
    /// service uses; `PADDOCK_NODE_CREDENTIAL_FILE` names it too).
    pub credential_file: Option<PathBuf>,
    /// Another address for the Messages API (a proxy, or the test double).
    pub anthropic_base_url: Option<String>,
    /// Variables of the node's environment passed to the agent; nothing else is.
    pub pass_env: Vec<String>,
    /// Variables set for the agent.
    pub env: BTreeMap<String, String>,
    /// Tools every job may use without approval.
    pub allowed_tools: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    pub name: String,
    pub path: PathBuf,
    #[serde(default)]
    pub allowed_tools: Vec<String>,
    /// Hosts this project's jobs may reach through the egress proxy besides the base
    /// allowlist (a package registry: `registry.npmjs.org`).
    #[serde(default)]
    pub hosts: Vec<String>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            name: default_node_name(),
            pool: "default".into(),
            slots: 2,
            labels: BTreeMap::new(),
            heartbeat_interval_secs: 5,
            heartbeat_ttl_secs: 20,
            nats: NatsSettings::default(),
            streams: StreamSettings::default(),
            agent: AgentConfig::default(),
            projects: Vec::new(),
            sandbox: paddock_sandbox::SandboxSettings::default(),
            proxy: paddock_sandbox::proxy::ProxyConfig::default(),
            progress_interval_secs: 10,
            kill_grace_secs: 5,
            max_job_secs: 3600,
            shutdown_grace_secs: 30,
            fetch_wait_secs: 5,
            max_restarts: 3,
            restart_backoff_ms: 1000,
            max_restart_backoff_ms: 30_000,
            max_api_retries: 3,
            approval_timeout_secs: 300,
            max_idle_secs: 3600,
            fault_injection: false,
            max_output_bytes: 64 * 1024 * 1024,
            metrics_listen: DEFAULT_METRICS_LISTEN,
            otlp_endpoint: None,
            log_json: false,
            cluster: ClusterConfig::default(),
        }
    }
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            program: "claude".into(),
            home: ".paddock/agent-home".into(),
            anthropic_api_key: None,
            claude_code_oauth_token: None,
            credential_file: None,
            anthropic_base_url: None,
            pass_env: ["PATH", "LANG", "LC_ALL", "TZ", "TERM"]
                .into_iter()
                .map(String::from)
                .collect(),
            env: BTreeMap::new(),
            allowed_tools: Vec::new(),
        }
    }
}

fn default_node_name() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| paddock_contract::subjects::is_valid_token(h))
        .unwrap_or_else(|| "node-1".into())
}

impl NodeConfig {
    /// Defaults, then the file (if any), then the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<NodeConfig> {
        let mut figment = Figment::from(Serialized::defaults(NodeConfig::default()));
        if let Some(file) = file {
            if !file.exists() {
                bail!("config file {} does not exist", file.display());
            }
            figment = figment.merge(Toml::file(file));
        }
        let config: NodeConfig = figment
            .merge(Env::prefixed("PADDOCK_NODE_").split("__"))
            .extract()
            .map_err(|e| anyhow::anyhow!("invalid node configuration: {e}"))?;
        Ok(config)
    }

    /// Checks what serde cannot; names the key at fault.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !paddock_contract::subjects::is_valid_token(&self.name) {
            bail!(
                "name: {:?} must be 1-64 letters, digits, '-' or '_'",
                self.name
            );
        }
        if !paddock_contract::subjects::is_valid_token(&self.pool) {
            bail!(
                "pool: {:?} must be 1-64 letters, digits, '-' or '_'",
                self.pool
            );
        }
        if self.slots == 0 {
            bail!("slots: must be at least 1");
        }
        if let Some(problem) = self.nats.problems("nats").into_iter().next() {
            bail!("{problem}");
        }
        if self.heartbeat_interval_secs == 0
            || self.heartbeat_ttl_secs < 2 * self.heartbeat_interval_secs
        {
            bail!(
                "heartbeat_ttl_secs: {} must be at least twice heartbeat_interval_secs ({}, at least 1)",
                self.heartbeat_ttl_secs,
                self.heartbeat_interval_secs
            );
        }
        let ack_wait = self.streams.ack_wait.as_secs();
        if self.progress_interval_secs == 0 || self.progress_interval_secs * 2 > ack_wait {
            bail!(
                "progress_interval_secs: {} must be at least 1 and at most half of streams.ack_wait ({ack_wait} s)",
                self.progress_interval_secs
            );
        }
        if let Some(endpoint) = &self.otlp_endpoint
            && !endpoint.trim().is_empty()
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            bail!("otlp_endpoint: {endpoint:?} must be an http:// or https:// URL");
        }
        self.cluster.validate()?;
        let mut names = std::collections::BTreeSet::new();
        for (i, project) in self.projects.iter().enumerate() {
            if !names.insert(project.name.as_str()) {
                bail!("projects[{i}].name: {:?} appears twice", project.name);
            }
            if !project.path.is_dir() {
                bail!(
                    "projects[{i}].path: {} is not a directory",
                    project.path.display()
                );
            }
        }
        self.credential()
            .map(|_| ())
            .context("agent: no model credential")
    }

    /// The model credential as `(variable, value)`.
    pub fn credential(&self) -> anyhow::Result<(&'static str, String)> {
        let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let file = self
            .agent
            .credential_file
            .clone()
            .or_else(|| from_env("PADDOCK_NODE_CREDENTIAL_FILE").map(PathBuf::from));
        if let Some(file) = file {
            return crate::service::read_credential_file(&file);
        }
        if let Some(key) = self
            .agent
            .anthropic_api_key
            .clone()
            .or_else(|| from_env("ANTHROPIC_API_KEY"))
        {
            return Ok(("ANTHROPIC_API_KEY", key));
        }
        if let Some(token) = self
            .agent
            .claude_code_oauth_token
            .clone()
            .or_else(|| from_env("CLAUDE_CODE_OAUTH_TOKEN"))
        {
            return Ok(("CLAUDE_CODE_OAUTH_TOKEN", token));
        }
        bail!(
            "set agent.anthropic_api_key or ANTHROPIC_API_KEY, or agent.claude_code_oauth_token or \
             CLAUDE_CODE_OAUTH_TOKEN (from `claude setup-token`), or agent.credential_file; a daemon \
             cannot read a login keychain"
        )
    }

    /// The agent's environment: the passed-through variables, the configured ones, the
    /// credential and the API address.
    pub fn agent_env(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let mut env = BTreeMap::new();
        for name in &self.agent.pass_env {
            if let Ok(value) = std::env::var(name) {
                env.insert(name.clone(), value);
            }
        }
        env.extend(self.agent.env.clone());
        env.insert(
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(),
            "1".into(),
        );
        let (name, value) = self.credential()?;
        env.insert(name.into(), value);
        let base_url = self
            .agent
            .anthropic_base_url
            .clone()
            .or_else(|| std::env::var("ANTHROPIC_BASE_URL").ok());
        if let Some(url) = base_url {
            env.insert("ANTHROPIC_BASE_URL".into(), url);
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_but_for_the_credential() {
        let mut config = NodeConfig::default();
        config.agent.anthropic_api_key = Some("k".into());
        config.validate().expect("valid");
    }

    #[test]
    fn bad_keys_are_named() {
        let mut config = NodeConfig::default();
        config.agent.anthropic_api_key = Some("k".into());
        config.slots = 0;
        assert!(
            config
                .validate()
                .expect_err("must be refused")
                .to_string()
                .contains("slots")
        );
        let mut config = NodeConfig::default();
        config.agent.anthropic_api_key = Some("k".into());
        config.name = "a.b".into();
        assert!(
            config
                .validate()
                .expect_err("must be refused")
                .to_string()
                .contains("name")
        );
        let mut config = NodeConfig::default();
        config.agent.anthropic_api_key = Some("k".into());
        config.projects.push(ProjectConfig {
            name: "p".into(),
            path: "/does/not/exist".into(),
            allowed_tools: vec![],
            hosts: vec![],
        });
        assert!(
            config
                .validate()
                .expect_err("must be refused")
                .to_string()
                .contains("projects[0].path")
        );
    }

    #[test]
    fn telemetry_keys_are_read_and_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("node.toml");
        std::fs::write(
            &file,
            "metrics_listen = \"0.0.0.0:9999\"\notlp_endpoint = \"http://collector:4318\"\nlog_json = true\n",
        )
        .expect("write");
        let mut config = NodeConfig::load(Some(&file)).expect("loads");
        assert_eq!(config.metrics_listen.port(), 9999);
        assert_eq!(
            config.otlp_endpoint.as_deref(),
            Some("http://collector:4318")
        );
        assert!(config.log_json);
        assert_eq!(NodeConfig::default().metrics_listen, DEFAULT_METRICS_LISTEN);
        assert_eq!(DEFAULT_METRICS_LISTEN.to_string(), "127.0.0.1:9472");

        config.agent.anthropic_api_key = Some("k".into());
        config.otlp_endpoint = Some("collector:4318".into());
        let err = config.validate().expect_err("must be refused").to_string();
        assert!(err.contains("otlp_endpoint"), "{err}");

        std::fs::write(&file, "metrics_listen = \"not an address\"\n").expect("write");
        let err = NodeConfig::load(Some(&file))
            .expect_err("must be refused")
            .to_string();
        assert!(err.contains("metrics_listen"), "{err}");
    }

    #[test]
    fn the_actor_cluster_needs_tls_or_plain_tcp_to_loopback_by_choice() {
        let check = |cluster: ClusterConfig| {
            let mut config = NodeConfig::default();
            config.agent.anthropic_api_key = Some("k".into());
            config.cluster = cluster;
            config.validate().map_err(|e| e.to_string())
        };
        check(ClusterConfig::default()).expect("off by default");
        let coordinator = |address: &str| Some(address.to_string());
        let refused = |cluster: ClusterConfig, key: &str| {
            let message = check(cluster).expect_err("refused");
            assert!(message.contains(key), "{key} missing from: {message}");
        };
        refused(
            ClusterConfig {
                coordinator: coordinator("coordinator"),
                ..ClusterConfig::default()
            },
            "cluster.coordinator",
        );
        refused(
            ClusterConfig {
                coordinator: coordinator("127.0.0.1:9473"),
                ..ClusterConfig::default()
            },
            "cluster.secret_file",
        );
        refused(
            ClusterConfig {
                coordinator: coordinator("127.0.0.1:9473"),
                secret_file: Some("secret".into()),
                ..ClusterConfig::default()
            },
            "cluster.ca_file",
        );
        refused(
            ClusterConfig {
                coordinator: coordinator("coordinator.lan:9473"),
                secret_file: Some("secret".into()),
                insecure_loopback: true,
                ..ClusterConfig::default()
            },
            "cluster.insecure_loopback",
        );
        for loopback in ["127.0.0.1:9473", "localhost:9473", "[::1]:9473"] {
            check(ClusterConfig {
                coordinator: coordinator(loopback),
                secret_file: Some("secret".into()),
                insecure_loopback: true,
                ..ClusterConfig::default()
            })
            .unwrap_or_else(|e| panic!("{loopback}: {e}"));
        }
        check(ClusterConfig {
            coordinator: coordinator("coordinator.lan:9473"),
            secret_file: Some("secret".into()),
            ca_file: Some("ca.pem".into()),
            ..ClusterConfig::default()
        })
        .expect("TLS anywhere");
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("node.toml");
        std::fs::write(&file, "slotz = 3\n").expect("write");
        let err = NodeConfig::load(Some(&file))
            .expect_err("must be refused")
            .to_string();
        assert!(err.contains("slotz"), "{err}");
    }
}
