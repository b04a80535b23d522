//! The `[sandbox]` settings of the node agent, and the start-up decision that makes the
//! sandbox fail closed: [`start`] builds the back end and probes it; a node whose
//! sandbox is [`SandboxStatus::Unavailable`] must refuse jobs and report not-ready.
//! Only `mode = "off"`, set by the operator, runs jobs unsandboxed — and says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::policy::{Limits, Network, PolicyError, Protected, ProxyAccess, RunAs, SandboxPolicy};
use crate::probe::{ProbeReport, probe};
use crate::sandbox::{Backend, CgroupMode, Sandbox, SandboxError};

/// Whether jobs run sandboxed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMode {
    /// No job runs unless the sandbox works (the default).
    #[default]
    Required,
    /// The operator's explicit opt-out: jobs run unsandboxed.
    Off,
}

/// Which back end to use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    /// Seatbelt on macOS, bubblewrap elsewhere.
    #[default]
    Auto,
    Bubblewrap,
    Seatbelt,
}

/// The node agent's sandbox settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SandboxSettings {
    pub mode: SandboxMode,
    pub backend: BackendChoice,
    /// The bubblewrap executable.
    pub bwrap: PathBuf,
    /// `paddock-sandbox-init`; default: beside the running executable.
    pub init: Option<PathBuf>,
    /// The unprivileged user the agent runs as: a name or `uid:gid`.
    pub run_as: Option<String>,
    /// Read-only paths besides the system's: the CLI's install folder, toolchains.
    pub read_only: Vec<PathBuf>,
    /// Denied paths besides the defaults: the node's config and credential files, the
    /// folder holding all jobs' workspaces.
    pub denied: Vec<PathBuf>,
    /// More read-only entries in workspaces / in the agent's HOME (`name/` = folder).
    pub protected_workspace: Vec<String>,
    pub protected_home: Vec<String>,
    pub limits: Limits,
    /// Variables copied from the node's own environment into the agent's (the model
    /// credentials are added by the node).
    pub env_allow: Vec<String>,
    /// A private folder for the runs' files.
    pub runtime_dir: PathBuf,
    pub cgroups: CgroupMode,
    pub cgroup_parent: Option<PathBuf>,
    /// The loopback port inside the sandbox where the agent finds the egress proxy.
    pub proxy_port: u16,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        Self {
            mode: SandboxMode::Required,
            backend: BackendChoice::Auto,
            bwrap: PathBuf::from("/usr/bin/bwrap"),
            init: None,
            run_as: None,
            read_only: Vec::new(),
            denied: Vec::new(),
            protected_workspace: Vec::new(),
            protected_home: Vec::new(),
            limits: Limits::recommended(),
            env_allow: ["PATH", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "TZ"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
            runtime_dir: std::env::temp_dir().join("paddock-sandbox"),
            cgroups: CgroupMode::Required,
            cgroup_parent: None,
            proxy_port: 3128,
        }
    }
}

impl SandboxSettings {
    /// The configured back end.
    pub fn sandbox(&self) -> Result<Sandbox, SandboxError> {
        let init = match &self.init {
            Some(init) => init.clone(),
            None => std::env::current_exe()
                .map_err(|source| SandboxError::Io {
                    what: "finding the running executable".into(),
                    source,
                })?
                .with_file_name("paddock-sandbox-init"),
        };
        let backend = match self.backend {
            BackendChoice::Seatbelt => Backend::Seatbelt,
            BackendChoice::Bubblewrap => Backend::Bubblewrap {
                bwrap: self.bwrap.clone(),
            },
            BackendChoice::Auto if cfg!(target_os = "macos") => Backend::Seatbelt,
            BackendChoice::Auto => Backend::Bubblewrap {
                bwrap: self.bwrap.clone(),
            },
        };
        Ok(Sandbox {
            backend,
            init,
            runtime_dir: self.runtime_dir.clone(),
            cgroups: self.cgroups,
            cgroup_parent: self.cgroup_parent.clone(),
        })
    }

    pub fn run_as(&self) -> Result<Option<RunAs>, PolicyError> {
        self.run_as.as_deref().map(RunAs::parse).transpose()
    }

    /// The policy of one job. `proxy_socket` is where the node serves this job's
    /// egress proxy (bubblewrap); `None` for no network. `env` is what the node adds
    /// (model credentials, git identity) to the allowed part of its own environment.
    pub fn policy(
        &self,
        workspace: &Path,
        temp: &Path,
        home: &Path,
        proxy: Option<ProxyAccess>,
        env: BTreeMap<String, String>,
    ) -> Result<SandboxPolicy, PolicyError> {
        let mut policy = SandboxPolicy::new(workspace, temp, home);
        policy.read_only.extend(self.read_only.iter().cloned());
        policy.denied.extend(self.denied.iter().cloned());
        policy
            .protected_workspace
            .extend(self.protected_workspace.iter().map(|s| Protected::parse(s)));
        policy
            .protected_home
            .extend(self.protected_home.iter().map(|s| Protected::parse(s)));
        policy.limits = self.limits.clone();
        policy.run_as = self.run_as()?;
        policy.network = proxy.map_or(Network::None, Network::Proxy);
        for name in &self.env_allow {
            if let Ok(value) = std::env::var(name) {
                policy.env.insert(name.clone(), value);
            }
        }
        policy.env.extend(env);
        Ok(policy)
    }

    /// The proxy address inside the sandbox for a job whose proxy listens on `socket`.
    pub fn proxy_access(&self, socket: Option<PathBuf>) -> ProxyAccess {
        ProxyAccess {
            port: self.proxy_port,
            socket,
        }
    }
}

/// What the node may do about sandboxing, decided once at start.
#[derive(Debug)]
pub enum SandboxStatus {
    /// The back end works: run every job through it.
    Ready {
        sandbox: Sandbox,
        probe: ProbeReport,
    },
    /// It does not: refuse jobs and report not-ready with this reason.
    Unavailable { reason: String },
    /// The operator turned it off: jobs run unsandboxed.
    Disabled,
}

impl SandboxStatus {
    /// Whether the node may claim jobs.
    pub fn may_run_jobs(&self) -> bool {
        !matches!(self, SandboxStatus::Unavailable { .. })
    }

    /// The sandbox to run jobs in; `None` when disabled or unavailable.
    pub fn sandbox(&self) -> Option<&Sandbox> {
        match self {
            SandboxStatus::Ready { sandbox, .. } => Some(sandbox),
            _ => None,
        }
    }

    /// A line for the readiness endpoint and the logs.
    pub fn describe(&self) -> String {
        match self {
            SandboxStatus::Ready { probe, .. } => format!(
                "sandbox ready ({}, agent uid {}, probe took {:?})",
                probe.backend, probe.uid, probe.took
            ),
            SandboxStatus::Unavailable { reason } => {
                format!("sandbox unavailable, refusing jobs: {reason}")
            }
            SandboxStatus::Disabled => {
                "sandbox disabled by the operator (sandbox.mode = \"off\"): jobs run UNSANDBOXED"
                    .into()
            }
        }
    }
}

/// Builds and probes the sandbox (blocking: run it with `spawn_blocking` in async
/// code) and logs the outcome.
pub fn start(settings: &SandboxSettings) -> SandboxStatus {
    let status = match settings.mode {
        SandboxMode::Off => SandboxStatus::Disabled,
        SandboxMode::Required => match check(settings) {
            Ok((sandbox, probe)) => SandboxStatus::Ready { sandbox, probe },
            Err(reason) => SandboxStatus::Unavailable { reason },
        },
    };
    match &status {
        SandboxStatus::Ready { .. } => tracing::info!("{}", status.describe()),
        _ => tracing::error!("{}", status.describe()),
    }
    status
}

fn check(settings: &SandboxSettings) -> Result<(Sandbox, ProbeReport), String> {
    let sandbox = settings.sandbox().map_err(|e| e.to_string())?;
    let run_as = settings.run_as().map_err(|e| e.to_string())?;
    let report = probe(&sandbox, run_as, &settings.limits, &settings.read_only)
        .map_err(|e| e.to_string())?;
    Ok((sandbox, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_from_the_node_config_with_defaults() {
        let settings: SandboxSettings = serde_json::from_value(serde_json::json!({
            "run_as": "65534:65534",
            "read_only": ["/opt/claude"],
            "limits": {"processes": 64},
            "cgroups": "best_effort"
        }))
        .expect("parses");
        assert_eq!(settings.mode, SandboxMode::Required);
        assert_eq!(settings.limits.processes, Some(64));
        assert_eq!(settings.limits.open_files, None);
        assert_eq!(settings.cgroups, CgroupMode::BestEffort);
        assert_eq!(
            settings.run_as().expect("run_as"),
            Some(RunAs {
                uid: 65534,
                gid: 65534
            })
        );
        assert!(
            serde_json::from_value::<SandboxSettings>(serde_json::json!({"mod": "off"})).is_err()
        );
    }

    #[test]
    fn a_broken_back_end_is_unavailable_and_refuses_jobs() {
        let runtime = tempfile::tempdir().expect("tempdir");
        let settings = SandboxSettings {
            backend: BackendChoice::Bubblewrap,
            bwrap: "/nonexistent/bwrap".into(),
            init: Some("/nonexistent/paddock-sandbox-init".into()),
            runtime_dir: runtime.path().to_path_buf(),
            ..SandboxSettings::default()
        };
        let status = start(&settings);
        assert!(!status.may_run_jobs(), "{}", status.describe());
        assert!(status.describe().contains("refusing jobs"));

        let off = SandboxSettings {
            mode: SandboxMode::Off,
            ..settings
        };
        let status = start(&off);
        assert!(status.may_run_jobs());
        assert!(status.sandbox().is_none());
        assert!(status.describe().contains("UNSANDBOXED"));
    }
}
