//! The web app in a real browser: headless Chromium (Debian's `chromium`) driven by
//! `playwright-core` (both installed by `ops/install-deps.sh`) runs
//! `tests/web/app.spec.mjs` against a cluster with the real Claude Code CLI and the
//! Messages API double: signing in, a streamed Markdown answer, a follow-up and
//! cancel, approving and denying tool calls, the network and the socket cut
//! mid-stream (every event shown once, in order), interrupting a turn, a prompt typed
//! offline, the list
//! with badges, refresh-token rotation, approving the CLI's device login, and an
//! admin draining a node; the layout is checked at 360 px and the load time printed.
//!
//! Screenshots go to `target/web-test/screenshots`; with
//! `PADDOCK_SCREENSHOTS=docs/screenshots` the documentation's are refreshed.

use paddock_testkit::repo_root;
use paddock_tests::{ADMIN_PASSWORD, Agent, Cluster, ClusterOptions};
use serde_json::json;
use std::path::PathBuf;
use std::time::Duration;

/// The whole browser run: each scenario's own waits are shorter.
const BROWSER_RUN: Duration = Duration::from_secs(240);

fn script() -> serde_json::Value {
    let glance = |n: u32| {
        json!({
            "chunk_delay_ms": 60, "chunk_bytes": 8,
            "content": [
                {"type": "text", "text": format!("Step {n}: looking around the project.")},
                {"type": "tool_use", "name": "Read", "input": {"file_path": "README.md"}}
            ]
        })
    };
    let mut slow_steps = vec![json!({
        "content": [
            {"type": "text", "text": "First, the notes."},
            {"type": "tool_use", "name": "Edit", "input": {
                "file_path": "notes.md",
                "old_string": "alpha\nbeta\ngamma",
                "new_string": "alpha\nBETA\ngamma\ndelta"
            }}
        ]
    })];
    slow_steps.extend((1..=10).map(glance));
    slow_steps.push(json!({"content": [{"type": "text", "text": "All done."}]}));
    json!({"conversations": [
        {
            "match": "say hello",
            "steps": [
                {"chunk_delay_ms": 20, "chunk_bytes": 16, "content": [{"type": "text", "text":
                    "Hello from **Paddock**.\n\n- one\n- two\n\n```rust\nfn main() {}\n```\n\n\
                     Raw markup stays text: <img src=x onerror=alert(1)>"}]},
                {"content": [{"type": "text", "text": "Hello again."}]}
            ]
        },
        {
            "match": "two commands",
            "steps": [
                {"content": [{"type": "tool_use", "name": "Bash", "input": {"command": "echo yes > allowed.txt", "description": "first"}}]},
                {"content": [{"type": "tool_use", "name": "Bash", "input": {"command": "echo no > denied.txt", "description": "second"}}]},
                {"content": [{"type": "text", "text": "done"}]}
            ]
        },
        {"match": "stream slowly", "steps": slow_steps},
        {
            "match": "talk slowly",
            "steps": [
                {"chunk_delay_ms": 50, "chunk_bytes": 8, "content": [{"type": "text", "text": "word ".repeat(200)}]},
                {"content": [{"type": "text", "text": "after the interrupt"}]}
            ]
        },
        {"match": "offline hello", "steps": [{"content": [{"type": "text", "text": "Sent after all."}]}]}
    ]})
}

fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

#[tokio::test]
async fn the_web_app_works_in_a_phone_sized_browser_against_a_real_cluster() {
    let root = repo_root();
    let playwright = root.join(".tools/playwright/node_modules/playwright-core");
    assert!(
        playwright.join("package.json").exists(),
        "playwright-core is missing at {}: run ops/install-deps.sh",
        playwright.display()
    );
    assert!(
        chromium().exists(),
        "{} is missing: run ops/install-deps.sh (Debian's chromium)",
        chromium().display()
    );
    let cluster = Cluster::start(ClusterOptions {
        agent: Agent::RealCli { script: script() },
        // The app as people use it: over the gateway's HTTPS (the dev certificate).
        tls: true,
        ..Default::default()
    })
    .await;
    let ca_cert = cluster
        .ca_cert
        .clone()
        .unwrap_or_else(|| panic!("a TLS cluster has a CA"));
    assert!(cluster.url.starts_with("https://"), "{}", cluster.url);
    // What the scripted session reads and edits.
    std::fs::write(
        cluster.project_dir.join("README.md"),
        "# demo\n\nA project for the web app's test.\n",
    )
    .unwrap_or_else(|e| panic!("writing README.md: {e}"));
    std::fs::write(cluster.project_dir.join("notes.md"), "alpha\nbeta\ngamma\n")
        .unwrap_or_else(|e| panic!("writing notes.md: {e}"));
    let out = root.join("target/web-test");
    let screenshots = std::env::var_os("PADDOCK_SCREENSHOTS")
        .map(|dir| root.join(dir))
        .unwrap_or_else(|| out.join("screenshots"));
    let mut command = tokio::process::Command::new("node");
    command
        .arg(root.join("tests/web/app.spec.mjs"))
        .env("PADDOCK_URL", &cluster.url)
        .env("PADDOCK_CA_CERT", &ca_cert)
        .env("NODE_EXTRA_CA_CERTS", &ca_cert)
        .env("PADDOCK_USER", "admin")
        .env("PADDOCK_PASSWORD", ADMIN_PASSWORD)
        .env("PADDOCK_SCREENSHOTS", &screenshots)
        .env("PADDOCK_ARTIFACTS", out.join("artifacts"))
        .env("PLAYWRIGHT_CORE", &playwright)
        .env("CHROMIUM", chromium())
        .kill_on_drop(true);
    let output = tokio::time::timeout(BROWSER_RUN, command.output())
        .await
        .unwrap_or_else(|_| panic!("the browser test did not finish in {BROWSER_RUN:?}"))
        .unwrap_or_else(|e| panic!("cannot run node: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the browser test failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        cluster.project_dir.join("allowed.txt").exists(),
        "the allowed command ran"
    );
    assert!(
        !cluster.project_dir.join("denied.txt").exists(),
        "the denied command did not run"
    );
    for name in [
        "web-approval-360.png",
        "web-session-360.png",
        "web-sessions-360.png",
    ] {
        assert!(screenshots.join(name).exists(), "no screenshot {name}");
    }
}
