//! Routing by labels at submission: where a job is queued, and what happens to a job
//! that no node can take.
//!
//! A job's requirements are its `options.requires` plus its pool (the project's pool
//! unless `requires` names one under `pool`). A job that requires only a pool is
//! published on the pool's subject, as every job without requirements is. A job that
//! requires more is published on the subject of its label selector, recorded in the
//! `paddock_selectors` bucket just before (`paddock_bus::selectors`); every node whose
//! pool and labels satisfy the selector claims from it, one job to one node.
//!
//! A job that names requirements is checked against the live heartbeats first. Nodes
//! that are draining, drained or cordoned count as able to run it (an operator's pause
//! is not an answer to "can this ever run"), lost nodes do not (their labels are gone
//! with their heartbeat). With no live node that matches, `[routing] unmatched` decides:
//! `refuse` (the default) answers 422 `no_matching_node` naming the requirements and
//! queues nothing; `wait` queues the job and records why it waits (`job.waiting`), and
//! it runs once a matching node appears. A job whose only matching nodes take no work
//! now is queued under either policy, with its `job.waiting` reason. A job without
//! requirements is never refused: its project's pool is the operator's promise.

use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use paddock_contract::api::{ErrorBody, ErrorDetail};
use paddock_contract::job::{POOL_LABEL, labels_satisfy};
use paddock_contract::node::{NodeHeartbeat, NodeState};
use paddock_contract::{JobSpec, subjects};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The code of a submission refused because no live node carries what it requires.
pub use crate::error::code::NO_MATCHING_NODE;

/// `[routing]` in the gateway's config.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// What happens to a job whose requirements no live node satisfies.
    pub unmatched: UnmatchedPolicy,
}

/// See the module's documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnmatchedPolicy {
    /// 422 `no_matching_node`; nothing is queued.
    #[default]
    Refuse,
    /// Queued, with a `job.waiting` event saying why; it runs once a node matches.
    Wait,
}

/// The answer of `POST /v1/jobs` when it fails: an [`ApiError`], or 422
/// `no_matching_node`.
#[derive(Debug)]
pub enum SubmitError {
    Api(ApiError),
    NoMatchingNode(String),
}

impl<E> From<E> for SubmitError
where
    ApiError: From<E>,
{
    fn from(error: E) -> Self {
        SubmitError::Api(ApiError::from(error))
    }
}

impl IntoResponse for SubmitError {
    fn into_response(self) -> Response {
        match self {
            SubmitError::Api(error) => error.into_response(),
            SubmitError::NoMatchingNode(message) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(ErrorBody {
                    error: ErrorDetail {
                        code: NO_MATCHING_NODE.into(),
                        message,
                    },
                }),
            )
                .into_response(),
        }
    }
}

/// Everything the job requires of a node, its pool included.
pub fn requirements(spec: &JobSpec) -> BTreeMap<String, String> {
    let mut requires = spec.options.requires.clone();
    requires.insert(POOL_LABEL.into(), spec.pool.clone());
    requires
}

/// `pool=default, xcode=16`, for people.
pub fn describe(requires: &BTreeMap<String, String>) -> String {
    requires
        .iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Who could run a job, from the live heartbeats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    /// At least one matching node takes work.
    Ready,
    /// Matching nodes are alive but take no new work now (name and state of each).
    Paused(Vec<(String, NodeState)>),
    /// No live node matches.
    NoNode,
}

pub fn availability(
    heartbeats: &BTreeMap<String, NodeHeartbeat>,
    requires: &BTreeMap<String, String>,
) -> Availability {
    let matching: Vec<&NodeHeartbeat> = heartbeats
        .values()
        .filter(|beat| labels_satisfy(&beat.pool, &beat.labels, requires))
        .collect();
    if matching.is_empty() {
        Availability::NoNode
    } else if matching.iter().any(|beat| beat.state == NodeState::Ready) {
        Availability::Ready
    } else {
        Availability::Paused(
            matching
                .iter()
                .map(|beat| (beat.node.clone(), beat.state))
                .collect(),
        )
    }
}

/// What to do with a new job that names requirements: `Ok(None)` to queue it,
/// `Ok(Some(reason))` to queue it and record why it waits, or the refusal.
pub async fn admit(state: &AppState, spec: &JobSpec) -> Result<Option<String>, SubmitError> {
    if spec.options.requires.is_empty() {
        return Ok(None);
    }
    let requires = requirements(spec);
    let heartbeats = state
        .nodes()
        .heartbeats()
        .await
        .map_err(|e| ApiError::bus("reading node heartbeats failed", e))?;
    decide(
        availability(&heartbeats, &requires),
        &requires,
        state.config().routing.unmatched,
    )
}

/// The policy, apart from the network.
pub fn decide(
    availability: Availability,
    requires: &BTreeMap<String, String>,
    policy: UnmatchedPolicy,
) -> Result<Option<String>, SubmitError> {
    match availability {
        Availability::Ready => Ok(None),
        Availability::Paused(nodes) => {
            let nodes = nodes
                .iter()
                .map(|(name, state)| format!("{name} ({})", state_name(*state)))
                .collect::<Vec<_>>()
                .join(", ");
            Ok(Some(format!(
                "the nodes that match {} take no new work now: {nodes}",
                describe(requires)
            )))
        }
        Availability::NoNode => {
            let reason = format!("no live node matches {}", describe(requires));
            match policy {
                UnmatchedPolicy::Refuse => Err(SubmitError::NoMatchingNode(reason)),
                UnmatchedPolicy::Wait => Ok(Some(format!(
                    "{reason}; the job runs once a node that matches joins"
                ))),
            }
        }
    }
}

fn state_name(state: NodeState) -> &'static str {
    match state {
        NodeState::Ready => "ready",
        NodeState::Draining => "draining",
        NodeState::Drained => "drained",
        NodeState::Cordoned => "cordoned",
        NodeState::Lost => "lost",
    }
}

/// The subject a new (not resumed) job is queued on. For a job that requires labels
/// beyond its pool this records its selector first, so that the nodes that match
/// claim from it and it is not forgotten while the job waits.
pub async fn queue_subject(state: &AppState, spec: &JobSpec) -> Result<String, ApiError> {
    if spec.options.requires.keys().all(|key| key == POOL_LABEL) {
        return Ok(subjects::pool_jobs(&spec.pool));
    }
    let selector = state
        .selectors()
        .record(&requirements(spec))
        .await
        .map_err(|e| ApiError::bus("recording a label selector failed", e))?;
    Ok(subjects::selector_jobs(&selector))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn beat(node: &str, pool: &str, labels: &[(&str, &str)], state: NodeState) -> NodeHeartbeat {
        NodeHeartbeat {
            node: node.into(),
            pool: pool.into(),
            labels: map(labels),
            state,
            slots: 1,
            free: 1,
            running: Vec::new(),
            version: "0".into(),
            at_ms: 0,
        }
    }

    fn fleet(beats: Vec<NodeHeartbeat>) -> BTreeMap<String, NodeHeartbeat> {
        beats.into_iter().map(|b| (b.node.clone(), b)).collect()
    }

    #[test]
    fn a_ready_matching_node_makes_a_job_ready() {
        let nodes = fleet(vec![
            beat("a", "default", &[], NodeState::Ready),
            beat("b", "default", &[("xcode", "16")], NodeState::Ready),
            beat("c", "big", &[("xcode", "15")], NodeState::Ready),
        ]);
        let xcode16 = map(&[("pool", "default"), ("xcode", "16")]);
        assert_eq!(availability(&nodes, &xcode16), Availability::Ready);
        // The label is on a node of another pool only.
        let xcode15 = map(&[("pool", "default"), ("xcode", "15")]);
        assert_eq!(availability(&nodes, &xcode15), Availability::NoNode);
        let big = map(&[("pool", "big")]);
        assert_eq!(availability(&nodes, &big), Availability::Ready);
    }

    #[test]
    fn paused_matching_nodes_make_a_job_wait_under_either_policy() {
        let nodes = fleet(vec![
            beat("a", "default", &[], NodeState::Ready),
            beat("b", "default", &[("xcode", "16")], NodeState::Draining),
        ]);
        let requires = map(&[("pool", "default"), ("xcode", "16")]);
        let found = availability(&nodes, &requires);
        assert_eq!(
            found,
            Availability::Paused(vec![("b".into(), NodeState::Draining)])
        );
        for policy in [UnmatchedPolicy::Refuse, UnmatchedPolicy::Wait] {
            let reason = decide(found.clone(), &requires, policy)
                .expect("queued")
                .expect("with a reason");
            assert!(reason.contains("b (draining)"), "{reason}");
        }
    }

    #[test]
    fn no_matching_node_is_refused_or_waits_by_policy() {
        let requires = map(&[("pool", "default"), ("xcode", "17")]);
        match decide(Availability::NoNode, &requires, UnmatchedPolicy::Refuse) {
            Err(SubmitError::NoMatchingNode(message)) => {
                assert!(message.contains("xcode=17"), "{message}")
            }
            other => panic!("refused expected, got {other:?}"),
        }
        let reason = decide(Availability::NoNode, &requires, UnmatchedPolicy::Wait)
            .expect("queued")
            .expect("with a reason");
        assert!(reason.contains("pool=default, xcode=17"), "{reason}");
        assert_eq!(
            decide(Availability::Ready, &requires, UnmatchedPolicy::Refuse).ok(),
            Some(None)
        );
    }

    #[test]
    fn the_refusal_is_a_422_with_its_code() {
        let response = SubmitError::NoMatchingNode("x".into()).into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let response = SubmitError::from(ApiError::BadRequest("y".into())).into_response();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn the_policy_reads_from_config() {
        let config: RoutingConfig = serde_json::from_str(r#"{"unmatched":"wait"}"#).expect("parse");
        assert_eq!(config.unmatched, UnmatchedPolicy::Wait);
        assert_eq!(RoutingConfig::default().unmatched, UnmatchedPolicy::Refuse);
        assert!(serde_json::from_str::<RoutingConfig>(r#"{"unmatched":"queue"}"#).is_err());
    }
}
