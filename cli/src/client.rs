//! A client of the gateway's public API (REST and WebSocket), the same API the web
//! client uses. Errors carry the gateway's stable code and message.

use anyhow::{Context, bail};
use futures::{SinkExt, Stream, StreamExt};
use paddock_contract::api::{
    ApprovalDecision, ClientMessage, ErrorBody, EventPage, JobAccepted, JobPage, JobView,
    MessageAccepted, SendMessage, ServerMessage, SubmitJob,
};
use paddock_contract::{JobEvent, JobId};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

#[derive(Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl Client {
    pub fn new(base: &str, token: &str) -> anyhow::Result<Client> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("paddock/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("building the HTTP client")?;
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http,
        })
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = request
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the gateway at {}", self.base))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .context("reading the gateway's answer")?;
        if status.is_success() {
            return serde_json::from_slice(&body).with_context(|| {
                format!(
                    "unexpected answer from the gateway: {}",
                    String::from_utf8_lossy(&body)
                )
            });
        }
        match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(error) => bail!("{} ({}): {}", status, error.error.code, error.error.message),
            Err(_) => bail!("{}: {}", status, String::from_utf8_lossy(&body)),
        }
    }

    /// Submits a job. A submission the gateway could not complete (503, say while a
    /// NATS server fails over) is sent again with the same job id, which makes the retry
    /// idempotent, for up to half a minute.
    pub async fn submit(&self, job: &SubmitJob) -> anyhow::Result<JobAccepted> {
        let mut job = job.clone();
        job.job_id.get_or_insert_with(JobId::new);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let outcome = self
                .send(self.http.post(format!("{}/v1/jobs", self.base)).json(&job))
                .await;
            match outcome {
                Err(e)
                    if e.to_string().contains("(unavailable)")
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                }
                other => return other,
            }
        }
    }

    pub async fn job(&self, id: JobId) -> anyhow::Result<JobView> {
        self.send(self.http.get(format!("{}/v1/jobs/{id}", self.base)))
            .await
    }

    pub async fn jobs(&self, status: Option<&str>, limit: u32) -> anyhow::Result<JobPage> {
        let mut query = vec![("limit", limit.to_string())];
        if let Some(status) = status {
            query.push(("status", status.to_string()));
        }
        self.send(
            self.http
                .get(format!("{}/v1/jobs", self.base))
                .query(&query),
        )
        .await
    }

    pub async fn events(&self, id: JobId) -> anyhow::Result<Vec<JobEvent>> {
        let page: EventPage = self
            .send(self.http.get(format!("{}/v1/jobs/{id}/events", self.base)))
            .await?;
        Ok(page.events)
    }

    pub async fn cancel(&self, id: JobId) -> anyhow::Result<serde_json::Value> {
        self.send(self.http.post(format!("{}/v1/jobs/{id}/cancel", self.base)))
            .await
    }

    /// A follow-up into the job's session; the answer names the job that carries it.
    pub async fn say(&self, id: JobId, text: &str) -> anyhow::Result<MessageAccepted> {
        let body = SendMessage {
            text: text.to_string(),
        };
        self.send(
            self.http
                .post(format!("{}/v1/jobs/{id}/messages", self.base))
                .json(&body),
        )
        .await
    }

    /// Answers an approval request.
    pub async fn approve(
        &self,
        id: JobId,
        request_id: &str,
        allow: bool,
        reason: Option<String>,
    ) -> anyhow::Result<JobAccepted> {
        let body = ApprovalDecision { allow, reason };
        self.send(
            self.http
                .post(format!("{}/v1/jobs/{id}/approvals/{request_id}", self.base))
                .json(&body),
        )
        .await
    }

    /// Interrupts the job's current turn.
    pub async fn interrupt(&self, id: JobId) -> anyhow::Result<JobAccepted> {
        self.send(
            self.http
                .post(format!("{}/v1/jobs/{id}/interrupt", self.base)),
        )
        .await
    }

    /// Every node of the paddock.
    pub async fn nodes(&self) -> anyhow::Result<Vec<paddock_contract::node::NodeView>> {
        self.send(self.http.get(format!("{}/v1/nodes", self.base)))
            .await
    }

    /// Sets a node's desired state: `drain` (with an optional deadline), `undrain`, `cordon`.
    pub async fn set_node(
        &self,
        name: &str,
        action: &str,
        deadline_secs: Option<u64>,
    ) -> anyhow::Result<paddock_contract::node::NodeDesired> {
        let mut request = self
            .http
            .post(format!("{}/v1/nodes/{name}/{action}", self.base));
        if action == "drain" {
            request = request.json(&paddock_contract::node::DrainRequest { deadline_secs });
        }
        self.send(request).await
    }

    /// Every event of `job` after `after_seq`, then live ones, over the WebSocket.
    pub async fn follow(
        &self,
        job: JobId,
        after_seq: u64,
    ) -> anyhow::Result<impl Stream<Item = anyhow::Result<JobEvent>> + use<>> {
        let ws_base = if let Some(rest) = self.base.strip_prefix("https://") {
            format!("wss://{rest}")
        } else if let Some(rest) = self.base.strip_prefix("http://") {
            format!("ws://{rest}")
        } else {
            bail!("the gateway URL must start with http:// or https://");
        };
        let mut request = format!("{ws_base}/v1/ws")
            .into_client_request()
            .context("building the WebSocket request")?;
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {}", self.token)
                .parse()
                .context("the token is not a valid header value")?,
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(request)
            .await
            .context("opening the WebSocket")?;
        let subscribe = serde_json::to_string(&ClientMessage::Subscribe {
            job_id: job,
            after_seq,
        })?;
        socket
            .send(tungstenite::Message::Text(subscribe.into()))
            .await
            .context("subscribing")?;
        Ok(socket.filter_map(|message| async move {
            match message {
                Ok(tungstenite::Message::Text(text)) => {
                    match serde_json::from_str::<ServerMessage>(&text) {
                        Ok(ServerMessage::Event { event }) => Some(Ok(event)),
                        Ok(ServerMessage::Error { code, message }) => {
                            Some(Err(anyhow::anyhow!("{code}: {message}")))
                        }
                        Ok(_) => None,
                        Err(e) => Some(Err(anyhow::anyhow!(
                            "unreadable message from the gateway: {e}"
                        ))),
                    }
                }
                Ok(tungstenite::Message::Close(_)) => {
                    Some(Err(anyhow::anyhow!("the gateway closed the connection")))
                }
                Ok(_) => None,
                Err(e) => Some(Err(anyhow::anyhow!("WebSocket: {e}"))),
            }
        }))
    }
}
