//! The gateway's configuration: one typed struct, loaded from a TOML file (`--config`),
//! then the environment (`PADDOCK_GATEWAY_…`, nested keys joined by `__`, e.g.
//! `PADDOCK_GATEWAY_NATS__URL`), then command-line flags, each overriding the one
//! before. [`GatewayConfig::validate`] runs at start and names the bad key; unknown
//! keys are refused by serde. Defaults work on one machine; what to change for a
//! multi-machine paddock is said beside each field.
//!
//! `[auth]` holds the token settings (issuer, audience, lifetimes, the signing key,
//! the first admin) and `[rate_limits]` the limits on login, refresh and submission.
//! Several gateways behind one load balancer must share `auth.signing_key_file` (or
//! each verify the others' keys through `auth.retired_key_files`), the issuer, the
//! audience and the database.

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use paddock_accounts::{PasswordCost, Scope, check_user_name};
use paddock_bus::{NatsSettings, StreamSettings};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Prefix of the environment variables the gateway reads.
pub const ENV_PREFIX: &str = "PADDOCK_GATEWAY_";

/// Room a job message and a queued event need beyond the prompt itself.
const MESSAGE_OVERHEAD_BYTES: usize = 16 * 1024;

/// The longest an access token may live: a stolen one is good for this long at most.
pub const MAX_ACCESS_TOKEN_TTL: Duration = Duration::from_secs(15 * 60);

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Address the HTTP server binds. Behind a load balancer or on a LAN: `0.0.0.0:8080`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Serve the API over HTTPS (WebSockets over WSS) with these certificate files.
    /// Without `[tls]` the API is plain HTTP: fine on loopback or behind a proxy that
    /// terminates TLS; the gateway warns when it listens anywhere else without it.
    #[serde(default)]
    pub tls: Option<TlsSettings>,
    #[serde(default)]
    pub nats: NatsSettings,
    /// Must be the same in every service of one paddock.
    #[serde(default)]
    pub streams: StreamSettings,
    /// The job ledger: `sqlite:///abs/path/ledger.db` on one machine,
    /// `postgres://…` when several gateways or coordinators run.
    #[serde(default)]
    pub database_url: String,
    /// Where the gateway keeps its files (the JWT signing key unless
    /// `auth.signing_key_file` says otherwise). Created if missing. Default: a
    /// `gateway` folder beside a SQLite `database_url`'s file, else `.paddock/gateway`.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// Accounts, tokens and the first admin.
    #[serde(default)]
    pub auth: AuthSettings,
    /// Limits per user, device and address.
    #[serde(default)]
    pub rate_limits: RateLimitSettings,
    /// Optional static service tokens (for scripts and CI), each acting as the user
    /// it names with the scopes it lists. People sign in with `paddock login` instead.
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
    /// Per-user quotas (unlimited when unset).
    #[serde(default)]
    pub quotas: crate::quotas::QuotaConfig,
    /// Jobs that require labels (`[routing]`): what happens when no node matches.
    #[serde(default)]
    pub routing: crate::routing::RoutingConfig,
    /// Where Prometheus scrapes `/metrics` (with `/healthz` and `/readyz`), apart from
    /// the public API: `127.0.0.1:9470` in `ops/prometheus`. None: not served. Always
    /// plain HTTP, even with `[tls]`: keep it on loopback or a private network.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// An OTLP/HTTP collector for traces (`http://127.0.0.1:4318`); none: not exported.
    #[serde(default)]
    pub otlp_endpoint: Option<String>,
    /// Web Push notifications to signed-in users' browsers (`[push]`, see
    /// [`crate::push::PushSettings`]); on by default.
    #[serde(default)]
    pub push: crate::push::PushSettings,
}

/// The API listener's certificate and key, PEM files read at start (and again on
/// SIGHUP, so a renewed certificate needs no restart).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The server certificate, followed by any intermediate certificates (the chain).
    pub cert_file: PathBuf,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1). Readable only by the
    /// gateway's user.
    pub key_file: PathBuf,
}

/// A static service token and the user it acts as. `Debug` never shows the token.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiToken {
    pub user: String,
    pub token: String,
    /// What the token may do; `jobs:read jobs:submit tools:approve` when left out.
    #[serde(default = "default_token_scopes")]
    pub scopes: Vec<Scope>,
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiToken")
            .field("user", &self.user)
            .field("token", &"<redacted>")
            .field("scopes", &self.scopes)
            .finish()
    }
}

fn default_token_scopes() -> Vec<Scope> {
    vec![Scope::JobsRead, Scope::JobsSubmit, Scope::ToolsApprove]
}

/// Accounts and tokens.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    /// The `iss` of access tokens; the same in every gateway of one paddock.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// The `aud` of access tokens.
    #[serde(default = "default_audience")]
    pub audience: String,
    /// Lifetime of an access token (at most 15 minutes).
    #[serde(default = "default_access_ttl", with = "humantime_serde")]
    pub access_token_ttl: Duration,
    /// How long an unused refresh token stays good.
    #[serde(default = "default_refresh_ttl", with = "humantime_serde")]
    pub refresh_token_ttl: Duration,
    /// How long a sign-in lasts at most, however often it is refreshed.
    #[serde(default = "default_session_ttl", with = "humantime_serde")]
    pub session_ttl: Duration,
    /// The Ed25519 private key (PKCS#8 PEM) that signs access tokens. Generated on
    /// first start when missing; default `<data_dir>/jwt-signing-key.pem`.
    #[serde(default)]
    pub signing_key_file: Option<PathBuf>,
    /// Earlier signing keys: tokens they signed still verify, and their public halves
    /// stay in the JWKS, until these entries are removed (key rotation).
    #[serde(default)]
    pub retired_key_files: Vec<PathBuf>,
    /// The accounts database; `database_url` when unset.
    #[serde(default)]
    pub database_url: Option<String>,
    /// The admin created when there is no user at all.
    #[serde(default = "default_admin_user")]
    pub admin_user: String,
    /// A file holding the first admin's password. Without one, a random password is
    /// generated and printed once on standard error.
    #[serde(default)]
    pub admin_password_file: Option<PathBuf>,
    /// argon2id cost of new password hashes (OWASP's by default; lower only in tests).
    #[serde(default)]
    pub password_cost: PasswordCostSettings,
    /// How long a failed login waits before it answers.
    #[serde(default = "default_login_failure_delay", with = "humantime_serde")]
    pub login_failure_delay: Duration,
    /// How long a device authorization grant (RFC 8628) waits for approval.
    #[serde(default = "default_device_grant_ttl", with = "humantime_serde")]
    pub device_grant_ttl: Duration,
    /// How often a device may poll for its grant.
    #[serde(default = "default_device_grant_interval", with = "humantime_serde")]
    pub device_grant_interval: Duration,
    /// Take the client address from the last `X-Forwarded-For` entry (only behind a
    /// proxy that sets it; otherwise clients could choose their own address).
    #[serde(default)]
    pub trust_forwarded_for: bool,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            issuer: default_issuer(),
            audience: default_audience(),
            access_token_ttl: default_access_ttl(),
            refresh_token_ttl: default_refresh_ttl(),
            session_ttl: default_session_ttl(),
            signing_key_file: None,
            retired_key_files: Vec::new(),
            database_url: None,
            admin_user: default_admin_user(),
            admin_password_file: None,
            password_cost: PasswordCostSettings::default(),
            login_failure_delay: default_login_failure_delay(),
            device_grant_ttl: default_device_grant_ttl(),
            device_grant_interval: default_device_grant_interval(),
            trust_forwarded_for: false,
        }
    }
}

/// The argon2id cost of new password hashes.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PasswordCostSettings {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for PasswordCostSettings {
    fn default() -> Self {
        let cost = PasswordCost::OWASP;
        PasswordCostSettings {
            memory_kib: cost.memory_kib,
            iterations: cost.iterations,
            parallelism: cost.parallelism,
        }
    }
}

impl From<PasswordCostSettings> for PasswordCost {
    fn from(settings: PasswordCostSettings) -> Self {
        PasswordCost {
            memory_kib: settings.memory_kib,
            iterations: settings.iterations,
            parallelism: settings.parallelism,
        }
    }
}

/// One rate limit: `burst` requests at once, then one more every `every`. Each key
/// (a user, a device, an address) has its own allowance.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub burst: u32,
    #[serde(with = "humantime_serde")]
    pub every: Duration,
}

/// Rate limits per endpoint. Each applies per address, per user and per device.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSettings {
    /// `POST /v1/auth/login` and starting a device grant.
    #[serde(default = "default_login_limit")]
    pub login: RateLimit,
    /// `POST /v1/auth/refresh` and device-grant polls.
    #[serde(default = "default_refresh_limit")]
    pub refresh: RateLimit,
    /// `POST /v1/jobs`.
    #[serde(default = "default_submit_limit")]
    pub submit: RateLimit,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings {
            login: default_login_limit(),
            refresh: default_refresh_limit(),
            submit: default_submit_limit(),
        }
    }
}

fn default_login_limit() -> RateLimit {
    RateLimit {
        burst: 10,
        every: Duration::from_secs(6),
    }
}

fn default_refresh_limit() -> RateLimit {
    RateLimit {
        burst: 30,
        every: Duration::from_secs(2),
    }
}

fn default_submit_limit() -> RateLimit {
    RateLimit {
        burst: 30,
        every: Duration::from_secs(1),
    }
}

fn default_issuer() -> String {
    "paddock".into()
}

fn default_audience() -> String {
    "paddock-api".into()
}

fn default_access_ttl() -> Duration {
    MAX_ACCESS_TOKEN_TTL
}

fn default_refresh_ttl() -> Duration {
    Duration::from_secs(30 * 24 * 3600)
}

fn default_session_ttl() -> Duration {
    Duration::from_secs(90 * 24 * 3600)
}

fn default_admin_user() -> String {
    "admin".into()
}

fn default_login_failure_delay() -> Duration {
    Duration::from_secs(1)
}

fn default_device_grant_ttl() -> Duration {
    Duration::from_secs(600)
}

fn default_device_grant_interval() -> Duration {
    Duration::from_secs(5)
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
            tls: None,
            nats: NatsSettings::default(),
            streams: StreamSettings::default(),
            database_url: String::new(),
            data_dir: None,
            auth: AuthSettings::default(),
            rate_limits: RateLimitSettings::default(),
            api_tokens: Vec::new(),
            projects: Vec::new(),
            max_prompt_bytes: default_max_prompt_bytes(),
            max_body_bytes: default_max_body_bytes(),
            quotas: Default::default(),
            routing: Default::default(),
            metrics_listen: None,
            otlp_endpoint: None,
            push: Default::default(),
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
        self.validate_auth()?;
        if let Some((key, problem)) = self.push.problem() {
            return Err(invalid(key, problem));
        }
        if let Some(problem) = self.nats.problems("nats").into_iter().next() {
            let (key, detail) = problem
                .split_once(": ")
                .unwrap_or(("nats", problem.as_str()));
            return Err(invalid(key, detail));
        }
        if let Some(tls) = &self.tls {
            for (key, path) in [
                ("tls.cert_file", &tls.cert_file),
                ("tls.key_file", &tls.key_file),
            ] {
                if path.as_os_str().is_empty() {
                    return Err(invalid(key, "is empty"));
                }
            }
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
            if entry.token.split('.').count() == 3 {
                return Err(invalid(
                    format!("api_tokens[{i}].token"),
                    "has two '.', so it would be taken for a JWT access token",
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

    fn validate_auth(&self) -> Result<(), ConfigError> {
        let auth = &self.auth;
        for (key, value) in [
            ("auth.issuer", &auth.issuer),
            ("auth.audience", &auth.audience),
        ] {
            if value.trim().is_empty() || value.chars().any(char::is_control) {
                return Err(invalid(key, "is empty or has control characters"));
            }
        }
        if auth.access_token_ttl.is_zero() || auth.access_token_ttl > MAX_ACCESS_TOKEN_TTL {
            return Err(invalid(
                "auth.access_token_ttl",
                "must be above 0 and at most 15 minutes",
            ));
        }
        if auth.refresh_token_ttl.is_zero() || auth.session_ttl < auth.refresh_token_ttl {
            return Err(invalid(
                "auth.refresh_token_ttl",
                "must be above 0 and no longer than auth.session_ttl",
            ));
        }
        if check_user_name(&auth.admin_user).is_err() {
            return Err(invalid(
                "auth.admin_user",
                "must be 1 to 64 of a-z, 0-9, '.', '_' or '-'",
            ));
        }
        if argon2_params_invalid(auth.password_cost) {
            return Err(invalid(
                "auth.password_cost",
                "is not a valid argon2 cost (memory_kib >= 8 x parallelism, iterations >= 1, parallelism >= 1)",
            ));
        }
        if auth.device_grant_ttl.is_zero() {
            return Err(invalid("auth.device_grant_ttl", "must be above 0"));
        }
        for (key, limit) in [
            ("rate_limits.login", self.rate_limits.login),
            ("rate_limits.refresh", self.rate_limits.refresh),
            ("rate_limits.submit", self.rate_limits.submit),
        ] {
            if limit.burst == 0 || limit.every.is_zero() {
                return Err(invalid(key, "needs a burst and an interval above 0"));
            }
        }
        Ok(())
    }

    /// The accounts database: `auth.database_url`, else `database_url`.
    pub fn accounts_database_url(&self) -> &str {
        self.auth
            .database_url
            .as_deref()
            .filter(|url| !url.trim().is_empty())
            .unwrap_or(&self.database_url)
    }

    /// The gateway's folder: `data_dir`, else beside the SQLite database's file.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(dir) = &self.data_dir {
            return dir.clone();
        }
        let sqlite_file = self
            .database_url
            .strip_prefix("sqlite://")
            .or_else(|| self.database_url.strip_prefix("sqlite:"))
            .map(|rest| rest.split('?').next().unwrap_or_default())
            .filter(|path| !path.is_empty() && *path != ":memory:");
        match sqlite_file.map(Path::new).and_then(Path::parent) {
            Some(folder) => folder.join("gateway"),
            None => PathBuf::from(".paddock/gateway"),
        }
    }

    /// The signing key's file: `auth.signing_key_file`, else one in the data folder.
    pub fn signing_key_file(&self) -> PathBuf {
        self.auth
            .signing_key_file
            .clone()
            .unwrap_or_else(|| self.data_dir().join("jwt-signing-key.pem"))
    }

    /// The project named `name`, if configured.
    pub fn project(&self, name: &str) -> Option<&ProjectConfig> {
        self.projects.iter().find(|p| p.name == name)
    }
}

fn argon2_params_invalid(cost: PasswordCostSettings) -> bool {
    cost.parallelism == 0
        || cost.iterations == 0
        || cost.memory_kib < 8u32.saturating_mul(cost.parallelism)
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
                   projects = [{ name = "web" }]
                   [auth]
                   access_token_ttl = "16m""#,
                "auth.access_token_ttl",
            ),
            (
                r#"database_url = "sqlite:///x"
                   projects = [{ name = "web" }]
                   [auth]
                   admin_user = "Root""#,
                "auth.admin_user",
            ),
            (
                r#"database_url = "sqlite:///x"
                   projects = [{ name = "web" }]
                   [rate_limits]
                   login = { burst = 0, every = "1s" }"#,
                "rate_limits.login",
            ),
            (
                r#"database_url = "sqlite:///x"
                   api_tokens = [{ user = "ada", token = "a.b.c" }]
                   projects = [{ name = "web" }]"#,
                "api_tokens[0].token",
            ),
            (
                r#"database_url = "sqlite:///x"
                   api_tokens = [{ user = "ada", token = "t", scopes = ["jobs:write"] }]
                   projects = [{ name = "web" }]"#,
                "jobs:write",
            ),
        ];
        for (toml, key) in cases {
            let message = error_of(toml);
            assert!(message.contains(key), "expected {key} in {message:?}");
        }
    }

    #[test]
    fn a_tls_section_names_both_files() {
        let config = parse(&format!(
            "{GOOD}\n[tls]\ncert_file = \"/etc/paddock/chain.pem\"\nkey_file = \"/etc/paddock/key.pem\""
        ))
        .expect("valid");
        let tls = config.tls.expect("the [tls] section");
        assert_eq!(tls.cert_file, PathBuf::from("/etc/paddock/chain.pem"));
        assert_eq!(tls.key_file, PathBuf::from("/etc/paddock/key.pem"));
        assert!(
            parse(GOOD).expect("valid").tls.is_none(),
            "plain HTTP by default"
        );
        let message = error_of(&format!(
            "{GOOD}\n[tls]\ncert_file = \"\"\nkey_file = \"/k.pem\""
        ));
        assert!(message.contains("tls.cert_file"), "{message}");
        let message = error_of(&format!("{GOOD}\n[tls]\ncert_file = \"/c.pem\""));
        assert!(message.contains("key_file"), "{message}");
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
    fn service_tokens_are_optional_and_default_to_a_users_scopes() {
        let config = parse(
            r#"database_url = "sqlite:///x"
               projects = [{ name = "web" }]"#,
        )
        .expect("valid without service tokens");
        assert!(config.api_tokens.is_empty());
        assert_eq!(config.auth.access_token_ttl, MAX_ACCESS_TOKEN_TTL);
        assert_eq!(config.accounts_database_url(), "sqlite:///x");
        assert_eq!(
            config.signing_key_file(),
            PathBuf::from("/gateway/jwt-signing-key.pem"),
            "beside the SQLite file"
        );
        let mut config = config;
        config.database_url = "sqlite:///var/lib/paddock/ledger.db?mode=rwc".into();
        assert_eq!(config.data_dir(), PathBuf::from("/var/lib/paddock/gateway"));
        config.database_url = "postgres://db/paddock".into();
        assert_eq!(config.data_dir(), PathBuf::from(".paddock/gateway"));
        config.data_dir = Some("/srv/paddock".into());
        assert_eq!(config.data_dir(), PathBuf::from("/srv/paddock"));
        let config = parse(GOOD).expect("valid");
        assert_eq!(config.api_tokens[0].scopes, default_token_scopes());
    }

    #[test]
    fn debug_output_hides_tokens() {
        let config = parse(GOOD).expect("valid");
        let shown = format!("{config:?}");
        assert!(!shown.contains("secret-1"), "{shown}");
        assert!(shown.contains("ada"));
    }
}
