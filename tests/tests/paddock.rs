//! A paddock of several machines on loopback: node agents as real processes sharing
//! one NATS and one pool. A node killed mid-job loses no job; a drained node finishes
//! what it runs and takes nothing new; a drain deadline hands running jobs to another
//! node; a node that stops reporting is listed as lost; the coordinator can restart.

use paddock_contract::node::NodeState;
use paddock_contract::{EventBody, JobEvent, JobId, JobOptions, JobStatus};
use paddock_testkit::eventually;
use paddock_tests::{Cluster, ClusterOptions, kinds};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

async fn two_nodes() -> Cluster {
    let mut cluster = Cluster::start(ClusterOptions {
        slots: 1,
        ack_wait_secs: Some(3),
        ..Default::default()
    })
    .await;
    cluster.add_node("node-b", 1).await;
    cluster
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

fn completions(events: &[JobEvent]) -> usize {
    events
        .iter()
        .filter(|e| e.kind() == "job.completed")
        .count()
}

async fn node_state(cluster: &Cluster, name: &str) -> Option<NodeState> {
    let nodes = cluster.client.nodes().await.ok()?;
    nodes.into_iter().find(|n| n.name == name).map(|n| n.state)
}

#[tokio::test]
async fn a_node_killed_mid_job_loses_no_job() {
    let mut cluster = two_nodes().await;
    let job = cluster
        .submit("work fake:sleep=4000", JobOptions::default())
        .await;
    let first = started_on(&cluster, job).await;
    if first == "node-a" {
        cluster.node.kill();
    } else {
        cluster.extra_nodes[0].kill();
    }
    let events = cluster.follow_to_end(job, 0, LONG).await;
    let seen = kinds(&events);
    assert!(seen.contains(&"job.retrying"), "{seen:?}");
    assert_eq!(completions(&events), 1, "{seen:?}");
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.seq, i as u64 + 1, "nothing lost or doubled: {seen:?}");
    }
    let view = cluster.ledger_final(job).await;
    assert_eq!(view.status, JobStatus::Completed);
    assert_eq!(view.attempts, 2);
    assert_ne!(
        view.node.as_deref(),
        Some(first.as_str()),
        "finished elsewhere"
    );
    eventually(
        Duration::from_secs(20),
        "the killed node to be listed as lost",
        || async { (node_state(&cluster, &first).await == Some(NodeState::Lost)).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn a_drained_node_finishes_its_job_and_takes_no_new_ones() {
    let cluster = two_nodes().await;
    let long = cluster
        .submit("long fake:sleep=3000", JobOptions::default())
        .await;
    let busy = started_on(&cluster, long).await;
    let other = if busy == "node-a" { "node-b" } else { "node-a" };
    cluster
        .client
        .set_node(&busy, "drain", None)
        .await
        .expect("drain");
    eventually(LONG, "the node to report draining", || async {
        (node_state(&cluster, &busy).await == Some(NodeState::Draining)).then_some(())
    })
    .await;
    let mut quick = Vec::new();
    for _ in 0..3 {
        quick.push(cluster.submit("quick", JobOptions::default()).await);
    }
    for job in &quick {
        cluster.follow_to_end(*job, 0, LONG).await;
        assert_eq!(
            cluster.ledger_final(*job).await.node.as_deref(),
            Some(other)
        );
    }
    let events = cluster.follow_to_end(long, 0, LONG).await;
    assert_eq!(
        completions(&events),
        1,
        "the running job finished where it was"
    );
    assert_eq!(
        cluster.ledger_final(long).await.node.as_deref(),
        Some(busy.as_str())
    );
    eventually(LONG, "the node to report drained", || async {
        (node_state(&cluster, &busy).await == Some(NodeState::Drained)).then_some(())
    })
    .await;
    cluster
        .client
        .set_node(&busy, "undrain", None)
        .await
        .expect("undrain");
    eventually(LONG, "the node to be ready again", || async {
        (node_state(&cluster, &busy).await == Some(NodeState::Ready)).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_drain_deadline_hands_running_jobs_to_another_node() {
    let cluster = two_nodes().await;
    let job = cluster
        .submit("endless fake:sleep=30000", JobOptions::default())
        .await;
    let first = started_on(&cluster, job).await;
    cluster
        .client
        .set_node(&first, "drain", Some(1))
        .await
        .expect("drain");
    let second = eventually(LONG, "the job to move", || async {
        let node = started_on(&cluster, job).await;
        (node != first).then_some(node)
    })
    .await;
    let events = cluster.client.events(job).await.expect("events");
    assert!(
        kinds(&events).contains(&"job.retrying"),
        "{:?}",
        kinds(&events)
    );
    assert_ne!(second, first);
    cluster.client.cancel(job).await.expect("cancel");
    let view = cluster.ledger_final(job).await;
    assert_eq!(view.attempts, 2);
    assert_eq!(view.status, JobStatus::Cancelled);
}

#[tokio::test]
async fn a_cordoned_node_keeps_its_jobs_and_takes_no_new_ones() {
    let cluster = two_nodes().await;
    cluster
        .client
        .set_node("node-a", "cordon", None)
        .await
        .expect("cordon");
    eventually(LONG, "the node to report cordoned", || async {
        (node_state(&cluster, "node-a").await == Some(NodeState::Cordoned)).then_some(())
    })
    .await;
    for _ in 0..3 {
        let job = cluster.submit("quick", JobOptions::default()).await;
        cluster.follow_to_end(job, 0, LONG).await;
        assert_eq!(
            cluster.ledger_final(job).await.node.as_deref(),
            Some("node-b")
        );
    }
}

#[tokio::test]
async fn the_coordinator_restarting_does_not_stop_jobs() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let job = cluster
        .submit("meanwhile fake:sleep=1500", JobOptions::default())
        .await;
    started_on(&cluster, job).await;
    cluster.restart_coordinator().await;
    let events = cluster.follow_to_end(job, 0, LONG).await;
    assert_eq!(completions(&events), 1);
    assert_eq!(cluster.ledger_final(job).await.status, JobStatus::Completed);
}

#[tokio::test]
async fn a_three_server_nats_cluster_losing_one_server_loses_no_job_or_event() {
    let mut cluster = Cluster::start(ClusterOptions {
        nats_cluster: true,
        slots: 2,
        ..Default::default()
    })
    .await;
    let mut jobs = Vec::new();
    for i in 0..4 {
        jobs.push(
            cluster
                .submit(&format!("before {i} fake:sleep=500"), JobOptions::default())
                .await,
        );
    }
    // Lose a server while jobs are queued and running.
    if let Some(nats) = cluster.nats_cluster.as_mut() {
        nats.kill(1);
    }
    for i in 0..4 {
        jobs.push(
            cluster
                .submit(&format!("after {i}"), JobOptions::default())
                .await,
        );
    }
    for job in &jobs {
        // A fail-over under a loaded CI machine can take a while: be patient.
        let events = cluster.follow_to_end(*job, 0, 2 * LONG).await;
        assert_eq!(completions(&events), 1, "{:?}", kinds(&events));
        for (i, event) in events.iter().enumerate() {
            assert_eq!(event.seq, i as u64 + 1, "{:?}", kinds(&events));
        }
        assert_eq!(
            cluster.ledger_final(*job).await.status,
            JobStatus::Completed
        );
    }
}
