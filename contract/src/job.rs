//! A job as it is submitted and queued: its id, what to run, where, and its status.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// A job's id: a UUID (v7, so ids sort by submission time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct JobId(pub Uuid);

impl JobId {
    pub fn new() -> Self {
        JobId(Uuid::now_v7())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(JobId)
    }
}

/// How the CLI may use tools without asking.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum PermissionMode {
    /// Tools that need approval are refused unless listed in `allowed_tools`.
    #[default]
    Default,
    /// File edits are accepted; other tools as in `Default`.
    AcceptEdits,
}

impl PermissionMode {
    /// The value of the CLI's `--permission-mode` flag.
    pub fn as_cli_flag(self) -> &'static str {
        match self {
            PermissionMode::Default => "default",
            PermissionMode::AcceptEdits => "acceptEdits",
        }
    }
}

/// Options a client may set on a job. Every field is optional on the wire.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct JobOptions {
    /// Model name passed to the CLI's `--model`.
    pub model: Option<String>,
    /// Upper bound on agent turns (`--max-turns`).
    pub max_turns: Option<u32>,
    pub permission_mode: PermissionMode,
    /// Tools the CLI may use without approval (`--allowedTools`), in addition to the
    /// project's own list.
    pub allowed_tools: Vec<String>,
    /// Sub-directory of the project to work in, relative to the project root.
    pub subdir: Option<String>,
    /// Whether tool calls outside the allow list are refused or asked of a person.
    pub approval: ApprovalMode,
    /// Seconds an unanswered approval request waits before it is denied (the node's
    /// default when unset).
    pub approval_timeout_secs: Option<u32>,
    /// Keep the session alive this long after a turn, waiting for a follow-up. Unset
    /// or 0: the job ends with its first result (a one-shot prompt).
    pub idle_timeout_secs: Option<u32>,
    /// Labels the node that runs the job must carry, key → value (`xcode = "16"`);
    /// the key `pool` names the pool (the project's pool when absent). Empty: any node
    /// of the project's pool.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub requires: BTreeMap<String, String>,
}

/// The requirement key that names a node's pool (a node's pool is one of its labels).
pub const POOL_LABEL: &str = "pool";

/// True when a node of `pool` carrying `labels` satisfies every requirement: each
/// required label is present with the same value; `pool` is compared with the node's
/// pool, whatever its labels say.
pub fn labels_satisfy(
    pool: &str,
    labels: &BTreeMap<String, String>,
    requires: &BTreeMap<String, String>,
) -> bool {
    requires.iter().all(|(key, value)| {
        if key == POOL_LABEL {
            pool == value
        } else {
            labels.get(key) == Some(value)
        }
    })
}

/// A set of requirements that jobs were queued with (the value of its entry in the
/// `paddock_selectors` bucket). Jobs that require more than a pool wait on the
/// selector's own subject; every node whose labels satisfy `requires` claims from it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelSelector {
    /// Every requirement, `pool` included.
    pub requires: BTreeMap<String, String>,
    /// When a job was last queued with it (unix ms): a selector unused for long, with
    /// no job left, is forgotten.
    #[serde(default)]
    pub recorded_at_ms: i64,
}

/// Who decides on tool calls the allow list does not cover.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ApprovalMode {
    /// Refused (the CLI reports them as permission denials).
    #[default]
    AllowListed,
    /// Asked of the job's user as `approval.requested` events, answered over the API.
    Ask,
}

/// A job that continues an earlier session on the node that holds its transcript.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResumeFrom {
    pub job: JobId,
    pub session_id: String,
    pub node: String,
}

/// A job as queued on the jobs stream: everything a node needs to run it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub version: u32,
    pub id: JobId,
    pub project: String,
    pub prompt: String,
    pub options: JobOptions,
    pub pool: String,
    pub submitted_by: String,
    pub submitted_at_ms: i64,
    /// Set when the job resumes an ended session (a follow-up after its end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<ResumeFrom>,
    /// Limits the gateway set from the submitter's quotas; the node enforces them.
    #[serde(default)]
    pub limits: JobLimits,
}

/// Per-job limits that come from the submitter's quotas.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobLimits {
    /// The model cost the job may reach (the rest of the user's daily budget).
    pub max_cost_usd: Option<f64>,
}

/// A job's place in its lifecycle, as the ledger and the API report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown job status {s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_through_its_name() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>(), Ok(status));
        }
        assert!("done".parse::<JobStatus>().is_err());
    }

    #[test]
    fn labels_satisfy_requirements_with_the_pool_as_a_label() {
        let labels: BTreeMap<String, String> = [("xcode", "16"), ("arch", "arm64")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let requires = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(labels_satisfy("default", &labels, &requires(&[])));
        assert!(labels_satisfy(
            "default",
            &labels,
            &requires(&[("xcode", "16")])
        ));
        assert!(labels_satisfy(
            "default",
            &labels,
            &requires(&[("xcode", "16"), ("pool", "default"), ("arch", "arm64")])
        ));
        assert!(!labels_satisfy(
            "default",
            &labels,
            &requires(&[("xcode", "15")])
        ));
        assert!(!labels_satisfy(
            "default",
            &labels,
            &requires(&[("os", "15")])
        ));
        assert!(!labels_satisfy(
            "big",
            &labels,
            &requires(&[("pool", "default")])
        ));
        // A label named `pool` does not stand in for the node's pool.
        let mut spoof = labels.clone();
        spoof.insert("pool".into(), "big".into());
        assert!(!labels_satisfy(
            "default",
            &spoof,
            &requires(&[("pool", "big")])
        ));
    }

    #[test]
    fn requirements_are_left_out_of_the_wire_when_empty() {
        let json = serde_json::to_value(JobOptions::default()).expect("serialise");
        assert!(json.get("requires").is_none(), "{json}");
        let options: JobOptions =
            serde_json::from_str(r#"{"requires":{"xcode":"16"}}"#).expect("parse");
        assert_eq!(
            options.requires.get("xcode").map(String::as_str),
            Some("16")
        );
    }

    #[test]
    fn options_refuse_unknown_fields() {
        let err = serde_json::from_str::<JobOptions>(r#"{"modle":"x"}"#);
        assert!(err.is_err());
        let ok: JobOptions = serde_json::from_str(r#"{"allowed_tools":["Bash"]}"#).expect("parse");
        assert_eq!(ok.allowed_tools, vec!["Bash".to_string()]);
    }
}
