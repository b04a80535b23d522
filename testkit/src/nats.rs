//! A real nats-server with JetStream for one test or suite.

use crate::{eventually, free_port, tools_bin};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running nats-server on 127.0.0.1 with its own store. Stopped and removed on drop.
pub struct NatsServer {
    port: u16,
    store: tempfile::TempDir,
    child: Option<Child>,
    binary: PathBuf,
    extra_args: Vec<String>,
}

impl NatsServer {
    /// Starts a server on a free port with a fresh temporary store.
    pub async fn start() -> NatsServer {
        Self::start_with_args(Vec::new()).await
    }

    /// As [`NatsServer::start`], with extra command-line arguments.
    pub async fn start_with_args(extra_args: Vec<String>) -> NatsServer {
        let binary = tools_bin().join("nats-server");
        assert!(
            binary.exists(),
            "{} is missing: run ops/install-deps.sh",
            binary.display()
        );
        let store = tempfile::Builder::new()
            .prefix("paddock-nats-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let mut server = NatsServer {
            port: free_port(),
            store,
            child: None,
            binary,
            extra_args,
        };
        server.start_again().await;
        server
    }

    /// `nats://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn store_dir(&self) -> &Path {
        self.store.path()
    }

    /// Starts the server again on the same port and store after [`NatsServer::stop`].
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "nats-server is already running");
        let log = self.store.path().join("nats-server.log");
        let child = Command::new(&self.binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path().join("js"))
            .arg("-l")
            .arg(&log)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        let port = self.port;
        eventually(
            Duration::from_secs(15),
            "nats-server to listen",
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
    }

    /// Stops the server (SIGTERM, then SIGKILL), keeping its store.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            crate::process::terminate(child, Duration::from_secs(5));
        }
    }

    /// Kills the server at once (SIGKILL), keeping its store.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
