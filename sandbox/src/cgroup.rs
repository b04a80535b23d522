//! Per-run cgroups: the processes (and threads) and memory of one sandboxed run are
//! counted together, which rlimits cannot do (`RLIMIT_NPROC` counts per user). A fork
//! bomb stops at `pids.max`.
//!
//! Both cgroup v1 (one hierarchy per controller, as on the Linux test machines) and v2
//! (unified) are handled. The run's cgroup is created below the node's own cgroup (or
//! a configured, delegated parent), joined by the launcher before `exec` (`os.rs`),
//! and removed after the run, killing anything left in it first.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::policy::Limits;

const ROOT: &str = "/sys/fs/cgroup";

/// A created cgroup (one folder per v1 controller, or one v2 folder).
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
    version: Version,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Version {
    V1,
    V2,
}

/// What the cgroup saw, read just before it is removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupReport {
    /// How many times a fork was refused because of `pids.max`.
    pub pids_limit_hits: u64,
    /// How many times the memory limit was hit.
    pub memory_limit_hits: u64,
}

/// Why no cgroup could be made.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup {0} controller is available to this process")]
    NoController(&'static str),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError + '_ {
    move |source| CgroupError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether `limits` ask for anything a cgroup enforces.
pub fn wanted(limits: &Limits) -> bool {
    limits.processes.is_some() || limits.memory_bytes.is_some()
}

/// Creates a cgroup for one run with `limits`, below `parent` (a v2 folder or a v1
/// hierarchy-relative path) or below this process's own cgroup.
pub fn create(limits: &Limits, parent: Option<&Path>) -> Result<Cgroup, CgroupError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "paddock-sandbox-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut controllers: Vec<&'static str> = Vec::new();
    if limits.processes.is_some() {
        controllers.push("pids");
    }
    if limits.memory_bytes.is_some() {
        controllers.push("memory");
    }
    let v1 = controllers
        .iter()
        .all(|c| Path::new(ROOT).join(c).join("cgroup.procs").exists());
    let mut cgroup = if v1 {
        let mut cgroup = Cgroup {
            dirs: Vec::new(),
            version: Version::V1,
        };
        for controller in &controllers {
            let base = match parent {
                Some(parent) => Path::new(ROOT)
                    .join(controller)
                    .join(parent.strip_prefix("/").unwrap_or(parent)),
                None => Path::new(ROOT)
                    .join(controller)
                    .join(own_path(&own, Some(controller)).trim_start_matches('/')),
            };
            let dir = base.join(&name);
            std::fs::create_dir(&dir).map_err(io(&dir))?;
            cgroup.dirs.push(dir);
        }
        cgroup
    } else if Path::new(ROOT).join("cgroup.controllers").exists() {
        let base = match parent {
            Some(parent) => parent.to_path_buf(),
            None => Path::new(ROOT).join(own_path(&own, None).trim_start_matches('/')),
        };
        let available =
            std::fs::read_to_string(base.join("cgroup.controllers")).unwrap_or_default();
        for controller in &controllers {
            if !available.split_whitespace().any(|c| c == *controller) {
                return Err(CgroupError::NoController(controller));
            }
        }
        let enable: Vec<String> = controllers.iter().map(|c| format!("+{c}")).collect();
        let control = base.join("cgroup.subtree_control");
        std::fs::write(&control, enable.join(" ")).map_err(io(&control))?;
        let dir = base.join(&name);
        std::fs::create_dir(&dir).map_err(io(&dir))?;
        Cgroup {
            dirs: vec![dir],
            version: Version::V2,
        }
    } else {
        return Err(CgroupError::NoController(
            controllers.first().copied().unwrap_or("pids"),
        ));
    };
    if let Err(error) = cgroup.set_limits(limits) {
        cgroup.remove();
        return Err(error);
    }
    Ok(cgroup)
}

/// This process's cgroup path for `controller` (v1) or in the unified hierarchy.
fn own_path(proc_self_cgroup: &str, controller: Option<&str>) -> String {
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(list), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let found = match controller {
            Some(controller) => list.split(',').any(|c| c == controller),
            None => list.is_empty(),
        };
        if found {
            return path.to_owned();
        }
    }
    "/".to_owned()
}

impl Cgroup {
    fn set_limits(&self, limits: &Limits) -> Result<(), CgroupError> {
        for dir in &self.dirs {
            if let Some(max) = limits.processes
                && dir.join("pids.max").exists()
            {
                write(&dir.join("pids.max"), &max.to_string())?;
            }
            if let Some(bytes) = limits.memory_bytes {
                match self.version {
                    Version::V1 if dir.join("memory.limit_in_bytes").exists() => {
                        write(&dir.join("memory.limit_in_bytes"), &bytes.to_string())?;
                    }
                    Version::V2 => {
                        write(&dir.join("memory.max"), &bytes.to_string())?;
                        // Best effort: swap would let the run exceed its memory.
                        let _ = std::fs::write(dir.join("memory.swap.max"), "0");
                    }
                    Version::V1 => {}
                }
            }
        }
        Ok(())
    }

    /// The `cgroup.procs` files, opened now so the child only has to write to them.
    pub(crate) fn procs_files(&self) -> Result<Vec<File>, CgroupError> {
        self.dirs
            .iter()
            .map(|dir| {
                let path = dir.join("cgroup.procs");
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io(&path))
            })
            .collect()
    }

    /// The folders, for tests and logs.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Reads the counters.
    pub fn report(&self) -> CgroupReport {
        let mut report = CgroupReport::default();
        for dir in &self.dirs {
            report.pids_limit_hits += keyed(&dir.join("pids.events"), "max");
            report.memory_limit_hits += match self.version {
                Version::V1 => read_number(&dir.join("memory.failcnt")),
                Version::V2 => keyed(&dir.join("memory.events"), "max"),
            };
        }
        report
    }

    /// Kills whatever is left and removes the folders (retrying for up to two seconds
    /// while killed processes exit).
    pub fn remove(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        for dir in std::mem::take(&mut self.dirs) {
            loop {
                kill_all(&dir, self.version);
                match std::fs::remove_dir(&dir) {
                    Ok(()) => break,
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => break,
                    Err(error) if Instant::now() >= deadline => {
                        tracing::error!(dir = %dir.display(), %error, "could not remove the run's cgroup");
                        break;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.remove();
    }
}

fn kill_all(dir: &Path, version: Version) {
    if version == Version::V2 && std::fs::write(dir.join("cgroup.kill"), "1").is_ok() {
        return;
    }
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs
        .lines()
        .filter_map(|line| line.trim().parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(io(path))
}

fn read_number(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

/// The value of `key` in a flat-keyed file such as `pids.events` (`max 3`).
fn keyed(path: &Path, key: &str) -> u64 {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(name, _)| *name == key)
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_paths_are_read_per_controller() {
        let text = "9:name=systemd:/\n8:pids:/\n4:memory:/a/b\n0::/unified/x\n";
        assert_eq!(own_path(text, Some("pids")), "/");
        assert_eq!(own_path(text, Some("memory")), "/a/b");
        assert_eq!(own_path(text, None), "/unified/x");
        assert_eq!(own_path("", Some("pids")), "/");
    }

    #[test]
    fn a_cgroup_with_a_pids_limit_is_made_and_removed() {
        let limits = Limits {
            processes: Some(16),
            ..Limits::default()
        };
        let mut cgroup = match create(&limits, None) {
            Ok(cgroup) => cgroup,
            Err(error) => {
                eprintln!("skipped: no cgroup here ({error})");
                return;
            }
        };
        let dirs = cgroup.dirs().to_vec();
        assert!(
            dirs.iter().any(
                |d| std::fs::read_to_string(d.join("pids.max")).is_ok_and(|t| t.trim() == "16")
            )
        );
        assert_eq!(cgroup.report(), CgroupReport::default());
        cgroup.remove();
        assert!(dirs.iter().all(|d| !d.exists()));
    }
}
