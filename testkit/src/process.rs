//! Processes of the workspace's binaries, stopped on drop, with their output kept in a
//! file that is printed when a test fails.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Path of a binary built from this workspace (`paddock-gateway`, …). Tests that use
/// one run after `cargo build --workspace --bins` (the test command does it).
pub fn workspace_binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("target"));
    let profile = std::env::var("PADDOCK_TEST_PROFILE").unwrap_or_else(|_| "debug".into());
    let path = target.join(profile).join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace's binaries first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// A child process whose stdout and stderr go to a log file; killed on drop, and its
/// log printed then if the thread is panicking (a failing test).
pub struct ChildProcess {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ChildProcess {
    pub fn spawn(name: &str, mut command: Command) -> ChildProcess {
        let dir = tempfile::Builder::new()
            .prefix("paddock-proc-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let log = dir.path().join(format!("{name}.log"));
        let out = File::create(&log).unwrap_or_else(|e| panic!("log file: {e}"));
        let err = out.try_clone().unwrap_or_else(|e| panic!("log file: {e}"));
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        ChildProcess {
            name: name.to_string(),
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Everything the process wrote so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then SIGKILL after `grace`; returns the exit status when known.
    pub fn terminate(&mut self, grace: Duration) -> Option<std::process::ExitStatus> {
        self.child.take().and_then(|c| terminate(c, grace))
    }

    /// SIGKILL at once.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("----- {} output -----\n{}", self.name, self.output());
        }
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL.
pub(crate) fn terminate(mut child: Child, grace: Duration) -> Option<std::process::ExitStatus> {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let pid = Pid::from_raw(child.id() as i32);
    let _ = kill(pid, Signal::SIGTERM);
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    child.wait().ok()
}
