//! `paddock-bench`: starts a Paddock cluster on loopback (nats-server, coordinator,
//! gateway, one and then two node agents running the fake agent) and measures, in one
//! run, side by side with the floor of running the fake agent directly:
//!
//! 1. dispatch overhead: `POST /v1/jobs` to `job.started` / `session.init` on the
//!    client's WebSocket, p50 and p99 over N jobs, against spawn-to-first-line;
//! 2. throughput: a backlog of M jobs drained by one node and by two, in jobs per
//!    second, against whole direct sessions at the same concurrency;
//! 3. durability (`--only durability`, not in the default run): what JetStream's
//!    `sync_interval: always` costs against its default, two servers side by side.
//!
//! The machine is noisy, so the ratios are the figures that matter. Every process it
//! starts is stopped when it exits, also on Ctrl-C or SIGTERM. `cluster.rs` starts the
//! processes, `api.rs` and `ws.rs` talk to the gateway, `dispatch.rs` and
//! `throughput.rs` measure, `floor.rs` runs the agent directly, `report.rs` prints.

mod api;
mod cluster;
mod cpu;
mod dispatch;
mod durability;
mod floor;
mod report;
mod stats;
mod throughput;
mod ws;

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// Benchmark a loopback Paddock cluster against running the agent directly.
#[derive(Debug, Parser)]
#[command(name = "paddock-bench")]
struct Args {
    /// Jobs in the dispatch-overhead run (one at a time).
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    jobs: u32,
    /// Jobs in each throughput run.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    throughput_jobs: u32,
    /// Slots of each node agent (jobs it runs at once).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
    slots: u32,
    /// Unmeasured jobs (and floor runs) before the dispatch run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=1_000))]
    warmup: u32,
    /// Concurrent submitters in the throughput runs.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    submitters: u32,
    /// Longest wait for one job, in seconds.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=600))]
    job_timeout_secs: u64,
    /// Use the binaries of target/release (default: the profile this was built with).
    #[arg(long)]
    release: bool,
    /// Take the binaries from this folder instead of target/<profile>.
    #[arg(long, value_name = "DIR")]
    bin_dir: Option<PathBuf>,
    /// Run only one part.
    #[arg(long, value_enum)]
    only: Option<Part>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Part {
    Dispatch,
    Throughput,
    /// NATS `sync_interval: always` against the default (no Paddock cluster).
    Durability,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Returning from here drops the cluster, which stops every process it started.
    tokio::select! {
        result = run(args) => result,
        () = interrupted() => anyhow::bail!("interrupted; stopped the cluster"),
    }
}

async fn interrupted() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let profile = if args.release || !cfg!(debug_assertions) {
        "release"
    } else {
        "debug"
    };
    let dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| paddock_testkit::repo_root().join("target"))
            .join(profile),
    };
    let binaries = cluster::Binaries { dir };
    binaries.check()?;
    let slots = args.slots as usize;
    let job_timeout = Duration::from_secs(args.job_timeout_secs);

    let header = report::Header {
        profile: profile.to_string(),
        binaries: binaries.dir.display().to_string(),
        cpus: std::thread::available_parallelism().map_or(0, usize::from),
        date: report::today(),
        slots,
        nats_only: args.only == Some(Part::Durability),
    };
    report::print_header(&header);
    if args.only == Some(Part::Durability) {
        let options = durability::Options {
            rounds: 6,
            sequential: (args.jobs as usize).max(10),
            burst: (args.throughput_jobs as usize * 10).max(100),
            in_flight: 64,
        };
        let settings = durability::run(&options).await?;
        durability::print(&settings, &options);
        return Ok(());
    }

    let mut cluster = cluster::Cluster::start(binaries.clone(), slots).await?;
    let home = floor::home_in(cluster.dir())?;
    let agent = floor::DirectAgent {
        program: binaries.path("paddock-fake-agent"),
        workdir: cluster.project_dir.clone(),
        home,
    };
    let outcome = measure(&args, &mut cluster, &agent, slots, job_timeout).await;
    if outcome.is_err() {
        eprintln!("{}", cluster.logs());
    }
    outcome
}

async fn measure(
    args: &Args,
    cluster: &mut cluster::Cluster,
    agent: &floor::DirectAgent,
    slots: usize,
    job_timeout: Duration,
) -> anyhow::Result<()> {
    let idle = report::idle_cpu(cluster).await;
    report::print_idle(&idle);

    if args.only.is_none() || args.only == Some(Part::Dispatch) {
        let options = dispatch::Options {
            jobs: args.jobs as usize,
            warmup: args.warmup as usize,
            job_timeout,
        };
        let result = dispatch::run(cluster, agent, &options)
            .await
            .context("dispatch run")?;
        report::print_dispatch(&result);
    }

    if args.only.is_none() || args.only == Some(Part::Throughput) {
        let options = throughput::Options {
            jobs: args.throughput_jobs as usize,
            submitters: args.submitters as usize,
            job_timeout,
        };
        let one = throughput::run(cluster, agent, 1, 1, slots, &options)
            .await
            .context("throughput run with one node")?;
        let two = throughput::run(cluster, agent, 2, 2, slots, &options)
            .await
            .context("throughput run with two nodes")?;
        report::print_throughput(&[one, two], args.submitters as usize);
    }
    report::print_load();
    Ok(())
}
