//! HTTPS for the API listener: the `[tls]` certificate chain and key (PEM files) made
//! into a rustls server configuration (ring, TLS 1.2 and 1.3, ALPN `h2` then
//! `http/1.1`), and [`TlsListener`], an `axum::serve` listener that completes each
//! TLS handshake in its own task before handing the connection to axum. So axum's
//! graceful shutdown, connection info and WebSocket upgrades work the same as over
//! plain TCP, and a slow or silent client holds up no one else's handshake.
//!
//! The certificate can be replaced without a restart: [`ServerTls::reload`] (on
//! SIGHUP) reads the files again and new connections use them; a bad file is logged
//! and the certificate in use stays. The metrics listener is not served here: it
//! stays plain HTTP.

use crate::config::TlsSettings;
use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// How long a client has to complete its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; past this, accepting waits (the kernel's backlog
/// holds the rest).
const MAX_PENDING_HANDSHAKES: usize = 1024;
/// Connections handshaken but not yet taken by the server.
const READY_QUEUE: usize = 64;

/// Why the certificate files could not be used. Each names the config key to fix and
/// says the cause in its message (so a log line has it all).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the certificates of tls.cert_file ({path}): {reason}")]
    Certificates { path: PathBuf, reason: pem::Error },
    #[error("tls.cert_file ({path}) holds no PEM certificate")]
    NoCertificate { path: PathBuf },
    #[error("cannot read the private key of tls.key_file ({path}): {reason}")]
    Key { path: PathBuf, reason: pem::Error },
    #[error(
        "tls.key_file ({key}) is not the private key of the certificate in tls.cert_file ({cert}), or cannot be used: {reason}"
    )]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        reason: rustls::Error,
    },
}

/// The API's TLS configuration, shared by the listener and the reloader.
#[derive(Clone)]
pub struct ServerTls {
    settings: TlsSettings,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl ServerTls {
    /// Reads the certificate chain and key named by `settings`.
    pub fn load(settings: &TlsSettings) -> Result<ServerTls, TlsError> {
        let config = server_config(settings)?;
        Ok(ServerTls {
            settings: settings.clone(),
            current: Arc::new(RwLock::new(config)),
        })
    }

    /// Reads the files again; new connections use them, open ones keep theirs. On an
    /// error the configuration in use stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.settings)?;
        match self.current.write() {
            Ok(mut current) => *current = config,
            Err(poisoned) => *poisoned.into_inner() = config,
        }
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        let config = match self.current.read() {
            Ok(current) => current.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        TlsAcceptor::from(config)
    }
}

/// The rustls configuration of the files in `settings`.
pub fn server_config(settings: &TlsSettings) -> Result<Arc<ServerConfig>, TlsError> {
    let cert_path = &settings.cert_file;
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_path)
        .and_then(|items| items.collect::<Result<_, _>>())
        .map_err(|reason| TlsError::Certificates {
            path: cert_path.clone(),
            reason,
        })?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.clone(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&settings.key_file).map_err(|reason| TlsError::Key {
        path: settings.key_file.clone(),
        reason,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| {
            builder
                .with_no_client_auth()
                .with_single_cert(certificates, key)
        })
        .map_err(|reason| TlsError::Mismatch {
            cert: cert_path.clone(),
            key: settings.key_file.clone(),
            reason,
        })?;
    // HTTP/2 where the client offers it; WebSockets ask for HTTP/1.1 (or nothing).
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Reloads the certificate files on every SIGHUP until `shutdown`.
#[cfg(unix)]
pub async fn reload_on_hangup(tls: ServerTls, shutdown: tokio_util::sync::CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(hangups) => hangups,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP; the certificate is reloaded only by a restart");
            return;
        }
    };
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            received = hangups.recv() => {
                if received.is_none() {
                    return;
                }
                match tls.reload() {
                    Ok(()) => tracing::info!("reloaded the TLS certificate"),
                    Err(e) => tracing::error!(error = %e, "kept the TLS certificate in use"),
                }
            }
        }
    }
}

/// An `axum::serve` listener of TLS connections. A task accepts TCP connections and
/// runs each handshake in a task of its own (at most [`MAX_PENDING_HANDSHAKES`] at a
/// time, each within [`HANDSHAKE_TIMEOUT`]); [`axum::serve::Listener::accept`] takes
/// the finished ones. Dropping the listener (graceful shutdown) stops that task and
/// closes the port.
pub struct TlsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local_addr: SocketAddr,
}

impl TlsListener {
    pub fn new(listener: TcpListener, tls: ServerTls) -> std::io::Result<TlsListener> {
        let local_addr = listener.local_addr()?;
        let (sender, ready) = mpsc::channel(READY_QUEUE);
        tokio::spawn(accept_loop(listener, tls, sender));
        Ok(TlsListener { ready, local_addr })
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: ServerTls,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            () = ready.closed() => return,
            permit = pending.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = ready.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, address) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                accept_failed(e).await;
                continue;
            }
        };
        // Small WebSocket frames must not wait for the client's delayed ACK (Nagle).
        let _ = tcp.set_nodelay(true);
        let acceptor = tls.acceptor();
        let ready = ready.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = ready.send((stream, address)).await;
                }
                // Scanners and plain-HTTP clients end here; not worth more than debug.
                Ok(Err(e)) => tracing::debug!(%address, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%address, "TLS handshake timed out"),
            }
        });
    }
}

/// Like axum's own listener: a connection that died before it was accepted is
/// nothing; anything else (too many open files, say) is logged and retried after a
/// pause, so the loop does not spin.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "accepting a connection failed");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task ends only when this listener is dropped, so this is not
            // reached; a listener must not return without a connection.
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

    fn write(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    }

    fn self_signed(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec![name.to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_chain_and_its_key_make_a_config_offering_h2_and_http1() {
        let dir = tempfile::tempdir().expect("dir");
        let (leaf, key) = self_signed("localhost");
        let (other, _) = self_signed("ca.example");
        let settings = TlsSettings {
            cert_file: write(dir.path(), "chain.pem", &format!("{leaf}{other}")),
            key_file: write(dir.path(), "key.pem", &key),
        };
        let tls = ServerTls::load(&settings).expect("loads");
        assert_eq!(
            tls.acceptor().config().alpn_protocols,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        tls.reload().expect("reloads");
    }

    #[test]
    fn bad_files_name_their_key() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = self_signed("localhost");
        let (_, other_key) = self_signed("localhost");
        let cert_file = write(dir.path(), "cert.pem", &cert);
        let key_file = write(dir.path(), "key.pem", &key);
        let cases = [
            (
                dir.path().join("missing.pem"),
                key_file.clone(),
                "tls.cert_file",
            ),
            (
                write(dir.path(), "empty.pem", "hello\n"),
                key_file.clone(),
                "tls.cert_file",
            ),
            (key_file.clone(), key_file.clone(), "tls.cert_file"),
            (
                cert_file.clone(),
                dir.path().join("missing-key.pem"),
                "tls.key_file",
            ),
            (cert_file.clone(), cert_file.clone(), "tls.key_file"),
            (
                cert_file.clone(),
                write(dir.path(), "other.pem", &other_key),
                "tls.key_file",
            ),
        ];
        for (cert_file, key_file, named) in cases {
            let settings = TlsSettings {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            };
            let message = match ServerTls::load(&settings) {
                Ok(_) => panic!(
                    "{} with {} was accepted",
                    cert_file.display(),
                    key_file.display()
                ),
                Err(e) => e.to_string(),
            };
            assert!(message.contains(named), "expected {named} in {message:?}");
        }
    }

    #[test]
    fn a_failed_reload_keeps_the_certificate_in_use() {
        let dir = tempfile::tempdir().expect("dir");
        let (cert, key) = self_signed("localhost");
        let settings = TlsSettings {
            cert_file: write(dir.path(), "cert.pem", &cert),
            key_file: write(dir.path(), "key.pem", &key),
        };
        let tls = ServerTls::load(&settings).expect("loads");
        let before = tls.acceptor().config().clone();
        std::fs::write(&settings.key_file, "broken").expect("write");
        assert!(tls.reload().is_err());
        assert!(Arc::ptr_eq(&before, tls.acceptor().config()));
    }
}
