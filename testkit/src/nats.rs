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
    /// The config and users files of [`NatsServer::start_with_authorization`].
    auth_folder: Option<tempfile::TempDir>,
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
            auth_folder: None,
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

/// Names of the files of a server started with [`NatsServer::start_with_authorization`].
const USERS_FILE: &str = "users.conf";
const STATIC_USERS_FILE: &str = "static-users.conf";
const PID_FILE: &str = "nats-server.pid";

impl NatsServer {
    /// Starts a server that lets in only known users: its config has
    /// `authorization { include "users.conf" }`, and `users.conf` starts out holding
    /// the static `users` (name, password; full access). The coordinator owns
    /// `users.conf` from then on ([`NatsServer::users_file`]), copying
    /// [`NatsServer::static_users_file`] into it and adding the nodes' nkeys; it
    /// reloads the server through [`NatsServer::pid_file`].
    pub async fn start_with_authorization(users: &[(&str, &str)]) -> NatsServer {
        let folder = tempfile::Builder::new()
            .prefix("paddock-nats-auth-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let path = folder.path().to_path_buf();
        let quote = |s: &str| format!("{s:?}");
        let entries: Vec<String> = users
            .iter()
            .map(|(user, password)| {
                format!("{{user: {}, password: {}}}", quote(user), quote(password))
            })
            .collect();
        let static_users = entries.join("\n");
        let write = |name: &str, text: &str| {
            let file = path.join(name);
            std::fs::write(&file, text)
                .unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
            file
        };
        write(STATIC_USERS_FILE, &format!("{static_users}\n"));
        write(USERS_FILE, &format!("users = [\n{static_users}\n]\n"));
        let config = write(
            "nats-server.conf",
            &format!("authorization {{\n  include {}\n}}\n", quote(USERS_FILE)),
        );
        let mut server = Self::start_with_args(vec![
            "-c".into(),
            config.display().to_string(),
            "-P".into(),
            path.join(PID_FILE).display().to_string(),
        ])
        .await;
        server.auth_folder = Some(folder);
        server
    }

    /// The authorization file the coordinator keeps (`join.nats_users_file`).
    pub fn users_file(&self) -> PathBuf {
        self.auth_path(USERS_FILE)
    }

    /// The services' own users (`join.nats_static_users_file`).
    pub fn static_users_file(&self) -> PathBuf {
        self.auth_path(STATIC_USERS_FILE)
    }

    /// The server's pid file (`join.nats_pid_files`).
    pub fn pid_file(&self) -> PathBuf {
        self.auth_path(PID_FILE)
    }

    fn auth_path(&self, name: &str) -> PathBuf {
        match &self.auth_folder {
            Some(folder) => folder.path().join(name),
            None => panic!("this nats-server was not started with start_with_authorization"),
        }
    }

    /// `nats://user:password@127.0.0.1:PORT`, for clients of a server with users.
    pub fn url_with_user(&self, user: &str, password: &str) -> String {
        format!("nats://{user}:{password}@127.0.0.1:{}", self.port)
    }

    /// Asks the server to read its config files again (SIGHUP).
    pub fn reload(&self) {
        if let Some(child) = &self.child {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP);
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
