//! The node's link to the control plane's actor cluster (ractor_cluster), when
//! `cluster.coordinator` is set. The node runs a node server of its own (listening on
//! loopback only: it connects out, nobody connects in), spawns its `Member` actor in
//! the nodes' process group, and joins the coordinator with the cluster secret, over
//! TLS checked against `cluster.ca_file` (or plain TCP to a loopback address, by
//! explicit choice). When the session drops (the coordinator restarted, the network
//! failed) [`keep_joined`] joins again with back-off; nothing else on the node notices:
//! running jobs, claiming and heartbeats go on over NATS, and the desired state is
//! read from NATS on every tick whether or not a `Reconcile` arrives.

use crate::config::ClusterConfig;
use anyhow::Context as _;
use paddock_actors::member::{Member, MemberArgs, MemberMsg, member_name};
use paddock_telemetry::metrics::{ClusterLinkMetrics, JoinOutcome};
use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeServerSessionInformation;
use ractor_cluster::{NodeEventSubscription, NodeId, NodeServer, NodeServerMessage};
use rustls::pki_types::ServerName;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The shortest cluster secret accepted (as the coordinator).
const MIN_SECRET_LEN: usize = 16;
/// First and longest pause between attempts to join.
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long the TCP and TLS connection, then the cluster handshake, may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and how to join.
#[derive(Clone)]
struct Target {
    host: String,
    port: u16,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
}

/// The running link: [`ClusterLink::stop`] leaves the cluster.
pub struct ClusterLink {
    member: ActorRef<MemberMsg>,
    server: ActorRef<NodeServerMessage>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl ClusterLink {
    /// Leaves the group (the coordinator sees the member leave), then closes the
    /// session.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
        let _ = self
            .member
            .stop_and_wait(None, Some(Duration::from_secs(2)))
            .await;
        let _ = self
            .server
            .stop_and_wait(None, Some(Duration::from_secs(2)))
            .await;
    }
}

/// Starts the link when `cluster.coordinator` is set (`None` otherwise). Fails on a
/// bad secret or CA file; an unreachable coordinator is only retried.
pub async fn start(
    config: &ClusterConfig,
    node: &str,
    metrics: ClusterLinkMetrics,
) -> anyhow::Result<Option<ClusterLink>> {
    let Some((host, port)) = config.coordinator_address()? else {
        return Ok(None);
    };
    let secret_file = config
        .secret_file
        .as_deref()
        .context("cluster.secret_file: required with cluster.coordinator")?;
    let cookie = read_secret(secret_file)?;
    let tls = match &config.ca_file {
        Some(ca_file) => {
            let name = config.server_name.clone().unwrap_or_else(|| host.clone());
            let server_name = ServerName::try_from(name.clone()).with_context(|| {
                format!("cluster.server_name: {name:?} is not a DNS name or IP address")
            })?;
            Some((tls_connector(ca_file)?, server_name))
        }
        None => {
            tracing::warn!(coordinator = %format!("{host}:{port}"), "joining the actor cluster over plain TCP (cluster.insecure_loopback)");
            None
        }
    };

    let (events_tx, events) = mpsc::unbounded_channel();
    // Its own listener is on loopback and unused: the node only connects out.
    let node_server = NodeServer::new(
        0,
        cookie,
        node.to_string(),
        "localhost".to_string(),
        None,
        Some(ractor_cluster::node::NodeConnectionMode::Isolated),
    )
    .with_listen_addr(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let (server, _) = Actor::spawn(None, node_server, ())
        .await
        .context("starting the node's actor cluster server")?;
    server
        .cast(NodeServerMessage::SubscribeToEvents {
            id: "paddock-link".into(),
            subscription: Box::new(SessionEvents(events_tx)),
        })
        .context("subscribing to the actor cluster's session events")?;
    let observed = metrics.clone();
    let (member, _) = Actor::spawn(
        Some(member_name(node)),
        Member,
        MemberArgs {
            node: node.to_string(),
            on_reconcile: Some(Arc::new(move || observed.reconcile_received())),
        },
    )
    .await
    .context("starting the node's member actor")?;
    let target = Target { host, port, tls };
    let stop = CancellationToken::new();
    let task = tokio::spawn(keep_joined(
        server.clone(),
        target,
        events,
        metrics,
        stop.clone(),
    ));
    Ok(Some(ClusterLink {
        member,
        server,
        stop,
        task,
    }))
}

/// Reads the cluster secret: a file its owner alone may read, holding at least
/// [`MIN_SECRET_LEN`] characters.
fn read_secret(path: &Path) -> anyhow::Result<String> {
    let shown = path.display();
    let metadata =
        std::fs::metadata(path).with_context(|| format!("cluster.secret_file: {shown}"))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            anyhow::bail!(
                "cluster.secret_file: {shown} is readable by others (mode {mode:o}); make it 0600"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = metadata;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cluster.secret_file: {shown}"))?;
    let secret = text.trim();
    if secret.chars().count() < MIN_SECRET_LEN {
        anyhow::bail!(
            "cluster.secret_file: {shown}: the secret is shorter than {MIN_SECRET_LEN} characters"
        );
    }
    Ok(secret.to_string())
}

/// A TLS connector trusting only the CA certificates of `ca_file` (PEM).
fn tls_connector(ca_file: &Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let shown = ca_file.display();
    let pem = std::fs::read(ca_file).with_context(|| format!("cluster.ca_file: {shown}"))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.with_context(|| format!("cluster.ca_file: {shown} is not PEM"))?;
        roots
            .add(cert)
            .with_context(|| format!("cluster.ca_file: {shown} holds an unusable certificate"))?;
    }
    if roots.is_empty() {
        anyhow::bail!("cluster.ca_file: {shown} holds no certificate");
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// What the node server tells of its sessions.
#[derive(Debug)]
enum SessionEvent {
    Opened(NodeId),
    Ready(NodeId),
    Disconnected(NodeId),
}

struct SessionEvents(mpsc::UnboundedSender<SessionEvent>);

impl NodeEventSubscription for SessionEvents {
    fn node_session_opened(&self, session: NodeServerSessionInformation) {
        let _ = self.0.send(SessionEvent::Opened(session.node_id));
    }

    fn node_session_disconnected(&self, session: NodeServerSessionInformation) {
        let _ = self.0.send(SessionEvent::Disconnected(session.node_id));
    }

    fn node_session_authenticated(&self, _session: NodeServerSessionInformation) {}

    fn node_session_ready(&self, session: NodeServerSessionInformation) {
        let _ = self.0.send(SessionEvent::Ready(session.node_id));
    }
}

/// Joins the coordinator and joins again whenever the session drops, with back-off,
/// until `shutdown`.
async fn keep_joined(
    server: ActorRef<NodeServerMessage>,
    target: Target,
    mut events: mpsc::UnboundedReceiver<SessionEvent>,
    metrics: ClusterLinkMetrics,
    shutdown: CancellationToken,
) {
    let coordinator = format!("{}:{}", target.host, target.port);
    let mut backoff = MIN_BACKOFF;
    // Said once at warn level until the next success, then at debug level.
    let mut quiet = false;
    loop {
        while events.try_recv().is_ok() {}
        let outcome = tokio::select! {
            _ = shutdown.cancelled() => return,
            outcome = join_once(&server, &target, &mut events) => outcome,
        };
        metrics.attempt(outcome.outcome);
        match (outcome.outcome, outcome.session) {
            (JoinOutcome::Joined, Some(session)) => {
                tracing::info!(%coordinator, "joined the coordinator's actor cluster");
                backoff = MIN_BACKOFF;
                quiet = false;
                let dropped = async {
                    while let Some(event) = events.recv().await {
                        if matches!(event, SessionEvent::Disconnected(id) if id == session) {
                            return;
                        }
                    }
                    // The node server is gone: nothing left to wait for.
                    std::future::pending::<()>().await;
                };
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = dropped => {}
                }
                metrics.disconnected();
                tracing::warn!(%coordinator, "the link to the coordinator dropped; joining again (running jobs are not affected)");
            }
            (outcome, _) => {
                let detail = outcome_detail(outcome);
                if quiet {
                    tracing::debug!(%coordinator, "{detail}");
                } else {
                    tracing::warn!(%coordinator, "{detail}; trying again with back-off");
                    quiet = true;
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// What to tell an operator about a failed attempt.
fn outcome_detail(outcome: JoinOutcome) -> &'static str {
    match outcome {
        JoinOutcome::Refused => {
            "the coordinator closed the actor cluster session before it was ready (a wrong cluster secret?)"
        }
        _ => "cannot reach the coordinator's actor cluster",
    }
}

struct Attempt {
    outcome: JoinOutcome,
    session: Option<NodeId>,
}

/// One attempt: connect, then wait for the session to be ready or to close.
async fn join_once(
    server: &ActorRef<NodeServerMessage>,
    target: &Target,
    events: &mut mpsc::UnboundedReceiver<SessionEvent>,
) -> Attempt {
    let address = (target.host.as_str(), target.port);
    let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
        match &target.tls {
            Some((connector, name)) => {
                ractor_cluster::client_connect_enc(server, address, connector.clone(), name.clone())
                    .await
            }
            None => ractor_cluster::client_connect(server, address).await,
        }
    })
    .await;
    match connected {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::debug!(%error, "connecting to the coordinator failed");
            return Attempt {
                outcome: JoinOutcome::Unreachable,
                session: None,
            };
        }
        Err(_) => {
            return Attempt {
                outcome: JoinOutcome::Unreachable,
                session: None,
            };
        }
    }
    let mut session = None;
    let deadline = tokio::time::Instant::now() + HANDSHAKE_TIMEOUT;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(SessionEvent::Opened(id))) if session.is_none() => session = Some(id),
            Ok(Some(SessionEvent::Ready(id))) if session == Some(id) => {
                return Attempt {
                    outcome: JoinOutcome::Joined,
                    session,
                };
            }
            Ok(Some(SessionEvent::Disconnected(id))) if session == Some(id) => {
                return Attempt {
                    outcome: JoinOutcome::Refused,
                    session: None,
                };
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => {
                // A handshake that hangs: close what can be closed (an authenticated
                // session that never got ready) and start over.
                close_sessions(server).await;
                return Attempt {
                    outcome: JoinOutcome::Unreachable,
                    session: None,
                };
            }
        }
    }
}

/// Stops every authenticated session of the node's server (it has only the one, to
/// the coordinator).
async fn close_sessions(server: &ActorRef<NodeServerMessage>) {
    if let Ok(sessions) = ractor::call_t!(server, NodeServerMessage::GetSessions, 2000) {
        for session in sessions.into_values() {
            session.actor.stop(Some("handshake timed out".into()));
        }
    }
}
