//! The one module that may use `unsafe`: what runs in the child between `fork` and
//! `exec` of the sandbox launcher (bubblewrap or `sandbox-exec`) and of the agent
//! started by the init, and the supplementary group reset that nix does not wrap on
//! macOS.
//!
//! Before `exec`, the child joins the run's cgroups (so that nothing it forks escapes
//! the process and memory limits), sets the rlimits (inherited by everything in the
//! sandbox), and clears close-on-exec on the pipe ends bubblewrap reads its seccomp
//! filter from and writes its info to. Only single system calls, no allocation.
#![allow(unsafe_code)]

use std::fs::File;
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::Command;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::resource::{Resource, setrlimit};

/// What the child does before `exec`.
#[derive(Debug, Default)]
pub(crate) struct BeforeExec {
    /// `cgroup.procs` files opened for writing: the child writes `0` (itself) to each.
    pub cgroup_procs: Vec<File>,
    /// Soft and hard limit alike.
    pub rlimits: Vec<(Resource, u64)>,
    /// Descriptors the launcher must inherit at their current numbers. The command
    /// owns them: dropping it after `spawn` closes the parent's copies.
    pub inherit: Vec<OwnedFd>,
}

/// Installs `hook` to run in the child of `command` before `exec`.
pub(crate) fn install(command: &mut Command, hook: BeforeExec) {
    // SAFETY: the closure runs in the forked child of a possibly multi-threaded
    // process, where only async-signal-safe operations are sound. It only iterates
    // vectors built before the fork and makes single system calls through nix
    // (`write`, `setrlimit`, `fcntl`), whose errors become `io::Error` from a raw
    // errno without allocating. It takes no lock and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            for procs in &hook.cgroup_procs {
                nix::unistd::write(procs, b"0")?;
            }
            for (resource, limit) in &hook.rlimits {
                setrlimit(*resource, *limit, *limit)?;
            }
            for fd in &hook.inherit {
                fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::empty()))?;
            }
            Ok(())
        });
    }
}

/// Makes the child of `command` start with no signal blocked: the init blocks the
/// termination signals for itself, and a blocked mask is inherited across `exec`.
pub(crate) fn unblock_signals_before_exec(command: &mut Command) {
    use nix::sys::signal::{SigSet, SigmaskHow, pthread_sigmask};
    // SAFETY: the closure runs in the forked child between fork and exec. It makes one
    // async-signal-safe system call (`pthread_sigmask`) with a signal set built on the
    // stack, and neither allocates nor takes a lock.
    unsafe {
        command.pre_exec(|| {
            pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
                .map_err(std::io::Error::from)
        });
    }
}

/// Leaves only `gid` as the process's group list (before switching to the
/// unprivileged user).
#[cfg(not(target_vendor = "apple"))]
pub(crate) fn set_only_group(gid: u32) -> std::io::Result<()> {
    nix::unistd::setgroups(&[nix::unistd::Gid::from_raw(gid)]).map_err(std::io::Error::from)
}

/// Leaves only `gid` as the process's group list (before switching to the
/// unprivileged user).
#[cfg(target_vendor = "apple")]
pub(crate) fn set_only_group(gid: u32) -> std::io::Result<()> {
    let groups = [gid as libc::gid_t];
    // SAFETY: `groups` is a live array of exactly the one element whose count is
    // passed; setgroups only reads it.
    let result = unsafe { libc::setgroups(1, groups.as_ptr()) };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
