//! The node's side of routing by labels against a real nats-server: the follower
//! claims from the selectors the node's labels satisfy and ignores the others, the
//! feed pulls their jobs before the pool's, a selector whose consumer vanished is set
//! up again, and an idle selector with no job left is forgotten (one with a job is
//! kept).

use async_nats::jetstream;
use paddock_actors::JobFeed;
use paddock_bus::selectors::selector_id;
use paddock_bus::{SelectorStore, StreamSettings};
use paddock_contract::subjects;
use paddock_node::labels::{SelectorFeeds, SelectorFollower};
use paddock_node::nats_ports::{ConsumerFeed, NodeFeed};
use paddock_telemetry::ClaimSpans;
use paddock_testkit::{NatsServer, eventually};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const PATIENCE: Duration = Duration::from_secs(20);

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

struct Node {
    js: jetstream::Context,
    store: SelectorStore,
    feeds: SelectorFeeds,
    feed: NodeFeed,
    stop: CancellationToken,
    _nats: NatsServer,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One node of pool `default` labelled `xcode = 16`, following the selectors.
async fn node() -> Node {
    let nats = NatsServer::start().await;
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client);
    let settings = StreamSettings::default();
    paddock_bus::ensure_streams(&js, &settings)
        .await
        .expect("streams");
    let store = SelectorStore::open(&js, 1).await.expect("selectors");
    let feeds = SelectorFeeds::default();
    let stop = CancellationToken::new();
    tokio::spawn(
        SelectorFollower {
            js: js.clone(),
            store: store.clone(),
            streams: settings.clone(),
            node: "mac-16".into(),
            pool: "default".into(),
            labels: map(&[("xcode", "16"), ("arch", "arm64")]),
            feeds: feeds.clone(),
        }
        .run(stop.clone()),
    );
    let consumer_feed = |consumer| ConsumerFeed {
        consumer,
        wait: Duration::from_millis(100),
        node: "mac-16".into(),
        claims: ClaimSpans::default(),
    };
    let feed = NodeFeed {
        own: consumer_feed(
            paddock_bus::ensure_node_consumer(&js, "mac-16", &settings)
                .await
                .expect("node consumer"),
        ),
        selectors: feeds.clone(),
        pool: consumer_feed(
            paddock_bus::ensure_pool_consumer(&js, "default", &settings)
                .await
                .expect("pool consumer"),
        ),
    };
    Node {
        js,
        store,
        feeds,
        feed,
        stop,
        _nats: nats,
    }
}

impl Node {
    async fn publish(&self, subject: String, body: &str) {
        self.js
            .publish(subject, body.to_string().into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }

    /// Fetches until a claim brings something, and returns the bodies.
    async fn claim(&self, max: usize) -> Vec<String> {
        eventually(PATIENCE, "a claim to bring jobs", || async {
            let jobs = self.feed.fetch(max).await.ok()?;
            let mut bodies = Vec::new();
            for job in jobs {
                bodies.push(String::from_utf8_lossy(&job.payload).to_string());
                job.message.ack().await.ok()?;
            }
            (!bodies.is_empty()).then_some(bodies)
        })
        .await
    }

    async fn follows(&self, id: &str) {
        eventually(PATIENCE, "the node to claim from the selector", || async {
            self.feeds.ids().contains(id).then_some(())
        })
        .await;
    }
}

#[tokio::test]
async fn a_node_claims_from_the_selectors_it_matches_before_its_pool() {
    let node = node().await;
    let matching = node
        .store
        .record(&map(&[("pool", "default"), ("xcode", "16")]))
        .await
        .expect("record");
    let other_version = node
        .store
        .record(&map(&[("pool", "default"), ("xcode", "15")]))
        .await
        .expect("record");
    let other_pool = node
        .store
        .record(&map(&[("pool", "big"), ("xcode", "16")]))
        .await
        .expect("record");
    node.follows(&matching).await;
    // A later selector it matches too, through the watch.
    let two_labels = node
        .store
        .record(&map(&[
            ("arch", "arm64"),
            ("pool", "default"),
            ("xcode", "16"),
        ]))
        .await
        .expect("record");
    node.follows(&two_labels).await;
    assert_eq!(
        node.feeds.ids().into_iter().collect::<Vec<_>>(),
        {
            let mut ids = vec![matching.clone(), two_labels.clone()];
            ids.sort();
            ids
        },
        "not {other_version} nor {other_pool}"
    );

    node.publish(subjects::pool_jobs("default"), "pool job")
        .await;
    node.publish(subjects::selector_jobs(&matching), "xcode job")
        .await;
    node.publish(subjects::selector_jobs(&other_version), "xcode 15 job")
        .await;
    assert_eq!(node.claim(1).await, ["xcode job"]);
    assert_eq!(node.claim(5).await, ["pool job"]);
    let leftover = node.feed.fetch(5).await.expect("fetch");
    assert!(leftover.is_empty(), "the xcode 15 job is not this node's");
}

#[tokio::test]
async fn a_selector_whose_consumer_vanished_is_set_up_again() {
    let node = node().await;
    let id = node
        .store
        .record(&map(&[("pool", "default"), ("xcode", "16")]))
        .await
        .expect("record");
    node.follows(&id).await;
    // What the server does to a consumer nobody pulled from for a while.
    let stream = node
        .js
        .get_stream(subjects::JOBS_STREAM)
        .await
        .expect("stream");
    stream
        .delete_consumer(&subjects::selector_consumer(&id))
        .await
        .expect("delete");
    node.publish(subjects::selector_jobs(&id), "after the gap")
        .await;
    assert_eq!(node.claim(1).await, ["after the gap"]);
}

#[tokio::test]
async fn an_idle_selector_is_forgotten_only_without_jobs() {
    let node = node().await;
    let id = node
        .store
        .record(&map(&[("pool", "default"), ("xcode", "16")]))
        .await
        .expect("record");
    assert_eq!(
        id,
        selector_id(&map(&[("xcode", "16"), ("pool", "default")]))
    );
    node.follows(&id).await;
    assert!(
        !node
            .store
            .forget_if_idle(&id, Duration::from_secs(3600))
            .await
            .expect("forget"),
        "recorded just now"
    );
    node.publish(subjects::selector_jobs(&id), "waiting").await;
    assert!(
        !node
            .store
            .forget_if_idle(&id, Duration::ZERO)
            .await
            .expect("forget"),
        "a job waits on it"
    );
    assert_eq!(node.claim(1).await, ["waiting"]);
    eventually(PATIENCE, "the idle selector to be forgotten", || async {
        node.store
            .forget_if_idle(&id, Duration::ZERO)
            .await
            .ok()
            .filter(|forgotten| *forgotten)
    })
    .await;
    assert_eq!(node.store.entry(&id).await.expect("read"), None);
    eventually(PATIENCE, "the node to stop claiming from it", || async {
        (!node.feeds.ids().contains(&id)).then_some(())
    })
    .await;
    // Recorded again by the next job that needs it.
    node.store
        .record(&map(&[("pool", "default"), ("xcode", "16")]))
        .await
        .expect("record");
    node.follows(&id).await;
}
