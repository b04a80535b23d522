//! The sandbox tests' harness: a tree of job folders with planted secrets (removed on
//! drop), a policy for one job running as `nobody`, a bubblewrap sandbox using this
//! crate's `paddock-sandbox-init`, an egress proxy on a unix socket, a local HTTP
//! server standing in for an allowlisted site and a canary port that must never be
//! reached. Everything listens on 127.0.0.1 or a unix socket only.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use paddock_sandbox::proxy::{EgressProxy, ProxyConfig, bind_unix};
use paddock_sandbox::{
    Limits, Network, ProxyAccess, RunAs, Sandbox, SandboxGuard, SandboxPolicy, SandboxReport,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long one sandboxed command may run in a test.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// `nobody`: the unprivileged user the agent runs as in tests.
pub const NOBODY: RunAs = RunAs {
    uid: 65534,
    gid: 65534,
};

/// The in-sandbox init built with this crate.
pub fn init_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_paddock-sandbox-init"))
}

/// Two jobs' folders, an agent HOME with a planted SSH key, a read-only "toolchain"
/// folder and a private runtime folder, all under one temp folder.
pub struct Jobs {
    _root: tempfile::TempDir,
    pub base: PathBuf,
}

impl Jobs {
    pub fn new() -> anyhow::Result<Self> {
        let root = tempfile::tempdir()?;
        let base = std::fs::canonicalize(root.path())?;
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755))?;
        for dir in [
            "jobs/a/ws/.git/hooks",
            "jobs/a/ws/.git/objects",
            "jobs/a/tmp",
            "jobs/b/ws",
            "home/.ssh",
            "toolchain",
            "runtime",
        ] {
            std::fs::create_dir_all(base.join(dir))?;
        }
        std::fs::write(
            base.join("jobs/a/ws/.git/config"),
            "[core]\n\tbare = false\n",
        )?;
        std::fs::write(
            base.join("jobs/a/ws/.git/hooks/pre-commit.sample"),
            "#!/bin/sh\n",
        )?;
        std::fs::write(base.join("jobs/a/ws/README.md"), "job a\n")?;
        std::fs::write(base.join("jobs/b/ws/secret.txt"), "job b's private data\n")?;
        std::fs::write(base.join("home/.ssh/id_ed25519"), "PLANTED-PRIVATE-KEY\n")?;
        std::fs::write(base.join("toolchain/readme"), "read-only toolchain\n")?;
        for dir in ["jobs/a/ws", "jobs/a/tmp", "home"] {
            chown_tree(&base.join(dir), NOBODY)?;
        }
        Ok(Self { _root: root, base })
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.base.join(relative)
    }

    pub fn workspace(&self) -> PathBuf {
        self.path("jobs/a/ws")
    }

    /// Job a's policy: runs as nobody, other jobs denied, tight limits.
    pub fn policy(&self) -> SandboxPolicy {
        let mut policy = SandboxPolicy::new(
            &self.workspace(),
            &self.path("jobs/a/tmp"),
            &self.path("home"),
        );
        policy.read_only.push(self.path("toolchain"));
        policy.denied.push(self.path("jobs"));
        policy.run_as = Some(NOBODY);
        policy.limits = Limits {
            open_files: Some(256),
            file_size_bytes: Some(1 << 20),
            cpu_seconds: Some(120),
            processes: Some(64),
            memory_bytes: None,
        };
        policy
            .env
            .insert("PADDOCK_TEST_MARKER".into(), "kept".into());
        policy
    }

    pub fn sandbox(&self) -> Sandbox {
        let mut sandbox = Sandbox::bubblewrap(init_path());
        sandbox.runtime_dir = self.path("runtime");
        sandbox
    }
}

/// Hands `path` and everything below it to `user`.
pub fn chown_tree(path: &Path, user: RunAs) -> anyhow::Result<()> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
        .with_context(|| format!("chown {}", path.display()))?;
    if path.is_dir() && !path.is_symlink() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), user)?;
        }
    }
    Ok(())
}

/// What a sandboxed shell command did.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub report: SandboxReport,
}

impl Ran {
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs `sh -c script` in the sandbox of `policy` and cleans up.
pub async fn sh(sandbox: &Sandbox, policy: &SandboxPolicy, script: &str) -> anyhow::Result<Ran> {
    let command = sandbox.command(policy, Path::new("/bin/sh"), &["-c".into(), script.into()])?;
    let started = command.spawn(|command| {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
    })?;
    let output = tokio::time::timeout(RUN_TIMEOUT, started.child.wait_with_output())
        .await
        .with_context(|| format!("{script:?} did not finish within {RUN_TIMEOUT:?}"))??;
    let report = started.guard.finish();
    Ok(Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        report,
    })
}

/// Starts `sh -c script` and returns it running, with its guard.
pub fn start(
    sandbox: &Sandbox,
    policy: &SandboxPolicy,
    script: &str,
) -> anyhow::Result<(tokio::process::Child, SandboxGuard)> {
    let command = sandbox.command(policy, Path::new("/bin/sh"), &["-c".into(), script.into()])?;
    let started = command.spawn(|command| {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
    })?;
    Ok((started.child, started.guard))
}

/// An egress proxy on a unix socket, stopped on drop.
pub struct RunningProxy {
    pub proxy: EgressProxy,
    pub socket: PathBuf,
    shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl RunningProxy {
    pub fn start(socket: PathBuf, config: ProxyConfig) -> anyhow::Result<Self> {
        let listener = bind_unix(&socket)?;
        let proxy = EgressProxy::new(config)?;
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let proxy = proxy.clone();
            let shutdown = shutdown.clone();
            async move { proxy.serve(listener, shutdown).await }
        });
        Ok(Self {
            proxy,
            socket,
            shutdown,
            task,
        })
    }

    /// What the sandbox's policy says about this proxy.
    pub fn network(&self) -> Network {
        Network::Proxy(ProxyAccess {
            port: 3128,
            socket: Some(self.socket.clone()),
        })
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .context("the proxy did not stop")??;
        Ok(())
    }
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A tiny HTTP server on 127.0.0.1 answering every request with `body`; counts
/// connections. Stops on drop.
pub struct LocalSite {
    pub address: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    shutdown: CancellationToken,
}

impl LocalSite {
    pub async fn start(body: &'static str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let connections = Arc::new(AtomicUsize::new(0));
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let connections = Arc::clone(&connections);
            let shutdown = shutdown.clone();
            async move {
                loop {
                    let accepted = tokio::select! {
                        () = shutdown.cancelled() => return,
                        accepted = listener.accept() => accepted,
                    };
                    let Ok((mut stream, _)) = accepted else {
                        continue;
                    };
                    connections.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(async move {
                        let mut buffer = vec![0u8; 8192];
                        let mut read = 0;
                        while !buffer[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buffer[read..]).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => read += n,
                            }
                            if read == buffer.len() {
                                return;
                            }
                        }
                        let response = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                             Connection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = stream.write_all(response.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    });
                }
            }
        });
        Ok(Self {
            address,
            connections,
            shutdown,
        })
    }

    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for LocalSite {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The proxy configuration of the tests: `allowed.test` is the local site (by an
/// explicit loopback exception), `private.test` and `metadata.test` are allowlisted
/// names that resolve to forbidden addresses, and nothing is looked up in DNS.
pub fn proxy_config(site: SocketAddr, extra_exceptions: &[SocketAddr]) -> ProxyConfig {
    let mut config = ProxyConfig {
        allow: vec![
            format!("allowed.test:{}", site.port()),
            "private.test:*".into(),
            "metadata.test:*".into(),
        ],
        system_dns: false,
        ..ProxyConfig::default()
    };
    config.hosts.insert("allowed.test".into(), vec![site.ip()]);
    config.hosts.insert(
        "private.test".into(),
        vec!["10.20.30.40".parse().expect("ip")],
    );
    config.hosts.insert(
        "metadata.test".into(),
        vec!["169.254.169.254".parse().expect("ip")],
    );
    config.loopback_exceptions.push(site);
    config
        .loopback_exceptions
        .extend_from_slice(extra_exceptions);
    config
}
