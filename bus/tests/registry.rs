//! The node registry against a real nats-server: a reader (the gateway) never makes
//! the heartbeats bucket, so its time to live is always the one the nodes chose, and
//! it binds to the bucket once a node has made it.

use async_nats::jetstream;
use paddock_bus::NodeRegistry;
use paddock_contract::node::{NodeHeartbeat, NodeState};
use paddock_contract::subjects;
use paddock_testkit::NatsServer;
use std::time::Duration;

#[tokio::test]
async fn a_reader_binds_the_heartbeats_bucket_a_node_made_and_never_makes_it() {
    let nats = NatsServer::start().await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.expect("connect"));
    let reader = NodeRegistry::open_reader(&js, 1).await.expect("reader");
    assert!(reader.heartbeats().await.expect("no nodes yet").is_empty());
    assert!(reader.list().await.expect("list").is_empty());
    assert!(
        js.get_key_value(subjects::HEARTBEATS_BUCKET).await.is_err(),
        "the reader made the heartbeats bucket"
    );

    let ttl = Duration::from_secs(7);
    let node = NodeRegistry::open(&js, 1, ttl).await.expect("node");
    let beat = NodeHeartbeat {
        node: "mini-1".into(),
        pool: "default".into(),
        labels: Default::default(),
        state: NodeState::Ready,
        slots: 2,
        free: 2,
        running: Vec::new(),
        version: "test".into(),
        at_ms: paddock_contract::now_unix_ms(),
    };
    node.beat(&beat).await.expect("beat");
    let seen = reader.heartbeats().await.expect("heartbeats");
    assert_eq!(seen.keys().collect::<Vec<_>>(), ["mini-1"]);
    let bucket = js
        .get_key_value(subjects::HEARTBEATS_BUCKET)
        .await
        .expect("bucket");
    let status = bucket.status().await.expect("status");
    assert_eq!(status.max_age(), ttl, "the node's time to live");
}
