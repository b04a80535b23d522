//! Quotas, end to end: per-user limits refused at submission with 429 and the quota's
//! name, and per-job limits that stop a running job with the limit as its reason.

use paddock_contract::{EventBody, JobOptions, JobStatus};
use paddock_tests::{Agent, Cluster, ClusterOptions, kinds};
use serde_json::json;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn with_quotas(tables: &str) -> ClusterOptions {
    ClusterOptions {
        gateway_tables: tables.to_string(),
        ..Default::default()
    }
}

async fn refused(cluster: &Cluster, prompt: &str) -> (u16, serde_json::Value, Option<String>) {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/jobs", cluster.url))
        .bearer_auth(paddock_tests::TOKEN)
        .json(&json!({"project": paddock_tests::PROJECT, "prompt": prompt}))
        .send()
        .await
        .expect("request");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = response.json().await.expect("json");
    (status, body, retry_after)
}

fn failure_reason(event: &paddock_contract::JobEvent) -> Option<&str> {
    match &event.body {
        EventBody::Failed { reason, .. } => Some(reason.as_str()),
        _ => None,
    }
}

#[tokio::test]
async fn a_user_over_the_concurrent_job_quota_is_refused_until_one_ends() {
    let cluster = Cluster::start(with_quotas("[quotas]\nmax_concurrent_jobs = 1\n")).await;
    let first = cluster
        .submit("long fake:sleep=60000", JobOptions::default())
        .await;
    let (status, body, retry_after) = refused(&cluster, "second").await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "quota_exceeded");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("max_concurrent_jobs"),
        "{body}"
    );
    assert!(retry_after.is_some());
    // Another user is not affected.
    let bob =
        paddock_cli::client::Client::new(&cluster.url, "bob-token-0123456789").expect("client");
    bob.submit(&paddock_contract::api::SubmitJob {
        project: paddock_tests::PROJECT.into(),
        prompt: "bob's".into(),
        options: JobOptions::default(),
        job_id: None,
    })
    .await
    .expect("bob may submit");
    cluster.client.cancel(first).await.expect("cancel");
    cluster.ledger_final(first).await;
    cluster.submit("third", JobOptions::default()).await;
}

#[tokio::test]
async fn a_user_over_the_daily_job_quota_is_refused_with_the_reset_time() {
    let cluster = Cluster::start(with_quotas("[quotas]\nmax_jobs_per_day = 2\n")).await;
    for _ in 0..2 {
        let job = cluster.submit("quick", JobOptions::default()).await;
        cluster.follow_to_end(job, 0, LONG).await;
    }
    let (status, body, retry_after) = refused(&cluster, "one too many").await;
    assert_eq!(status, 429);
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("max_jobs_per_day") && message.contains("resets"),
        "{body}"
    );
    let seconds: u64 = retry_after.expect("retry-after").parse().expect("seconds");
    assert!(seconds > 0 && seconds <= 86_400);
}

#[tokio::test]
async fn the_daily_cost_budget_stops_a_running_job_and_refuses_the_next() {
    // The fake agent's turn costs $0.0001: the first job fits, the second is admitted
    // with $0.00005 left and stopped when its turn costs more, the third is refused.
    let cluster = Cluster::start(with_quotas("[quotas]\nmax_cost_per_day_usd = 0.00015\n")).await;
    let first = cluster.submit("first", JobOptions::default()).await;
    cluster.follow_to_end(first, 0, LONG).await;
    assert_eq!(
        cluster.ledger_final(first).await.status,
        JobStatus::Completed
    );
    let second = cluster.submit("second", JobOptions::default()).await;
    let events = cluster.follow_to_end(second, 0, LONG).await;
    assert_eq!(
        failure_reason(&events[events.len() - 1]),
        Some("cost_budget"),
        "{:?}",
        kinds(&events)
    );
    let view = cluster.ledger_final(second).await;
    assert_eq!(view.exit_reason.as_deref(), Some("cost_budget"));
    assert!(
        view.cost_usd.is_some(),
        "the cost is still recorded: {view:?}"
    );
    let (status, body, _) = refused(&cluster, "third").await;
    assert_eq!(status, 429);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("max_cost_per_day_usd"),
        "{body}"
    );
}

#[tokio::test]
async fn per_job_limits_stop_a_running_job_with_the_limit_as_its_reason() {
    let cluster = Cluster::start(ClusterOptions {
        node_keys: "max_output_bytes = 4000\nmax_job_secs = 2\n".into(),
        ..Default::default()
    })
    .await;
    let chatty = cluster
        .submit("chatty fake:bytes=20000", JobOptions::default())
        .await;
    let events = cluster.follow_to_end(chatty, 0, LONG).await;
    assert_eq!(
        failure_reason(&events[events.len() - 1]),
        Some("output_limit"),
        "{:?}",
        kinds(&events)
    );

    let slow = cluster
        .submit("slow fake:sleep=30000", JobOptions::default())
        .await;
    let events = cluster.follow_to_end(slow, 0, LONG).await;
    assert_eq!(
        failure_reason(&events[events.len() - 1]),
        Some("timeout"),
        "{:?}",
        kinds(&events)
    );
    // The node is unharmed.
    let fine = cluster.submit("fine", JobOptions::default()).await;
    let events = cluster.follow_to_end(fine, 0, LONG).await;
    assert!(matches!(
        events[events.len() - 1].body,
        EventBody::Completed { .. }
    ));
}

#[tokio::test]
async fn the_turn_limit_ends_the_job_with_max_turns() {
    let cluster = Cluster::start(ClusterOptions {
        agent: Agent::RealCli {
            script: json!({"conversations": [{"match": "loop", "steps": [
                {"content": [{"type": "tool_use", "name": "Bash", "input": {"command": "true", "description": "one"}}]},
                {"content": [{"type": "tool_use", "name": "Bash", "input": {"command": "true", "description": "two"}}]},
                {"content": [{"type": "text", "text": "done"}]}
            ]}]}),
        },
        ..Default::default()
    })
    .await;
    let job = cluster
        .submit(
            "loop",
            JobOptions {
                max_turns: Some(1),
                allowed_tools: vec!["Bash".into()],
                ..Default::default()
            },
        )
        .await;
    let events = cluster.follow_to_end(job, 0, LONG).await;
    assert_eq!(
        failure_reason(&events[events.len() - 1]),
        Some("max_turns"),
        "{:?}",
        kinds(&events)
    );
}
