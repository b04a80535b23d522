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
/// Key-value bucket of the label selectors jobs were queued with, keyed by selector id.
pub const SELECTORS_BUCKET: &str = "paddock_selectors";
/// The durable consumer through which the coordinator writes the job ledger.
pub const LEDGER_CONSUMER: &str = "paddock-ledger";
/// The durable consumer through which the gateways send Web Push notifications: one
/// consumer shared by every gateway, so each notification is sent once.
pub const PUSH_CONSUMER: &str = "paddock-push";

const JOBS_PREFIX: &str = "paddock.jobs";
const EVENTS_PREFIX: &str = "paddock.events";
const CONTROL_PREFIX: &str = "paddock.control";

/// Subjects captured by the jobs stream.
pub fn jobs_stream_subjects() -> Vec<String> {
    vec![
        format!("{JOBS_PREFIX}.pool.*"),
        format!("{JOBS_PREFIX}.node.*"),
        format!("{JOBS_PREFIX}.sel.*"),
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

/// Where a job that requires labels is published: the subject of its label selector
/// (`selector` is the selector's id, a digest of its requirements).
pub fn selector_jobs(selector: &str) -> String {
    format!("{JOBS_PREFIX}.sel.{selector}")
}

/// The durable pull consumer that serves a selector's jobs to every node that matches.
pub fn selector_consumer(selector: &str) -> String {
    format!("sel-{selector}")
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

/// The NATS permissions of one node's own credentials (issued at join): what a node
/// agent needs and no more that is easy to take away. Deny wins over allow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePermissions {
    pub publish_allow: Vec<String>,
    pub publish_deny: Vec<String>,
    pub subscribe_allow: Vec<String>,
    pub subscribe_deny: Vec<String>,
}

/// Prefix of request replies (async-nats's default inbox).
const INBOX_PREFIX: &str = "_INBOX";
/// The JetStream API, acknowledgements and flow control.
const JETSTREAM_API: &str = "$JS.API";
const JETSTREAM_ACK: &str = "$JS.ACK";
const JETSTREAM_FLOW_CONTROL: &str = "$JS.FC";
/// Key-value puts go to `$KV.<bucket>.<key>`.
const KV_PREFIX: &str = "$KV";
/// The server's system subjects.
const SYSTEM_PREFIX: &str = "$SYS";

/// What node `node` may publish and subscribe to. It appends events, claims, acks and
/// extends jobs, writes its own heartbeat and registry entry (no other node's), answers
/// its own pings and the control requests of jobs it runs, and forgets idle label
/// selectors. It may not delete or purge a
/// stream, a consumer or a message, nor touch `$SYS`. Stream updates stay allowed: a
/// node checks the streams' settings at start and brings them to its config.
pub fn node_permissions(node: &str) -> NodePermissions {
    let js = JETSTREAM_API;
    NodePermissions {
        publish_allow: vec![
            format!("{EVENTS_PREFIX}.*"),
            format!("{js}.>"),
            format!("{JETSTREAM_ACK}.>"),
            format!("{JETSTREAM_FLOW_CONTROL}.>"),
            format!("{KV_PREFIX}.{NODES_BUCKET}.{node}"),
            format!("{KV_PREFIX}.{HEARTBEATS_BUCKET}.{node}"),
            // A node forgets an idle label selector (a conditional delete).
            format!("{KV_PREFIX}.{SELECTORS_BUCKET}.*"),
            format!("{INBOX_PREFIX}.>"),
        ],
        publish_deny: vec![
            format!("{js}.STREAM.DELETE.>"),
            format!("{js}.STREAM.PURGE.>"),
            format!("{js}.STREAM.MSG.DELETE.>"),
            format!("{js}.CONSUMER.DELETE.>"),
            format!("{js}.ACCOUNT.PURGE.>"),
            format!("{js}.SERVER.>"),
            format!("{js}.META.>"),
            format!("{SYSTEM_PREFIX}.>"),
        ],
        subscribe_allow: vec![
            format!("{INBOX_PREFIX}.>"),
            all_job_control(),
            node_ping(node),
        ],
        subscribe_deny: vec![format!("{SYSTEM_PREFIX}.>")],
    }
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
        assert_eq!(selector_jobs("ab12"), "paddock.jobs.sel.ab12");
        // Each job subject is captured by exactly one of the stream's subjects, and no
        // two consumers' filters overlap (the stream is a work queue).
        for subject in [pool_jobs("p"), node_jobs("n"), selector_jobs("s")] {
            let prefix = subject.rsplit_once('.').map(|(head, _)| head).unwrap_or("");
            let captured = jobs_stream_subjects()
                .iter()
                .filter(|pattern| pattern.strip_suffix(".*") == Some(prefix))
                .count();
            assert_eq!(captured, 1, "{subject}");
        }
    }

    #[test]
    fn a_node_may_write_only_its_own_keys_and_never_delete() {
        let p = node_permissions("mini-1");
        assert!(
            p.publish_allow
                .contains(&"$KV.paddock_heartbeats.mini-1".to_string())
        );
        assert!(!p.publish_allow.iter().any(|s| s.contains("mini-2")));
        assert!(
            p.publish_deny
                .contains(&"$JS.API.STREAM.DELETE.>".to_string())
        );
        assert!(
            p.publish_deny
                .contains(&"$JS.API.CONSUMER.DELETE.>".to_string())
        );
        assert!(p.publish_deny.contains(&"$SYS.>".to_string()));
        assert!(p.subscribe_allow.contains(&node_ping("mini-1")));
        assert!(p.publish_allow.contains(&format!("{EVENTS_PREFIX}.*")));
    }

    #[test]
    fn tokens_refuse_wildcards_and_dots() {
        assert!(is_valid_token("mac-mini_2"));
        for bad in ["", "a.b", "*", ">", "a b"] {
            assert!(!is_valid_token(bad), "{bad:?}");
        }
    }
}
