//! What `sync_interval: always` costs (issue 5): two nats-servers side by side, one with
//! JetStream's default (fsync every two minutes) and one that fsyncs every write,
//! each with a file-backed stream shaped like the jobs stream. Each round publishes
//! one job-sized message at a time (the ack latency a submission waits for) and then a
//! pipelined burst (the rate a busy gateway reaches), alternating which server goes
//! first, so load on the machine falls on both alike. The ratio is the figure.

use crate::stats::{Samples, Summary};
use anyhow::Context;
use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use paddock_testkit::NatsServer;
use std::time::{Duration, Instant};

/// One job message: a prompt of about a kibibyte with its JSON around it.
const PAYLOAD_BYTES: usize = 1024;

pub struct Options {
    pub rounds: usize,
    /// Messages published one at a time per round and server.
    pub sequential: usize,
    /// Messages in each round's pipelined burst.
    pub burst: usize,
    /// Publishes awaiting their ack at once in the burst.
    pub in_flight: usize,
}

/// The figures of one server setting.
pub struct Setting {
    pub name: &'static str,
    pub latency: Summary,
    pub burst_per_sec: f64,
}

/// Runs the comparison; the default setting first in the result.
pub async fn run(options: &Options) -> anyhow::Result<[Setting; 2]> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let config = dir.path().join("sync-always.conf");
    std::fs::write(&config, "jetstream {\n  sync_interval: always\n}\n")
        .context("writing the nats-server config")?;
    let default_server = NatsServer::start().await;
    let always_server =
        NatsServer::start_with_args(vec!["-c".into(), config.display().to_string()]).await;
    let mut benches = [
        Bench::connect("default (2m)", &default_server.url()).await?,
        Bench::connect("always", &always_server.url()).await?,
    ];
    for round in 0..options.rounds {
        let order: [usize; 2] = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for index in order {
            benches[index].round(options).await?;
        }
    }
    let [default, always] = benches;
    Ok([default.finish(), always.finish()])
}

struct Bench {
    name: &'static str,
    js: jetstream::Context,
    latency: Samples,
    burst_messages: usize,
    burst_time: Duration,
    payload: bytes::Bytes,
}

impl Bench {
    async fn connect(name: &'static str, url: &str) -> anyhow::Result<Bench> {
        let client = async_nats::connect(url)
            .await
            .with_context(|| format!("connecting to {url}"))?;
        let js = jetstream::new(client);
        js.create_stream(stream::Config {
            name: "BENCH_JOBS".into(),
            subjects: vec!["bench.jobs.>".into()],
            retention: stream::RetentionPolicy::Limits,
            storage: stream::StorageType::File,
            max_messages: 1_000_000,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating the bench stream on {url}"))?;
        Ok(Bench {
            name,
            js,
            latency: Samples::new()?,
            burst_messages: 0,
            burst_time: Duration::ZERO,
            payload: bytes::Bytes::from(vec![b'x'; PAYLOAD_BYTES]),
        })
    }

    async fn round(&mut self, options: &Options) -> anyhow::Result<()> {
        for _ in 0..options.sequential {
            let started = Instant::now();
            self.js
                .publish("bench.jobs.pool", self.payload.clone())
                .await
                .context("publish")?
                .await
                .context("publish ack")?;
            self.latency.record(started.elapsed());
        }
        let started = Instant::now();
        let mut pending = FuturesUnordered::new();
        for _ in 0..options.burst {
            if pending.len() >= options.in_flight
                && let Some(ack) = pending.next().await
            {
                ack?;
            }
            let ack = self
                .js
                .publish("bench.jobs.pool", self.payload.clone())
                .await
                .context("publish")?;
            pending.push(async move { ack.await.context("publish ack").map(|_| ()) });
        }
        while let Some(ack) = pending.next().await {
            ack?;
        }
        self.burst_time += started.elapsed();
        self.burst_messages += options.burst;
        Ok(())
    }

    fn finish(self) -> Setting {
        let secs = self.burst_time.as_secs_f64();
        Setting {
            name: self.name,
            latency: self.latency.summary(),
            burst_per_sec: if secs > 0.0 {
                self.burst_messages as f64 / secs
            } else {
                0.0
            },
        }
    }
}

/// Prints both settings and the ratios.
pub fn print(settings: &[Setting; 2], options: &Options) {
    println!(
        "\nNATS durability: {} rounds, {} sequential + {} pipelined ({} in flight) {} B publishes per round and server",
        options.rounds, options.sequential, options.burst, options.in_flight, PAYLOAD_BYTES
    );
    println!(
        "  {:<14} {:>10} {:>10} {:>14}",
        "sync_interval", "ack p50", "ack p99", "burst msg/s"
    );
    for setting in settings {
        println!(
            "  {:<14} {:>8.2}ms {:>8.2}ms {:>14.0}",
            setting.name, setting.latency.p50_ms, setting.latency.p99_ms, setting.burst_per_sec
        );
    }
    let [default, always] = settings;
    if default.latency.p50_ms > 0.0 && always.burst_per_sec > 0.0 {
        println!(
            "  always / default: ack p50 x{:.1}, p99 x{:.1}; burst rate x{:.2}",
            always.latency.p50_ms / default.latency.p50_ms,
            always.latency.p99_ms / default.latency.p99_ms.max(f64::EPSILON),
            always.burst_per_sec / default.burst_per_sec.max(f64::EPSILON),
        );
    }
}
