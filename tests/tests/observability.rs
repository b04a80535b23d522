//! Observability across real processes: after a scripted run of a few jobs with the
//! fake agent (two that complete, one whose agent keeps crashing and ends
//! `agent_crashed` after its restarts, one whose agent reports an error and ends
//! `agent_error`), each followed over a WebSocket, and two refused requests (a bad
//! token, a missing scope), the gateway's, the node agent's and the coordinator's
//! `/metrics` pass `promtool check metrics` and count exactly that; their `/readyz`
//! and `/healthz` answer 200, with the checks each component makes (gateway and
//! coordinator: NATS and the ledger database; node: NATS and the sandbox). One trace
//! across the gateway and the node is `traces.rs`.

use paddock_contract::{EventBody, JobId, JobOptions, JobStatus};
use paddock_testkit::eventually;
use paddock_testkit::metrics::sample;
use paddock_tests::{Cluster, ClusterOptions, kinds};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// `promtool`: `$PADDOCK_PROMTOOL`, `.tools/bin/promtool`, or the one on `PATH`
/// (Debian's `prometheus` package, installed by `ops/install-deps.sh`).
fn promtool() -> PathBuf {
    if let Some(path) = std::env::var_os("PADDOCK_PROMTOOL") {
        return PathBuf::from(path);
    }
    let tools = paddock_testkit::tools_bin().join("promtool");
    if tools.exists() {
        return tools;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("promtool"))
                .find(|candidate| candidate.exists())
        })
        .unwrap_or_else(|| panic!("promtool is missing: run ops/install-deps.sh"))
}

/// Fails with promtool's complaints unless `text` passes `promtool check metrics`.
fn assert_promtool_accepts(component: &str, text: &str) {
    let mut child = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start promtool: {e}"));
    child
        .stdin
        .take()
        .unwrap_or_else(|| panic!("promtool has no stdin"))
        .write_all(text.as_bytes())
        .unwrap_or_else(|e| panic!("writing to promtool: {e}"));
    let output = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("promtool: {e}"));
    assert!(
        output.status.success(),
        "promtool rejected the {component}'s metrics:\n{}{}\n---\n{text}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

/// `GET http://127.0.0.1:<port><path>`: status and body, `None` if nothing answers.
async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}{path}"))
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// Waits until every `(series, value)` holds on the component's `/metrics`, and
/// returns the page; on timeout, fails naming the series that did not.
async fn metrics_showing(component: &str, port: u16, expected: &[(String, f64)]) -> String {
    let outcome = tokio::time::timeout(WAIT, async {
        loop {
            if let Some((200, body)) = get(port, "/metrics").await
                && expected
                    .iter()
                    .all(|(series, value)| sample(&body, series) == Some(*value))
            {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    match outcome {
        Ok(body) => body,
        Err(_) => {
            let body = get(port, "/metrics")
                .await
                .map(|(_, body)| body)
                .unwrap_or_default();
            let wrong: Vec<String> = expected
                .iter()
                .filter(|(series, value)| sample(&body, series) != Some(*value))
                .map(|(series, value)| {
                    format!("{series}: want {value}, have {:?}", sample(&body, series))
                })
                .collect();
            panic!("the {component}'s /metrics never showed {wrong:#?}\n---\n{body}");
        }
    }
}

/// Waits for `/readyz` to answer 200 and returns its checks.
async fn ready(component: &str, port: u16) -> serde_json::Value {
    let what = format!("the {component} to be ready");
    let body = eventually(WAIT, &what, || async {
        match get(port, "/readyz").await {
            Some((200, body)) => Some(body),
            _ => None,
        }
    })
    .await;
    let report: serde_json::Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("the {component}'s /readyz is not JSON ({e}): {body}"));
    assert_eq!(report["status"], "ready", "{body}");
    report["checks"].clone()
}

/// Runs `prompt` to its end, following it over a WebSocket; returns the failure
/// reason, if it failed, and the number of events the socket delivered.
async fn run(cluster: &Cluster, prompt: &str) -> (JobId, Option<String>, usize) {
    let job = cluster.submit(prompt, JobOptions::default()).await;
    let events = cluster.follow_to_end(job, 0, WAIT).await;
    let reason = match &events[events.len() - 1].body {
        EventBody::Completed { .. } => None,
        EventBody::Failed { reason, .. } => Some(reason.clone()),
        _ => panic!("{prompt:?} ended unexpectedly: {:?}", kinds(&events)),
    };
    (job, reason, events.len())
}

/// The status of a request to the gateway's API made with `token`.
async fn status_of(request: reqwest::RequestBuilder, token: &str) -> u16 {
    request
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("request to the gateway: {e}"))
        .status()
        .as_u16()
}

#[tokio::test]
async fn every_components_metrics_count_a_scripted_run_and_pass_promtool() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let node_port = cluster.node_metrics_port;
    let coordinator_port = cluster.coordinator_metrics_port;
    let gateway_port = cluster.gateway_metrics_port;

    let node_checks = ready("node", node_port).await;
    assert_eq!(node_checks["nats"], "ok", "{node_checks}");
    assert_eq!(node_checks["sandbox"], "ok", "{node_checks}");
    let coordinator_checks = ready("coordinator", coordinator_port).await;
    assert_eq!(coordinator_checks["nats"], "ok", "{coordinator_checks}");
    assert_eq!(coordinator_checks["database"], "ok", "{coordinator_checks}");
    let gateway_checks = ready("gateway", gateway_port).await;
    assert_eq!(gateway_checks["nats"], "ok", "{gateway_checks}");
    assert_eq!(gateway_checks["database"], "ok", "{gateway_checks}");
    for port in [node_port, coordinator_port, gateway_port] {
        let health = get(port, "/healthz").await.map(|(status, _)| status);
        assert_eq!(health, Some(200), "/healthz on port {port}");
    }

    let mut jobs = Vec::new();
    let mut delivered = 0;
    for (prompt, wanted) in [
        ("hello fake:bytes=10", None),
        ("hello again fake:bytes=20", None),
        ("crash fake:exit=3", Some("agent_crashed")),
        ("fails fake:error", Some("agent_error")),
    ] {
        let (job, reason, events) = run(&cluster, prompt).await;
        assert_eq!(reason.as_deref(), wanted, "{prompt}");
        jobs.push(job);
        delivered += events;
    }
    // Two refusals: a token nobody issued, and a user without `nodes:admin`.
    let http = reqwest::Client::new();
    let jobs_url = format!("{}/v1/jobs", cluster.url);
    assert_eq!(status_of(http.get(&jobs_url), "not-a-token").await, 401);
    let drain_url = format!("{}/v1/nodes/node-a/drain", cluster.url);
    assert_eq!(
        status_of(http.post(&drain_url), "bob-token-0123456789").await,
        403
    );
    for job in &jobs {
        let view = cluster.ledger_final(*job).await;
        assert!(
            matches!(view.status, JobStatus::Completed | JobStatus::Failed),
            "{view:?}"
        );
    }

    // The coordinator: each start and each ending once, by project and reason; the
    // node as the registry lists it; the queue as JetStream holds it.
    let finished = |status: &str, reason: &str| {
        (
            format!(
                r#"paddock_jobs_finished_total{{project="demo",status="{status}",reason="{reason}"}}"#
            ),
            1.0,
        )
    };
    let coordinator = metrics_showing(
        "coordinator",
        coordinator_port,
        &[
            (r#"paddock_jobs_started_total{project="demo"}"#.into(), 4.0),
            (
                r#"paddock_jobs_finished_total{project="demo",status="completed",reason="none"}"#
                    .into(),
                2.0,
            ),
            finished("failed", "agent_crashed"),
            finished("failed", "agent_error"),
            (
                r#"paddock_job_dispatch_latency_seconds_count{project="demo"}"#.into(),
                4.0,
            ),
            (
                r#"paddock_fleet_node_state{node="node-a",state="ready"}"#.into(),
                1.0,
            ),
            (r#"paddock_fleet_node_slots{node="node-a"}"#.into(), 2.0),
            (
                r#"paddock_jobs_queued{consumer="pool-default"}"#.into(),
                0.0,
            ),
            ("paddock_nats_connected".into(), 1.0),
        ],
    )
    .await;
    assert!(
        !coordinator.contains("status=\"cancelled\""),
        "nothing was cancelled:\n{coordinator}"
    );
    assert_eq!(
        sample(
            &coordinator,
            r#"paddock_ledger_write_errors_total{retryable="false"}"#
        )
        .unwrap_or(0.0),
        0.0,
        "{coordinator}"
    );
    assert_promtool_accepts("coordinator", &coordinator);

    // The node: the attempts it ran and how they ended, the crashing agent's
    // restarts (two in the harness), the erring agent's turns sent again (its error
    // result reads as a model API failure: `max_api_retries`, 3 by default), the first
    // output of every agent that wrote any (all but the crashing one), nothing left
    // running.
    let node = metrics_showing(
        "node",
        node_port,
        &[
            (
                r#"paddock_node_jobs_started_total{node="node-a"}"#.into(),
                4.0,
            ),
            (
                r#"paddock_node_jobs_finished_total{node="node-a",status="completed"}"#.into(),
                2.0,
            ),
            (
                r#"paddock_node_jobs_finished_total{node="node-a",status="failed"}"#.into(),
                2.0,
            ),
            (r#"paddock_node_jobs_running{node="node-a"}"#.into(), 0.0),
            (
                r#"paddock_node_jobs_released_total{node="node-a"}"#.into(),
                0.0,
            ),
            (
                r#"paddock_node_session_restarts_total{node="node-a"}"#.into(),
                2.0,
            ),
            (r#"paddock_node_slots{node="node-a"}"#.into(), 2.0),
            (
                r#"paddock_node_state{node="node-a",state="ready"}"#.into(),
                1.0,
            ),
            (
                r#"paddock_node_turn_retries_total{node="node-a"}"#.into(),
                3.0,
            ),
            (
                r#"paddock_node_time_to_first_output_seconds_count{node="node-a"}"#.into(),
                3.0,
            ),
            ("paddock_nats_connected".into(), 1.0),
        ],
    )
    .await;
    assert!(
        node.contains(r#"paddock_build_info{service="paddock-node""#),
        "{node}"
    );
    assert_promtool_accepts("node", &node);

    // The gateway: the four submissions, each followed on its own socket (upgraded,
    // fed every event of its job, gone when the client left), the two refusals.
    let request = |method: &str, route: &str, status: u16| {
        format!(
            r#"paddock_http_requests_total{{method="{method}",route="{route}",status="{status}"}}"#
        )
    };
    let gateway = metrics_showing(
        "gateway",
        gateway_port,
        &[
            (
                r#"paddock_jobs_submitted_total{project="demo"}"#.into(),
                4.0,
            ),
            (request("POST", "/v1/jobs", 202), 4.0),
            (request("GET", "/v1/ws", 101), 4.0),
            (request("GET", "/v1/jobs", 401), 1.0),
            (request("POST", "/v1/nodes/{name}/drain", 403), 1.0),
            (
                r#"paddock_auth_failures_total{reason="unauthorized"}"#.into(),
                1.0,
            ),
            (
                r#"paddock_auth_failures_total{reason="forbidden"}"#.into(),
                1.0,
            ),
            ("paddock_websocket_connections".into(), 0.0),
            (
                "paddock_websocket_events_sent_total".into(),
                delivered as f64,
            ),
            (
                r#"paddock_websocket_closes_total{reason="peer_gone"}"#.into(),
                4.0,
            ),
            ("paddock_nats_connected".into(), 1.0),
        ],
    )
    .await;
    assert!(
        gateway.contains(r#"paddock_build_info{service="paddock-gateway""#),
        "{gateway}"
    );
    assert!(
        !gateway.contains("paddock_rate_limited_total{"),
        "nothing was rate-limited:\n{gateway}"
    );
    assert_promtool_accepts("gateway", &gateway);

    // Still ready after the run.
    ready("node", node_port).await;
    ready("coordinator", coordinator_port).await;
    ready("gateway", gateway_port).await;
}
