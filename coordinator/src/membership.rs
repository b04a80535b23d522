//! Membership: the coordinator's side of the control plane's actor cluster
//! (ractor_cluster). The coordinator runs the node server on `cluster.listen`; each
//! node agent joins it with the cluster secret (over TLS, or plain TCP on loopback by
//! explicit choice) and its `Member` actor joins the process group
//! [`NODES_GROUP`]. The [`Membership`] actor monitors that group: a member joining
//! (or rejoining after a coordinator restart or a dropped link) is nudged to
//! reconcile at once, and a change of a node's desired state in the `paddock_nodes`
//! bucket (drain, cordon, undrain) nudges that node's member: the fast path. A member
//! leaving is only logged and counted.
//!
//! Level-triggered by design: ractor_cluster leaves reconnects to the application and
//! may lose messages, so nothing depends on a message arriving. The desired state
//! lives in NATS and each node reconciles to it on its own tick and KV watch; a node
//! is lost when its heartbeat ages out, not when its session drops. Job data never
//! rides the actor cluster. The member list is exported as metrics
//! ([`MembershipMetrics`]: `paddock_cluster_members`,
//! `paddock_cluster_member_joined_timestamp_seconds{node}`).

use crate::config::ClusterSettings;
use futures::StreamExt;
use paddock_actors::member::{MemberMsg, NODES_GROUP, member_node};
use paddock_contract::subjects;
use paddock_telemetry::metrics::{MembershipMetrics, ReconcileReason};
use ractor::pg::GroupChangeMessage;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use ractor_cluster::{IncomingEncryptionMode, NodeServer, NodeServerMessage};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The coordinator's name in the actor cluster.
const NODE_NAME: &str = "paddock-coordinator";
/// Every key of a bucket, for a watch.
const ALL_KEYS: &str = ">";
/// The shortest cluster secret accepted.
const MIN_SECRET_LEN: usize = 16;
/// Pause before the node server is started again after it stopped on its own, and
/// before the desired-state watch is opened again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// Why the actor cluster cannot start. The secret itself never appears.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cluster.secret_file: {path}: {detail}")]
    Secret { path: PathBuf, detail: String },
    #[error("{key}: {path}: {detail}")]
    Tls {
        key: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("cluster.listen: cannot start the node server on {listen}: {detail}")]
    Listen { listen: SocketAddr, detail: String },
    #[error("cannot start the membership actor: {0}")]
    Membership(String),
}

/// Reads the cluster secret: a file its owner alone may read, holding at least
/// [`MIN_SECRET_LEN`] characters (surrounding whitespace is not part of it).
pub fn read_secret(path: &Path) -> Result<String, ClusterError> {
    let problem = |detail: String| ClusterError::Secret {
        path: path.to_path_buf(),
        detail,
    };
    let metadata = std::fs::metadata(path).map_err(|e| problem(e.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(problem(format!(
                "readable by others (mode {mode:o}); make it 0600"
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = metadata;
    let text = std::fs::read_to_string(path).map_err(|e| problem(e.to_string()))?;
    let secret = text.trim();
    if secret.chars().count() < MIN_SECRET_LEN {
        return Err(problem(format!(
            "the secret is shorter than {MIN_SECRET_LEN} characters"
        )));
    }
    Ok(secret.to_string())
}

/// The TLS acceptor of the node server, from PEM files.
pub fn tls_acceptor(
    cert_file: &Path,
    key_file: &Path,
) -> Result<tokio_rustls::TlsAcceptor, ClusterError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let read = |key: &'static str, path: &Path| {
        std::fs::read(path).map_err(|e| ClusterError::Tls {
            key,
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
    };
    let cert_pem = read("cluster.cert_file", cert_file)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| ClusterError::Tls {
            key: "cluster.cert_file",
            path: cert_file.to_path_buf(),
            detail: format!("not a PEM certificate chain: {e}"),
        })?;
    if certs.is_empty() {
        return Err(ClusterError::Tls {
            key: "cluster.cert_file",
            path: cert_file.to_path_buf(),
            detail: "holds no certificate".into(),
        });
    }
    let key_pem = read("cluster.key_file", key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| ClusterError::Tls {
        key: "cluster.key_file",
        path: key_file.to_path_buf(),
        detail: format!("not a PEM private key: {e}"),
    })?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
    .map_err(|e| ClusterError::Tls {
        key: "cluster.key_file",
        path: key_file.to_path_buf(),
        detail: format!("the certificate and key do not make a TLS configuration: {e}"),
    })?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// One member as the coordinator sees it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct MemberInfo {
    pub node: String,
    /// When it last joined (ms since the epoch).
    pub joined_at_ms: i64,
    /// Joins before the last one since this coordinator started: reconnects.
    pub rejoins: u32,
}

struct Entry<H> {
    actor: ActorId,
    handle: H,
    joined_at: SystemTime,
}

/// The members, by node, and how often each joined. `H` is how a member is reached
/// (its actor cell).
struct Roster<H> {
    members: BTreeMap<String, Entry<H>>,
    joins: BTreeMap<String, u32>,
}

impl<H> Roster<H> {
    fn new() -> Self {
        Roster {
            members: BTreeMap::new(),
            joins: BTreeMap::new(),
        }
    }

    /// `node`'s member `actor` joined; a member already listed for the node (a session
    /// not yet seen dropping) is replaced. Returns the rejoins so far.
    fn joined(&mut self, node: &str, actor: ActorId, handle: H, at: SystemTime) -> u32 {
        let joins = self.joins.entry(node.to_string()).or_insert(0);
        *joins += 1;
        self.members.insert(
            node.to_string(),
            Entry {
                actor,
                handle,
                joined_at: at,
            },
        );
        *joins - 1
    }

    /// `node`'s member `actor` left. False when that actor is not the member listed
    /// (a stale session that a newer one replaced).
    fn left(&mut self, node: &str, actor: ActorId) -> bool {
        if self.members.get(node).is_some_and(|e| e.actor == actor) {
            self.members.remove(node);
            true
        } else {
            false
        }
    }

    fn handle(&self, node: &str) -> Option<&H> {
        self.members.get(node).map(|e| &e.handle)
    }

    fn list(&self) -> Vec<MemberInfo> {
        self.members
            .iter()
            .map(|(node, entry)| MemberInfo {
                node: node.clone(),
                joined_at_ms: entry
                    .joined_at
                    .duration_since(UNIX_EPOCH)
                    .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
                    .unwrap_or(0),
                rejoins: self.joins.get(node).map_or(0, |j| j.saturating_sub(1)),
            })
            .collect()
    }

    fn len(&self) -> usize {
        self.members.len()
    }
}

pub enum MembershipMsg {
    /// A node's desired state changed: nudge its member, if it is one.
    DesiredChanged(String),
    /// The members now.
    Members(RpcReplyPort<Vec<MemberInfo>>),
}

impl ractor::Message for MembershipMsg {}

/// Keeps the member list from the process group's changes and nudges members.
pub struct Membership;

pub struct MembershipState {
    roster: Roster<ActorCell>,
    metrics: MembershipMetrics,
}

impl MembershipState {
    fn join(&mut self, cells: Vec<ActorCell>) {
        for cell in cells {
            let Some(name) = cell.get_name() else {
                continue;
            };
            let Some(node) = member_node(&name).map(str::to_string) else {
                tracing::debug!(actor = %name, "an actor that is no node's member joined the nodes' group");
                continue;
            };
            let now = SystemTime::now();
            let rejoins = self.roster.joined(&node, cell.get_id(), cell.clone(), now);
            self.metrics.joined(&node, now, self.roster.len());
            tracing::info!(%node, rejoins, members = self.roster.len(), "node joined the actor cluster");
            // It reads its desired state at once, whatever happened while it was away.
            self.nudge(&node, ReconcileReason::Joined);
        }
    }

    fn leave(&mut self, cells: Vec<ActorCell>) {
        for cell in cells {
            let Some(name) = cell.get_name() else {
                continue;
            };
            let Some(node) = member_node(&name).map(str::to_string) else {
                continue;
            };
            if self.roster.left(&node, cell.get_id()) {
                self.metrics.left(&node, self.roster.len());
                // Not `lost`: liveness is the heartbeat's to judge.
                tracing::info!(%node, members = self.roster.len(), "node left the actor cluster");
            }
        }
    }

    fn nudge(&self, node: &str, reason: ReconcileReason) {
        let Some(cell) = self.roster.handle(node) else {
            return;
        };
        let member: ActorRef<MemberMsg> = cell.clone().into();
        match member.cast(MemberMsg::Reconcile) {
            Ok(()) => self.metrics.reconcile_sent(reason),
            // Only latency is lost: the node's own tick reconciles.
            Err(error) => tracing::debug!(%node, %error, "cannot nudge a member"),
        }
    }
}

#[ractor::async_trait]
impl Actor for Membership {
    type Msg = MembershipMsg;
    type State = MembershipState;
    type Arguments = MembershipMetrics;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        metrics: MembershipMetrics,
    ) -> Result<Self::State, ActorProcessingErr> {
        let group = NODES_GROUP.to_string();
        ractor::pg::monitor(group.clone(), myself.get_cell());
        let mut state = MembershipState {
            roster: Roster::new(),
            metrics,
        };
        state.join(ractor::pg::get_members(&group));
        Ok(state)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        ractor::pg::demonitor(NODES_GROUP.to_string(), myself.get_id());
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            MembershipMsg::DesiredChanged(node) => {
                state.nudge(&node, ReconcileReason::DesiredChanged)
            }
            MembershipMsg::Members(reply) => {
                let _ = reply.send(state.roster.list());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ProcessGroupChanged(change) = event {
            match change {
                GroupChangeMessage::Join(_, group, cells) if group == NODES_GROUP => {
                    state.join(cells)
                }
                GroupChangeMessage::Leave(_, group, cells) if group == NODES_GROUP => {
                    state.leave(cells)
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// The running actor cluster: the node server, the membership actor and the watch of
/// desired states. [`ActorCluster::stop`] ends them.
pub struct ActorCluster {
    stop: CancellationToken,
    membership: ActorRef<MembershipMsg>,
    membership_handle: JoinHandle<()>,
    server_task: JoinHandle<()>,
    watch_task: JoinHandle<()>,
}

impl ActorCluster {
    /// The members now.
    pub async fn members(&self) -> Vec<MemberInfo> {
        ractor::call_t!(self.membership, MembershipMsg::Members, 2000).unwrap_or_default()
    }

    /// Stops the node server (dropping every session: nodes keep running and rejoin
    /// the next coordinator), the watch and the membership actor.
    pub async fn stop(self) {
        self.stop.cancel();
        self.watch_task.abort();
        let _ = self.server_task.await;
        self.membership.stop(None);
        let _ = tokio::time::timeout(Duration::from_secs(2), self.membership_handle).await;
    }
}

/// Starts the actor cluster when `cluster.listen` is set (`None` otherwise): checks
/// the secret and TLS files, binds the node server, and runs until `shutdown` or
/// [`ActorCluster::stop`].
pub async fn start(
    settings: &ClusterSettings,
    js: async_nats::jetstream::Context,
    metrics: MembershipMetrics,
    shutdown: CancellationToken,
) -> Result<Option<ActorCluster>, ClusterError> {
    let Some(listen) = settings.listen else {
        return Ok(None);
    };
    let secret_file = settings
        .secret_file
        .as_deref()
        .ok_or_else(|| ClusterError::Secret {
            path: PathBuf::new(),
            detail: "not set".into(),
        })?;
    let cookie = read_secret(secret_file)?;
    let encryption = match (&settings.cert_file, &settings.key_file) {
        (Some(cert), Some(key)) => IncomingEncryptionMode::Tls(tls_acceptor(cert, key)?),
        // `validate` allows this only on loopback, by explicit choice.
        _ => {
            tracing::warn!(%listen, "the actor cluster accepts plain TCP on loopback (cluster.insecure_loopback)");
            IncomingEncryptionMode::Raw
        }
    };
    let server = move || {
        NodeServer::new(
            listen.port(),
            cookie.clone(),
            NODE_NAME.to_string(),
            listen.ip().to_string(),
            Some(encryption.clone()),
            Some(ractor_cluster::node::NodeConnectionMode::Isolated),
        )
        .with_listen_addr(listen.ip())
    };
    let (membership, membership_handle) = Actor::spawn(None, Membership, metrics)
        .await
        .map_err(|e| ClusterError::Membership(e.to_string()))?;
    // The first start reports a port in use; later restarts only log.
    let first = match Actor::spawn(None, server(), ()).await {
        Ok(spawned) => spawned,
        Err(error) => {
            membership.stop(None);
            return Err(ClusterError::Listen {
                listen,
                detail: error.to_string(),
            });
        }
    };
    tracing::info!(%listen, tls = settings.cert_file.is_some(), "actor cluster node server listening");
    let stop = shutdown.child_token();
    let server_task = tokio::spawn(keep_serving(first, server, listen, stop.clone()));
    let watch_task = tokio::spawn(watch_desired(js, membership.clone(), stop.clone()));
    Ok(Some(ActorCluster {
        stop,
        membership,
        membership_handle,
        server_task,
        watch_task,
    }))
}

/// Keeps the node server running until `shutdown`: one that stops on its own is
/// started again (nodes rejoin by themselves).
async fn keep_serving(
    first: (
        ActorRef<NodeServerMessage>,
        ractor::concurrency::JoinHandle<()>,
    ),
    server: impl Fn() -> NodeServer + Send + 'static,
    listen: SocketAddr,
    shutdown: CancellationToken,
) {
    let (mut current, mut handle) = first;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                current.stop(None);
                let _ = tokio::time::timeout(Duration::from_secs(2), handle).await;
                return;
            }
            _ = &mut handle => {
                tracing::error!(%listen, "the actor cluster node server stopped; starting it again");
            }
        }
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(RETRY_EVERY) => {}
            }
            match Actor::spawn(None, server(), ()).await {
                Ok((server, server_handle)) => {
                    (current, handle) = (server, server_handle);
                    break;
                }
                Err(error) => {
                    tracing::warn!(%listen, %error, "cannot start the actor cluster node server yet")
                }
            }
        }
    }
}

/// Nudges a node's member whenever its desired state changes. The watch starts with
/// every node's current desired state, so a change made while the coordinator was
/// down, or while the watch was being opened again, is not left to the nodes' ticks.
/// The bucket is created by the first node; until it exists, and after a failed
/// watch, it is tried again.
async fn watch_desired(
    js: async_nats::jetstream::Context,
    membership: ActorRef<MembershipMsg>,
    shutdown: CancellationToken,
) {
    loop {
        let opened = tokio::select! {
            _ = shutdown.cancelled() => return,
            opened = async {
                let store = js.get_key_value(subjects::NODES_BUCKET).await.ok()?;
                store.watch_with_history(ALL_KEYS).await.ok()
            } => opened,
        };
        if let Some(mut changes) = opened {
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    next = changes.next() => next,
                };
                match next {
                    Some(Ok(entry)) => {
                        if membership
                            .cast(MembershipMsg::DesiredChanged(entry.key))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Some(Err(error)) => {
                        tracing::debug!(%error, "the desired-state watch failed; opening it again");
                        break;
                    }
                    None => break,
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(RETRY_EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(pid: u64) -> ActorId {
        ActorId::Remote { node_id: 1, pid }
    }

    #[test]
    fn a_rejoin_is_counted_and_a_stale_leave_ignored() {
        let mut roster: Roster<()> = Roster::new();
        let at = UNIX_EPOCH + Duration::from_secs(5);
        assert_eq!(roster.joined("mini-1", id(1), (), at), 0);
        assert_eq!(roster.joined("mini-2", id(2), (), at), 0);
        // mini-1 comes back on a new session before its old one is seen dropping.
        assert_eq!(roster.joined("mini-1", id(3), (), at), 1);
        assert!(!roster.left("mini-1", id(1)), "the stale session's leave");
        assert_eq!(roster.len(), 2);
        assert_eq!(
            roster.list(),
            vec![
                MemberInfo {
                    node: "mini-1".into(),
                    joined_at_ms: 5000,
                    rejoins: 1
                },
                MemberInfo {
                    node: "mini-2".into(),
                    joined_at_ms: 5000,
                    rejoins: 0
                },
            ]
        );
        assert!(roster.left("mini-1", id(3)));
        assert!(roster.handle("mini-1").is_none());
        assert_eq!(roster.len(), 1);
    }

    #[test]
    fn the_secret_file_must_be_private_and_long_enough() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("secret");
        std::fs::write(&file, "correct horse battery staple\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = read_secret(&file).expect_err("world-readable").to_string();
        assert!(
            error.contains("cluster.secret_file") && error.contains("0600"),
            "{error}"
        );
        assert!(!error.contains("horse"), "{error}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            read_secret(&file).expect("private"),
            "correct horse battery staple"
        );
        std::fs::write(&file, "short").expect("write");
        let error = read_secret(&file).expect_err("too short").to_string();
        assert!(error.contains("shorter"), "{error}");
    }

    #[test]
    fn tls_files_are_checked_by_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, "not a certificate").expect("write");
        std::fs::write(&key, "not a key").expect("write");
        let error = tls_acceptor(&cert, &key)
            .err()
            .expect("refused")
            .to_string();
        assert!(error.contains("cluster.cert_file"), "{error}");
    }
}
