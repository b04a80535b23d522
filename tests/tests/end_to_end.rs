//! The whole path, end to end, with real processes: a prompt submitted to the gateway
//! is queued on JetStream, claimed by the node agent, run by the agent, streamed back
//! over the WebSocket and recorded in the ledger by the coordinator.

use paddock_contract::{EventBody, JobOptions, JobStatus};
use paddock_tests::{Agent, Cluster, ClusterOptions};
use serde_json::json;
use std::time::Duration;

fn kinds(events: &[paddock_contract::JobEvent]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind()).collect()
}

fn assert_contiguous(events: &[paddock_contract::JobEvent], first: u64) {
    for (i, event) in events.iter().enumerate() {
        assert_eq!(
            event.seq,
            first + i as u64,
            "events out of sequence: {:?}",
            kinds(events)
        );
    }
}

#[tokio::test]
async fn prompt_runs_the_real_cli_which_creates_a_file_and_streams_back() {
    let script = json!({
        "conversations": [{
            "match": "create the marker file",
            "steps": [
                {"content": [{"type": "tool_use", "name": "Bash", "input": {"command": "echo made-by-paddock > marker.txt", "description": "create the marker"}}]},
                {"content": [{"type": "text", "text": "I created marker.txt."}]}
            ]
        }]
    });
    let cluster = Cluster::start(ClusterOptions {
        agent: Agent::RealCli { script },
        ..Default::default()
    })
    .await;
    let job = cluster
        .submit(
            "please create the marker file",
            JobOptions {
                allowed_tools: vec!["Bash".into()],
                ..Default::default()
            },
        )
        .await;
    let events = cluster
        .follow_to_end(job, 0, Duration::from_secs(120))
        .await;
    let seen = kinds(&events);
    assert_contiguous(&events, 1);
    assert_eq!(seen.first(), Some(&"job.queued"), "{seen:?}");
    assert_eq!(seen.get(1), Some(&"job.started"), "{seen:?}");
    assert_eq!(seen.last(), Some(&"job.completed"), "{seen:?}");
    assert!(seen.contains(&"session.init"), "{seen:?}");
    let call = events
        .iter()
        .position(|e| matches!(&e.body, EventBody::ToolCall { name, .. } if name == "Bash"))
        .unwrap_or_else(|| panic!("no Bash tool call in {seen:?}"));
    assert!(
        events[call..].iter().any(|e| matches!(
            &e.body,
            EventBody::ToolResult {
                is_error: false,
                ..
            }
        )),
        "no successful tool result after the call: {seen:?}"
    );
    assert!(events.iter().any(
        |e| matches!(&e.body, EventBody::AssistantText { text } if text.contains("created marker.txt"))
    ));
    let marker = std::fs::read_to_string(cluster.project_dir.join("marker.txt"))
        .unwrap_or_else(|e| panic!("the tool did not create the file: {e}"));
    assert_eq!(marker.trim(), "made-by-paddock");

    let EventBody::Completed { summary } = &events[events.len() - 1].body else {
        unreachable!()
    };
    let view = cluster.ledger_final(job).await;
    assert_eq!(view.status, JobStatus::Completed);
    assert_eq!(view.node.as_deref(), Some("node-a"));
    assert_eq!(view.attempts, 1);
    assert!(view.session_id.is_some());
    assert_eq!(view.session_id, summary.session_id);
    assert!(view.num_turns.unwrap_or(0) >= 2, "{view:?}");
    assert!(view.cost_usd.unwrap_or(0.0) > 0.0, "{view:?}");
    assert_eq!(view.cost_usd, summary.total_cost_usd);
    assert_eq!(view.last_seq, events.len() as u64);
}

#[tokio::test]
async fn a_resuming_client_gets_the_rest_exactly_once_in_order() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let job = cluster
        .submit("hello fake:bytes=100", JobOptions::default())
        .await;
    let all = cluster.follow_to_end(job, 0, Duration::from_secs(30)).await;
    assert!(all.len() >= 5, "{:?}", kinds(&all));
    assert_contiguous(&all, 1);
    for k in [1, 3, all.len() as u64 - 1] {
        let rest = cluster.follow_to_end(job, k, Duration::from_secs(10)).await;
        assert_eq!(rest.as_slice(), &all[k as usize..], "resuming after {k}");
    }
    // The REST log is the same log.
    let logged = cluster.client.events(job).await.expect("events");
    assert_eq!(logged, all);
}

#[tokio::test]
async fn cancel_stops_a_running_job() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let job = cluster
        .submit("wait fake:sleep=60000", JobOptions::default())
        .await;
    paddock_testkit::eventually(Duration::from_secs(20), "the job to start", || async {
        let events = cluster.client.events(job).await.ok()?;
        events
            .iter()
            .any(|e| e.kind() == "session.init")
            .then_some(())
    })
    .await;
    cluster.client.cancel(job).await.expect("cancel");
    let events = cluster.follow_to_end(job, 0, Duration::from_secs(20)).await;
    assert!(
        matches!(&events[events.len() - 1].body, EventBody::Cancelled { by, .. } if by == "alice"),
        "{:?}",
        kinds(&events)
    );
    let view = cluster.ledger_final(job).await;
    assert_eq!(view.status, JobStatus::Cancelled);
    let again = cluster.client.cancel(job).await;
    assert!(format!("{:?}", again.err()).contains("already_ended"));
}

#[tokio::test]
async fn a_queued_job_can_be_cancelled_before_any_node_takes_it() {
    // One slot, taken by a long job: the second job waits in the queue.
    let cluster = Cluster::start(ClusterOptions {
        slots: 1,
        ..Default::default()
    })
    .await;
    let blocker = cluster
        .submit("block fake:sleep=60000", JobOptions::default())
        .await;
    paddock_testkit::eventually(
        Duration::from_secs(20),
        "the first job to start",
        || async {
            let events = cluster.client.events(blocker).await.ok()?;
            events
                .iter()
                .any(|e| e.kind() == "job.started")
                .then_some(())
        },
    )
    .await;
    let waiting = cluster.submit("never runs", JobOptions::default()).await;
    cluster.client.cancel(waiting).await.expect("cancel queued");
    let events = cluster
        .follow_to_end(waiting, 0, Duration::from_secs(10))
        .await;
    assert_eq!(kinds(&events), vec!["job.queued", "job.cancelled"]);
    cluster
        .client
        .cancel(blocker)
        .await
        .expect("cancel running");
    cluster
        .follow_to_end(blocker, 0, Duration::from_secs(20))
        .await;
    // The node drops the cancelled job when it claims it: no event is added.
    let after = cluster.client.events(waiting).await.expect("events");
    assert_eq!(kinds(&after), vec!["job.queued", "job.cancelled"]);
}

#[tokio::test]
async fn garbage_output_is_recorded_and_a_crash_loop_fails_the_job_with_every_reason() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let garbage = cluster
        .submit("noisy fake:garbage", JobOptions::default())
        .await;
    let events = cluster
        .follow_to_end(garbage, 0, Duration::from_secs(30))
        .await;
    assert!(
        events.iter().any(|e| e.kind() == "cli.garbage"),
        "{:?}",
        kinds(&events)
    );
    assert_eq!(events.last().map(|e| e.kind()), Some("job.completed"));

    // The agent dies without a result every time: restarted up to the limit (2 in the
    // harness), then the job fails with every reason kept.
    let crash = cluster
        .submit("crash fake:exit=3", JobOptions::default())
        .await;
    let events = cluster
        .follow_to_end(crash, 0, Duration::from_secs(30))
        .await;
    let restarts = events
        .iter()
        .filter(|e| e.kind() == "job.restarting")
        .count();
    assert_eq!(restarts, 2, "{:?}", kinds(&events));
    match &events[events.len() - 1].body {
        EventBody::Failed {
            reason, message, ..
        } => {
            assert_eq!(reason, "agent_crashed");
            assert_eq!(message.matches("exit code 3").count(), 3, "{message}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    let view = cluster.ledger_final(crash).await;
    assert_eq!(view.status, JobStatus::Failed);
    assert_eq!(view.exit_reason.as_deref(), Some("agent_crashed"));
    assert_eq!(view.attempt_reasons.len(), 2, "{view:?}");

    let error = cluster
        .submit("fails fake:error", JobOptions::default())
        .await;
    let events = cluster
        .follow_to_end(error, 0, Duration::from_secs(30))
        .await;
    assert!(
        matches!(&events[events.len() - 1].body, EventBody::Failed { reason, .. } if reason == "agent_error"),
        "{:?}",
        kinds(&events)
    );
    // The node survived all of it.
    assert!(cluster.node.output().contains("node agent ready"));
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_clear_error_and_reach_no_node() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let http = reqwest::Client::new();
    let post = |body: String| {
        http.post(format!("{}/v1/jobs", cluster.url))
            .bearer_auth(paddock_tests::TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases = [
        ("{not json".to_string(), 400, "bad_request"),
        (
            json!({"project": "nope", "prompt": "x"}).to_string(),
            400,
            "unknown_project",
        ),
        (
            json!({"project": "demo", "prompt": "x", "options": {"subdir": "../../etc"}})
                .to_string(),
            400,
            "bad_path",
        ),
        (
            json!({"project": "demo", "prompt": "x".repeat(200_000)}).to_string(),
            413,
            "payload_too_large",
        ),
    ];
    for (body, status, code) in cases {
        let response = post(body).await.expect("request");
        assert_eq!(response.status().as_u16(), status);
        let error: serde_json::Value = response.json().await.expect("json error");
        assert_eq!(error["error"]["code"], code, "{error}");
    }
    let unauthorized = http
        .get(format!("{}/v1/jobs", cluster.url))
        .bearer_auth("wrong")
        .send()
        .await
        .expect("request");
    assert_eq!(unauthorized.status().as_u16(), 401);
    let page = cluster.client.jobs(None, 50).await.expect("jobs");
    assert!(
        page.jobs.is_empty(),
        "a refused request left a job: {:?}",
        page.jobs
    );
}

#[tokio::test]
async fn the_ledger_on_postgresql_records_the_run() {
    let database = paddock_testkit::PostgresDatabase::create()
        .await
        .expect("postgres");
    let cluster = Cluster::start(ClusterOptions {
        database_url: Some(database.url().to_string()),
        ..Default::default()
    })
    .await;
    let job = cluster
        .submit("hello fake:bytes=10", JobOptions::default())
        .await;
    let events = cluster.follow_to_end(job, 0, Duration::from_secs(30)).await;
    let view = cluster.ledger_final(job).await;
    assert_eq!(view.status, JobStatus::Completed);
    assert_eq!(view.last_seq, events.len() as u64);
    assert!(view.session_id.is_some());
    assert_eq!(view.num_turns, Some(1));
}
