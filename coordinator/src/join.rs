//! Machines joining the paddock: the coordinator's `POST /v1/join` endpoint and the
//! NATS users file it owns.
//!
//! A new machine presents a join token (created on the gateway, stored as a hash in
//! the ledger database). The coordinator makes the node an nkey pair, spends one use of
//! the token and records the node's public key in one transaction
//! (`Ledger::redeem_join_token`), writes the key with the node's permissions
//! (`paddock_contract::subjects::node_permissions`) into `join.nats_users_file` and
//! has nats-server reload it (SIGHUP to the pids in `join.nats_pid_files`). Before
//! answering it connects once with the new key, so a node is only ever handed a
//! credential the server accepts; if that fails the redemption is undone. The seed is
//! in the answer and nowhere else: never stored, never logged.
//!
//! The users file is derived state, like the ledger: the entries of
//! `join.nats_static_users_file` (the services' own users) followed by one entry per
//! node credential in force in SQL. [`reconcile`] rewrites it whenever SQL says
//! otherwise (at start and every `join.reconcile_interval`), which is how
//! `paddock nodes revoke-credentials` (a gateway route that marks the credential
//! revoked) cuts one machine off: the server drops the connections of a user that a
//! reload removed. Refused joins (unknown, expired, spent or revoked tokens) are
//! answered 401/410/409 with a stable code and logged with the caller's address.
//!
//! The endpoint speaks HTTPS when `join.tls_cert_file` and `join.tls_key_file` are set,
//! and plain HTTP only on a loopback address (the config refuses anything else).

use anyhow::Context as _;
use axum::Json;
use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use paddock_bus::NatsSettings;
use paddock_contract::api::{ErrorBody, ErrorDetail};
use paddock_contract::join::{JoinAccepted, JoinRequest, NodeCredentialView, refusal};
use paddock_ledger::{Ledger, RedeemError};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

/// How long a new credential may take to be accepted by nats-server after a reload.
const CREDENTIAL_CHECK: Duration = Duration::from_secs(10);
/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `[join]`: where machines join, and the NATS users file the coordinator keeps.
/// No `listen`: no join endpoint (and no users file is written).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JoinSettings {
    /// Address of the join endpoint (`0.0.0.0:7443`); HTTPS with the files below,
    /// plain HTTP only on a loopback address.
    pub listen: Option<SocketAddr>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// The NATS authorization file this coordinator owns and rewrites (`users = […]`),
    /// included by nats-server's config inside `authorization { include … }`.
    pub nats_users_file: Option<PathBuf>,
    /// Entries copied first into the users file: the gateway's and coordinator's own
    /// users (`{user: "gateway", password: "$2a$…"}`), one per line or block.
    pub nats_static_users_file: Option<PathBuf>,
    /// Pid files of the nats-server processes that read the users file; each gets a
    /// SIGHUP (reload) when the file changes.
    pub nats_pid_files: Vec<PathBuf>,
    /// The NATS URL(s) given to joining nodes; `nats.url` when unset.
    pub node_nats_url: Option<String>,
    /// A CA certificate (PEM) handed to joining nodes to verify the NATS servers.
    pub node_nats_ca_file: Option<PathBuf>,
    /// Tell joining nodes to require TLS to NATS.
    pub node_nats_tls_required: bool,
    /// How often the users file is checked against the credentials in SQL (a revoked
    /// node is cut off within this), in seconds.
    pub reconcile_interval_secs: u64,
}

impl JoinSettings {
    /// Whether the join endpoint runs.
    pub fn enabled(&self) -> bool {
        self.listen.is_some()
    }

    fn reconcile_interval(&self) -> Duration {
        Duration::from_secs(match self.reconcile_interval_secs {
            0 => 10,
            n => n,
        })
    }

    /// What cannot work, each naming its key.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            problems.push(
                "join.tls_cert_file: join.tls_cert_file and join.tls_key_file go together".into(),
            );
        }
        let Some(listen) = self.listen else {
            return problems;
        };
        if self.tls_cert_file.is_none() && !listen.ip().is_loopback() {
            problems.push(format!(
                "join.listen: {listen} is not a loopback address, so the join endpoint needs HTTPS: set join.tls_cert_file and join.tls_key_file"
            ));
        }
        if self.nats_users_file.is_none() {
            problems.push(
                "join.nats_users_file: required with join.listen (the NATS authorization file the coordinator keeps)".into(),
            );
        }
        if let Some(url) = &self.node_nats_url
            && url.trim().is_empty()
        {
            problems.push("join.node_nats_url: is empty".into());
        }
        problems
    }
}

/// The join endpoint's shared state.
#[derive(Clone)]
pub struct JoinService {
    inner: Arc<Inner>,
}

struct Inner {
    ledger: Ledger,
    settings: JoinSettings,
    /// The coordinator's own NATS settings: the URL and TLS used to test a new key.
    nats: NatsSettings,
    stream_replicas: usize,
    /// Held while the users file is rendered, written and reloaded, so a join and the
    /// reconciler never interleave.
    file: tokio::sync::Mutex<()>,
}

/// A join the coordinator refuses or cannot complete: a status, a stable code, and a
/// message for the person at the new machine.
#[derive(Debug)]
struct Refused {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into(),
                message: self.message,
            },
        };
        (self.status, Json(body)).into_response()
    }
}

impl Refused {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refused {
        Refused {
            status,
            code,
            message: message.into(),
        }
    }

    fn unavailable(message: impl Into<String>) -> Refused {
        Refused::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl JoinService {
    pub fn new(
        ledger: Ledger,
        settings: JoinSettings,
        nats: NatsSettings,
        stream_replicas: usize,
    ) -> JoinService {
        JoinService {
            inner: Arc::new(Inner {
                ledger,
                settings,
                nats,
                stream_replicas,
                file: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// `POST /v1/join`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v1/join", post(join))
            .layer(DefaultBodyLimit::max(16 * 1024))
            .with_state(self.clone())
    }

    /// Brings the users file in line with the credentials in force in SQL; reloads
    /// nats-server when it changed. Returns whether it changed.
    pub async fn sync_users_file(&self) -> anyhow::Result<bool> {
        let _writing = self.inner.file.lock().await;
        self.sync_locked().await
    }

    async fn sync_locked(&self) -> anyhow::Result<bool> {
        let settings = &self.inner.settings;
        let Some(path) = &settings.nats_users_file else {
            return Ok(false);
        };
        let credentials = self
            .inner
            .ledger
            .node_credentials(true)
            .await
            .context("reading the node credentials in force")?;
        let static_users = match &settings.nats_static_users_file {
            Some(file) => Some((
                file.clone(),
                std::fs::read_to_string(file).with_context(|| {
                    format!(
                        "join.nats_static_users_file: cannot read {}",
                        file.display()
                    )
                })?,
            )),
            None => None,
        };
        let wanted = render_users_file(static_users.as_ref(), &credentials);
        if std::fs::read_to_string(path).ok().as_deref() == Some(wanted.as_str()) {
            return Ok(false);
        }
        write_atomically(path, &wanted)
            .with_context(|| format!("join.nats_users_file: cannot write {}", path.display()))?;
        reload_nats(&settings.nats_pid_files)?;
        tracing::info!(
            file = %path.display(),
            nodes = credentials.len(),
            "NATS users file rewritten and nats-server reloaded"
        );
        Ok(true)
    }

    async fn admit(
        &self,
        request: JoinRequest,
        address: SocketAddr,
    ) -> Result<JoinAccepted, Refused> {
        let name = request.name.trim().to_string();
        if !paddock_contract::subjects::is_valid_token(&name) {
            return Err(Refused::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("{name:?} is not a node name: 1-64 letters, digits, '-' or '_'"),
            ));
        }
        let keys = nkeys::KeyPair::new_user();
        let public_key = keys.public_key();
        let seed = keys
            .seed()
            .map_err(|e| Refused::unavailable(format!("cannot make the node's key: {e}")))?;
        let now = paddock_contract::now_unix_ms();
        let token = match self
            .inner
            .ledger
            .redeem_join_token(&request.token, &name, &public_key, now)
            .await
        {
            Ok(token) => token,
            Err(error) => {
                let refused = refusal_of(&error);
                tracing::warn!(
                    node = %name,
                    %address,
                    code = refused.code,
                    reason = %error,
                    "join refused"
                );
                return Err(refused);
            }
        };
        // From here on a failure gives the token its use back.
        let in_force = {
            let _writing = self.inner.file.lock().await;
            match self.sync_locked().await {
                Ok(_) => self.check_credential(&seed).await,
                Err(error) => Err(error),
            }
        };
        if let Err(error) = in_force {
            tracing::error!(node = %name, %address, error = format!("{error:#}"), "join failed; undoing it");
            if let Err(undo) = self.inner.ledger.undo_join(&token.id, &public_key).await {
                tracing::error!(node = %name, error = %undo, "undoing a failed join failed");
            }
            if let Err(resync) = self.sync_users_file().await {
                tracing::error!(
                    error = format!("{resync:#}"),
                    "rewriting the NATS users file failed"
                );
            }
            return Err(Refused::unavailable(format!(
                "the coordinator could not put the node's NATS credentials in force: {error:#}"
            )));
        }
        let settings = &self.inner.settings;
        let nats_ca_certificate = match &settings.node_nats_ca_file {
            Some(file) => Some(std::fs::read_to_string(file).map_err(|e| {
                Refused::unavailable(format!(
                    "join.node_nats_ca_file {} cannot be read: {e}",
                    file.display()
                ))
            })?),
            None => None,
        };
        tracing::info!(
            node = %name,
            %address,
            token = %token.id,
            public_key = %public_key,
            version = request.version.as_deref().unwrap_or("?"),
            "node joined"
        );
        Ok(JoinAccepted {
            name,
            pool: token.pool.clone().unwrap_or_else(|| "default".into()),
            labels: token.labels.clone(),
            nats_url: settings
                .node_nats_url
                .clone()
                .unwrap_or_else(|| self.inner.nats.url.clone()),
            nkey_seed: seed,
            public_key,
            nats_ca_certificate,
            nats_tls_required: settings.node_nats_tls_required,
            stream_replicas: self.inner.stream_replicas,
        })
    }

    /// Connects with the new seed until nats-server (reloaded) accepts it.
    async fn check_credential(&self, seed: &str) -> anyhow::Result<()> {
        if self.inner.settings.nats_users_file.is_none() {
            return Ok(());
        }
        paddock_bus::check_nkey(&self.inner.nats, seed, CREDENTIAL_CHECK)
            .await
            .context(
                "nats-server did not accept the new key after a reload: does its config include join.nats_users_file, and do join.nats_pid_files name its pid file?",
            )
    }
}

/// The address of a joining machine, over plain TCP or TLS.
#[derive(Clone, Copy, Debug)]
struct Peer(SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TcpListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

async fn join(
    State(service): State<JoinService>,
    ConnectInfo(Peer(address)): ConnectInfo<Peer>,
    body: axum::body::Bytes,
) -> Result<Json<JoinAccepted>, Refused> {
    let request: JoinRequest = serde_json::from_slice(&body).map_err(|e| {
        Refused::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("not a join request: {e}"),
        )
    })?;
    service.admit(request, address).await.map(Json)
}

fn refusal_of(error: &RedeemError) -> Refused {
    let message = error.to_string();
    match error {
        RedeemError::Invalid => Refused::new(StatusCode::UNAUTHORIZED, refusal::INVALID, message),
        RedeemError::Expired => Refused::new(StatusCode::GONE, refusal::EXPIRED, message),
        RedeemError::Used => Refused::new(StatusCode::GONE, refusal::USED, message),
        RedeemError::Revoked => Refused::new(StatusCode::GONE, refusal::REVOKED, message),
        RedeemError::NodeExists(_) => {
            Refused::new(StatusCode::CONFLICT, refusal::NODE_EXISTS, message)
        }
        RedeemError::Ledger(e) => Refused::unavailable(format!("the ledger is unavailable: {e}")),
    }
}

/// The users file: static entries, then one nkey user per node credential in force.
pub fn render_users_file(
    static_users: Option<&(PathBuf, String)>,
    credentials: &[NodeCredentialView],
) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let list = |items: &[String]| {
        let quoted: Vec<String> = items.iter().map(|s| quote(s)).collect();
        format!("[{}]", quoted.join(", "))
    };
    let mut out = String::from(
        "# Written by paddock-coordinator (join.nats_users_file) from the node credentials in\n\
         # force in the ledger. Edits are overwritten: change join.nats_static_users_file.\n\
         users = [\n",
    );
    if let Some((path, text)) = static_users {
        out.push_str(&format!("  # from {}\n", path.display()));
        for line in text.lines() {
            out.push_str("  ");
            out.push_str(line);
            out.push('\n');
        }
    }
    for credential in credentials {
        let permissions = paddock_contract::subjects::node_permissions(&credential.node);
        out.push_str(&format!(
            "  # node {}, issued at {} ms\n  {{nkey: {}, permissions: {{publish: {{allow: {}, deny: {}}}, subscribe: {{allow: {}, deny: {}}}}}}}\n",
            credential.node,
            credential.issued_at_ms,
            quote(&credential.public_key),
            list(&permissions.publish_allow),
            list(&permissions.publish_deny),
            list(&permissions.subscribe_allow),
            list(&permissions.subscribe_deny),
        ));
    }
    out.push_str("]\n");
    out
}

/// Writes `text` beside `path` and renames it over, so nats-server never reads half.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let folder = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(folder) = folder {
        std::fs::create_dir_all(folder)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "users.conf".into());
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&temporary, text)?;
    std::fs::rename(&temporary, path)
}

/// Sends SIGHUP (reload) to each nats-server named by a pid file.
fn reload_nats(pid_files: &[PathBuf]) -> anyhow::Result<()> {
    for file in pid_files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("join.nats_pid_files: cannot read {}", file.display()))?;
        let pid: i32 = text
            .trim()
            .parse()
            .with_context(|| format!("join.nats_pid_files: {} holds no pid", file.display()))?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGHUP,
        )
        .with_context(|| format!("cannot signal nats-server {pid} (from {})", file.display()))?;
    }
    Ok(())
}

/// Rewrites the users file whenever SQL says otherwise, at once and then every
/// `join.reconcile_interval_secs`, until `shutdown`.
pub async fn reconcile(service: JoinService, shutdown: CancellationToken) {
    let every = service.inner.settings.reconcile_interval();
    loop {
        if let Err(error) = service.sync_users_file().await {
            tracing::error!(
                error = format!("{error:#}"),
                "keeping the NATS users file failed; retrying"
            );
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Serves the join endpoint on `listener` (HTTPS when the settings name a
/// certificate) until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    service: JoinService,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = &service.inner.settings;
    let app = service
        .router()
        .into_make_service_with_connect_info::<Peer>();
    let address = listener.local_addr()?;
    let stop = shutdown.clone();
    match (&settings.tls_cert_file, &settings.tls_key_file) {
        (Some(cert), Some(key)) => {
            let acceptor = tls_acceptor(cert, key)?;
            tracing::info!(%address, "join endpoint listening (HTTPS)");
            axum::serve(TlsListener::new(listener, acceptor, shutdown.clone()), app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await?;
        }
        _ => {
            tracing::info!(%address, "join endpoint listening (plain HTTP, loopback only)");
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await?;
        }
    }
    Ok(())
}

fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|items| items.collect::<Result<_, _>>())
        .with_context(|| format!("join.tls_cert_file: cannot read {}", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "join.tls_cert_file: {} holds no PEM certificate",
        cert.display()
    );
    let key_der = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("join.tls_key_file: cannot read {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| {
            builder
                .with_no_client_auth()
                .with_single_cert(chain, key_der)
        })
        .context("join.tls_key_file is not the key of join.tls_cert_file")?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// TLS connections for `axum::serve`: each handshake runs in its own task (with a
/// deadline), so a silent client holds up no one else.
struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    fn new(
        listener: TcpListener,
        acceptor: tokio_rustls::TlsAcceptor,
        shutdown: CancellationToken,
    ) -> TlsListener {
        let local_addr = listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)));
        let (sender, ready) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = sender.closed() => return,
                    accepted = listener.accept() => accepted,
                };
                let (tcp, address) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "join endpoint: accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = sender.send((stream, address)).await;
                        }
                        Ok(Err(error)) => {
                            tracing::debug!(%address, %error, "join endpoint: TLS handshake failed");
                        }
                        Err(_) => {
                            tracing::debug!(%address, "join endpoint: TLS handshake timed out")
                        }
                    }
                });
            }
        });
        TlsListener { ready, local_addr }
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept loop has stopped (shutdown): no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(node: &str, key: &str) -> NodeCredentialView {
        NodeCredentialView {
            node: node.into(),
            public_key: key.into(),
            token_id: Some("t1".into()),
            issued_at_ms: 1,
            revoked_at_ms: None,
            revoked_by: None,
        }
    }

    #[test]
    fn the_users_file_lists_static_users_then_each_node_with_its_permissions() {
        let static_users = (
            PathBuf::from("/etc/paddock/static.conf"),
            "{user: \"gateway\", password: \"$2a$11$x\"}".to_string(),
        );
        let text = render_users_file(
            Some(&static_users),
            &[credential("mini-1", "UAAA"), credential("mini-2", "UBBB")],
        );
        assert!(text.starts_with("# Written by paddock-coordinator"));
        assert!(text.contains("  {user: \"gateway\""));
        assert!(text.contains("{nkey: \"UAAA\""));
        assert!(text.contains("\"$KV.paddock_heartbeats.mini-2\""));
        assert!(text.contains("\"$JS.API.STREAM.DELETE.>\""));
        assert!(text.trim_end().ends_with(']'));
        let empty = render_users_file(None, &[]);
        assert!(empty.contains("users = [\n]"), "{empty}");
    }

    #[test]
    fn a_join_endpoint_off_loopback_needs_tls_and_a_users_file() {
        let settings = JoinSettings {
            listen: Some("0.0.0.0:7443".parse().expect("address")),
            ..JoinSettings::default()
        };
        let problems = settings.problems().join("; ");
        assert!(problems.contains("join.listen"), "{problems}");
        assert!(problems.contains("join.nats_users_file"), "{problems}");
        let settings = JoinSettings {
            listen: Some("127.0.0.1:7443".parse().expect("address")),
            nats_users_file: Some("/tmp/users.conf".into()),
            ..JoinSettings::default()
        };
        assert!(settings.problems().is_empty(), "{:?}", settings.problems());
        assert!(JoinSettings::default().problems().is_empty());
    }
}
