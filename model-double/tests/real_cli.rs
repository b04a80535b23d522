//! The real Claude Code CLI (`.tools/bin/claude`, installed by `ops/install-deps.sh`)
//! runs whole agent loops against the double: a tool call the CLI really executes, a
//! rate limit it retries through, and an outage it reports as an error result.
//!
//! The CLI runs in the stdio protocol Paddock uses (`--input-format stream-json`), in a
//! temp working directory with a temp HOME and a scrubbed environment.

mod support;

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context as _, bail};
use paddock_model_double::{Reply, Script};
use serde_json::{Value, json};
use support::{RunningDouble, script};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::Command;

/// A run's deadline: generous for two slow cores, short enough to fail loudly.
const RUN_TIMEOUT: Duration = Duration::from_secs(90);

fn claude_path() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/claude");
    assert!(
        path.exists(),
        "the Claude Code CLI is missing at {}: run ops/install-deps.sh",
        path.display()
    );
    path
}

/// What one CLI turn printed, and where it ran.
struct CliRun {
    lines: Vec<Value>,
    result: Value,
    exit: ExitStatus,
    stderr: String,
    workdir: TempDir,
    _home: TempDir,
}

impl CliRun {
    fn lines_of_type<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
        self.lines.iter().filter(move |line| line["type"] == kind)
    }
}

/// Runs the CLI against `double` with one user turn: writes `prompt` on stdin, reads
/// stdout until the `result` line, then closes stdin and waits for the exit.
async fn run_turn(
    double: &RunningDouble,
    prompt: &str,
    env: &[(&str, &str)],
) -> anyhow::Result<CliRun> {
    let home = tempfile::tempdir()?;
    let workdir = tempfile::tempdir()?;
    let mut command = Command::new(claude_path());
    command
        .args([
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
            "--allowedTools",
            "Bash",
        ])
        .current_dir(workdir.path())
        // A clean environment: nothing from the developer's own Claude set-up leaks in.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.path())
        .env("ANTHROPIC_BASE_URL", double.base_url())
        .env("ANTHROPIC_API_KEY", "test-key")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().context("spawning the claude CLI")?;
    let mut stdin = child.stdin.take().context("no stdin pipe")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut stderr_pipe = child.stderr.take().context("no stderr pipe")?;
    let stderr_task = tokio::spawn(async move {
        let mut text = String::new();
        let _ = stderr_pipe.read_to_string(&mut text).await;
        text
    });

    let user_line = json!({"type": "user", "message": {"role": "user", "content": prompt}});
    stdin.write_all(format!("{user_line}\n").as_bytes()).await?;
    stdin.flush().await?;

    let mut reader = BufReader::new(stdout).lines();
    let mut lines = Vec::new();
    let deadline = tokio::time::Instant::now() + RUN_TIMEOUT;
    let result = loop {
        let next = tokio::time::timeout_at(deadline, reader.next_line()).await;
        let line = match next {
            Err(_) => bail!("no result line within {RUN_TIMEOUT:?}; stdout so far: {lines:#?}"),
            Ok(Err(error)) => bail!("reading the CLI's stdout: {error}"),
            Ok(Ok(None)) => {
                let stderr = stderr_task.await.unwrap_or_default();
                bail!(
                    "the CLI closed stdout before a result line; stdout: {lines:#?}; stderr: {stderr}"
                );
            }
            Ok(Ok(Some(line))) => line,
        };
        let value: Value = serde_json::from_str(&line)
            .with_context(|| format!("the CLI printed a line that is not JSON: {line:?}"))?;
        lines.push(value.clone());
        if value["type"] == "result" {
            break value;
        }
    };

    drop(stdin);
    let exit = tokio::time::timeout_at(deadline, child.wait())
        .await
        .context("the CLI did not exit after stdin closed")??;
    let stderr = stderr_task.await.unwrap_or_default();
    Ok(CliRun {
        lines,
        result,
        exit,
        stderr,
        workdir,
        _home: home,
    })
}

fn tool_then_text_script() -> Script {
    script(
        r#"{"conversations": [{"match": "make a file", "steps": [
             {"content": [{"type": "tool_use", "name": "Bash",
                           "input": {"command": "touch created_by_tool.txt",
                                     "description": "Create a file"}}]},
             {"content": [{"type": "text", "text": "I made the file."}]}]}]}"#,
    )
}

#[tokio::test]
async fn the_cli_runs_a_scripted_tool_call_and_reports_cost() -> anyhow::Result<()> {
    let double = RunningDouble::start(tool_then_text_script()).await?;
    let run = run_turn(&double, "make a file", &[]).await?;

    assert!(
        run.workdir.path().join("created_by_tool.txt").exists(),
        "the Bash tool did not run; stdout: {:#?}; stderr: {}",
        run.lines,
        run.stderr
    );
    let tool_use = run
        .lines_of_type("assistant")
        .flat_map(|line| {
            line["message"]["content"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .find(|block| block["type"] == "tool_use")
        .with_context(|| format!("no tool_use assistant line in {:#?}", run.lines))?;
    assert_eq!(tool_use["name"], "Bash");

    let result = &run.result;
    assert_eq!(result["is_error"], false, "{result:#}");
    assert!(result["num_turns"].as_u64() >= Some(2), "{result:#}");
    assert!(result["total_cost_usd"].as_f64() > Some(0.0), "{result:#}");
    assert_eq!(result["result"], "I made the file.");
    assert!(
        run.exit.success(),
        "exit {:?}; stderr: {}",
        run.exit,
        run.stderr
    );

    // The second request carried the tool's result back, answering the generated id.
    let requests = double.handle.requests();
    let steps: Vec<usize> = requests
        .iter()
        .map(|request| request.assistant_turns)
        .collect();
    assert_eq!(steps, [0, 1], "{requests:#?}");
    let tool_result = requests[1].body["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|message| message["content"].as_array().cloned().unwrap_or_default())
        .find(|block| block["type"] == "tool_result")
        .context("no tool_result in the second request")?;
    assert_eq!(tool_result["tool_use_id"], tool_use["id"]);
    Ok(())
}

#[tokio::test]
async fn the_cli_retries_a_rate_limit_and_completes() -> anyhow::Result<()> {
    let double = RunningDouble::start(script(
        r#"{"conversations": [{"match": "rate limited", "steps": [
             {"error": {"status": 429, "fail_times": 1},
              "content": [{"type": "text", "text": "Through."}]}]}]}"#,
    ))
    .await?;
    let run = run_turn(
        &double,
        "get rate limited",
        &[("CLAUDE_CODE_MAX_RETRIES", "2")],
    )
    .await?;

    assert_eq!(run.result["is_error"], false, "{:#}", run.result);
    assert_eq!(run.result["result"], "Through.");
    let retry = run
        .lines
        .iter()
        .find(|line| line["type"] == "system" && line["subtype"] == "api_retry")
        .with_context(|| format!("no api_retry line in {:#?}", run.lines))?;
    assert_eq!(retry["error_status"], 429);
    let replies: Vec<Reply> = double
        .handle
        .requests()
        .iter()
        .map(|request| request.reply)
        .collect();
    assert_eq!(replies, [Reply::Error { status: 429 }, Reply::Stream]);
    Ok(())
}

#[tokio::test]
async fn the_cli_reports_a_persistent_outage_as_an_error_result() -> anyhow::Result<()> {
    let double = RunningDouble::start(script(
        r#"{"conversations": [{"match": "outage", "steps": [
             {"error": {"status": 500, "message": "scripted outage"}}]}]}"#,
    ))
    .await?;
    let run = run_turn(
        &double,
        "during an outage",
        &[("CLAUDE_CODE_MAX_RETRIES", "1")],
    )
    .await?;

    let result = &run.result;
    assert_eq!(result["is_error"], true, "{result:#}");
    assert_eq!(result["api_error_status"], 500, "{result:#}");
    assert!(
        result["result"]
            .as_str()
            .unwrap_or_default()
            .contains("scripted outage"),
        "{result:#}"
    );
    assert_eq!(run.exit.code(), Some(1), "stderr: {}", run.stderr);
    // One try plus CLAUDE_CODE_MAX_RETRIES retries, all answered 500.
    let replies: Vec<Reply> = double
        .handle
        .requests()
        .iter()
        .map(|request| request.reply)
        .collect();
    assert_eq!(replies, [Reply::Error { status: 500 }; 2]);
    Ok(())
}
