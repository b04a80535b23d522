//! Routing by labels with real processes: node agents carrying different labels share
//! one NATS and one pool. A job that requires a label lands only on a node that
//! carries it; a job no live node matches is refused (422 `no_matching_node`, nothing
//! queued) or, under `[routing] unmatched = "wait"`, queued with a visible reason and
//! run once a matching node joins; a matching node killed mid-job hands its job to
//! another matching node, never to one without the label.

use paddock_contract::api::SubmitJob;
use paddock_contract::{EventBody, JobId, JobOptions, JobStatus};
use paddock_testkit::{eventually, workspace_binary};
use paddock_tests::{Cluster, ClusterOptions, Follower, PROJECT, TOKEN, kinds};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn requiring(pairs: &[(&str, &str)]) -> JobOptions {
    JobOptions {
        requires: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..Default::default()
    }
}

/// Runs the `paddock` CLI against the cluster with its static token.
async fn paddock(cluster: &Cluster, args: &[&str]) -> String {
    let output = tokio::process::Command::new(workspace_binary("paddock"))
        .args(args)
        .env("PADDOCK_URL", &cluster.url)
        .env("PADDOCK_TOKEN", TOKEN)
        .env("PADDOCK_CONFIG_DIR", cluster.dir().join("cli-config"))
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("running paddock: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "paddock {args:?} failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Waits until `node` has reported a heartbeat: the gateway matches requirements
/// against live heartbeats only.
async fn heartbeat_of(cluster: &Cluster, node: &str) {
    eventually(LONG, "the node's first heartbeat", || async {
        let nodes = cluster.client.nodes().await.ok()?;
        nodes
            .iter()
            .any(|n| n.name == node && n.last_seen_ms.is_some())
            .then_some(())
    })
    .await;
}

/// The node a job started on (waits for it).
async fn started_on(cluster: &Cluster, job: JobId) -> String {
    eventually(LONG, "the job to start", || async {
        let events = cluster.client.events(job).await.ok()?;
        events.iter().rev().find_map(|e| match &e.body {
            EventBody::Started { node, .. } => Some(node.clone()),
            _ => None,
        })
    })
    .await
}

#[tokio::test]
async fn a_job_routed_by_label_lands_only_on_a_matching_node() {
    let mut cluster = Cluster::start(ClusterOptions {
        slots: 1,
        ..Default::default()
    })
    .await;
    cluster
        .add_node_with_labels("mac-16", 1, &[("xcode", "16")])
        .await;
    cluster
        .add_node_with_labels("mac-15", 1, &[("xcode", "15")])
        .await;
    heartbeat_of(&cluster, "node-a").await;

    // Queued all at once, so that idle nodes without the label would take some if
    // they could.
    let mut xcode16 = Vec::new();
    for i in 0..3 {
        xcode16.push(
            cluster
                .submit(
                    &format!("build {i} fake:sleep=300"),
                    requiring(&[("xcode", "16")]),
                )
                .await,
        );
    }
    // The CLI's `--require` is the same request.
    let out = paddock(
        &cluster,
        &[
            "run",
            "--project",
            PROJECT,
            "--require",
            "xcode=16",
            "--require",
            "pool=default",
            "--detach",
            "build by the CLI fake:sleep=300",
        ],
    )
    .await;
    xcode16.push(
        out.trim()
            .parse()
            .unwrap_or_else(|e| panic!("a job id from `paddock run`, not {out:?}: {e}")),
    );
    let mut xcode15 = Vec::new();
    for i in 0..2 {
        xcode15.push(
            cluster
                .submit(&format!("old build {i}"), requiring(&[("xcode", "15")]))
                .await,
        );
    }
    // The first node's own `machine` label, from another selector.
    let on_a = cluster
        .submit("pinned", requiring(&[("machine", "node-a")]))
        .await;
    let anywhere = cluster.submit("anywhere", JobOptions::default()).await;

    for (jobs, node) in [
        (&xcode16, "mac-16"),
        (&xcode15, "mac-15"),
        (&vec![on_a], "node-a"),
    ] {
        for job in jobs {
            let view = cluster.ledger_final(*job).await;
            assert_eq!(view.status, JobStatus::Completed, "{view:?}");
            assert_eq!(view.node.as_deref(), Some(node), "job {job}: {view:?}");
            let events = cluster.client.events(*job).await.expect("events");
            assert!(
                !kinds(&events).contains(&"job.waiting"),
                "a job a ready node matches does not wait: {:?}",
                kinds(&events)
            );
        }
    }
    assert_eq!(
        cluster.ledger_final(anywhere).await.status,
        JobStatus::Completed
    );
}

#[tokio::test]
async fn a_job_no_live_node_matches_is_refused_and_nothing_is_queued() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    heartbeat_of(&cluster, "node-a").await;
    for (requires, named) in [
        (&[("xcode", "17")][..], "xcode=17"),
        (&[("pool", "elsewhere")], "pool=elsewhere"),
        // node-a carries `machine = "node-a"`, but not in this pool.
        (
            &[("machine", "node-a"), ("pool", "elsewhere")],
            "machine=node-a",
        ),
    ] {
        let id = JobId::new();
        let refused = cluster
            .client
            .submit(&SubmitJob {
                project: PROJECT.into(),
                prompt: "for a machine we do not have".into(),
                options: requiring(requires),
                job_id: Some(id),
            })
            .await
            .expect_err("refused")
            .to_string();
        assert!(
            refused.contains("422") && refused.contains("(no_matching_node)"),
            "{refused}"
        );
        assert!(
            refused.contains(named),
            "the refusal names {named}: {refused}"
        );
        let lookup = cluster.client.job(id).await.expect_err("nothing recorded");
        assert!(lookup.to_string().contains("not_found"), "{lookup:#}");
    }
    // What node-a does carry is accepted.
    let job = cluster
        .submit("for node-a", requiring(&[("machine", "node-a")]))
        .await;
    assert_eq!(
        cluster.ledger_final(job).await.node.as_deref(),
        Some("node-a")
    );
}

#[tokio::test]
async fn under_the_wait_policy_an_unmatched_job_waits_visibly_then_runs_on_a_node_that_joins() {
    let mut cluster = Cluster::start(ClusterOptions {
        gateway_tables: "[routing]\nunmatched = \"wait\"\n".into(),
        ..Default::default()
    })
    .await;
    let job = cluster
        .submit("for the new mac", requiring(&[("xcode", "17")]))
        .await;
    let mut follower = Follower::start(&cluster.client, job).await;
    let waiting = follower
        .until("job.waiting", LONG, |e| e.kind() == "job.waiting")
        .await;
    match &waiting.body {
        EventBody::Waiting { reason } => {
            assert!(reason.contains("xcode=17"), "{reason}")
        }
        other => panic!("not a waiting event: {other:?}"),
    }
    assert_eq!(waiting.seq, 2, "right after job.queued");
    assert_eq!(
        cluster.client.job(job).await.expect("job").status,
        JobStatus::Queued
    );
    // The reason is visible to a person too.
    let shown = paddock(&cluster, &["job", &job.to_string()]).await;
    assert!(
        shown.contains("⧗ waiting: no live node matches pool=default, xcode=17"),
        "{shown}"
    );
    // node-a claims from everything it matches before its pool: once it has taken a
    // job queued after this one, it has passed this one by.
    let plain = cluster.submit("meanwhile", JobOptions::default()).await;
    assert_eq!(
        cluster.ledger_final(plain).await.node.as_deref(),
        Some("node-a")
    );
    let events = cluster.client.events(job).await.expect("events");
    assert_eq!(
        kinds(&events),
        ["job.queued", "job.waiting"],
        "still waiting"
    );

    cluster
        .add_node_with_labels("mac-17", 1, &[("xcode", "17")])
        .await;
    let end = follower.to_end(LONG).await;
    assert!(
        matches!(end.body, EventBody::Completed { .. }),
        "{:?}",
        kinds(&follower.seen)
    );
    assert_eq!(
        kinds(&follower.seen)[..3],
        ["job.queued", "job.waiting", "job.started"]
    );
    let view = cluster.ledger_final(job).await;
    assert_eq!(view.node.as_deref(), Some("mac-17"));
    assert_eq!(view.attempts, 1);
}

#[tokio::test]
async fn a_matching_node_killed_mid_job_hands_the_job_to_another_matching_node() {
    let mut cluster = Cluster::start(ClusterOptions {
        slots: 1,
        ack_wait_secs: Some(3),
        ..Default::default()
    })
    .await;
    cluster
        .add_node_with_labels("mac-16a", 1, &[("xcode", "16")])
        .await;
    cluster
        .add_node_with_labels("mac-16b", 1, &[("xcode", "16")])
        .await;
    let job = cluster
        .submit("work fake:sleep=4000", requiring(&[("xcode", "16")]))
        .await;
    let first = started_on(&cluster, job).await;
    let survivor = match first.as_str() {
        "mac-16a" => {
            cluster.extra_nodes[0].kill();
            "mac-16b"
        }
        "mac-16b" => {
            cluster.extra_nodes[1].kill();
            "mac-16a"
        }
        other => panic!("the job started on {other}, which lacks xcode=16"),
    };
    let events = cluster.follow_to_end(job, 0, LONG).await;
    let seen = kinds(&events);
    assert!(seen.contains(&"job.retrying"), "{seen:?}");
    assert_eq!(
        seen.iter().filter(|k| **k == "job.completed").count(),
        1,
        "{seen:?}"
    );
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.seq, i as u64 + 1, "nothing lost or doubled: {seen:?}");
    }
    let view = cluster.ledger_final(job).await;
    assert_eq!(view.status, JobStatus::Completed);
    assert_eq!(view.attempts, 2);
    assert_eq!(view.node.as_deref(), Some(survivor), "{view:?}");
}
