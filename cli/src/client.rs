//! A client of the gateway's public API (REST and WebSocket), the same API the web
//! client uses. Errors carry the gateway's stable code and message.
//!
//! [`Trust`] is how the gateway's certificate is checked, over HTTPS and WSS alike:
//! the system's trusted roots, plus a CA certificate given with `--ca-cert` (the one
//! `paddock up` makes for its self-signed certificate).

use anyhow::{Context, bail};
use futures::{SinkExt, Stream, StreamExt};
use paddock_contract::api::{
    ApprovalDecision, ClientMessage, ErrorBody, EventPage, JobAccepted, JobPage, JobView,
    MessageAccepted, SendMessage, ServerMessage, SubmitJob,
};
use paddock_contract::{JobEvent, JobId};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

/// The certificates the client trusts: the system's roots, plus the CA certificates
/// of one PEM file when given.
#[derive(Clone, Debug, Default)]
pub struct Trust {
    ca_file: Option<PathBuf>,
    extra_roots: Vec<CertificateDer<'static>>,
}

/// The trust of the `paddock` command, set once from `--ca-cert` or the saved login.
static PROCESS_TRUST: OnceLock<Trust> = OnceLock::new();

impl Trust {
    /// The system's roots, plus the certificates in `ca_file` when given.
    pub fn new(ca_file: Option<&Path>) -> anyhow::Result<Trust> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let Some(ca_file) = ca_file else {
            return Ok(Trust::default());
        };
        let extra_roots: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(ca_file)
            .and_then(|items| items.collect())
            .with_context(|| format!("reading the CA certificate {}", ca_file.display()))?;
        if extra_roots.is_empty() {
            bail!("{} holds no PEM certificate", ca_file.display());
        }
        Ok(Trust {
            ca_file: Some(ca_file.to_path_buf()),
            extra_roots,
        })
    }

    /// Makes this the trust of clients made with [`Client::new`] in this process (the
    /// `paddock` command sets it once, at start). Later calls change nothing.
    pub fn install(self) {
        let _ = PROCESS_TRUST.set(self);
    }

    /// The trust installed for this process, else the system's roots alone.
    pub fn of_process() -> Trust {
        PROCESS_TRUST.get().cloned().unwrap_or_default()
    }

    /// The CA file given, if any.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// An HTTP client (HTTP/2 or HTTP/1.1 by ALPN) that checks certificates this way.
    pub fn http_client(&self, timeout: Option<Duration>) -> anyhow::Result<reqwest::Client> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("paddock/", env!("CARGO_PKG_VERSION")))
            .tls_certs_merge(
                self.extra_roots
                    .iter()
                    .filter_map(|der| reqwest::Certificate::from_der(der).ok()),
            );
        if let Some(timeout) = timeout {
            builder = builder.timeout(timeout);
        }
        builder.build().context("building the HTTP client")
    }

    /// The TLS connector for `wss://` WebSockets: the same roots as [`Trust::http_client`].
    pub fn websocket_connector(&self) -> anyhow::Result<tokio_tungstenite::Connector> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls_platform_verifier::Verifier::new_with_extra_roots(
            self.extra_roots.iter().cloned(),
            provider.clone(),
        )
        .context("loading the trusted certificates")?;
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("configuring TLS")?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(tokio_tungstenite::Connector::Rustls(Arc::new(config)))
    }

    /// `error` with a hint when it is the gateway's certificate that was refused.
    pub fn explain(&self, error: anyhow::Error) -> anyhow::Error {
        let Some(refused) = refused_certificate(&error) else {
            return error;
        };
        let hint = match (refused.as_str(), &self.ca_file) {
            ("UnknownIssuer", Some(file)) => format!(
                "the gateway's TLS certificate is signed neither by {} nor by a CA this system trusts",
                file.display()
            ),
            ("UnknownIssuer", None) => {
                "the gateway's TLS certificate is not signed by a CA this system trusts: pass its CA \
                 certificate with --ca-cert FILE or PADDOCK_CA_CERT (`paddock up` prints it); \
                 `paddock login` remembers it"
                    .to_string()
            }
            (refused, _) => format!("the gateway's TLS certificate was refused ({refused})"),
        };
        error.context(hint)
    }
}

/// What was wrong with the gateway's certificate (`UnknownIssuer`, `Expired`, …), if
/// a TLS handshake failed on it.
fn refused_certificate(error: &anyhow::Error) -> Option<String> {
    let typed = error.chain().find_map(|cause| {
        let rustls_error = cause.downcast_ref::<rustls::Error>().or_else(|| {
            cause
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        });
        match rustls_error {
            Some(rustls::Error::InvalidCertificate(refused)) => Some(format!("{refused:?}")),
            _ => None,
        }
    });
    // HTTP connectors box their errors, so rustls' error (inside an `io::Error`, whose
    // `source()` skips it) cannot be reached by downcasting; its message is stable.
    typed.or_else(|| {
        error.chain().find_map(|cause| {
            let text = cause.to_string();
            let (_, refused) = text.split_once("invalid peer certificate: ")?;
            Some(refused.trim().to_string())
        })
    })
}

#[derive(Clone)]
pub struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
    trust: Trust,
    /// Set when the token comes from a stored sign-in: WebSockets then ask it for a
    /// fresh access token when they (re)connect and when the gateway warns that the
    /// socket's token is about to expire.
    sign_in: Option<SignIn>,
}

/// Where a fresh access token comes from: the stored sign-in (`paddock login`),
/// refreshed when it is about to expire.
pub type TokenSource =
    Arc<dyn Fn() -> futures::future::BoxFuture<'static, anyhow::Result<String>> + Send + Sync>;

#[derive(Clone)]
struct SignIn {
    source: TokenSource,
}

impl SignIn {
    async fn access_token(&self) -> anyhow::Result<String> {
        (self.source)().await
    }
}

impl Client {
    /// A client trusting what this process trusts ([`Trust::of_process`]).
    pub fn new(base: &str, token: &str) -> anyhow::Result<Client> {
        Client::with_trust(base, token, Trust::of_process())
    }

    pub fn with_trust(base: &str, token: &str, trust: Trust) -> anyhow::Result<Client> {
        Ok(Client {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
            http: trust.http_client(None)?,
            trust,
            sign_in: None,
        })
    }

    /// Marks the token as coming from a sign-in that `source` renews, so long-lived
    /// WebSockets stay open past one access token (a service token given with
    /// `--token` is kept as it is).
    pub fn renewing_sign_in(mut self, source: TokenSource) -> Client {
        self.sign_in = Some(SignIn { source });
        self
    }

    /// The token for a new connection: a fresh one from the sign-in, if any.
    async fn current_token(&self) -> anyhow::Result<String> {
        match &self.sign_in {
            Some(sign_in) => sign_in.access_token().await,
            None => Ok(self.token.clone()),
        }
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = match request.bearer_auth(&self.token).send().await {
            Ok(response) => response,
            Err(e) => {
                let error = anyhow::Error::new(e)
                    .context(format!("cannot reach the gateway at {}", self.base));
                return Err(self.trust.explain(error));
            }
        };
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
        let token = self.current_token().await?;
        let mut request = format!("{ws_base}/v1/ws")
            .into_client_request()
            .context("building the WebSocket request")?;
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}")
                .parse()
                .context("the token is not a valid header value")?,
        );
        let connector = if ws_base.starts_with("wss://") {
            Some(self.trust.websocket_connector()?)
        } else {
            None
        };
        let (mut socket, _) =
            match tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector)
                .await
            {
                Ok(connected) => connected,
                Err(e) => {
                    let error = anyhow::Error::new(e).context("opening the WebSocket");
                    return Err(self.trust.explain(error));
                }
            };
        let subscribe = serde_json::to_string(&ClientMessage::Subscribe {
            job_id: job,
            after_seq,
        })?;
        socket
            .send(tungstenite::Message::Text(subscribe.into()))
            .await
            .context("subscribing")?;
        // One task owns the socket: it forwards events and, when the gateway warns
        // that the token expires, answers with a fresh one on the same socket. It ends
        // when the socket does or when the caller drops the stream.
        let (events, received) = tokio::sync::mpsc::channel(64);
        let sign_in = self.sign_in.clone();
        tokio::spawn(relay(socket, sign_in, events));
        Ok(tokio_stream::wrappers::ReceiverStream::new(received))
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Reads the socket until it closes, sending events (and errors) to `events`.
async fn relay(
    mut socket: Socket,
    sign_in: Option<SignIn>,
    events: tokio::sync::mpsc::Sender<anyhow::Result<JobEvent>>,
) {
    loop {
        let message = tokio::select! {
            message = socket.next() => message,
            // The caller dropped the stream: close the socket rather than hold it.
            () = events.closed() => {
                let _ = socket.close(None).await;
                return;
            }
        };
        let Some(message) = message else { return };
        let item = match message {
            Ok(tungstenite::Message::Text(text)) => {
                match serde_json::from_str::<ServerMessage>(&text) {
                    Ok(ServerMessage::Event { event }) => Some(Ok(event)),
                    Ok(ServerMessage::Error { code, message }) => {
                        Some(Err(anyhow::anyhow!("{code}: {message}")))
                    }
                    Ok(ServerMessage::TokenExpiring { .. }) => {
                        renew(&mut socket, sign_in.as_ref()).await;
                        None
                    }
                    Ok(_) => None,
                    Err(e) => Some(Err(anyhow::anyhow!(
                        "unreadable message from the gateway: {e}"
                    ))),
                }
            }
            Ok(tungstenite::Message::Close(frame)) => Some(Err(match frame {
                Some(frame) if !frame.reason.is_empty() => {
                    anyhow::anyhow!("the gateway closed the connection: {}", frame.reason)
                }
                _ => anyhow::anyhow!("the gateway closed the connection"),
            })),
            Ok(_) => None,
            Err(e) => Some(Err(anyhow::anyhow!("WebSocket: {e}"))),
        };
        if let Some(item) = item
            && events.send(item).await.is_err()
        {
            return;
        }
    }
}

/// Sends a fresh access token over the socket. Without a stored sign-in (a service
/// token) there is nothing to renew: the gateway only warns tokens that expire.
async fn renew(socket: &mut Socket, sign_in: Option<&SignIn>) {
    let Some(sign_in) = sign_in else { return };
    let token = match sign_in.access_token().await {
        Ok(token) => token,
        Err(e) => {
            eprintln!("(could not renew the sign-in for the live connection: {e:#})");
            return;
        }
    };
    let Ok(text) = serde_json::to_string(&ClientMessage::Authenticate { token }) else {
        return;
    };
    if let Err(e) = socket.send(tungstenite::Message::Text(text.into())).await {
        eprintln!("(could not renew the sign-in for the live connection: {e})");
    }
}
