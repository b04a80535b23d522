//! Dispatch overhead: jobs submitted one at a time to an idle cluster, each followed on
//! one long-lived WebSocket that subscribes right after the `202` (from seq 0, so the
//! events already stored are replayed), against the floor of spawning the fake agent
//! directly and reading its first line. Cluster jobs and floor runs alternate, so drift
//! of a noisy machine hits both alike.
//!
//! Besides what the client sees, the events' own `at_ms` stamps (wall clock, one
//! machine, millisecond resolution) split each job into its stages.

use crate::api::Api;
use crate::cluster::Cluster;
use crate::cpu;
use crate::floor::DirectAgent;
use crate::stats::{Samples, Summary};
use crate::ws::{Arrival, EventSocket};
use anyhow::{Context, bail};
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The user of [`crate::cluster::USERS`] dispatch jobs are submitted as.
const USER: usize = 0;

/// Milestones a client sees, in the order they are printed.
pub const CLIENT_ROWS: [&str; 6] = [
    "POST -> 202 accepted",
    "POST -> Subscribed",
    "POST -> job.queued",
    "POST -> job.started",
    "POST -> session.init",
    "POST -> job.completed",
];

/// Stages between the events' own stamps.
pub const STAGE_ROWS: [&str; 5] = [
    "POST sent -> job.queued stamped (gateway)",
    "job.queued -> job.started (claim)",
    "job.started -> session.init (spawn + agent)",
    "session.init -> job.completed",
    "job.completed stamped -> on the WebSocket",
];

pub struct DispatchReport {
    pub jobs: usize,
    pub floor: Summary,
    pub client: Vec<(&'static str, Summary)>,
    pub stages: Vec<(&'static str, Summary)>,
    /// CPU seconds per process over the cluster's share of the run.
    pub cpu: BTreeMap<String, cpu::CpuTime>,
}

pub struct Options {
    pub jobs: usize,
    pub warmup: usize,
    pub job_timeout: Duration,
}

pub async fn run(
    cluster: &Cluster,
    agent: &DirectAgent,
    options: &Options,
) -> anyhow::Result<DispatchReport> {
    let client = cluster.client(USER)?;
    let mut socket = EventSocket::open(&cluster.url, cluster.token(USER)?).await?;
    let mut floor = Samples::new()?;
    let mut client_samples: Vec<Samples> = CLIENT_ROWS
        .iter()
        .map(|_| Samples::new())
        .collect::<anyhow::Result<_>>()?;
    let mut stage_samples: Vec<Samples> = STAGE_ROWS
        .iter()
        .map(|_| Samples::new())
        .collect::<anyhow::Result<_>>()?;
    let mut cpu_spent: BTreeMap<String, cpu::CpuTime> = BTreeMap::new();
    let pids = cluster.pids();

    for i in 0..options.warmup + options.jobs {
        let measured = i >= options.warmup;
        let floor_time = agent.first_line().await.context("floor run")?;

        let before = cpu::Snapshot::take(&pids);
        let job = one_job(&client, &mut socket, options.job_timeout)
            .await
            .with_context(|| format!("dispatch job {i}"))?;
        let spent = cpu::Snapshot::take(&pids).since(&before);

        if !measured {
            continue;
        }
        floor.record(floor_time);
        for (samples, value) in client_samples.iter_mut().zip(job.client) {
            samples.record(value);
        }
        for (samples, value) in stage_samples.iter_mut().zip(job.stages_ms) {
            samples.record_ms(value);
        }
        for (name, time) in spent {
            let total = cpu_spent.entry(name).or_default();
            total.own_secs += time.own_secs;
            total.children_secs += time.children_secs;
        }
    }
    Ok(DispatchReport {
        jobs: options.jobs,
        floor: floor.summary(),
        client: CLIENT_ROWS
            .iter()
            .copied()
            .zip(client_samples.iter().map(Samples::summary))
            .collect(),
        stages: STAGE_ROWS
            .iter()
            .copied()
            .zip(stage_samples.iter().map(Samples::summary))
            .collect(),
        cpu: cpu_spent,
    })
}

/// What one job measured.
struct JobTimes {
    /// In the order of [`CLIENT_ROWS`].
    client: [Duration; 6],
    /// In the order of [`STAGE_ROWS`], milliseconds.
    stages_ms: [i64; 5],
}

async fn one_job(
    client: &Api,
    socket: &mut EventSocket,
    timeout: Duration,
) -> anyhow::Result<JobTimes> {
    let wall_start = now_ms();
    let start = Instant::now();
    let job = tokio::time::timeout(Duration::from_secs(10), client.submit())
        .await
        .context("the submission timed out")??;
    let accepted_at = start.elapsed();
    socket.subscribe(job, 0).await?;
    let (subscribed, arrivals) = socket.until_terminal(job, timeout).await?;

    let find = |kind: &str| -> anyhow::Result<&Arrival> {
        arrivals
            .iter()
            .find(|a| a.event.kind == kind)
            .with_context(|| format!("job {job} had no {kind} event: {:?}", kinds(&arrivals)))
    };
    let last = arrivals.last().map(|a| &a.event);
    if last.map(|event| event.kind.as_str()) != Some("job.completed") {
        bail!("job {job} did not complete: {last:?}");
    }
    for (i, arrival) in arrivals.iter().enumerate() {
        if arrival.event.seq != i as u64 + 1 {
            bail!(
                "job {job}'s events are not contiguous from 1: {:?}",
                kinds(&arrivals)
            );
        }
    }
    let queued = find("job.queued")?;
    let started = find("job.started")?;
    let init = find("session.init")?;
    let completed = find("job.completed")?;
    let since = |at: Instant| at.saturating_duration_since(start);
    let completed_wall = wall_start + i64::try_from(since(completed.at).as_millis()).unwrap_or(0);
    Ok(JobTimes {
        client: [
            accepted_at,
            subscribed.map_or(Duration::ZERO, since),
            since(queued.at),
            since(started.at),
            since(init.at),
            since(completed.at),
        ],
        stages_ms: [
            queued.event.at_ms - wall_start,
            started.event.at_ms - queued.event.at_ms,
            init.event.at_ms - started.event.at_ms,
            completed.event.at_ms - init.event.at_ms,
            completed_wall - completed.event.at_ms,
        ],
    })
}

fn kinds(arrivals: &[Arrival]) -> Vec<&str> {
    arrivals.iter().map(|a| a.event.kind.as_str()).collect()
}

/// Wall-clock milliseconds since the Unix epoch, as the events are stamped.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
