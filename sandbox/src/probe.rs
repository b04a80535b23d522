//! The start-up check that makes the sandbox fail closed: run a trivial command in a
//! sandbox built exactly like a job's (same back end, user, limits) and check that it
//! ran, as the right user, could write its workspace, and could neither read a secret
//! planted in its HOME nor write outside. The node agent refuses jobs when it fails,
//! unless the operator turned the sandbox off (see `settings.rs`).

use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::policy::{Limits, Network, RunAs, SandboxPolicy};
use crate::sandbox::{Sandbox, SandboxError};

/// How long the probe may take before it counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(30);

const SCRIPT: &str = r#"echo "uid=$(id -u)"
echo probe > "$PWD/written" || echo "FAIL: cannot write the workspace"
if cat "$HOME/.ssh/canary" >/dev/null 2>&1; then echo "FAIL: read a secret"; fi
if (echo x > /paddock-probe-outside) 2>/dev/null; then echo "FAIL: wrote outside"; fi
"#;

/// A successful probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeReport {
    pub backend: &'static str,
    /// The uid the probe ran as.
    pub uid: u32,
    pub took: Duration,
}

/// Why the sandbox cannot be trusted to run jobs.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("preparing the probe: {0}")]
    Prepare(#[from] SandboxError),
    #[error("the probe failed (status {status}): {output}")]
    Failed { status: String, output: String },
    #[error("the probe did not finish within {0:?}")]
    Timeout(Duration),
}

/// Runs the probe with the given user, limits and extra read-only paths.
pub fn probe(
    sandbox: &Sandbox,
    run_as: Option<RunAs>,
    limits: &Limits,
    read_only: &[PathBuf],
) -> Result<ProbeReport, ProbeError> {
    let started = Instant::now();
    let dir = ProbeDir::create(&sandbox.runtime_dir, run_as)?;
    let mut policy = SandboxPolicy::new(
        &dir.path.join("ws"),
        &dir.path.join("tmp"),
        &dir.path.join("home"),
    );
    policy.read_only.extend(read_only.iter().cloned());
    policy.run_as = run_as;
    policy.limits = limits.clone();
    policy.network = Network::None;
    let command = sandbox.command(
        &policy,
        Path::new("/bin/sh"),
        &["-c".to_owned(), SCRIPT.to_owned()],
    )?;
    let (mut child, guard) = command.spawn_std(|command| {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
    })?;
    let deadline = started + PROBE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ProbeError::Timeout(PROBE_TIMEOUT));
            }
            Err(error) => {
                return Err(ProbeError::Failed {
                    status: "unknown".into(),
                    output: format!("waiting: {error}"),
                });
            }
        }
    };
    drop(guard);
    let output = read_all(child.stdout.take()) + &read_all(child.stderr.take());
    let written = dir.path.join("ws/written").is_file();
    let expected_uid = run_as.map_or_else(|| nix::unistd::geteuid().as_raw(), |r| r.uid);
    let uid = output
        .lines()
        .find_map(|line| line.strip_prefix("uid="))
        .and_then(|uid| uid.trim().parse::<u32>().ok());
    if !status.success() || !written || output.contains("FAIL") || uid != Some(expected_uid) {
        return Err(ProbeError::Failed {
            status: status.to_string(),
            output: output.trim().to_owned(),
        });
    }
    Ok(ProbeReport {
        backend: sandbox.backend.name(),
        uid: expected_uid,
        took: started.elapsed(),
    })
}

fn read_all(pipe: Option<impl std::io::Read>) -> String {
    let mut text = String::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_string(&mut text);
    }
    text
}

/// The probe's own workspace, temp folder and HOME (with a canary secret), removed
/// on drop.
struct ProbeDir {
    path: PathBuf,
}

impl ProbeDir {
    fn create(runtime_dir: &Path, run_as: Option<RunAs>) -> Result<Self, SandboxError> {
        let io = |what: &str| {
            let what = what.to_owned();
            move |source| SandboxError::Io { what, source }
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(runtime_dir)
            .map_err(io("creating the runtime folder"))?;
        let path = runtime_dir.join(format!("probe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&path)
            .map_err(io("creating the probe folder"))?;
        let dir = Self { path };
        for sub in ["ws", "tmp", "home", "home/.ssh"] {
            let sub = dir.path.join(sub);
            std::fs::create_dir(&sub).map_err(io("creating the probe folder"))?;
            if let Some(run_as) = run_as {
                std::os::unix::fs::chown(&sub, Some(run_as.uid), Some(run_as.gid))
                    .map_err(io("handing the probe folder to the run-as user"))?;
            }
        }
        let canary = dir.path.join("home/.ssh/canary");
        std::fs::write(&canary, "probe secret").map_err(io("planting the canary"))?;
        if let Some(run_as) = run_as {
            std::os::unix::fs::chown(&canary, Some(run_as.uid), Some(run_as.gid))
                .map_err(io("planting the canary"))?;
        }
        Ok(dir)
    }
}

impl Drop for ProbeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
