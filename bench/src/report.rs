//! The plain-text table the benchmark prints: a header saying what ran where, then one
//! block per measurement with the floor beside the cluster and their ratios, and the
//! CPU time each process spent, so the figures say where the time goes.

use crate::cluster::Cluster;
use crate::cpu::{CpuTime, Snapshot};
use crate::dispatch::DispatchReport;
use crate::stats::Summary;
use crate::throughput::ThroughputReport;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct Header {
    pub profile: String,
    pub binaries: String,
    pub cpus: usize,
    pub date: String,
    pub slots: usize,
    /// Nothing but two nats-servers (the durability part).
    pub nats_only: bool,
}

pub fn print_header(header: &Header) {
    println!(
        "paddock-bench  {}  {} CPUs  {} build",
        header.date, header.cpus, header.profile
    );
    println!("binaries: {}", header.binaries);
    print_load();
    if header.nats_only {
        println!("two nats-servers on 127.0.0.1, file storage in a temp dir");
        return;
    }
    println!(
        "cluster: nats-server, coordinator, gateway (SQLite ledger), node agents with {} slots running paddock-fake-agent; all on 127.0.0.1",
        header.slots
    );
    println!();
}

/// How long the idle cluster is watched.
const IDLE: Duration = Duration::from_secs(2);

/// CPU use of the idle cluster, as a share of one core, per process.
pub async fn idle_cpu(cluster: &Cluster) -> BTreeMap<String, f64> {
    // Let start-up work settle first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pids = cluster.pids();
    let before = Snapshot::take(&pids);
    tokio::time::sleep(IDLE).await;
    Snapshot::take(&pids)
        .since(&before)
        .into_iter()
        .map(|(name, time)| (name, 100.0 * time.own_secs / IDLE.as_secs_f64()))
        .collect()
}

pub fn print_idle(idle: &BTreeMap<String, f64>) {
    let parts: Vec<String> = idle
        .iter()
        .map(|(name, percent)| format!("{name} {percent:.1}%"))
        .collect();
    println!(
        "idle CPU over {} s (% of one core): {}",
        IDLE.as_secs(),
        parts.join(", ")
    );
    println!();
}

fn ratio(value: f64, floor: f64) -> String {
    if floor <= 0.0 {
        "-".into()
    } else {
        format!("{:.1}x", value / floor)
    }
}

pub fn print_dispatch(report: &DispatchReport) {
    println!(
        "1. Dispatch overhead: {} jobs, one at a time, idle cluster with one node.",
        report.jobs
    );
    println!(
        "   The client submits, then subscribes on an already open WebSocket right after the 202 (from seq 0:"
    );
    println!(
        "   events stored before the subscription are replayed). Floor: spawn the fake agent, write one user line,"
    );
    println!("   read its first stdout line. Floor runs and jobs alternate.");
    println!();
    println!(
        "   {:<46} {:>9} {:>9} {:>9} {:>11} {:>11}",
        "", "p50 ms", "p99 ms", "max ms", "p50/floor", "p99/floor"
    );
    let floor = report.floor;
    let row = |label: &str, s: &Summary| {
        println!(
            "   {:<46} {:>9.2} {:>9.2} {:>9.2} {:>11} {:>11}",
            label,
            s.p50_ms,
            s.p99_ms,
            s.max_ms,
            ratio(s.p50_ms, floor.p50_ms),
            ratio(s.p99_ms, floor.p99_ms)
        );
    };
    row("floor: spawn -> first stdout line", &floor);
    for (label, summary) in &report.client {
        row(label, summary);
    }
    println!();
    println!("   Stages, from the events' own at_ms stamps (ms resolution):");
    for (label, s) in &report.stages {
        println!(
            "   {:<46} {:>9.0} {:>9.0} {:>9.0}",
            label, s.p50_ms, s.p99_ms, s.max_ms
        );
    }
    println!();
    print_cpu(
        "   CPU per job",
        &report.cpu,
        report.client.first().map_or(0, |(_, s)| s.count),
    );
    println!();
}

pub fn print_throughput(runs: &[ThroughputReport], submitters: usize) {
    let jobs = runs.first().map_or(0, |r| r.jobs);
    println!(
        "2. Throughput: a backlog of {jobs} jobs per run, submitted ({submitters} at a time) while no node runs,"
    );
    println!(
        "   then drained by the run's nodes. Cluster job/s: first job.started stamp to last job.completed stamp;"
    );
    println!(
        "   ledger job/s: same start, until the poller saw all {jobs} completed in the ledger."
    );
    println!(
        "   Floor: {jobs} whole one-turn sessions of the fake agent run directly, as many at once as the cluster"
    );
    println!("   has slots (write line, read to the result line, close stdin, wait for exit).");
    println!();
    println!(
        "   {:<6} {:>6} {:>12} {:>14} {:>8} {:>13} {:>11} {:>11} {:>13}",
        "nodes",
        "slots",
        "floor job/s",
        "cluster job/s",
        "ratio",
        "ledger job/s",
        "run p50 ms",
        "run p99 ms",
        "submit job/s"
    );
    for run in runs {
        println!(
            "   {:<6} {:>6} {:>12.1} {:>14.1} {:>8} {:>13.1} {:>11.1} {:>11.1} {:>13.1}",
            run.nodes,
            run.concurrency,
            run.floor_rate(),
            run.rate(),
            format!("{:.2}", run.rate() / run.floor_rate().max(1e-9)),
            run.ledger_rate(),
            run.run_time.p50_ms,
            run.run_time.p99_ms,
            run.submit_rate(),
        );
    }
    if let [one, two] = runs {
        println!(
            "   two nodes / one node: cluster {:.2}x, floor {:.2}x",
            two.rate() / one.rate().max(1e-9),
            two.floor_rate() / one.floor_rate().max(1e-9)
        );
    }
    let starts: Vec<String> = runs
        .iter()
        .map(|run| format!("{:.0} ms for {}", run.node_start_secs * 1000.0, run.nodes))
        .collect();
    println!(
        "   node agents launched to ready (not in the rates): {}",
        starts.join(", ")
    );
    println!();
    for run in runs {
        print_cpu(
            &format!("   CPU per job, {} node(s)", run.nodes),
            &run.cpu,
            u64::try_from(run.jobs).unwrap_or(u64::MAX),
        );
    }
    println!();
}

/// The machine's load averages, which say how noisy the run was.
pub fn print_load() {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let fields: Vec<&str> = load.split_whitespace().take(3).collect();
    if fields.len() == 3 {
        println!("load average (1, 5, 15 min): {}", fields.join(" "));
    }
}

fn print_cpu(label: &str, cpu: &BTreeMap<String, CpuTime>, jobs: impl Into<u64>) {
    let jobs = jobs.into().max(1) as f64;
    let mut parts = Vec::new();
    let mut agents = 0.0;
    let mut total = 0.0;
    for (name, time) in cpu {
        parts.push(format!("{name} {:.1}", 1000.0 * time.own_secs / jobs));
        agents += time.children_secs;
        total += time.own_secs + time.children_secs;
    }
    parts.push(format!("agents {:.1}", 1000.0 * agents / jobs));
    println!(
        "{label} (ms): {}; total {:.1}",
        parts.join(", "),
        1000.0 * total / jobs
    );
}

/// Today's date (UTC) as YYYY-MM-DD.
pub fn today() -> String {
    let days = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400);
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!("{year:04}-{month:02}-{day:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_418), (2025, 11, 26));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
