//! Paddock's sandbox for the Claude Code CLI: the whole CLI process (its tools, and
//! any MCP server it starts) runs contained, so a job can touch only its own
//! workspace, temp folder and state, cannot read the node's secrets, and reaches the
//! network only through an egress proxy with a domain allowlist.
//!
//! - `policy` — [`SandboxPolicy`]: the one policy, plain data, validated.
//! - `plan` — the policy resolved on the file system into rules where the most
//!   specific wins; pinned parents; HOME placeholders; post-run quarantine.
//! - `bwrap` — Linux back end: the bubblewrap command line.
//! - `seatbelt` — macOS back end: the `sandbox-exec` profile and its parameters.
//! - `sandbox` — [`Sandbox::command`]: a ready `Command` plus the [`SandboxGuard`]
//!   that cleans up; `cgroup`, `seccomp` and `os` (the only `unsafe`: the pre-exec
//!   hook) serve it.
//! - `init` — `paddock-sandbox-init`, the first program inside the sandbox: user
//!   switch, proxy relay, then the agent.
//! - `proxy` — the egress proxy the node runs ([`proxy::run`]).
//! - `probe`, `settings` — the start-up probe and the node's `[sandbox]` settings:
//!   [`settings::start`] fails closed.
//!
//! This crate touches the OS (mounts, cgroups, user switch); it depends on no other
//! Paddock crate.

mod bwrap;
pub mod cgroup;
pub mod init;
mod os;
pub mod plan;
pub mod policy;
pub mod probe;
pub mod proxy;
mod sandbox;
mod seatbelt;
mod seccomp;
pub mod settings;

pub use bwrap::INSIDE_DIR;
pub use plan::{Access, Plan, Quarantined};
pub use policy::{Limits, Network, PolicyError, Protected, ProxyAccess, RunAs, SandboxPolicy};
pub use probe::{ProbeError, ProbeReport, probe};
pub use sandbox::{
    Backend, CgroupMode, Sandbox, SandboxError, SandboxGuard, SandboxReport, SandboxedChild,
    SandboxedCommand,
};
pub use seatbelt::{Profile, SANDBOX_EXEC};
pub use settings::{SandboxMode, SandboxSettings, SandboxStatus};

/// The Seatbelt profile and `sandbox-exec` arguments for `policy` (what a Mac would
/// run), for inspection and for checking on a Mac by hand.
pub fn seatbelt_profile(
    policy: &SandboxPolicy,
    init: Option<&std::path::Path>,
) -> Result<Profile, PolicyError> {
    policy.validate()?;
    let plan = Plan::resolve(policy)?;
    Ok(seatbelt::profile(&plan, policy, init))
}
