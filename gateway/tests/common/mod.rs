//! The gateway under test: a real nats-server (testkit), a SQLite ledger in a temp
//! dir, and the gateway started with `run` on a port-0 listener. Tests talk to it with
//! reqwest and tokio-tungstenite like a client, and look behind it with their own
//! NATS connection, event log and ledger handle. Dropping it stops everything.

#![allow(dead_code)]

use async_nats::jetstream;
use paddock_bus::{EventLog, JobEventWriter, NatsSettings};
use paddock_contract::api::{JobAccepted, SubmitJob};
use paddock_contract::{EventBody, JobId, JobOptions, subjects};
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

pub struct TestGateway {
    pub address: SocketAddr,
    pub http: reqwest::Client,
    pub jetstream: jetstream::Context,
    pub events: EventLog,
    pub ledger: Ledger,
    pub nats_client: async_nats::Client,
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
        api_tokens: vec![
            ApiToken {
                user: "ada".into(),
                token: ADA.into(),
            },
            ApiToken {
                user: "bob".into(),
                token: BOB.into(),
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
        let database_url = config.database_url.clone();
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
        TestGateway {
            address,
            http,
            jetstream,
            events,
            ledger,
            nats_client,
            shutdown,
            server: Some(server),
            _nats: nats,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
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
