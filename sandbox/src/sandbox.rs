//! Turning a policy into a command that runs a program inside the sandbox, and the
//! guard that cleans up after the run.
//!
//! [`Sandbox::command`] validates the policy, prepares the agent's HOME, resolves the
//! plan, creates the run's cgroup and private files, and returns a
//! [`SandboxedCommand`]: a `std::process::Command` for bubblewrap or `sandbox-exec`
//! with the environment, rlimits and cgroup join already set, plus a
//! [`SandboxGuard`]. [`SandboxedCommand::spawn`] starts it with tokio and finds the
//! process group to signal (bubblewrap starts the sandbox in a new session, so the
//! launcher's own group does not reach the agent). Dropping the guard, or
//! [`SandboxGuard::finish`], kills what is left of the run, removes its cgroup and
//! private files, and quarantines protected paths the agent created.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::Read as _;
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::resource::Resource;
use serde::{Deserialize, Serialize};

use crate::bwrap;
use crate::cgroup::{self, Cgroup, CgroupError, CgroupReport};
use crate::os::{self, BeforeExec};
use crate::plan::{self, Access, Plan, Quarantined};
use crate::policy::{Network, PolicyError, SandboxPolicy};
use crate::seatbelt;

/// How long bubblewrap may take to report the sandbox's process.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The program that builds the sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Linux: bubblewrap at this path.
    Bubblewrap { bwrap: PathBuf },
    /// macOS: `/usr/bin/sandbox-exec` with a generated profile.
    Seatbelt,
}

impl Backend {
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Bubblewrap { .. } => "bubblewrap",
            Backend::Seatbelt => "seatbelt",
        }
    }
}

/// What happens when the policy asks for process or memory limits and no cgroup can
/// be made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CgroupMode {
    /// Refuse to start the run.
    #[default]
    Required,
    /// Fall back to `RLIMIT_NPROC` of the run-as user, and no memory limit.
    BestEffort,
}

/// A configured sandbox back end.
#[derive(Clone, Debug)]
pub struct Sandbox {
    pub backend: Backend,
    /// The `paddock-sandbox-init` executable (or a binary that runs
    /// [`crate::init::run`] when started as it).
    pub init: PathBuf,
    /// A folder for the runs' private files (created mode 0711).
    pub runtime_dir: PathBuf,
    pub cgroups: CgroupMode,
    /// A delegated cgroup to create runs under, instead of the node's own.
    pub cgroup_parent: Option<PathBuf>,
}

/// A command ready to start inside the sandbox.
#[derive(Debug)]
pub struct SandboxedCommand {
    /// The launcher with its arguments, environment, working folder and pre-exec hook
    /// set. Set stdio, `kill_on_drop` and the like; do not change its environment.
    pub command: std::process::Command,
    pub guard: SandboxGuard,
}

/// A started sandbox.
#[derive(Debug)]
pub struct SandboxedChild {
    /// The launcher (bubblewrap or `sandbox-exec`); its exit status is the agent's.
    pub child: tokio::process::Child,
    pub guard: SandboxGuard,
}

/// Cleans up after a run; see the module comment.
#[derive(Debug)]
pub struct SandboxGuard {
    pid: Option<u32>,
    info: Option<std::io::PipeReader>,
    cgroup: Option<Cgroup>,
    run_dir: Option<PathBuf>,
    audited: Vec<PathBuf>,
    roots: Vec<PathBuf>,
}

/// What the clean-up found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SandboxReport {
    /// Protected or denied paths the agent created, moved aside.
    pub quarantined: Vec<Quarantined>,
    pub cgroup: Option<CgroupReport>,
}

/// Why a sandboxed command could not be made or started.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("cgroup: {0} (set cgroups = \"best_effort\" to run without)")]
    Cgroup(#[from] CgroupError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the {0} back end does not run on this operating system")]
    Unsupported(&'static str),
    #[error("run_as: switching to another user needs the node agent to run as root")]
    NeedsRoot,
    #[error("{0}")]
    Conflict(String),
    #[error("the sandbox did not start: {0}")]
    Start(String),
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> SandboxError {
    let what = what.into();
    move |source| SandboxError::Io { what, source }
}

impl Sandbox {
    /// bubblewrap at `/usr/bin/bwrap`, runs' files under the system temp folder.
    pub fn bubblewrap(init: PathBuf) -> Self {
        Self {
            backend: Backend::Bubblewrap {
                bwrap: PathBuf::from("/usr/bin/bwrap"),
            },
            init,
            runtime_dir: std::env::temp_dir().join("paddock-sandbox"),
            cgroups: CgroupMode::Required,
            cgroup_parent: None,
        }
    }

    /// `/usr/bin/sandbox-exec`.
    pub fn seatbelt(init: PathBuf) -> Self {
        Self {
            backend: Backend::Seatbelt,
            ..Self::bubblewrap(init)
        }
    }

    /// A command running `program args` inside the sandbox described by `policy`.
    pub fn command(
        &self,
        policy: &SandboxPolicy,
        program: &Path,
        args: &[String],
    ) -> Result<SandboxedCommand, SandboxError> {
        policy.validate()?;
        if policy.run_as.is_some() && !nix::unistd::geteuid().is_root() {
            return Err(SandboxError::NeedsRoot);
        }
        plan::prepare_home(policy)?;
        let plan = Plan::resolve(policy)?;
        let real_program = std::fs::canonicalize(program)
            .map_err(|_| PolicyError::ProgramNotReadable(program.to_path_buf()))?;
        if plan.access(&real_program) == Access::Hidden {
            return Err(PolicyError::ProgramNotReadable(program.to_path_buf()).into());
        }
        if !self.init.is_file() {
            return Err(SandboxError::Conflict(format!(
                "the sandbox init {} does not exist",
                self.init.display()
            )));
        }

        let cgroup = match &self.backend {
            Backend::Bubblewrap { .. } if cgroup::wanted(&policy.limits) => {
                match cgroup::create(&policy.limits, self.cgroup_parent.as_deref()) {
                    Ok(cgroup) => Some(cgroup),
                    Err(error) if self.cgroups == CgroupMode::BestEffort => {
                        tracing::warn!(%error, "no cgroup for this run: processes limited per user only, memory not limited");
                        None
                    }
                    Err(error) => return Err(error.into()),
                }
            }
            _ => None,
        };
        // Without a cgroup, RLIMIT_NPROC of the (dedicated) run-as user bounds forks.
        let nproc = match (&cgroup, policy.run_as) {
            (None, Some(_)) => policy.limits.processes,
            _ => None,
        };

        let mut hook = BeforeExec {
            rlimits: rlimits(policy),
            ..BeforeExec::default()
        };
        if let Some(cgroup) = &cgroup {
            hook.cgroup_procs = cgroup.procs_files()?;
        }
        let env = environment(policy, &plan);
        let mut guard = SandboxGuard {
            pid: None,
            info: None,
            cgroup,
            run_dir: None,
            audited: Vec::new(),
            roots: vec![plan.workspace.clone(), plan.temp.clone(), plan.home.clone()],
        };

        let mut command = match &self.backend {
            Backend::Bubblewrap {
                bwrap: bwrap_program,
            } => {
                if let Network::Proxy(proxy) = &policy.network
                    && proxy.socket.is_none()
                {
                    return Err(PolicyError::ProxySocketMissing.into());
                }
                if let Some(rule) = plan
                    .rules
                    .iter()
                    .find(|r| r.exists && Path::new(bwrap::INSIDE_DIR).starts_with(&r.path))
                {
                    return Err(SandboxError::Conflict(format!(
                        "{} is in the policy, but the sandbox mounts its own files at {}",
                        rule.path.display(),
                        bwrap::INSIDE_DIR
                    )));
                }
                let run_dir = self.run_dir()?;
                let empty_file = run_dir.join("empty");
                std::fs::write(&empty_file, "").map_err(io_error("creating the mask file"))?;
                std::fs::set_permissions(&empty_file, std::fs::Permissions::from_mode(0o000))
                    .map_err(io_error("creating the mask file"))?;
                guard.run_dir = Some(run_dir);
                guard.audited = plan.audited();

                let seccomp = match crate::seccomp::filter() {
                    Some(bytes) => Some(pipe_with(&bytes)?),
                    None => {
                        tracing::warn!(
                            "no seccomp filter for this architecture: nested user namespaces stay possible"
                        );
                        None
                    }
                };
                let (info_reader, info_writer) =
                    std::io::pipe().map_err(io_error("creating the info pipe"))?;
                let info_writer = OwnedFd::from(info_writer);
                let arguments = bwrap::arguments(&bwrap::Inputs {
                    plan: &plan,
                    policy,
                    init: &self.init,
                    empty_file: &empty_file,
                    seccomp_fd: seccomp.as_ref().map(raw),
                    info_fd: Some(raw(&info_writer)),
                    nproc,
                    program,
                    args,
                });
                hook.inherit.extend(seccomp);
                hook.inherit.push(info_writer);
                guard.info = Some(info_reader);
                let mut command = std::process::Command::new(bwrap_program);
                command.args(arguments);
                command
            }
            Backend::Seatbelt => {
                if !cfg!(target_os = "macos") {
                    return Err(SandboxError::Unsupported("seatbelt"));
                }
                let launcher: Vec<OsString> = if policy.run_as.is_some() || nproc.is_some() {
                    let mut launcher = vec![self.init.clone().into_os_string()];
                    launcher.extend(crate::init::arguments(policy.run_as, None, nproc));
                    launcher.push("--".into());
                    launcher
                } else {
                    Vec::new()
                };
                let init = (!launcher.is_empty()).then_some(self.init.as_path());
                let profile = seatbelt::profile(&plan, policy, init);
                let mut command = std::process::Command::new(seatbelt::SANDBOX_EXEC);
                command.args(seatbelt::arguments(&profile, &launcher, program, args));
                command
            }
        };
        command.env_clear().envs(&env).current_dir(&plan.workspace);
        os::install(&mut command, hook);
        Ok(SandboxedCommand { command, guard })
    }

    /// A fresh private folder for one run's files.
    fn run_dir(&self) -> Result<PathBuf, SandboxError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&self.runtime_dir)
            .map_err(io_error(format!("creating {}", self.runtime_dir.display())))?;
        let dir = self.runtime_dir.join(format!(
            "run-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io_error(format!("creating {}", dir.display())))?;
        Ok(dir)
    }
}

fn raw(fd: &OwnedFd) -> i32 {
    use std::os::fd::AsRawFd as _;
    fd.as_raw_fd()
}

/// A pipe holding `bytes` with its writing end closed; returns the reading end.
fn pipe_with(bytes: &[u8]) -> Result<OwnedFd, SandboxError> {
    use std::io::Write as _;
    let (reader, mut writer) = std::io::pipe().map_err(io_error("creating the seccomp pipe"))?;
    // The filter is a few hundred bytes: far below a pipe's buffer.
    writer
        .write_all(bytes)
        .map_err(io_error("writing the seccomp filter"))?;
    drop(writer);
    Ok(OwnedFd::from(reader))
}

fn rlimits(policy: &SandboxPolicy) -> Vec<(Resource, u64)> {
    let limits = &policy.limits;
    let mut out = vec![(Resource::RLIMIT_CORE, 0)];
    if let Some(files) = limits.open_files {
        out.push((Resource::RLIMIT_NOFILE, files));
    }
    if let Some(bytes) = limits.file_size_bytes {
        out.push((Resource::RLIMIT_FSIZE, bytes));
    }
    if let Some(seconds) = limits.cpu_seconds {
        out.push((Resource::RLIMIT_CPU, seconds));
    }
    out
}

/// The policy's environment plus what the sandbox decides: HOME, TMPDIR, the proxy.
fn environment(policy: &SandboxPolicy, plan: &Plan) -> BTreeMap<String, OsString> {
    let mut env: BTreeMap<String, OsString> = policy
        .env
        .iter()
        .map(|(k, v)| (k.clone(), OsString::from(v)))
        .collect();
    env.entry("PATH".into())
        .or_insert_with(|| "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin".into());
    env.insert("HOME".into(), plan.home.clone().into_os_string());
    env.insert("TMPDIR".into(), plan.temp.clone().into_os_string());
    for name in ["NO_PROXY", "no_proxy"] {
        env.remove(name);
    }
    match &policy.network {
        Network::Proxy(proxy) => {
            let url = proxy.url();
            for name in [
                "HTTP_PROXY",
                "HTTPS_PROXY",
                "ALL_PROXY",
                "http_proxy",
                "https_proxy",
                "all_proxy",
            ] {
                env.insert(name.into(), url.clone().into());
            }
        }
        Network::None => {
            for name in [
                "HTTP_PROXY",
                "HTTPS_PROXY",
                "ALL_PROXY",
                "http_proxy",
                "https_proxy",
                "all_proxy",
            ] {
                env.remove(name);
            }
        }
    }
    env
}

impl SandboxedCommand {
    /// Starts the command with tokio after `configure` (stdio, `kill_on_drop`, …) and
    /// finds the sandbox's process group. Blocks briefly while bubblewrap sets up.
    pub fn spawn(
        self,
        configure: impl FnOnce(&mut tokio::process::Command),
    ) -> Result<SandboxedChild, SandboxError> {
        let SandboxedCommand { command, mut guard } = self;
        let mut command = tokio::process::Command::from(command);
        configure(&mut command);
        let child = command
            .spawn()
            .map_err(io_error("starting the sandbox launcher"))?;
        // Closes the parent's copies of the pipe ends the launcher inherited.
        drop(command);
        let launcher = child
            .id()
            .ok_or_else(|| SandboxError::Start("the launcher exited at once".into()))?;
        guard.started(launcher)?;
        Ok(SandboxedChild { child, guard })
    }

    /// Like [`Self::spawn`], with `std::process`.
    pub fn spawn_std(
        self,
        configure: impl FnOnce(&mut std::process::Command),
    ) -> Result<(std::process::Child, SandboxGuard), SandboxError> {
        let SandboxedCommand {
            mut command,
            mut guard,
        } = self;
        configure(&mut command);
        let child = command
            .spawn()
            .map_err(io_error("starting the sandbox launcher"))?;
        drop(command);
        guard.started(child.id())?;
        Ok((child, guard))
    }
}

#[derive(Deserialize)]
struct Info {
    #[serde(rename = "child-pid")]
    child_pid: u32,
}

impl SandboxGuard {
    /// The process group to signal to reach the agent and everything it started:
    /// the sandbox's first process (bubblewrap), or the launcher (`sandbox-exec` execs
    /// in place, so give it its own group).
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    fn started(&mut self, launcher: u32) -> Result<(), SandboxError> {
        let Some(mut info) = self.info.take() else {
            self.pid = Some(launcher);
            return Ok(());
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let mut buffer = Vec::new();
        loop {
            if let Ok(info) = serde_json::from_slice::<Info>(&buffer) {
                self.pid = Some(info.child_pid);
                return Ok(());
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(SandboxError::Start(format!(
                    "bubblewrap did not report within {START_TIMEOUT:?}"
                )));
            }
            let timeout =
                nix::poll::PollTimeout::try_from(remaining).unwrap_or(nix::poll::PollTimeout::MAX);
            let mut fds = [nix::poll::PollFd::new(
                info.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            match nix::poll::poll(&mut fds, timeout) {
                Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
                Ok(_) => {}
                Err(error) => {
                    return Err(SandboxError::Start(format!(
                        "waiting for bubblewrap: {error}"
                    )));
                }
            }
            let mut chunk = [0u8; 1024];
            match info.read(&mut chunk) {
                Ok(0) => {
                    return Err(SandboxError::Start(
                        "bubblewrap exited before starting the sandbox (its stderr says why)"
                            .into(),
                    ));
                }
                Ok(read) => buffer.extend_from_slice(&chunk[..read]),
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    return Err(SandboxError::Start(format!(
                        "reading bubblewrap's info: {error}"
                    )));
                }
            }
        }
    }

    /// The run's cgroup folders, if it has any.
    pub fn cgroup_dirs(&self) -> &[PathBuf] {
        self.cgroup.as_ref().map_or(&[], |cgroup| cgroup.dirs())
    }

    /// Cleans up (call once the launcher has exited) and says what it found.
    pub fn finish(mut self) -> SandboxReport {
        self.clean_up()
    }

    fn clean_up(&mut self) -> SandboxReport {
        let mut report = SandboxReport::default();
        if let Some(mut cgroup) = self.cgroup.take() {
            report.cgroup = Some(cgroup.report());
            // Kills anything left: nothing of the run may touch the tree any more.
            cgroup.remove();
        }
        let audited = std::mem::take(&mut self.audited);
        report.quarantined = plan::quarantine_created(&audited, &self.roots);
        if let Some(dir) = self.run_dir.take()
            && let Err(error) = std::fs::remove_dir_all(&dir)
        {
            tracing::warn!(dir = %dir.display(), %error, "could not remove the run's private folder");
        }
        report
    }
}

impl Drop for SandboxGuard {
    fn drop(&mut self) {
        let _ = self.clean_up();
    }
}
