//! The control plane's actor cluster (ractor_cluster) with real processes on loopback:
//! every node joins the coordinator and is listed as a member; a coordinator killed and
//! started again rebuilds its membership from nodes that rejoin by themselves, while a
//! running job goes on untouched; a drain reaches the node over the actor cluster (the
//! fast path; without the actor cluster drains work too, see `paddock.rs`); a node
//! with the wrong cluster secret is refused and not listed; nodes join over TLS. The
//! member list is read where operators read it: the coordinator's `/metrics`.

use paddock_contract::node::NodeState;
use paddock_contract::{EventBody, JobId, JobOptions, JobStatus};
use paddock_testkit::eventually;
use paddock_testkit::metrics::sample;
use paddock_tests::{ActorCluster, Cluster, ClusterOptions, kinds, write_secret_file};
use std::collections::BTreeSet;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);
const MEMBER_SERIES: &str = "paddock_cluster_member_joined_timestamp_seconds";

async fn metrics(port: u16) -> Option<String> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .ok()?;
    if !response.status().is_success() {
        return None;
    }
    response.text().await.ok()
}

/// The nodes the coordinator lists as members.
fn members(text: &str) -> BTreeSet<String> {
    let prefix = format!("{MEMBER_SERIES}{{node=\"");
    text.lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            Some(rest.split('"').next()?.to_string())
        })
        .collect()
}

/// Waits until the coordinator lists exactly `expected` as members, and returns its
/// metrics page.
async fn members_become(cluster: &Cluster, expected: &[&str]) -> String {
    let expected: BTreeSet<String> = expected.iter().map(|n| n.to_string()).collect();
    let port = cluster.coordinator_metrics_port;
    let found = tokio::time::timeout(LONG, async {
        loop {
            if let Some(text) = metrics(port).await
                && members(&text) == expected
            {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    match found {
        Ok(text) => text,
        Err(_) => {
            let text = metrics(port).await.unwrap_or_default();
            panic!(
                "the coordinator never listed {expected:?} as members; it lists {:?}\n{}",
                members(&text),
                cluster.coordinator.output()
            );
        }
    }
}

/// Waits until `series` on the metrics of the process at `port` reaches `at_least`.
async fn counts_at_least(port: u16, series: &str, at_least: f64) -> f64 {
    eventually(LONG, &format!("{series} to reach {at_least}"), || async {
        let value = sample(&metrics(port).await?, series)?;
        (value >= at_least).then_some(value)
    })
    .await
}

async fn node_state(cluster: &Cluster, name: &str) -> Option<NodeState> {
    let nodes = cluster.client.nodes().await.ok()?;
    nodes.into_iter().find(|n| n.name == name).map(|n| n.state)
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

async fn with_actor_cluster(mode: ActorCluster, node_keys: &str) -> Cluster {
    Cluster::start(ClusterOptions {
        slots: 1,
        actor_cluster: mode,
        node_keys: node_keys.to_string(),
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn every_node_joins_the_actor_cluster_and_is_listed() {
    let mut cluster = with_actor_cluster(ActorCluster::Loopback, "").await;
    cluster.add_node("node-b", 1).await;
    cluster.add_node("node-c", 1).await;
    let text = members_become(&cluster, &["node-a", "node-b", "node-c"]).await;
    assert_eq!(sample(&text, "paddock_cluster_members"), Some(3.0));
    // Each was nudged to reconcile when it joined.
    assert!(
        sample(
            &text,
            r#"paddock_cluster_reconciles_sent_total{reason="joined"}"#
        )
        .is_some_and(|sent| sent >= 3.0),
        "{text}"
    );
    let mut ports = vec![cluster.node_metrics_port];
    ports.extend(&cluster.extra_node_metrics_ports);
    for port in ports {
        counts_at_least(port, "paddock_cluster_joined", 1.0).await;
    }
}

#[tokio::test]
async fn a_killed_coordinator_comes_back_to_every_member_and_the_running_job_goes_on() {
    let mut cluster = with_actor_cluster(ActorCluster::Loopback, "").await;
    cluster.add_node("node-b", 1).await;
    members_become(&cluster, &["node-a", "node-b"]).await;
    let job = cluster
        .submit("meanwhile fake:sleep=5000", JobOptions::default())
        .await;
    let node = started_on(&cluster, job).await;

    cluster.kill_and_restart_coordinator().await;
    // Nodes rejoin by themselves: the new coordinator's membership is whole again.
    let text = members_become(&cluster, &["node-a", "node-b"]).await;
    assert_eq!(sample(&text, "paddock_cluster_members"), Some(2.0));
    let mut ports = vec![cluster.node_metrics_port];
    ports.extend(&cluster.extra_node_metrics_ports);
    for port in ports {
        counts_at_least(
            port,
            r#"paddock_cluster_join_attempts_total{outcome="joined"}"#,
            2.0,
        )
        .await;
    }

    // The job never noticed: one attempt, on the node it started on, no retry.
    let events = cluster.follow_to_end(job, 0, LONG).await;
    let seen = kinds(&events);
    assert_eq!(seen.last(), Some(&"job.completed"), "{seen:?}");
    assert!(!seen.contains(&"job.retrying"), "{seen:?}");
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.seq, i as u64 + 1, "nothing lost or doubled: {seen:?}");
    }
    let view = cluster.ledger_final(job).await;
    assert_eq!(view.status, JobStatus::Completed);
    assert_eq!(view.attempts, 1);
    assert_eq!(view.node.as_deref(), Some(node.as_str()));
}

#[tokio::test]
async fn a_drain_reaches_the_node_over_the_actor_cluster() {
    // A heartbeat tick every 30 s: only a nudge makes the node report draining soon.
    let cluster = with_actor_cluster(
        ActorCluster::Loopback,
        "heartbeat_interval_secs = 30\nheartbeat_ttl_secs = 90\n",
    )
    .await;
    members_become(&cluster, &["node-a"]).await;
    let node_port = cluster.node_metrics_port;
    let received = r"paddock_cluster_reconciles_received_total";
    // The nudge it got on joining.
    let before = counts_at_least(node_port, received, 1.0).await;

    cluster
        .client
        .set_node("node-a", "drain", None)
        .await
        .expect("drain");
    eventually(
        Duration::from_secs(10),
        "the node to report the drain well before its next tick",
        || async {
            // Drained at once: it runs nothing.
            let state = node_state(&cluster, "node-a").await;
            matches!(state, Some(NodeState::Draining | NodeState::Drained)).then_some(())
        },
    )
    .await;
    // The coordinator saw the change in the registry and nudged the node's member.
    counts_at_least(node_port, received, before + 1.0).await;
    counts_at_least(
        cluster.coordinator_metrics_port,
        r#"paddock_cluster_reconciles_sent_total{reason="desired_changed"}"#,
        1.0,
    )
    .await;
}

#[tokio::test]
async fn a_node_with_the_wrong_secret_is_refused_and_not_listed() {
    let mut cluster = with_actor_cluster(ActorCluster::Loopback, "").await;
    members_become(&cluster, &["node-a"]).await;
    let port = cluster
        .coordinator_cluster_port
        .expect("the actor cluster is on");
    let wrong = cluster.dir().join("wrong-secret");
    write_secret_file(&wrong, "not the secret of this paddock");
    let table = format!(
        "[cluster]\ncoordinator = \"127.0.0.1:{port}\"\ninsecure_loopback = true\nsecret_file = {}\n",
        serde_json::to_string(&wrong.display().to_string()).expect("quote")
    );
    // It works through NATS alone (add_node waits for its heartbeat)...
    cluster
        .add_node_with_cluster_table("node-x", 1, &table)
        .await;
    let node_x_port = cluster.extra_node_metrics_ports[0];
    // ...but the coordinator refuses it, again and again.
    counts_at_least(
        node_x_port,
        r#"paddock_cluster_join_attempts_total{outcome="refused"}"#,
        2.0,
    )
    .await;
    let text = members_become(&cluster, &["node-a"]).await;
    assert_eq!(sample(&text, "paddock_cluster_members"), Some(1.0));
    let node_x = metrics(node_x_port).await.expect("node-x metrics");
    assert_eq!(sample(&node_x, "paddock_cluster_joined"), Some(0.0));
    assert_eq!(
        sample(
            &node_x,
            r#"paddock_cluster_join_attempts_total{outcome="joined"}"#
        ),
        Some(0.0)
    );
    // The coordinator never logs the secret.
    assert!(
        !cluster
            .coordinator
            .output()
            .contains(paddock_tests::CLUSTER_SECRET)
    );
}

#[tokio::test]
async fn nodes_join_over_tls_and_plain_tcp_is_not_accepted_there() {
    let mut cluster = with_actor_cluster(ActorCluster::Tls, "").await;
    cluster.add_node("node-b", 1).await;
    members_become(&cluster, &["node-a", "node-b"]).await;

    let port = cluster
        .coordinator_cluster_port
        .expect("the actor cluster is on");
    let secret = cluster.dir().join("cluster-secret");
    let plain = format!(
        "[cluster]\ncoordinator = \"127.0.0.1:{port}\"\ninsecure_loopback = true\nsecret_file = {}\n",
        serde_json::to_string(&secret.display().to_string()).expect("quote")
    );
    cluster
        .add_node_with_cluster_table("node-plain", 1, &plain)
        .await;
    let plain_port = cluster.extra_node_metrics_ports[1];
    let tried = eventually(LONG, "the plain node to try and fail", || async {
        let text = metrics(plain_port).await?;
        let failed = sample(
            &text,
            r#"paddock_cluster_join_attempts_total{outcome="refused"}"#,
        )? + sample(
            &text,
            r#"paddock_cluster_join_attempts_total{outcome="unreachable"}"#,
        )?;
        (failed >= 2.0).then_some(text)
    })
    .await;
    assert_eq!(
        sample(
            &tried,
            r#"paddock_cluster_join_attempts_total{outcome="joined"}"#
        ),
        Some(0.0)
    );
    members_become(&cluster, &["node-a", "node-b"]).await;
}
