//! The floor: what running the fake agent costs with no cluster in between. The agent
//! is started the way the node starts it (same stream-json flags, the project folder
//! as working directory, a scrubbed environment, its own process group), given one
//! user line, and read. Every run is bounded by a timeout and its process is killed
//! if it is dropped early.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The line the node writes for a one-prompt job.
pub const USER_LINE: &str =
    "{\"type\":\"user\",\"message\":{\"role\":\"user\",\"content\":\"hi\"}}\n";

/// Longest wait for one agent run.
const RUN_TIMEOUT: Duration = Duration::from_secs(20);

/// How to start the agent directly.
#[derive(Clone, Debug)]
pub struct DirectAgent {
    pub program: PathBuf,
    pub workdir: PathBuf,
    pub home: PathBuf,
}

struct Started {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl DirectAgent {
    fn spawn(&self) -> anyhow::Result<Started> {
        let mut command = Command::new(&self.program);
        command
            .args([
                "-p",
                "--input-format",
                "stream-json",
                "--output-format",
                "stream-json",
                "--verbose",
                "--permission-mode",
                "default",
            ])
            .current_dir(&self.workdir)
            .env_clear()
            .env("HOME", &self.home)
            .env("ANTHROPIC_API_KEY", "bench")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("the agent's pipes were not set up");
        };
        Ok(Started {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }

    /// Spawn, write the user line, read the first stdout line: the time that takes.
    /// The rest of the session is finished afterwards, outside the measured time.
    pub async fn first_line(&self) -> anyhow::Result<Duration> {
        let started_at = Instant::now();
        let mut agent = self.spawn()?;
        let mut line = String::new();
        let elapsed = tokio::time::timeout(RUN_TIMEOUT, async {
            agent.stdin.write_all(USER_LINE.as_bytes()).await?;
            agent.stdin.flush().await?;
            agent.stdout.read_line(&mut line).await?;
            anyhow::Ok(started_at.elapsed())
        })
        .await
        .context("the agent did not answer in time")??;
        if line.is_empty() {
            bail!("the agent closed its output without a line");
        }
        finish(agent).await?;
        Ok(elapsed)
    }

    /// One whole one-turn session: spawn, write the line, read to the `result` line,
    /// close stdin, wait for the exit.
    pub async fn session(&self) -> anyhow::Result<()> {
        tokio::time::timeout(RUN_TIMEOUT, async {
            let mut agent = self.spawn()?;
            agent.stdin.write_all(USER_LINE.as_bytes()).await?;
            agent.stdin.flush().await?;
            let mut line = String::new();
            loop {
                line.clear();
                if agent.stdout.read_line(&mut line).await? == 0 {
                    bail!("the agent ended its output before a result line");
                }
                if is_result(&line) {
                    break;
                }
            }
            finish(agent).await
        })
        .await
        .context("the agent session did not end in time")?
    }
}

/// Closes stdin, drains stdout and waits for a clean exit.
async fn finish(agent: Started) -> anyhow::Result<()> {
    let Started {
        mut child,
        stdin,
        mut stdout,
    } = agent;
    drop(stdin);
    tokio::time::timeout(RUN_TIMEOUT, async {
        let mut rest = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stdout, &mut rest).await?;
        let status = child.wait().await?;
        if !status.success() {
            bail!("the agent exited with {status}");
        }
        anyhow::Ok(())
    })
    .await
    .context("the agent did not exit in time")?
}

fn is_result(line: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line)
        .ok()
        .and_then(|value| {
            value
                .get("type")
                .and_then(|t| t.as_str().map(str::to_string))
        })
        .is_some_and(|kind| kind == "result")
}

/// Runs `total` whole sessions, `concurrency` at a time; returns the wall time.
pub async fn sessions(
    agent: &DirectAgent,
    total: usize,
    concurrency: usize,
) -> anyhow::Result<Duration> {
    let agent = Arc::new(agent.clone());
    let gate = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..total {
        let permit = gate
            .clone()
            .acquire_owned()
            .await
            .context("the concurrency gate closed")?;
        let agent = agent.clone();
        tasks.spawn(async move {
            let outcome = agent.session().await;
            drop(permit);
            outcome
        });
        // Collect finished ones as we go so errors surface early.
        while let Some(done) = tasks.try_join_next() {
            done.context("a session task panicked")??;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.context("a session task panicked")??;
    }
    Ok(started.elapsed())
}

/// A home folder for directly started agents, beside the project.
pub fn home_in(dir: &Path) -> anyhow::Result<PathBuf> {
    let home = dir.join("direct-agent-home");
    std::fs::create_dir_all(&home).context("creating the direct agent's home")?;
    Ok(home)
}
