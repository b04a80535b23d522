//! The gateway's configuration: one typed struct, loaded from a TOML file (`--config`),
//! then the environment (`PADDOCK_GATEWAY_…`, nested keys joined by `__`, e.g.
//! `PADDOCK_GATEWAY_NATS__URL`), then command-line flags, each overriding the one
//! before. [`GatewayConfig::validate`] runs at start and names the bad key; unknown
//! keys are refused by serde. Defaults work on one machine; what to change for a
//! multi-machine paddock is said beside each field.

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use paddock_bus::{NatsSettings, StreamSettings};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

/// Prefix of the environment variables the gateway reads.
pub const ENV_PREFIX: &str = "PADDOCK_GATEWAY_";

/// Room a job message and a queued event need beyond the prompt itself.
const MESSAGE_OVERHEAD_BYTES: usize = 16 * 1024;

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address the HTTP server binds. Behind a load balancer or on a LAN: `0.0.0.0:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default)]
    pub nats: NatsSettings,
    /// Must be the same in every service of one paddock.
    #[serde(default)]
    pub streams: StreamSettings,
    /// The job ledger: `sqlite:///abs/path/ledger.db` on one machine,
    /// `postgres://…` when several gateways or coordinators run.
    #[serde(default)]
    pub database_url: String,
    /// Static bearer tokens, one per user. Replaced by accounts and JWTs later.
    #[serde(default)]
    pub api_tokens: Vec<ApiToken>,
    /// Projects jobs may be submitted to, and the pool that runs each.
    #[serde(default)]
    pub projects: Vec<ProjectConfig>,
    /// Largest prompt accepted, in bytes (UTF-8).
    #[serde(default = "default_max_prompt_bytes")]
    pub max_prompt_bytes: usize,
    /// Largest request body accepted, in bytes.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

/// A bearer token and the user it authenticates. `Debug` never shows the token.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    pub user: String,
    pub token: String,
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken")
            .field("user", &self.user)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// A project jobs can be submitted to.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectConfig {
    pub name: String,
    /// The pool of nodes that runs this project's jobs.
    #[serde(default = "default_pool")]
    pub pool: String,
    #[serde(default)]
    pub description: String,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

fn default_pool() -> String {
    "default".into()
}

fn default_max_prompt_bytes() -> usize {
    100_000
}

fn default_max_body_bytes() -> usize {
    256 * 1024
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            listen: default_listen(),
            nats: NatsSettings::default(),
            streams: StreamSettings::default(),
            database_url: String::new(),
            api_tokens: Vec::new(),
            projects: Vec::new(),
            max_prompt_bytes: default_max_prompt_bytes(),
            max_body_bytes: default_max_body_bytes(),
        }
    }
}

/// Values given as command-line flags; `None` leaves the file and environment alone.
#[derive(Clone, Debug, Default)]
pub struct ConfigOverrides {
    pub listen: Option<SocketAddr>,
    pub nats_url: Option<String>,
    pub database_url: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {0} does not exist")]
    MissingFile(String),
    #[error("invalid configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    #[error("invalid configuration: `{key}` {problem}")]
    Invalid { key: String, problem: String },
}

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

impl GatewayConfig {
    /// File, then environment, then flags; then [`GatewayConfig::validate`].
    pub fn load(file: Option<&Path>, overrides: &ConfigOverrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::MissingFile(path.display().to_string()));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed(ENV_PREFIX).split("__"));
        Self::from_figment(with_overrides(figment, overrides))
    }

    /// Extracts and validates a config from any figment (tests use TOML strings).
    pub fn from_figment(figment: Figment) -> Result<Self, ConfigError> {
        let config: GatewayConfig = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// The checks made at start. Each error names the key at fault.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.database_url.trim().is_empty() {
            return Err(invalid(
                "database_url",
                "is not set (for example sqlite:///var/lib/paddock/ledger.db)",
            ));
        }
        if self.api_tokens.is_empty() {
            return Err(invalid(
                "api_tokens",
                "is empty: nobody could use the gateway",
            ));
        }
        let mut tokens = HashSet::new();
        for (i, entry) in self.api_tokens.iter().enumerate() {
            if entry.user.trim().is_empty() || entry.user.chars().any(char::is_control) {
                return Err(invalid(
                    format!("api_tokens[{i}].user"),
                    "is empty or has control characters",
                ));
            }
            if entry.token.is_empty() {
                return Err(invalid(format!("api_tokens[{i}].token"), "is empty"));
            }
            if entry
                .token
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(invalid(
                    format!("api_tokens[{i}].token"),
                    "has whitespace or control characters, which a bearer header cannot carry",
                ));
            }
            if !tokens.insert(entry.token.as_str()) {
                return Err(invalid(
                    format!("api_tokens[{i}].token"),
                    "is the same as an earlier entry's token",
                ));
            }
        }
        if self.projects.is_empty() {
            return Err(invalid("projects", "is empty: no job could be submitted"));
        }
        let mut names = HashSet::new();
        for (i, project) in self.projects.iter().enumerate() {
            let name = &project.name;
            if name.trim().is_empty()
                || name.trim() != name
                || name.len() > 128
                || name.chars().any(char::is_control)
            {
                return Err(invalid(
                    format!("projects[{i}].name"),
                    "must be 1 to 128 bytes without control characters or surrounding spaces",
                ));
            }
            if !names.insert(name.as_str()) {
                return Err(invalid(
                    format!("projects[{i}].name"),
                    format!("repeats the project name {name:?}"),
                ));
            }
            if !paddock_contract::subjects::is_valid_token(&project.pool) {
                return Err(invalid(
                    format!("projects[{i}].pool"),
                    "must be 1 to 64 letters, digits, '-' or '_'",
                ));
            }
        }
        if self.max_prompt_bytes == 0 {
            return Err(invalid("max_prompt_bytes", "must be above 0"));
        }
        if self.max_body_bytes <= self.max_prompt_bytes {
            return Err(invalid(
                "max_body_bytes",
                format!(
                    "({}) must be larger than max_prompt_bytes ({}) so the largest prompt fits in a request",
                    self.max_body_bytes, self.max_prompt_bytes
                ),
            ));
        }
        let max_message = usize::try_from(self.streams.max_message_bytes).unwrap_or(0);
        if self.max_prompt_bytes + MESSAGE_OVERHEAD_BYTES > max_message {
            return Err(invalid(
                "max_prompt_bytes",
                format!(
                    "({}) plus {MESSAGE_OVERHEAD_BYTES} bytes of envelope must fit in streams.max_message_bytes ({})",
                    self.max_prompt_bytes, self.streams.max_message_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The project named `name`, if configured.
    pub fn project(&self, name: &str) -> Option<&ProjectConfig> {
        self.projects.iter().find(|p| p.name == name)
    }
}

fn with_overrides(mut figment: Figment, overrides: &ConfigOverrides) -> Figment {
    if let Some(listen) = overrides.listen {
        figment = figment.merge(("listen", listen.to_string()));
    }
    if let Some(url) = &overrides.nats_url {
        figment = figment.merge(("nats.url", url));
    }
    if let Some(url) = &overrides.database_url {
        figment = figment.merge(("database_url", url));
    }
    figment
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        database_url = "sqlite:///tmp/ledger.db"
        api_tokens = [{ user = "ada", token = "secret-1" }, { user = "bob", token = "secret-2" }]
        projects = [{ name = "web" }, { name = "api", pool = "big", description = "the API" }]
    "#;

    fn parse(toml: &str) -> Result<GatewayConfig, ConfigError> {
        GatewayConfig::from_figment(Figment::new().merge(Toml::string(toml)))
    }

    fn error_of(toml: &str) -> String {
        match parse(toml) {
            Ok(_) => panic!("config was accepted:\n{toml}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn a_minimal_config_gets_one_machine_defaults() {
        let config = parse(GOOD).expect("valid");
        assert_eq!(config.listen, default_listen());
        assert_eq!(config.max_prompt_bytes, 100_000);
        assert_eq!(config.max_body_bytes, 256 * 1024);
        assert_eq!(
            config.project("web").map(|p| p.pool.as_str()),
            Some("default")
        );
        assert_eq!(config.project("api").map(|p| p.pool.as_str()), Some("big"));
        assert!(config.project("nope").is_none());
    }

    #[test]
    fn unknown_keys_are_named() {
        let message = error_of(&format!("{GOOD}\nlisten_adress = \"0.0.0.0:1\""));
        assert!(message.contains("listen_adress"), "{message}");
        let message = error_of(&format!("{GOOD}\n[nats]\nurll = \"x\""));
        assert!(message.contains("urll"), "{message}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            (
                r#"database_url = "sqlite:///x"
                   api_tokens = [{ user = "ada", token = "" }]
                   projects = [{ name = "web" }]"#,
                "api_tokens[0].token",
            ),
            (
                r#"database_url = "sqlite:///x"
                   api_tokens = [{ user = "ada", token = "t" }, { user = "bob", token = "t" }]
                   projects = [{ name = "web" }]"#,
                "api_tokens[1].token",
            ),
            (
                r#"database_url = "sqlite:///x"
                   api_tokens = [{ user = "ada", token = "t" }]
                   projects = [{ name = "web" }, { name = "web" }]"#,
                "projects[1].name",
            ),
            (
                r#"database_url = "sqlite:///x"
                   api_tokens = [{ user = "ada", token = "t" }]
                   projects = [{ name = "web", pool = "a.b" }]"#,
                "projects[0].pool",
            ),
            (
                r#"api_tokens = [{ user = "ada", token = "t" }]
                   projects = [{ name = "web" }]"#,
                "database_url",
            ),
            (
                r#"database_url = "sqlite:///x"
                   api_tokens = [{ user = "ada", token = "t" }]
                   projects = [{ name = "web" }]
                   max_body_bytes = 10"#,
                "max_body_bytes",
            ),
            (
                r#"database_url = "sqlite:///x"
                   projects = [{ name = "web" }]"#,
                "api_tokens",
            ),
        ];
        for (toml, key) in cases {
            let message = error_of(toml);
            assert!(message.contains(key), "expected {key} in {message:?}");
        }
    }

    #[test]
    fn flags_override_the_file() {
        let overrides = ConfigOverrides {
            listen: Some(SocketAddr::from(([0, 0, 0, 0], 9000))),
            nats_url: Some("nats://10.0.0.1:4222".into()),
            database_url: Some("sqlite:///other.db".into()),
        };
        let figment = with_overrides(Figment::new().merge(Toml::string(GOOD)), &overrides);
        let config = GatewayConfig::from_figment(figment).expect("valid");
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.nats.url, "nats://10.0.0.1:4222");
        assert_eq!(config.database_url, "sqlite:///other.db");
    }

    #[test]
    fn debug_output_hides_tokens() {
        let config = parse(GOOD).expect("valid");
        let shown = format!("{config:?}");
        assert!(!shown.contains("secret-1"), "{shown}");
        assert!(shown.contains("ada"));
    }
}
