//! Checks the Seatbelt back end on a Mac: builds a job's tree in a temp folder (a
//! planted SSH key, a git repository, another job's workspace), starts an egress proxy
//! on 127.0.0.1 with a local "allowed" site, then runs escape attempts through
//! `/usr/bin/sandbox-exec` with the generated profile and prints PASS or FAIL for each.
//!
//! `cargo run -p paddock-sandbox --example seatbelt_check` (as root to also check the
//! switch to `nobody`; `-- --print` only prints the profile and its parameters,
//! which also works on Linux).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use paddock_sandbox::proxy::{EgressProxy, ProxyConfig};
use paddock_sandbox::{Network, ProxyAccess, RunAs, Sandbox, SandboxPolicy};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A shell command and whether it must succeed.
const ATTEMPTS: &[(&str, &str, bool)] = &[
    ("write the workspace", "echo ok > inside.txt", true),
    ("write the temp folder", "echo ok > \"$TMPDIR/t\"", true),
    ("read the planted secret", "cat ~/.ssh/id_ed25519", false),
    ("list the secret folder", "ls ~/.ssh", false),
    ("read another job", "cat ../../b/ws/secret.txt", false),
    ("write outside", "echo x > ../../outside.txt", false),
    ("write /tmp", "echo x > /tmp/paddock-seatbelt-check", false),
    ("change .git/config", "echo x >> .git/config", false),
    ("add a git hook", "echo x > .git/hooks/post-checkout", false),
    ("rename .git", "mv .git .git-moved", false),
    ("write git objects", "echo x > .git/objects/probe", true),
    (
        "create .claude/settings.json",
        "mkdir -p .claude && echo {} > .claude/settings.json",
        false,
    ),
    (
        "change the CLI's settings",
        "echo x > ~/.claude/settings.json",
        false,
    ),
    (
        "reach the site directly",
        "curl -sS --max-time 5 --noproxy '*' http://127.0.0.1:$SITE_PORT/",
        false,
    ),
    (
        "fetch the allowed site via the proxy",
        "curl -sS --max-time 5 http://allowed.test:$SITE_PORT/",
        true,
    ),
    (
        "fetch a domain off the allowlist",
        "curl -sS -f --max-time 5 http://example.com/",
        false,
    ),
];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let print_only = std::env::args().any(|arg| arg == "--print");
    let root = tempfile::tempdir()?;
    let base = std::fs::canonicalize(root.path())?;
    for dir in [
        "jobs/a/ws/.git/hooks",
        "jobs/a/ws/.git/objects",
        "jobs/a/tmp",
        "jobs/b/ws",
        "home/.ssh",
    ] {
        std::fs::create_dir_all(base.join(dir))?;
    }
    std::fs::write(base.join("jobs/a/ws/.git/config"), "[core]\n")?;
    std::fs::write(base.join("jobs/b/ws/secret.txt"), "job b\n")?;
    std::fs::write(base.join("home/.ssh/id_ed25519"), "PLANTED\n")?;

    let site = TcpListener::bind("127.0.0.1:0").await?;
    let site_address = site.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = site.accept().await {
            let mut buffer = [0u8; 4096];
            let _ = stream.read(&mut buffer).await;
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .await;
        }
    });
    let proxy_listener = TcpListener::bind("127.0.0.1:0").await?;
    let proxy_port = proxy_listener.local_addr()?.port();
    let mut config = ProxyConfig {
        allow: vec![format!("allowed.test:{}", site_address.port())],
        system_dns: false,
        loopback_exceptions: vec![site_address],
        ..ProxyConfig::default()
    };
    config
        .hosts
        .insert("allowed.test".into(), vec![site_address.ip()]);
    let shutdown = CancellationToken::new();
    let proxy = EgressProxy::new(config)?;
    tokio::spawn({
        let proxy = proxy.clone();
        let shutdown = shutdown.clone();
        async move { proxy.serve(proxy_listener, shutdown).await }
    });

    let mut policy = SandboxPolicy::new(
        &base.join("jobs/a/ws"),
        &base.join("jobs/a/tmp"),
        &base.join("home"),
    );
    policy.denied.push(base.join("jobs"));
    policy.network = Network::Proxy(ProxyAccess {
        port: proxy_port,
        socket: None,
    });
    policy
        .env
        .insert("SITE_PORT".into(), site_address.port().to_string());
    if nix::unistd::geteuid().is_root() {
        policy.run_as = Some(RunAs::user("nobody")?);
        for dir in ["jobs/a/ws", "jobs/a/tmp", "home"] {
            chown_tree(&base.join(dir), policy.run_as.map(|r| (r.uid, r.gid)))?;
        }
    }

    let init = std::env::current_exe()?.with_file_name("../paddock-sandbox-init");
    if print_only || !cfg!(target_os = "macos") {
        let profile = paddock_sandbox::seatbelt_profile(&policy, None)?;
        println!("{}", profile.text);
        for (name, path) in &profile.params {
            println!("; -D {name}={}", path.display());
        }
        if !cfg!(target_os = "macos") {
            eprintln!("(not a Mac: printed the profile only)");
        }
        return Ok(());
    }

    let sandbox = Sandbox::seatbelt(init);
    let mut failures = 0;
    for (what, script, must_succeed) in ATTEMPTS {
        let command = sandbox.command(
            &policy,
            Path::new("/bin/sh"),
            &["-c".into(), (*script).into()],
        )?;
        let started = command.spawn(|command| {
            command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
        })?;
        let output = started.child.wait_with_output().await?;
        let _ = started.guard.finish();
        let passed = output.status.success() == *must_succeed;
        failures += usize::from(!passed);
        println!(
            "{} {what}: {} {}",
            if passed { "PASS" } else { "FAIL" },
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    println!(
        "proxy refusals: {:?}",
        proxy
            .refusals()
            .iter()
            .map(|r| &r.target)
            .collect::<Vec<_>>()
    );
    shutdown.cancel();
    if failures > 0 {
        anyhow::bail!("{failures} check(s) failed");
    }
    Ok(())
}

fn chown_tree(path: &Path, owner: Option<(u32, u32)>) -> anyhow::Result<()> {
    let Some((uid, gid)) = owner else {
        return Ok(());
    };
    std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    if path.is_dir() {
        for entry in std::fs::read_dir(path)? {
            let entry: PathBuf = entry?.path();
            chown_tree(&entry, owner)?;
        }
    }
    Ok(())
}
