//! The `paddock-model-double` binary as tests and benchmarks use it: it prints
//! `listening on http://ADDR` when ready, serves the script, stops cleanly on SIGTERM,
//! and refuses a bad script with a message naming it.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use support::http;
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

const BINARY: &str = env!("CARGO_BIN_EXE_paddock-model-double");
const TIMEOUT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn the_binary_announces_its_address_serves_and_stops_on_sigterm() -> anyhow::Result<()> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/example.json");
    let mut child = Command::new(BINARY)
        .args(["--listen", "127.0.0.1:0", "--script"])
        .arg(&script)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("spawning the binary")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let first = tokio::time::timeout(TIMEOUT, BufReader::new(stdout).lines().next_line())
        .await
        .context("no 'listening on' line within 10 s")??
        .context("stdout closed before the 'listening on' line")?;
    let Some(address) = first.strip_prefix("listening on http://") else {
        bail!("unexpected first line {first:?}");
    };
    let address: SocketAddr = address.parse()?;
    assert_ne!(address.port(), 0);

    let body = r#"{"model": "m", "tools": [{"name": "Bash"}],
                   "messages": [{"role": "user", "content": "please make a file"}]}"#;
    let reply = http(address, "POST", "/v1/messages", Some(body)).await?;
    let reply: Value = serde_json::from_str(&reply.body)?;
    assert_eq!(
        reply["content"][0]["text"], "I will create the file.",
        "the example script's first step"
    );
    let listed = http(address, "GET", "/_double/requests", None).await?;
    let listed: Value = serde_json::from_str(&listed.body)?;
    assert_eq!(listed[0]["conversation"], "make a file");

    let pid = child.id().context("the child has no pid")?;
    kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGTERM)?;
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .context("the binary did not stop within 10 s of SIGTERM")??;
    assert!(status.success(), "exit status {status:?}");
    Ok(())
}

#[tokio::test]
async fn the_binary_refuses_a_bad_script_naming_the_file() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bad.json");
    std::fs::write(
        &path,
        r#"{"conversations": [{"match": "x", "steps": [{"error": {"status": 99}}]}]}"#,
    )?;
    let output = tokio::time::timeout(
        TIMEOUT,
        Command::new(BINARY).arg("--script").arg(&path).output(),
    )
    .await
    .context("the binary did not exit within 10 s")??;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.json"), "{stderr}");
    assert!(
        stderr.contains("conversations[0].steps[0].error.status"),
        "{stderr}"
    );
    Ok(())
}
