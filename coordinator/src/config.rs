//! The coordinator's configuration: one typed struct, loaded from a TOML file
//! (`--config`), then environment variables `PADDOCK_COORDINATOR_*` (nested keys with
//! `__`: `PADDOCK_COORDINATOR_NATS__URL`), then command-line flags, each overriding the
//! one before. Defaults run on one machine with nothing configured; [`validate`]
//! checks everything at start and names each bad key.
//!
//! Production: `database_url = "postgres://…"` when several coordinators or gateways
//! share the ledger; `nats.url` listing the cluster's servers; `streams.replicas = 3`.
//! Machines join through `[join]` (HTTPS, the NATS users file it keeps: see
//! [`crate::join`] and docs/JOINING.md); `[nats]` takes a password file, nkey, `.creds`
//! or token file and TLS settings (`paddock_bus::NatsSettings`).
//!
//! [`validate`]: CoordinatorConfig::validate

use clap::Parser;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use paddock_bus::{NatsSettings, StreamSettings};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Prefix of the environment variables the coordinator reads.
pub const ENV_PREFIX: &str = "PADDOCK_COORDINATOR_";

/// Everything the coordinator needs to run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CoordinatorConfig {
    pub nats: NatsSettings,
    pub streams: StreamSettings,
    /// The job ledger: `sqlite://PATH` (created if missing) or `postgres://…`.
    pub database_url: String,
    pub ledger_writer: LedgerWriterSettings,
    /// Address of the operations listener: `/metrics` (Prometheus), `/healthz`,
    /// `/readyz`. Port 0 picks a free port (logged at start).
    pub metrics_listen: SocketAddr,
    /// An OTLP/HTTP collector to export traces to (`http://127.0.0.1:4318`); none:
    /// nothing is exported, trace ids are still made and carried in NATS headers.
    pub otlp_endpoint: Option<String>,
    /// Log JSON lines instead of text.
    pub log_json: bool,
    /// Where machines join and the NATS users file kept for them (`[join]`); off
    /// unless `join.listen` is set.
    pub join: crate::join::JoinSettings,
    /// The control plane's actor cluster that node agents join (`[cluster]`); off
    /// unless `cluster.listen` is set.
    pub cluster: ClusterSettings,
}

/// The actor cluster's node server (ractor_cluster). Nodes authenticate with the
/// shared cluster secret; the session is TLS unless the operator explicitly accepts
/// plain TCP on a loopback address. Production: `listen = "0.0.0.0:9473"`,
/// `secret_file` (mode 0600), `cert_file` and `key_file`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// Address of the node server; none: no actor cluster (nodes still work, through
    /// NATS alone).
    pub listen: Option<SocketAddr>,
    /// A file readable by its owner only (mode 0600) holding the cluster secret that
    /// every node presents. Never logged.
    pub secret_file: Option<PathBuf>,
    /// TLS: the coordinator's certificate chain and its private key (PEM files).
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Accept plain TCP instead of TLS. Refused unless `listen` is a loopback address.
    pub insecure_loopback: bool,
}

/// Where the coordinator's metrics are scraped by default (`ops/prometheus/prometheus.yml`).
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9471);

impl Default for CoordinatorConfig {
    fn default() -> Self {
        CoordinatorConfig {
            nats: NatsSettings::default(),
            streams: StreamSettings::default(),
            database_url: "sqlite://.paddock/ledger.db".into(),
            ledger_writer: LedgerWriterSettings::default(),
            metrics_listen: DEFAULT_METRICS_LISTEN,
            otlp_endpoint: None,
            log_json: false,
            join: crate::join::JoinSettings::default(),
            cluster: ClusterSettings::default(),
        }
    }
}

/// How the ledger writer consumes the events stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LedgerWriterSettings {
    /// Events asked for in one pull request.
    pub batch_size: usize,
    /// An event the ledger has not acknowledged after this long is delivered again.
    #[serde(with = "duration_text")]
    pub ack_wait: Duration,
    /// How long an event waits for an earlier event of its job that has not reached
    /// the ledger yet (one lost in flight comes back after `ack_wait`) before it is
    /// applied anyway. Longer than `ack_wait`.
    #[serde(with = "duration_text")]
    pub gap_wait: Duration,
}

impl Default for LedgerWriterSettings {
    fn default() -> Self {
        LedgerWriterSettings {
            batch_size: 64,
            ack_wait: Duration::from_secs(30),
            gap_wait: Duration::from_secs(45),
        }
    }
}

/// Command-line flags. Values given here win over the file and the environment.
#[derive(Clone, Debug, Default, Parser)]
#[command(
    name = "paddock-coordinator",
    version,
    about = "Paddock's control plane: writes the job ledger from the events stream."
)]
pub struct Flags {
    /// A TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// NATS server URL(s), comma separated (overrides `nats.url`).
    #[arg(long, value_name = "URL")]
    pub nats_url: Option<String>,
    /// Ledger database URL (overrides `database_url`).
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Print the effective configuration as JSON (passwords hidden) and exit.
    #[arg(long)]
    pub print_config: bool,
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist or is not a file")]
    MissingFile(PathBuf),
    #[error("invalid configuration: {0}")]
    Load(String),
    #[error("invalid configuration: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

impl CoordinatorConfig {
    /// Defaults, then the file, then the environment, then flags; then [`validate`].
    ///
    /// [`validate`]: CoordinatorConfig::validate
    pub fn load(flags: &Flags) -> Result<CoordinatorConfig, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(CoordinatorConfig::default()));
        if let Some(path) = &flags.config {
            if !path.is_file() {
                return Err(ConfigError::MissingFile(path.clone()));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
        if let Some(url) = &flags.nats_url {
            figment = figment.merge(Serialized::default("nats.url", url));
        }
        if let Some(url) = &flags.database_url {
            figment = figment.merge(Serialized::default("database_url", url));
        }
        let config: CoordinatorConfig = figment.extract().map_err(|error| {
            let all: Vec<String> = error.into_iter().map(|e| e.to_string()).collect();
            ConfigError::Load(all.join("; "))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but cannot work. Every problem names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, key: &str, problem: String| {
            if !ok {
                problems.push(format!("{key}: {problem}"));
            }
        };
        let db = self.database_url.as_str();
        check(
            db.starts_with("sqlite:")
                || db.starts_with("postgres://")
                || db.starts_with("postgresql://"),
            "database_url",
            format!(
                "{} is neither sqlite://PATH nor postgres://…",
                paddock_ledger::redact_url(db)
            ),
        );
        check(
            !self.nats.url.trim().is_empty(),
            "nats.url",
            "is empty".into(),
        );
        check(
            (1..=5).contains(&self.streams.replicas),
            "streams.replicas",
            format!("{} is not between 1 and 5", self.streams.replicas),
        );
        check(
            self.streams.max_attempts >= 1,
            "streams.max_attempts",
            "must be at least 1".into(),
        );
        check(
            self.streams.max_message_bytes > 0,
            "streams.max_message_bytes",
            "must be positive".into(),
        );
        check(
            self.streams.events_max_bytes > 0,
            "streams.events_max_bytes",
            "must be positive".into(),
        );
        check(
            !self.streams.events_max_age.is_zero(),
            "streams.events_max_age",
            "must be longer than 0".into(),
        );
        check(
            !self.streams.ack_wait.is_zero(),
            "streams.ack_wait",
            "must be longer than 0".into(),
        );
        if let Some(endpoint) = &self.otlp_endpoint {
            check(
                endpoint.trim().is_empty()
                    || endpoint.starts_with("http://")
                    || endpoint.starts_with("https://"),
                "otlp_endpoint",
                format!("{endpoint:?} is not an http:// or https:// URL"),
            );
        }
        let writer = &self.ledger_writer;
        check(
            (1..=1000).contains(&writer.batch_size),
            "ledger_writer.batch_size",
            format!("{} is not between 1 and 1000", writer.batch_size),
        );
        check(
            writer.ack_wait >= Duration::from_secs(1),
            "ledger_writer.ack_wait",
            "must be at least 1s".into(),
        );
        check(
            writer.gap_wait > writer.ack_wait,
            "ledger_writer.gap_wait",
            format!(
                "{:?} must be longer than ledger_writer.ack_wait ({:?}): an event lost in flight comes back only after ack_wait",
                writer.gap_wait, writer.ack_wait
            ),
        );
        problems.extend(self.cluster.problems());
        problems.extend(self.nats.problems("nats"));
        problems.extend(self.join.problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// The configuration as JSON with the NATS password and any database password
    /// replaced by `***`, for `--print-config` and start-up logs.
    pub fn redacted_json(&self) -> String {
        let mut shown = self.clone();
        shown.nats = shown.nats.redacted();
        shown.database_url = paddock_ledger::redact_url(&shown.database_url);
        serde_json::to_string_pretty(&shown).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }
}

impl ClusterSettings {
    /// What cannot work, each naming its key.
    fn problems(&self) -> Vec<String> {
        let Some(listen) = self.listen else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        if self.secret_file.is_none() {
            problems.push("cluster.secret_file: required with cluster.listen".to_string());
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), Some(_)) => {}
            (Some(_), None) | (None, Some(_)) => problems
                .push("cluster.key_file: cluster.cert_file and cluster.key_file go together".into()),
            (None, None) if !self.insecure_loopback => problems.push(
                "cluster.cert_file: the actor cluster needs TLS (cluster.cert_file and cluster.key_file); \
                 plain TCP only with cluster.insecure_loopback = true on a loopback address"
                    .into(),
            ),
            (None, None) if !listen.ip().is_loopback() => problems.push(format!(
                "cluster.insecure_loopback: plain TCP is accepted only on a loopback address, not on {listen}; \
                 set cluster.cert_file and cluster.key_file"
            )),
            (None, None) => {}
        }
        problems
    }
}

/// Durations written as seconds (`ack_wait = 30`) or text with a unit (`"30s"`,
/// `"500ms"`, `"5m"`), as in the bus's stream settings.
mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Seconds(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => paddock_bus::parse_duration(&t).map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid() {
        CoordinatorConfig::default()
            .validate()
            .expect("defaults validate");
    }

    #[test]
    fn every_bad_value_is_reported_by_its_key() {
        let mut config = CoordinatorConfig {
            database_url: "mysql://u:hunter2@db/x".into(),
            ..CoordinatorConfig::default()
        };
        config.streams.replicas = 0;
        config.ledger_writer.gap_wait = Duration::from_secs(10);
        let message = config.validate().expect_err("invalid").to_string();
        for key in ["database_url", "streams.replicas", "ledger_writer.gap_wait"] {
            assert!(message.contains(key), "{key} missing from: {message}");
        }
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn telemetry_has_defaults_and_a_checked_endpoint() {
        let config = CoordinatorConfig::default();
        assert_eq!(config.metrics_listen.to_string(), "127.0.0.1:9471");
        assert_eq!(config.otlp_endpoint, None);
        assert!(!config.log_json);
        let config = CoordinatorConfig {
            otlp_endpoint: Some("collector:4318".into()),
            ..CoordinatorConfig::default()
        };
        let message = config.validate().expect_err("invalid").to_string();
        assert!(message.contains("otlp_endpoint"), "{message}");
        let config = CoordinatorConfig {
            otlp_endpoint: Some("http://collector:4318".into()),
            ..CoordinatorConfig::default()
        };
        config.validate().expect("an http URL is fine");
    }

    #[test]
    fn the_actor_cluster_needs_tls_or_plain_tcp_on_loopback_by_choice() {
        let with = |cluster: ClusterSettings| CoordinatorConfig {
            cluster,
            ..CoordinatorConfig::default()
        };
        let listen = |address: &str| Some(address.parse().expect("address"));
        with(ClusterSettings::default())
            .validate()
            .expect("off by default");
        let refused = |cluster: ClusterSettings, key: &str| {
            let message = with(cluster).validate().expect_err("refused").to_string();
            assert!(message.contains(key), "{key} missing from: {message}");
        };
        refused(
            ClusterSettings {
                listen: listen("127.0.0.1:9473"),
                ..ClusterSettings::default()
            },
            "cluster.secret_file",
        );
        // Plain TCP needs saying so, even on loopback...
        refused(
            ClusterSettings {
                listen: listen("127.0.0.1:9473"),
                secret_file: Some("secret".into()),
                ..ClusterSettings::default()
            },
            "cluster.cert_file",
        );
        // ...and is never accepted beyond it.
        refused(
            ClusterSettings {
                listen: listen("0.0.0.0:9473"),
                secret_file: Some("secret".into()),
                insecure_loopback: true,
                ..ClusterSettings::default()
            },
            "cluster.insecure_loopback",
        );
        refused(
            ClusterSettings {
                listen: listen("0.0.0.0:9473"),
                secret_file: Some("secret".into()),
                cert_file: Some("cert.pem".into()),
                ..ClusterSettings::default()
            },
            "cluster.key_file",
        );
        with(ClusterSettings {
            listen: listen("127.0.0.1:9473"),
            secret_file: Some("secret".into()),
            insecure_loopback: true,
            ..ClusterSettings::default()
        })
        .validate()
        .expect("plain on loopback, by choice");
        with(ClusterSettings {
            listen: listen("0.0.0.0:9473"),
            secret_file: Some("secret".into()),
            cert_file: Some("cert.pem".into()),
            key_file: Some("key.pem".into()),
            ..ClusterSettings::default()
        })
        .validate()
        .expect("TLS anywhere");
    }

    #[test]
    fn the_printed_config_hides_passwords() {
        let mut config = CoordinatorConfig {
            database_url: "postgres://paddock:hunter2@db/paddock".into(),
            ..CoordinatorConfig::default()
        };
        config.nats.user = Some("coordinator".into());
        config.nats.password = Some("hunter2".into());
        let shown = config.redacted_json();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("coordinator"));
    }
}
