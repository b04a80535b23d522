//! The metrics read from NATS, against a real nats-server: the queue sampler's jobs
//! queued and claimed per consumer of the jobs stream (consumers appear and disappear
//! with the stream's), and a service's NATS connection metrics through a server
//! restart.

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use paddock_contract::subjects;
use paddock_telemetry::{NatsMetrics, QueueMetrics, QueueSampler, new_registry, render};
use paddock_testkit::{NatsServer, eventually};
use std::time::Duration;

async fn jobs_stream(js: &jetstream::Context, pools: &[&str]) -> stream::Stream {
    for (name, subjects, retention) in [
        (
            subjects::JOBS_STREAM,
            subjects::jobs_stream_subjects(),
            stream::RetentionPolicy::WorkQueue,
        ),
        (
            subjects::EVENTS_STREAM,
            subjects::events_stream_subjects(),
            stream::RetentionPolicy::Limits,
        ),
    ] {
        js.create_stream(stream::Config {
            name: name.into(),
            subjects,
            retention,
            ..Default::default()
        })
        .await
        .expect("stream");
    }
    let jobs = js
        .get_stream(subjects::JOBS_STREAM)
        .await
        .expect("jobs stream");
    for pool in pools {
        jobs.create_consumer(consumer::pull::Config {
            durable_name: Some(subjects::pool_consumer(pool)),
            filter_subject: subjects::pool_jobs(pool),
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("pool consumer");
    }
    jobs
}

async fn publish(js: &jetstream::Context, pool: &str, count: usize) {
    for _ in 0..count {
        js.publish(subjects::pool_jobs(pool), "{}".into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
}

fn line_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn the_sampler_follows_jobs_queued_and_claimed_per_consumer() {
    let nats = NatsServer::start().await;
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client);
    let jobs = jobs_stream(&js, &["default", "gpu"]).await;
    publish(&js, "default", 3).await;
    publish(&js, "gpu", 1).await;

    let registry = new_registry("paddock-test").expect("registry");
    let sampler = QueueSampler::new(
        js.clone(),
        QueueMetrics::register(&registry).expect("queue metrics"),
    );
    sampler.sample().await.expect("sample");
    let text = render(&registry).expect("render");
    assert_eq!(
        line_value(&text, r#"paddock_jobs_queued{consumer="pool-default"}"#),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        line_value(&text, r#"paddock_jobs_queued{consumer="pool-gpu"}"#),
        Some(1.0)
    );
    assert_eq!(
        line_value(&text, r#"paddock_jobs_claimed{consumer="pool-default"}"#),
        Some(0.0)
    );
    assert_eq!(
        line_value(
            &text,
            &format!(
                r#"paddock_stream_messages{{stream="{}"}}"#,
                subjects::JOBS_STREAM
            )
        ),
        Some(4.0)
    );

    // A node claims one job and has not acknowledged it yet.
    let default = jobs
        .get_consumer::<consumer::pull::Config>(&subjects::pool_consumer("default"))
        .await
        .expect("consumer");
    let mut batch = default
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .expect("fetch");
    let claimed = batch.next().await.expect("a job").expect("message");
    sampler.sample().await.expect("sample");
    let text = render(&registry).expect("render");
    assert_eq!(
        line_value(&text, r#"paddock_jobs_queued{consumer="pool-default"}"#),
        Some(2.0)
    );
    assert_eq!(
        line_value(&text, r#"paddock_jobs_claimed{consumer="pool-default"}"#),
        Some(1.0)
    );

    // The job ends; the gpu pool goes away.
    claimed.double_ack().await.expect("ack");
    jobs.delete_consumer(&subjects::pool_consumer("gpu"))
        .await
        .expect("delete consumer");
    sampler.sample().await.expect("sample");
    let text = render(&registry).expect("render");
    assert_eq!(
        line_value(&text, r#"paddock_jobs_claimed{consumer="pool-default"}"#),
        Some(0.0)
    );
    assert!(
        !text.contains("pool-gpu"),
        "a deleted consumer kept its series: {text}"
    );
    assert_eq!(
        line_value(&text, "paddock_queue_sample_errors_total"),
        Some(0.0)
    );
}

#[tokio::test]
async fn the_sampler_counts_its_failures() {
    let nats = NatsServer::start().await;
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client);
    let registry = new_registry("paddock-test").expect("registry");
    let sampler = QueueSampler::new(js, QueueMetrics::register(&registry).expect("metrics"));
    // No streams yet.
    assert!(sampler.sample().await.is_err());
    let text = render(&registry).expect("render");
    assert_eq!(
        line_value(&text, "paddock_queue_sample_errors_total"),
        Some(1.0)
    );
}

#[tokio::test]
async fn nats_metrics_follow_the_connection_through_a_server_restart() {
    let mut nats = NatsServer::start().await;
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(nats.url())
        .await
        .expect("connect");
    client.flush().await.expect("flush");
    let registry = new_registry("paddock-test").expect("registry");
    NatsMetrics::register(&registry, client.clone()).expect("nats metrics");
    client
        .publish("telemetry.test.ping", "x".into())
        .await
        .expect("publish");
    client.flush().await.expect("flush");

    let text = render(&registry).expect("render");
    assert_eq!(
        line_value(&text, "paddock_nats_connected"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        line_value(&text, "paddock_nats_reconnects_total"),
        Some(0.0)
    );
    assert!(line_value(&text, "paddock_nats_messages_sent_total").is_some_and(|n| n >= 1.0));

    nats.stop();
    eventually(
        Duration::from_secs(15),
        "the metrics to show the connection down",
        || {
            let registry = registry.clone();
            async move {
                let text = render(&registry).ok()?;
                (line_value(&text, "paddock_nats_connected") == Some(0.0)).then_some(())
            }
        },
    )
    .await;
    nats.start_again().await;
    eventually(
        Duration::from_secs(30),
        "the metrics to show one reconnect",
        || {
            let registry = registry.clone();
            async move {
                let text = render(&registry).ok()?;
                (line_value(&text, "paddock_nats_connected") == Some(1.0)
                    && line_value(&text, "paddock_nats_reconnects_total") == Some(1.0))
                .then_some(())
            }
        },
    )
    .await;
}
