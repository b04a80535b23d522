//! The gateway under test: a real nats-server (testkit), a SQLite ledger and
//! accounts store in a temp dir, a signing key the test knows, and the gateway started
//! with `run` on a port-0 listener. Tests talk to it with reqwest and
//! tokio-tungstenite like a client, and look behind it with their own NATS
//! connection, event log, ledger and accounts handles. Dropping it stops everything.
//!
//! `ADA` and `BOB` are service tokens (the config's `api_tokens`) with a plain user's
//! scopes; [`TestGateway::login`] signs in real accounts. The first admin is `admin`
//! with [`ADMIN_PASSWORD`]. Password hashing runs at argon2's cheapest cost here:
//! unoptimised builds would spend seconds per hash at OWASP's.

#![allow(dead_code)]

use async_nats::jetstream;
use paddock_accounts::{Accounts, Scope, ScopeSet};
use paddock_bus::{EventLog, JobEventWriter, NatsSettings};
use paddock_contract::api::{JobAccepted, SubmitJob};
use paddock_contract::{EventBody, JobId, JobOptions, subjects};
use paddock_gateway::config::{PasswordCostSettings, RateLimit, RateLimitSettings};
use paddock_gateway::jwt::TokenKeys;
use paddock_gateway::{ApiToken, GatewayConfig, ProjectConfig};
use paddock_ledger::Ledger;
use paddock_testkit::{NatsServer, eventually};
use serde_json::Value;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const ADA: &str = "token-of-ada-0123456789";
pub const BOB: &str = "token-of-bob-0123456789";
pub const WAIT: Duration = Duration::from_secs(15);
pub const ADMIN_PASSWORD: &str = "admin password for tests";
pub const PASSWORD: &str = "a long enough password";
pub const ISSUER: &str = "paddock-test";
pub const AUDIENCE: &str = "paddock-test-api";

pub struct TestGateway {
    pub address: SocketAddr,
    pub http: reqwest::Client,
    pub jetstream: jetstream::Context,
    pub events: EventLog,
    pub ledger: Ledger,
    pub nats_client: async_nats::Client,
    pub accounts: Accounts,
    /// The gateway's signing key (PKCS#8 DER), so tests can forge tokens.
    pub signing_key: Vec<u8>,
    pub shutdown: CancellationToken,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    _nats: NatsServer,
    _dir: tempfile::TempDir,
}

pub fn config_for(nats: &NatsServer, dir: &std::path::Path) -> GatewayConfig {
    GatewayConfig {
        nats: NatsSettings {
            url: nats.url(),
            ..NatsSettings::default()
        },
        database_url: format!("sqlite://{}", dir.join("ledger.db").display()),
        data_dir: Some(dir.join("gateway")),
        auth: paddock_gateway::config::AuthSettings {
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            admin_password_file: Some(dir.join("admin-password")),
            password_cost: PasswordCostSettings {
                memory_kib: 8,
                iterations: 1,
                parallelism: 1,
            },
            login_failure_delay: Duration::from_millis(20),
            device_grant_interval: Duration::ZERO,
            ..Default::default()
        },
        rate_limits: RateLimitSettings {
            login: RateLimit {
                burst: 1000,
                every: Duration::from_millis(1),
            },
            refresh: RateLimit {
                burst: 1000,
                every: Duration::from_millis(1),
            },
            submit: RateLimit {
                burst: 1000,
                every: Duration::from_millis(1),
            },
        },
        api_tokens: vec![
            ApiToken {
                user: "ada".into(),
                token: ADA.into(),
                scopes: vec![Scope::JobsRead, Scope::JobsSubmit, Scope::ToolsApprove],
            },
            ApiToken {
                user: "bob".into(),
                token: BOB.into(),
                scopes: vec![Scope::JobsRead, Scope::JobsSubmit, Scope::ToolsApprove],
            },
        ],
        projects: vec![
            ProjectConfig {
                name: "web".into(),
                pool: "default".into(),
                description: "the web site".into(),
            },
            ProjectConfig {
                name: "api".into(),
                pool: "big".into(),
                description: String::new(),
            },
        ],
        max_prompt_bytes: 1000,
        max_body_bytes: 4096,
        ..GatewayConfig::default()
    }
}

impl TestGateway {
    pub async fn start() -> TestGateway {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut GatewayConfig)) -> TestGateway {
        paddock_testkit::init_logs();
        let _ = rustls::crypto::ring::default_provider().install_default();
        let nats = NatsServer::start().await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
        let mut config = config_for(&nats, dir.path());
        adjust(&mut config);
        std::fs::write(
            dir.path().join("admin-password"),
            format!("{ADMIN_PASSWORD}\n"),
        )
        .unwrap_or_else(|e| panic!("admin password: {e}"));
        let signing_key =
            paddock_gateway::jwt::generate_pkcs8().unwrap_or_else(|e| panic!("signing key: {e}"));
        let key_file = config.signing_key_file();
        if let Some(folder) = key_file.parent() {
            std::fs::create_dir_all(folder).unwrap_or_else(|e| panic!("key folder: {e}"));
        }
        std::fs::write(&key_file, paddock_gateway::jwt::pem_encode(&signing_key))
            .unwrap_or_else(|e| panic!("key file: {e}"));
        let database_url = config.database_url.clone();
        let accounts_url = config.accounts_database_url().to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        let address = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("address: {e}"));
        let shutdown = CancellationToken::new();
        let server = tokio::spawn(paddock_gateway::run(listener, config, shutdown.clone()));
        let http = reqwest::Client::builder()
            .timeout(WAIT)
            .build()
            .unwrap_or_else(|e| panic!("http client: {e}"));
        let ready = format!("http://{address}/readyz");
        eventually(WAIT, "the gateway to be ready", || {
            let http = http.clone();
            let ready = ready.clone();
            async move {
                let response = http.get(&ready).send().await.ok()?;
                response.status().is_success().then_some(())
            }
        })
        .await;
        let nats_client = async_nats::connect(nats.url())
            .await
            .unwrap_or_else(|e| panic!("nats: {e}"));
        let jetstream = jetstream::new(nats_client.clone());
        let events = EventLog::open(jetstream.clone())
            .await
            .unwrap_or_else(|e| panic!("event log: {e}"));
        let ledger = Ledger::connect(&database_url)
            .await
            .unwrap_or_else(|e| panic!("ledger: {e}"));
        let accounts = Accounts::connect_with(
            &accounts_url,
            paddock_accounts::AccountsOptions {
                password_cost: paddock_accounts::PasswordCost::TEST_ONLY,
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|e| panic!("accounts: {e}"));
        TestGateway {
            address,
            http,
            jetstream,
            events,
            ledger,
            nats_client,
            accounts,
            signing_key,
            shutdown,
            server: Some(server),
            _nats: nats,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Keys like the gateway's, with another issuer, audience or lifetime as asked.
    pub fn keys_with(&self, issuer: &str, audience: &str) -> TokenKeys {
        TokenKeys::from_pkcs8(
            &self.signing_key,
            &[],
            issuer,
            audience,
            Duration::from_secs(900),
        )
        .unwrap_or_else(|e| panic!("keys: {e}"))
    }

    /// Creates a user with `scopes` (password [`PASSWORD`]).
    pub async fn create_user(&self, name: &str, scopes: &[Scope]) {
        self.accounts
            .create_user(name, PASSWORD, &ScopeSet::new(scopes.iter().copied()))
            .await
            .unwrap_or_else(|e| panic!("create {name}: {e}"));
    }

    /// `POST /v1/auth/login`; returns the status and the JSON body.
    pub async fn login_raw(&self, user: &str, password: &str, totp: Option<&str>) -> (u16, Value) {
        let mut body = serde_json::json!({
            "user": user,
            "password": password,
            "device_name": format!("{user}'s test device"),
        });
        if let Some(code) = totp {
            body["totp"] = Value::String(code.into());
        }
        self.post_json(None, "/v1/auth/login", &body).await
    }

    /// Signs in; returns (access token, refresh token, device id).
    pub async fn login(&self, user: &str, password: &str) -> (String, String, String) {
        let (status, json) = self.login_raw(user, password, None).await;
        assert_eq!(status, 200, "login of {user}: {json}");
        let field = |name: &str| {
            json[name]
                .as_str()
                .unwrap_or_else(|| panic!("no {name} in {json}"))
                .to_string()
        };
        (
            field("access_token"),
            field("refresh_token"),
            field("device_id"),
        )
    }

    /// Signs in as the first admin; returns the access token.
    pub async fn admin(&self) -> String {
        self.login("admin", ADMIN_PASSWORD).await.0
    }

    /// POSTs JSON, with a bearer token if given.
    pub async fn post_json(&self, token: Option<&str>, path: &str, body: &Value) -> (u16, Value) {
        let mut request = self.http.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub fn ws_url(&self, token: &str) -> String {
        format!("ws://{}/v1/ws?access_token={token}", self.address)
    }

    /// Submits as the holder of `token`; returns the status and the JSON body.
    pub async fn submit_raw(&self, token: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url("/v1/jobs"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("submit: {e}"));
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Submits a job that must be accepted.
    pub async fn submit(&self, token: &str, project: &str, prompt: &str) -> JobId {
        let body = SubmitJob {
            project: project.into(),
            prompt: prompt.into(),
            options: JobOptions::default(),
            job_id: None,
        };
        let (status, json) = self.submit_raw(token, &to_json(&body)).await;
        assert_eq!(status, 202, "{json}");
        let accepted: JobAccepted =
            serde_json::from_value(json).unwrap_or_else(|e| panic!("accepted: {e}"));
        accepted.job_id
    }

    pub async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn post(&self, token: &str, path: &str) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// A writer on the job's log, as a node would have.
    pub async fn writer(&self, job: JobId) -> JobEventWriter {
        self.events
            .writer(job, format!("test-{}", uuid::Uuid::new_v4()))
            .await
            .unwrap_or_else(|e| panic!("writer: {e}"))
    }

    /// Appends events as a node would, applying each to the ledger as the coordinator
    /// would.
    pub async fn append(&self, job: JobId, bodies: Vec<EventBody>) {
        let mut writer = self.writer(job).await;
        for body in bodies {
            let event = writer
                .append(Some("node-1"), 1, body, None)
                .await
                .unwrap_or_else(|e| panic!("append: {e}"));
            self.ledger
                .apply(&event)
                .await
                .unwrap_or_else(|e| panic!("apply: {e}"));
        }
    }

    /// Applies the job's whole log to the ledger (the coordinator's part).
    pub async fn sync_ledger(&self, job: JobId) {
        for event in self
            .events
            .read_all(job)
            .await
            .unwrap_or_else(|e| panic!("read: {e}"))
        {
            self.ledger
                .apply(&event)
                .await
                .unwrap_or_else(|e| panic!("apply: {e}"));
        }
    }

    pub async fn stream_messages(&self, stream: &str) -> u64 {
        let mut stream = self
            .jetstream
            .get_stream(stream)
            .await
            .unwrap_or_else(|e| panic!("stream: {e}"));
        stream
            .info()
            .await
            .unwrap_or_else(|e| panic!("stream info: {e}"))
            .state
            .messages
    }

    pub async fn jobs_on_stream(&self) -> u64 {
        self.stream_messages(subjects::JOBS_STREAM).await
    }

    /// Stops the gateway and checks that `run` returned cleanly.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            let result = tokio::time::timeout(WAIT, server)
                .await
                .unwrap_or_else(|_| panic!("the gateway did not stop in time"));
            result
                .unwrap_or_else(|e| panic!("the gateway task failed: {e}"))
                .unwrap_or_else(|e| panic!("run returned an error: {e:#}"));
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_else(|e| panic!("json: {e}"))
}
