//! The egress proxy the node agent runs for its sandboxes: HTTP `CONNECT` tunnels and
//! plain-HTTP forwarding, only to a domain allowlist (the model API by default, plus
//! per-project additions such as a package registry).
//!
//! A request is refused (403, logged at `warn`, kept in [`EgressProxy::refusals`]) when
//! its host is not on the allowlist — decided before any DNS lookup — or when the name
//! resolves to a loopback, private, link-local, cloud-metadata or otherwise non-public
//! address. The proxy connects to the very address it vetted, so a second lookup
//! cannot change the answer. The one exception is explicit: `loopback_exceptions`
//! lists exact loopback `ip:port`s (a local double of the model API) that may be
//! reached, also by their IP literal.
//!
//! It serves on a TCP listener (macOS: the Seatbelt profile allows only that port)
//! or a unix socket (Linux: mounted into the sandbox and relayed from its loopback by
//! the init). [`run`] follows the `run(listener, config, shutdown)` pattern; the
//! node can also run one proxy per job, with that project's allowlist.

mod http;
pub mod rules;

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use http::Request;
use rules::{Host, Rules};

/// How many refusals [`EgressProxy::refusals`] keeps.
const KEPT_REFUSALS: usize = 1000;

/// The proxy's configuration (a `[proxy]` table in the node's config).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxyConfig {
    /// Hosts the agent may reach: `api.anthropic.com` (ports 80 and 443),
    /// `*.npmjs.org` (subdomains), `host:8443`, `host:*`.
    pub allow: Vec<String>,
    /// Names answered from here instead of DNS (like `/etc/hosts`).
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
    /// Exact loopback addresses that may be reached although loopback: a model-API
    /// double on this machine. Reachable by their IP literal as well.
    pub loopback_exceptions: Vec<SocketAddr>,
    /// Resolve names not in `hosts` with the system resolver.
    pub system_dns: bool,
    pub connect_timeout_ms: u64,
    /// How long a client may take to send its request head.
    pub head_timeout_ms: u64,
    /// Connections served at once; more wait.
    pub max_connections: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            allow: vec!["api.anthropic.com".into()],
            hosts: BTreeMap::new(),
            loopback_exceptions: Vec::new(),
            system_dns: true,
            connect_timeout_ms: 10_000,
            head_timeout_ms: 30_000,
            max_connections: 256,
        }
    }
}

impl ProxyConfig {
    /// This configuration with `extra` hosts allowed (a project's additions).
    pub fn with_allowed(&self, extra: &[String]) -> Self {
        let mut config = self.clone();
        config.allow.extend(extra.iter().cloned());
        config
    }
}

/// A configuration that cannot be served.
#[derive(Debug, thiserror::Error)]
#[error("proxy: {0}")]
pub struct ProxyConfigError(String);

/// One refused request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// `host:port` as requested.
    pub target: String,
    pub reason: RefusalReason,
    pub at: SystemTime,
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    /// The host is not on the allowlist.
    NotAllowed,
    /// The host resolves to an address of a forbidden class.
    ForbiddenAddress {
        address: IpAddr,
        class: &'static str,
    },
}

impl std::fmt::Display for RefusalReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RefusalReason::NotAllowed => f.write_str("not on the allowlist"),
            RefusalReason::ForbiddenAddress { address, class } => {
                write!(f, "resolves to {address}, a {class} address")
            }
        }
    }
}

/// A listener the proxy serves on.
#[derive(Debug)]
pub enum ProxyListener {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl From<TcpListener> for ProxyListener {
    fn from(listener: TcpListener) -> Self {
        Self::Tcp(listener)
    }
}

impl From<UnixListener> for ProxyListener {
    fn from(listener: UnixListener) -> Self {
        Self::Unix(listener)
    }
}

/// Binds a unix socket for the proxy at `path` (replacing a stale one), connectable by
/// any user: only the sandboxes it is mounted into can reach it, so keep its folder
/// private to the node.
pub fn bind_unix(path: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(error),
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// A running (or ready to run) egress proxy; clones share the refusal log.
#[derive(Clone, Debug)]
pub struct EgressProxy {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: ProxyConfig,
    rules: Rules,
    refusals: Mutex<VecDeque<Refusal>>,
    connections: Semaphore,
}

/// Serves `config` on `listener` until `shutdown` is cancelled.
pub async fn run(
    listener: impl Into<ProxyListener>,
    config: ProxyConfig,
    shutdown: CancellationToken,
) -> Result<(), ProxyConfigError> {
    EgressProxy::new(config)?.serve(listener, shutdown).await;
    Ok(())
}

impl EgressProxy {
    pub fn new(config: ProxyConfig) -> Result<Self, ProxyConfigError> {
        let rules = Rules::new(&config.allow, &config.hosts, &config.loopback_exceptions)
            .map_err(ProxyConfigError)?;
        if config.max_connections == 0 {
            return Err(ProxyConfigError(
                "max_connections must be at least 1".into(),
            ));
        }
        Ok(Self {
            shared: Arc::new(Shared {
                connections: Semaphore::new(config.max_connections),
                config,
                rules,
                refusals: Mutex::new(VecDeque::new()),
            }),
        })
    }

    /// The most recent refusals, oldest first.
    pub fn refusals(&self) -> Vec<Refusal> {
        let refusals = self
            .shared
            .refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        refusals.iter().cloned().collect()
    }

    /// Serves until `shutdown` is cancelled; open connections are closed then, and it
    /// returns once they are.
    pub async fn serve(&self, listener: impl Into<ProxyListener>, shutdown: CancellationToken) {
        let listener = listener.into();
        let tracker = TaskTracker::new();
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = accept(&listener) => accepted,
            };
            let stream = match accepted {
                Ok(stream) => stream,
                Err(error) => {
                    tracing::warn!(%error, "egress proxy: accept failed");
                    // A full descriptor table clears up as connections end.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let proxy = self.clone();
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                let Ok(_permit) = proxy.shared.connections.acquire().await else {
                    return;
                };
                tokio::select! {
                    () = shutdown.cancelled() => {}
                    () = proxy.handle(stream) => {}
                }
            });
        }
        tracker.close();
        tracker.wait().await;
    }

    async fn handle(&self, mut client: Box<dyn Stream>) {
        let head_timeout = Duration::from_millis(self.shared.config.head_timeout_ms);
        let (buffer, end) = match tokio::time::timeout(head_timeout, read_head(&mut client)).await {
            Ok(Ok(read)) => read,
            Ok(Err(reason)) => {
                let _ = client
                    .write_all(&http::response(400, "Bad Request", &reason, None))
                    .await;
                return;
            }
            Err(_) => return,
        };
        let request = match http::parse(&buffer[..end]) {
            Ok(request) => request,
            Err(reason) => {
                tracing::warn!(%reason, "egress proxy: bad request");
                let body = format!("paddock egress proxy: {reason}\n");
                let _ = client
                    .write_all(&http::response(400, "Bad Request", &body, None))
                    .await;
                return;
            }
        };
        let (host, port) = match &request {
            Request::Connect { host, port } | Request::Forward { host, port, .. } => {
                (host.clone(), *port)
            }
        };
        let target = format!("{host}:{port}");
        let upstream = match self.open(&host, port, &target).await {
            Ok(upstream) => upstream,
            Err(Denial::Refused(reason)) => {
                let body = format!("paddock egress proxy refused {target}: {reason}\n");
                let kind = match reason {
                    RefusalReason::NotAllowed => "not-allowed",
                    RefusalReason::ForbiddenAddress { .. } => "forbidden-address",
                };
                let response =
                    http::response(403, "Forbidden", &body, Some(("X-Paddock-Refused", kind)));
                let _ = client.write_all(&response).await;
                return;
            }
            Err(Denial::Unreachable(reason)) => {
                tracing::info!(%target, %reason, "egress proxy: upstream unreachable");
                let body = format!("paddock egress proxy: {target}: {reason}\n");
                let _ = client
                    .write_all(&http::response(502, "Bad Gateway", &body, None))
                    .await;
                return;
            }
        };
        let rest = &buffer[end..];
        match request {
            Request::Connect { .. } => {
                tracing::debug!(%target, "egress proxy: tunnel");
                tunnel(client, upstream, rest).await;
            }
            Request::Forward { head, .. } => {
                tracing::debug!(%target, "egress proxy: forward");
                forward(client, upstream, &head, rest).await;
            }
        }
    }

    /// Vets `host:port` and connects to a vetted address.
    async fn open(&self, host: &Host, port: u16, target: &str) -> Result<TcpStream, Denial> {
        let rules = &self.shared.rules;
        if !rules.admits(host, port) {
            return Err(self.refuse(target, RefusalReason::NotAllowed));
        }
        let addresses: Vec<SocketAddr> = match host {
            Host::Ip(ip) => vec![SocketAddr::new(*ip, port)],
            Host::Name(name) => match rules.static_addresses(name) {
                Some(ips) => ips.iter().map(|ip| SocketAddr::new(*ip, port)).collect(),
                None if self.shared.config.system_dns => {
                    match tokio::net::lookup_host((name.as_str(), port)).await {
                        Ok(found) => found.collect(),
                        Err(error) => {
                            return Err(Denial::Unreachable(format!("cannot resolve: {error}")));
                        }
                    }
                }
                None => return Err(Denial::Unreachable("no address configured".into())),
            },
        };
        if addresses.is_empty() {
            return Err(Denial::Unreachable("no address".into()));
        }
        // One forbidden answer condemns the name: an allowlisted name pointing into
        // private space is a rebinding attempt or a mistake.
        for address in &addresses {
            if let Some(class) = rules.refusal(*address) {
                return Err(self.refuse(
                    target,
                    RefusalReason::ForbiddenAddress {
                        address: address.ip(),
                        class,
                    },
                ));
            }
        }
        let timeout = Duration::from_millis(self.shared.config.connect_timeout_ms);
        let mut last_error = String::from("no address");
        for address in addresses {
            match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(error)) => last_error = format!("{address}: {error}"),
                Err(_) => last_error = format!("{address}: connect timed out"),
            }
        }
        Err(Denial::Unreachable(last_error))
    }

    fn refuse(&self, target: &str, reason: RefusalReason) -> Denial {
        tracing::warn!(%target, %reason, "egress proxy refused a request");
        let mut refusals = self
            .shared
            .refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if refusals.len() == KEPT_REFUSALS {
            refusals.pop_front();
        }
        refusals.push_back(Refusal {
            target: target.to_owned(),
            reason: reason.clone(),
            at: SystemTime::now(),
        });
        Denial::Refused(reason)
    }
}

enum Denial {
    Refused(RefusalReason),
    Unreachable(String),
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

async fn accept(listener: &ProxyListener) -> std::io::Result<Box<dyn Stream>> {
    Ok(match listener {
        ProxyListener::Tcp(listener) => {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            Box::new(stream)
        }
        ProxyListener::Unix(listener) => Box::new(listener.accept().await?.0),
    })
}

/// Reads until the end of the request head; returns the bytes read and where the
/// head ends.
async fn read_head(client: &mut Box<dyn Stream>) -> Result<(Vec<u8>, usize), String> {
    let mut buffer = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        let read = client
            .read(&mut chunk)
            .await
            .map_err(|e| format!("reading the request: {e}"))?;
        if read == 0 {
            return Err("the connection closed before a request head".into());
        }
        let searched_from = buffer.len().saturating_sub(3);
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = http::head_end(&buffer[searched_from..]) {
            return Ok((buffer, searched_from + end));
        }
        if buffer.len() > http::MAX_HEAD {
            return Err("request head too large".into());
        }
    }
}

async fn tunnel(mut client: Box<dyn Stream>, mut upstream: TcpStream, rest: &[u8]) {
    if client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    if !rest.is_empty() && upstream.write_all(rest).await.is_err() {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
}

/// Sends the rewritten head and the rest, then relays until the origin closes (it
/// was asked to with `Connection: close`).
async fn forward(client: Box<dyn Stream>, upstream: TcpStream, head: &[u8], rest: &[u8]) {
    let (mut client_read, mut client_write) = tokio::io::split(client);
    let (mut upstream_read, mut upstream_write) = upstream.into_split();
    if upstream_write.write_all(head).await.is_err()
        || upstream_write.write_all(rest).await.is_err()
    {
        return;
    }
    let upload = async {
        let _ = tokio::io::copy(&mut client_read, &mut upstream_write).await;
        let _ = upstream_write.shutdown().await;
        // Keep waiting: the download decides when this exchange ends.
        std::future::pending::<()>().await;
    };
    let download = async {
        let _ = tokio::io::copy(&mut upstream_read, &mut client_write).await;
        let _ = client_write.shutdown().await;
    };
    tokio::select! {
        () = upload => {}
        () = download => {}
    }
}
