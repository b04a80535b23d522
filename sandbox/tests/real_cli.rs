//! The headline tests: the real Claude Code CLI, sandboxed as a job would be (bubblewrap,
//! `nobody`, the egress proxy on a unix socket, a pids cgroup, rlimits), runs scripted
//! conversations against the project's Messages API double. Its Bash tool tries to
//! read a secret planted in its HOME, write outside its workspace, read another job's
//! workspace, reach a loopback port that is not the proxy, fetch a domain off the
//! allowlist, fill the disk past the file-size limit and fork-bomb. Every attempt fails
//! inside the sandbox and shows in the CLI's output (what the job records), an
//! allowlisted fetch goes through the proxy, and the test process — the node — is fine.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use paddock_model_double::{ModelDouble, Script};
use paddock_sandbox::proxy::RefusalReason;
use paddock_sandbox::{Limits, SandboxReport};
use serde_json::{Value, json};
use support::{Jobs, LocalSite, RunningProxy, proxy_config};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// One CLI run's deadline: generous for two slow cores, short enough to fail loudly.
const RUN_TIMEOUT: Duration = Duration::from_secs(240);

fn claude() -> PathBuf {
    let path = paddock_testkit::claude_cli();
    assert!(
        path.exists(),
        "the Claude Code CLI is missing at {}: run ops/install-deps.sh",
        path.display()
    );
    path
}

/// The model double serving in this process on 127.0.0.1; stops on drop.
struct Double {
    address: SocketAddr,
    handle: ModelDouble,
    shutdown: CancellationToken,
}

impl Double {
    async fn start(script: Script) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let handle = ModelDouble::new(script);
        let shutdown = CancellationToken::new();
        tokio::spawn({
            let handle = handle.clone();
            let shutdown = shutdown.clone();
            async move { handle.serve(listener, shutdown).await }
        });
        Ok(Self {
            address,
            handle,
            shutdown,
        })
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A conversation whose steps each run one Bash command, then a closing text.
fn script(matches: &str, commands: &[String]) -> anyhow::Result<Script> {
    let mut steps: Vec<Value> = commands
        .iter()
        .map(|command| {
            json!({"content": [{"type": "tool_use", "name": "Bash",
                                "input": {"command": command, "description": "sandbox attempt"}}]})
        })
        .collect();
    steps.push(json!({"content": [{"type": "text", "text": "All attempts made."}]}));
    let script = json!({"conversations": [{"match": matches, "steps": steps}]});
    Ok(Script::parse(&script.to_string(), "sandbox attempts")?)
}

/// What the sandboxed CLI printed and what the sandbox saw.
struct CliRun {
    lines: Vec<Value>,
    /// The `result` line; `None` when the CLI ended without one.
    result: Option<Value>,
    status: std::process::ExitStatus,
    stderr: String,
    report: SandboxReport,
}

impl CliRun {
    /// The tool results, in order, as text (what the job records of each attempt).
    fn tool_results(&self) -> Vec<String> {
        self.lines
            .iter()
            .filter(|line| line["type"] == "user")
            .flat_map(|line| {
                line["message"]["content"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .filter(|block| block["type"] == "tool_result")
            .map(|block| match &block["content"] {
                Value::String(text) => text.clone(),
                other => other.to_string(),
            })
            .collect()
    }
}

/// Runs one turn of the sandboxed CLI with `prompt`.
async fn run_sandboxed_cli(
    jobs: &Jobs,
    proxy: &RunningProxy,
    double: &Double,
    limits: Limits,
    prompt: &str,
) -> anyhow::Result<CliRun> {
    let mut policy = jobs.policy();
    policy
        .read_only
        .push(paddock_testkit::repo_root().join(".tools"));
    policy.network = proxy.network();
    policy.limits = limits;
    policy.env.extend(
        [
            ("ANTHROPIC_BASE_URL", format!("http://{}", double.address)),
            ("ANTHROPIC_API_KEY", "test-key".to_owned()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".to_owned()),
            ("CLAUDE_CODE_MAX_RETRIES", "1".to_owned()),
            ("PATH", "/usr/local/bin:/usr/bin:/bin".to_owned()),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let args: Vec<String> = [
        "-p",
        "--input-format",
        "stream-json",
        "--output-format",
        "stream-json",
        "--verbose",
        "--allowedTools",
        "Bash",
    ]
    .map(str::to_owned)
    .to_vec();
    let command = jobs.sandbox().command(&policy, &claude(), &args)?;
    let mut started = command.spawn(|command| {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
    })?;
    let child = &mut started.child;
    let mut stdin = child.stdin.take().context("stdin")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut stderr_pipe = child.stderr.take().context("stderr")?;
    let stderr_task = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text).await;
        text
    });
    let turn = json!({"type": "user", "message": {"role": "user", "content": prompt}});
    stdin.write_all(format!("{turn}\n").as_bytes()).await?;
    stdin.flush().await?;

    let mut reader = BufReader::new(stdout).lines();
    let mut lines = Vec::new();
    let deadline = tokio::time::Instant::now() + RUN_TIMEOUT;
    let result = loop {
        let line = match tokio::time::timeout_at(deadline, reader.next_line()).await {
            Err(_) => bail!("no result within {RUN_TIMEOUT:?}; stdout so far: {lines:#?}"),
            Ok(Err(error)) => bail!("reading the CLI's stdout: {error}"),
            Ok(Ok(None)) => break None,
            Ok(Ok(Some(line))) => line,
        };
        let value: Value = serde_json::from_str(&line)
            .with_context(|| format!("a line that is not JSON: {line:?}"))?;
        lines.push(value.clone());
        if value["type"] == "result" {
            break Some(value);
        }
    };
    drop(stdin);
    let status = tokio::time::timeout_at(deadline, child.wait())
        .await
        .context("the CLI did not exit after stdin closed")??;
    let stderr = stderr_task.await.unwrap_or_default();
    let report = started.guard.finish();
    Ok(CliRun {
        lines,
        result,
        status,
        stderr,
        report,
    })
}

fn limits() -> Limits {
    Limits {
        open_files: Some(4096),
        file_size_bytes: Some(16 << 20),
        cpu_seconds: Some(600),
        processes: Some(256),
        memory_bytes: None,
    }
}

#[tokio::test]
async fn the_sandboxed_cli_cannot_reach_secrets_other_jobs_or_the_network_but_its_allowlist()
-> anyhow::Result<()> {
    let jobs = Jobs::new()?;
    let site = LocalSite::start("hello from the allowed site").await?;
    let canary = LocalSite::start("canary: must not be reached").await?;
    let toolchain = jobs.path("toolchain");
    let other_job = jobs.path("jobs/b/ws/secret.txt");
    let commands = vec![
        "cat ~/.ssh/id_ed25519 && echo LEAKED-SECRET || echo secret-read-refused".to_owned(),
        format!(
            "(echo evil > /etc/paddock-evil && echo WROTE-ETC || echo etc-write-refused); \
             (echo evil > {}/evil && echo WROTE-TOOLCHAIN || echo toolchain-write-refused); \
             (echo evil > /tmp/evil && echo WROTE-TMP || echo tmp-write-refused)",
            toolchain.display()
        ),
        format!(
            "cat {} && echo READ-OTHER-JOB || echo other-job-refused",
            other_job.display()
        ),
        format!(
            "curl -sS --max-time 5 --noproxy '*' http://127.0.0.1:{}/ && echo REACHED-CANARY \
             || echo loopback-refused",
            canary.address.port()
        ),
        "echo status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 http://example.com/); \
         echo tunnel=$(curl -s -o /dev/null -w '%{http_connect}' --max-time 10 https://example.com/)"
            .to_owned(),
        format!(
            "curl -sS --max-time 10 http://allowed.test:{}/",
            site.address.port()
        ),
    ];
    let double = Double::start(script("attempt an escape", &commands)?).await?;
    let proxy = RunningProxy::start(
        jobs.path("runtime/proxy.sock"),
        proxy_config(site.address, &[double.address]),
    )?;

    let run = run_sandboxed_cli(&jobs, &proxy, &double, limits(), "attempt an escape").await?;
    let results = run.tool_results();
    assert_eq!(
        results.len(),
        commands.len(),
        "{:#?}\nstderr: {}",
        run.lines,
        run.stderr
    );
    let expect = |index: usize, present: &[&str], absent: &[&str]| {
        for needle in present {
            assert!(
                results[index].contains(needle),
                "attempt {index}: {needle:?} in {:?}",
                results[index]
            );
        }
        for needle in absent {
            assert!(
                !results[index].contains(needle),
                "attempt {index}: {needle:?} in {:?}",
                results[index]
            );
        }
    };
    expect(
        0,
        &["secret-read-refused", "Permission denied"],
        &["PLANTED-PRIVATE-KEY", "LEAKED-SECRET"],
    );
    expect(
        1,
        &[
            "etc-write-refused",
            "toolchain-write-refused",
            "tmp-write-refused",
        ],
        &["WROTE-"],
    );
    expect(
        2,
        &["other-job-refused"],
        &["private data", "READ-OTHER-JOB"],
    );
    expect(
        3,
        &["loopback-refused"],
        &["REACHED-CANARY", "must not be reached"],
    );
    expect(4, &["status=403", "tunnel=403"], &[]);
    expect(5, &["hello from the allowed site"], &[]);

    let result = run.result.as_ref().with_context(|| {
        format!(
            "no result line ({}): {:#?}\n{}",
            run.status, run.lines, run.stderr
        )
    })?;
    assert_eq!(
        result["is_error"], false,
        "{result:#}\nstderr: {}",
        run.stderr
    );
    assert_eq!(result["result"], "All attempts made.");
    // Every model request went through the proxy to the double (its only way out).
    assert!(double.handle.requests().len() > commands.len());

    assert_eq!(canary.connections(), 0);
    assert_eq!(site.connections(), 1);
    let refusals = proxy.proxy.refusals();
    assert!(
        refusals
            .iter()
            .any(|r| r.target == "example.com:80" && r.reason == RefusalReason::NotAllowed),
        "{refusals:#?}"
    );
    assert!(
        refusals.iter().any(|r| r.target == "example.com:443"),
        "{refusals:#?}"
    );
    assert_eq!(
        std::fs::read_to_string(jobs.path("home/.ssh/id_ed25519"))?,
        "PLANTED-PRIVATE-KEY\n"
    );
    assert!(!toolchain.join("evil").exists());
    assert!(!std::path::Path::new("/etc/paddock-evil").exists());
    // The CLI kept its state in its own HOME.
    assert!(jobs.path("home/.claude/projects").is_dir());
    Ok(())
}

#[tokio::test]
async fn the_sandboxed_cli_cannot_fill_the_disk_past_the_file_size_limit() -> anyhow::Result<()> {
    let jobs = Jobs::new()?;
    let site = LocalSite::start("unused").await?;
    let commands = vec![
        "head -c 40000000 /dev/zero > fill.bin; echo fill-status=$?; echo size=$(wc -c < fill.bin)"
            .to_owned(),
        "echo still-working".to_owned(),
    ];
    let double = Double::start(script("fill the disk", &commands)?).await?;
    let proxy = RunningProxy::start(
        jobs.path("runtime/proxy.sock"),
        proxy_config(site.address, &[double.address]),
    )?;
    let run = run_sandboxed_cli(&jobs, &proxy, &double, limits(), "fill the disk").await?;
    let results = run.tool_results();
    assert_eq!(
        results.len(),
        commands.len(),
        "{:#?}\nstderr: {}",
        run.lines,
        run.stderr
    );
    // 128 + SIGXFSZ: the writer was stopped at the 16 MiB limit.
    assert!(
        results[0].contains("File size limit exceeded"),
        "{:?}",
        results[0]
    );
    assert!(results[0].contains("fill-status=153"), "{:?}", results[0]);
    assert!(
        results[0].contains(&format!("size={}", 16 << 20)),
        "{:?}",
        results[0]
    );
    assert_eq!(
        std::fs::metadata(jobs.path("jobs/a/ws/fill.bin"))?.len(),
        16 << 20
    );
    assert!(results[1].contains("still-working"), "{:?}", results[1]);
    let result = run.result.context("no result line")?;
    assert_eq!(result["is_error"], false, "{result:#}");
    Ok(())
}

/// The fork bomb takes the run's whole process budget (a pids cgroup of 256 tasks)
/// and nothing beyond it: the node and the next run are unaffected. The CLI shares
/// that budget with the bomb: it usually finishes its turn, but it may fail to start
/// a thread and abort; the run then ends without a result, which the node records
/// as a failed job.
#[tokio::test]
async fn a_fork_bomb_in_the_sandboxed_cli_stays_within_the_runs_process_budget()
-> anyhow::Result<()> {
    let jobs = Jobs::new()?;
    let site = LocalSite::start("unused").await?;
    // dash fails a refused fork at once (bash would retry for a while); the `stop`
    // file ends the bomb so the turn can finish.
    let commands = vec![
        "sh -c 'bomb() { [ -e stop ] && exit 0; bomb | bomb & }; bomb; sleep 3; touch stop; \
         sleep 3; echo bomb-over' 2>&1 | grep -c -e 'Cannot fork' -e bomb-over"
            .to_owned(),
    ];
    let double = Double::start(script("bomb the machine", &commands)?).await?;
    let proxy = RunningProxy::start(
        jobs.path("runtime/proxy.sock"),
        proxy_config(site.address, &[double.address]),
    )?;
    let run = run_sandboxed_cli(&jobs, &proxy, &double, limits(), "bomb the machine").await?;

    // The job recorded the attempt...
    let attempted = run
        .lines
        .iter()
        .any(|line| line["type"] == "assistant" && line.to_string().contains("bomb | bomb"));
    assert!(attempted, "{:#?}", run.lines);
    // ...the bomb hit the run's limit...
    let cgroup = run.report.cgroup.clone().context("the run had a cgroup")?;
    assert!(cgroup.pids_limit_hits > 0, "{cgroup:?}");
    // ...and the CLI either finished its turn, seeing the refused forks, or ended.
    match &run.result {
        Some(result) => {
            assert_eq!(result["is_error"], false, "{result:#}");
            let results = run.tool_results();
            let refused: u64 = results
                .first()
                .and_then(|text| text.trim().parse().ok())
                .unwrap_or(0);
            assert!(refused > 1, "{results:?}");
        }
        None => assert!(!run.status.success(), "{}", run.status),
    }
    // The node is unharmed: it starts processes and the next sandboxed run works.
    assert!(std::process::Command::new("true").status()?.success());
    let next = support::sh(&jobs.sandbox(), &jobs.policy(), "echo next-run-ok").await?;
    assert!(next.stdout.contains("next-run-ok"), "{next:#?}");
    Ok(())
}
