//! NATS subject and stream names. Every name the system uses is built here and nowhere
//! else (a tidy test enforces it), so a rename is one edit.

use crate::job::JobId;

/// The work-queue stream that holds submitted jobs until a node acknowledges them.
pub const JOBS_STREAM: &str = "PADDOCK_JOBS";
/// The limits-retention stream that holds every job's events.
pub const EVENTS_STREAM: &str = "PADDOCK_EVENTS";
/// Key-value bucket of each node's desired state (ready, draining, cordoned).
pub const NODES_BUCKET: &str = "paddock_nodes";
/// Key-value bucket of node heartbeats; entries expire when a node stops reporting.
pub const HEARTBEATS_BUCKET: &str = "paddock_heartbeats";
/// The durable consumer through which the coordinator writes the job ledger.
pub const LEDGER_CONSUMER: &str = "paddock-ledger";

const JOBS_PREFIX: &str = "paddock.jobs";
const EVENTS_PREFIX: &str = "paddock.events";
const CONTROL_PREFIX: &str = "paddock.control";

/// Subjects captured by the jobs stream.
pub fn jobs_stream_subjects() -> Vec<String> {
    vec![
        format!("{JOBS_PREFIX}.pool.*"),
        format!("{JOBS_PREFIX}.node.*"),
    ]
}

/// Subjects captured by the events stream.
pub fn events_stream_subjects() -> Vec<String> {
    vec![format!("{EVENTS_PREFIX}.*")]
}

/// Where a job for any node of `pool` is published.
pub fn pool_jobs(pool: &str) -> String {
    format!("{JOBS_PREFIX}.pool.{pool}")
}

/// Where work that must land on one node is published.
pub fn node_jobs(node: &str) -> String {
    format!("{JOBS_PREFIX}.node.{node}")
}

/// The durable pull consumer that serves a pool's jobs to every node in it.
pub fn pool_consumer(pool: &str) -> String {
    format!("pool-{pool}")
}

/// The durable pull consumer that serves jobs addressed to one node.
pub fn node_consumer(node: &str) -> String {
    format!("node-{node}")
}

/// The subject that holds one job's events.
pub fn job_events(job: &JobId) -> String {
    format!("{EVENTS_PREFIX}.{job}")
}

/// Request/reply subject on which the node that runs a job takes control requests.
pub fn job_control(job: &JobId) -> String {
    format!("{CONTROL_PREFIX}.{job}")
}

/// Request/reply subject on which a node answers "are you there" (a follow-up to a
/// session whose transcript lives on that node checks it first).
pub fn node_ping(node: &str) -> String {
    format!("{CONTROL_PREFIX}.node.{node}")
}

/// Wildcard over every job's control subject.
pub fn all_job_control() -> String {
    format!("{CONTROL_PREFIX}.*")
}

/// True when `name` may be used as one token of a subject (pool or node names).
pub fn is_valid_token(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_subjects_are_inside_their_streams() {
        let job = JobId::new();
        assert!(job_events(&job).starts_with("paddock.events."));
        assert_eq!(job_events(&job).split('.').count(), 3);
        assert_eq!(pool_jobs("default"), "paddock.jobs.pool.default");
        assert_eq!(node_jobs("mini-1"), "paddock.jobs.node.mini-1");
    }

    #[test]
    fn tokens_refuse_wildcards_and_dots() {
        assert!(is_valid_token("mac-mini_2"));
        for bad in ["", "a.b", "*", ">", "a b"] {
            assert!(!is_valid_token(bad), "{bad:?}");
        }
    }
}
