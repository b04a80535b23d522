//! Throughput: the capacity of the execution path. M jobs are submitted while no node
//! agent runs (so they wait in the queue and submission is timed on its own), then
//! the run's node agents start and drain the backlog; completion is waited for in the
//! ledger (`GET /v1/jobs?status=completed`, as this run's own user). The floor is M
//! whole one-turn sessions of the fake agent run directly with the same total
//! concurrency (nodes x slots).
//!
//! The drain rate counts from the first `job.started` stamp to the last
//! `job.completed` stamp (the ledger's `started_at_ms` / `finished_at_ms`, free of
//! polling resolution and of node start-up); the ledger rate from that same first
//! start to the moment the poller saw every job completed (adds the coordinator's lag).

use crate::api::Api;
use crate::cluster::Cluster;
use crate::cpu;
use crate::dispatch::now_ms;
use crate::floor::{self, DirectAgent};
use crate::stats::{Samples, Summary};
use anyhow::{Context, bail};
use futures::StreamExt;
use paddock_contract::{JobId, JobStatus};
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

/// How often the ledger is polled while waiting.
const POLL: Duration = Duration::from_millis(50);

pub struct Options {
    pub jobs: usize,
    pub submitters: usize,
    pub job_timeout: Duration,
}

pub struct ThroughputReport {
    pub nodes: usize,
    pub concurrency: usize,
    pub jobs: usize,
    /// Time to get every submission accepted, no node running.
    pub submit_secs: f64,
    /// Launch of the node agents to the last one logging that it is ready.
    pub node_start_secs: f64,
    /// First `job.started` stamp to the last `job.completed` stamp.
    pub drain_secs: f64,
    /// First `job.started` stamp to the poller seeing every job completed.
    pub ledger_secs: f64,
    pub floor_secs: f64,
    /// `job.started` to `job.completed` of each job.
    pub run_time: Summary,
    /// CPU seconds per process from the first submission to the end (node agents:
    /// from their start).
    pub cpu: BTreeMap<String, cpu::CpuTime>,
}

fn per_second(jobs: usize, secs: f64) -> f64 {
    jobs as f64 / secs.max(1e-9)
}

impl ThroughputReport {
    pub fn rate(&self) -> f64 {
        per_second(self.jobs, self.drain_secs)
    }

    pub fn ledger_rate(&self) -> f64 {
        per_second(self.jobs, self.ledger_secs)
    }

    pub fn floor_rate(&self) -> f64 {
        per_second(self.jobs, self.floor_secs)
    }

    pub fn submit_rate(&self) -> f64 {
        per_second(self.jobs, self.submit_secs)
    }
}

/// The floor first, then the cluster with `nodes` node agents, as `user` (an index
/// into the cluster's users). Leaves `nodes` node agents running.
pub async fn run(
    cluster: &mut Cluster,
    agent: &DirectAgent,
    user: usize,
    nodes: usize,
    slots: usize,
    options: &Options,
) -> anyhow::Result<ThroughputReport> {
    let concurrency = nodes * slots;
    let floor_secs = floor::sessions(agent, options.jobs, concurrency)
        .await
        .context("floor sessions")?
        .as_secs_f64();

    cluster.stop_nodes();
    let client = cluster.client(user)?;
    let cpu_before = cpu::Snapshot::take(&cluster.pids());
    let start = Instant::now();
    let ids = submit_all(&client, options.jobs, options.submitters).await?;
    let submit_secs = start.elapsed().as_secs_f64();
    let last = ids.last().copied().context("no job was submitted")?;

    let launch = Instant::now();
    cluster.start_nodes(nodes).await?;
    let node_start_secs = launch.elapsed().as_secs_f64();
    let deadline =
        Instant::now() + options.job_timeout + Duration::from_millis(500) * options.jobs as u32;

    // Cheap polling first: jobs leave the queue in order, so the last one submitted
    // ends about last. Then the full count.
    wait_until(deadline, "the last job to end", || async {
        Ok(
            tokio::time::timeout(Duration::from_secs(5), client.job(last))
                .await
                .ok()
                .and_then(Result::ok)
                .filter(|view| view.status.is_terminal()),
        )
    })
    .await?;
    let wanted: HashSet<JobId> = ids.iter().copied().collect();
    let rows = wait_until(deadline, "every job to complete in the ledger", || async {
        let done = client.list(JobStatus::Completed, &wanted).await?;
        if done.len() == wanted.len() {
            return Ok(Some(done));
        }
        let failed = client.list(JobStatus::Failed, &wanted).await?;
        if let Some(job) = failed.first() {
            bail!(
                "{} job(s) failed, e.g. {}: {:?} {:?}",
                failed.len(),
                job.id,
                job.exit_reason,
                job.exit_message
            );
        }
        Ok(None)
    })
    .await?;
    let ledger_seen_ms = now_ms();
    let cpu = cpu::Snapshot::take(&cluster.pids()).since(&cpu_before);

    let first_started = rows
        .iter()
        .filter_map(|job| job.started_at_ms)
        .min()
        .context("completed jobs without a start stamp")?;
    let last_finished = rows
        .iter()
        .filter_map(|job| job.finished_at_ms)
        .max()
        .context("completed jobs without an end stamp")?;
    let mut run_time = Samples::new()?;
    for job in &rows {
        if let (Some(started), Some(finished)) = (job.started_at_ms, job.finished_at_ms) {
            run_time.record_ms(finished - started);
        }
    }
    let secs = |from: i64, to: i64| (to - from).max(1) as f64 / 1000.0;
    Ok(ThroughputReport {
        nodes,
        concurrency,
        jobs: options.jobs,
        submit_secs,
        node_start_secs,
        drain_secs: secs(first_started, last_finished),
        ledger_secs: secs(first_started, ledger_seen_ms),
        floor_secs,
        run_time: run_time.summary(),
        cpu,
    })
}

/// Submits `total` jobs, `submitters` at a time; their ids in submission order.
async fn submit_all(client: &Api, total: usize, submitters: usize) -> anyhow::Result<Vec<JobId>> {
    let results: Vec<anyhow::Result<JobId>> = futures::stream::iter(0..total)
        .map(|_| async {
            tokio::time::timeout(Duration::from_secs(20), client.submit())
                .await
                .context("a submission timed out")?
        })
        .buffered(submitters.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// Polls `check` every [`POLL`] until it returns `Some`, an error, or `deadline`.
async fn wait_until<T, F, Fut>(deadline: Instant, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}
