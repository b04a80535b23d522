//! The Linux back end: a bubblewrap command line generated from a [`Plan`].
//!
//! bubblewrap runs privileged here (the node runs as root), so it needs no user
//! namespace: it builds a fresh mount namespace whose root is an empty tmpfs, binds
//! the plan's folders into it at their own paths (read-only, read-write, or masked by
//! an empty mode-000 tmpfs or file), pins parents of protected entries with a
//! read-write bind onto themselves (a mount point cannot be renamed), mounts the
//! in-sandbox init and the egress proxy's unix socket under [`INSIDE_DIR`], and makes the
//! root read-only. `--unshare-net` leaves only a loopback interface: the init listens on
//! `127.0.0.1:PORT` there and relays each connection to the proxy's socket (see
//! `init.rs`), which is the only way out. All capabilities are dropped except the two
//! the init needs to switch to the unprivileged user, and a seccomp filter refuses new
//! user namespaces (`seccomp.rs`).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::plan::{Access, Plan};
use crate::policy::{Network, SandboxPolicy};

/// Where the init and the proxy socket are mounted inside the sandbox.
pub const INSIDE_DIR: &str = "/run/paddock-sandbox";

/// What the command line is made of besides the plan.
#[derive(Debug)]
pub(crate) struct Inputs<'a> {
    pub plan: &'a Plan,
    pub policy: &'a SandboxPolicy,
    /// The `paddock-sandbox-init` executable on the node.
    pub init: &'a Path,
    /// An empty file of mode 000 on the node, bound over denied files.
    pub empty_file: &'a Path,
    pub seccomp_fd: Option<i32>,
    pub info_fd: Option<i32>,
    /// `RLIMIT_NPROC` for the init to set after switching user, where no cgroup counts
    /// the run's processes.
    pub nproc: Option<u64>,
    pub program: &'a Path,
    pub args: &'a [String],
}

/// The init's path inside the sandbox.
pub fn inside_init() -> PathBuf {
    Path::new(INSIDE_DIR).join("init")
}

/// The proxy socket's path inside the sandbox.
pub fn inside_socket() -> PathBuf {
    Path::new(INSIDE_DIR).join("proxy.sock")
}

/// The arguments of `bwrap` (without the program name).
pub(crate) fn arguments(inputs: &Inputs<'_>) -> Vec<OsString> {
    let mut out = Arguments::default();
    out.flags(&[
        "--new-session",
        "--die-with-parent",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--cap-drop",
        "ALL",
    ]);
    if inputs.policy.run_as.is_some() {
        out.flags(&["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]);
    }
    if let Some(fd) = inputs.seccomp_fd {
        out.flag("--seccomp");
        out.push(fd.to_string());
    }
    if let Some(fd) = inputs.info_fd {
        out.flag("--info-fd");
        out.push(fd.to_string());
    }
    out.flags(&["--proc", "/proc", "--dev", "/dev"]);
    out.mounted.push(PathBuf::from("/proc"));
    out.mounted.push(PathBuf::from("/dev"));

    let plan = inputs.plan;
    for (link, target) in &plan.symlinks {
        if out.under_mount(link) {
            continue;
        }
        out.scaffold(link, 0o755);
        out.flag("--symlink");
        out.push(target.as_os_str());
        out.push(link.as_os_str());
    }

    let mut remount_read_only = Vec::new();
    for step in steps(plan) {
        match step {
            Step::Bind { path, writable } => {
                out.scaffold(&path, scaffold_mode(plan, &path));
                out.flag(if writable { "--bind" } else { "--ro-bind" });
                out.push(path.as_os_str());
                out.push(path.as_os_str());
                out.mounted.push(path);
            }
            Step::MaskDir { path, traversable } => {
                out.scaffold(&path, scaffold_mode(plan, &path));
                out.flag("--perms");
                out.flag(if traversable { "0111" } else { "0000" });
                out.flag("--tmpfs");
                out.push(path.as_os_str());
                remount_read_only.push(path.clone());
                out.mounted.push(path);
            }
            Step::MaskFile { path } => {
                out.scaffold(&path, scaffold_mode(plan, &path));
                out.flag("--ro-bind");
                out.push(inputs.empty_file.as_os_str());
                out.push(path.as_os_str());
                out.mounted.push(path);
            }
        }
    }

    let inside = PathBuf::from(INSIDE_DIR);
    out.scaffold(&inside.join("x"), 0o755);
    out.flag("--ro-bind");
    out.push(inputs.init.as_os_str());
    out.push(inside_init().as_os_str());
    let mut forward = None;
    if let Network::Proxy(proxy) = &inputs.policy.network
        && let Some(socket) = &proxy.socket
    {
        out.flag("--ro-bind");
        out.push(socket.as_os_str());
        out.push(inside_socket().as_os_str());
        forward = Some(proxy.port);
    }

    for path in remount_read_only {
        out.flag("--remount-ro");
        out.push(path.as_os_str());
    }
    out.flags(&["--remount-ro", "/"]);
    out.flag("--chdir");
    out.push(plan.workspace.as_os_str());
    out.flag("--");

    out.push(inside_init().as_os_str());
    out.extend(crate::init::arguments(
        inputs.policy.run_as,
        forward.map(|port| (port, inside_socket())),
        inputs.nproc,
    ));
    out.flag("--");
    out.push(inputs.program.as_os_str());
    out.extend(inputs.args.iter().map(OsString::from));
    out.args
}

/// Folders created in the sandbox's own tmpfs on the way to a mount: traversable only
/// where they sit inside a hidden folder.
fn scaffold_mode(plan: &Plan, path: &Path) -> u32 {
    match plan.parent_rule(path) {
        Some(parent) if parent.access == Access::Hidden && parent.exists => 0o111,
        _ => 0o755,
    }
}

#[derive(Debug)]
enum Step {
    Bind { path: PathBuf, writable: bool },
    MaskDir { path: PathBuf, traversable: bool },
    MaskFile { path: PathBuf },
}

/// The mounts, parents before children: plan rules, then pins where no rule mounts.
fn steps(plan: &Plan) -> Vec<Step> {
    let mut keyed: Vec<(PathBuf, Step)> = Vec::new();
    for rule in &plan.rules {
        if !rule.exists {
            continue;
        }
        let parent_access = plan.parent_rule(&rule.path).map(|p| p.access);
        match rule.access {
            Access::ReadOnly | Access::ReadWrite => keyed.push((
                rule.path.clone(),
                Step::Bind {
                    path: rule.path.clone(),
                    writable: rule.access == Access::ReadWrite,
                },
            )),
            Access::Hidden => {
                // Only what would otherwise be visible needs a mask.
                let visible = matches!(parent_access, Some(Access::ReadOnly | Access::ReadWrite));
                if !visible {
                    continue;
                }
                let step = if rule.is_dir {
                    let traversable = plan.rules.iter().any(|other| {
                        other.exists
                            && other.access != Access::Hidden
                            && other.path != rule.path
                            && other.path.starts_with(&rule.path)
                    });
                    Step::MaskDir {
                        path: rule.path.clone(),
                        traversable,
                    }
                } else {
                    Step::MaskFile {
                        path: rule.path.clone(),
                    }
                };
                keyed.push((rule.path.clone(), step));
            }
        }
    }
    for pinned in &plan.pinned {
        let is_rule = plan.rules.iter().any(|rule| rule.path == pinned.path);
        if pinned.exists && !is_rule && plan.access(&pinned.path) == Access::ReadWrite {
            keyed.push((
                pinned.path.clone(),
                Step::Bind {
                    path: pinned.path.clone(),
                    writable: true,
                },
            ));
        }
    }
    keyed.sort_by(|a, b| a.0.cmp(&b.0));
    keyed.into_iter().map(|(_, step)| step).collect()
}

#[derive(Default)]
struct Arguments {
    args: Vec<OsString>,
    /// Mount destinations so far: folders under them exist on the node already.
    mounted: Vec<PathBuf>,
    /// Folders created in the sandbox's tmpfs root.
    made: BTreeSet<PathBuf>,
}

impl Arguments {
    fn flag(&mut self, flag: &str) {
        self.args.push(flag.into());
    }

    fn flags(&mut self, flags: &[&str]) {
        self.args.extend(flags.iter().map(OsString::from));
    }

    fn push(&mut self, arg: impl Into<OsString>) {
        self.args.push(arg.into());
    }

    fn extend(&mut self, args: impl IntoIterator<Item = OsString>) {
        self.args.extend(args);
    }

    fn under_mount(&self, path: &Path) -> bool {
        self.mounted.iter().any(|mount| path.starts_with(mount))
    }

    /// Creates (with explicit modes: bubblewrap would make them 0700) the folders
    /// above `path` that no mount provides.
    fn scaffold(&mut self, path: &Path, mode: u32) {
        let mut ancestors: Vec<&Path> = path
            .ancestors()
            .skip(1)
            .filter(|a| *a != Path::new("/"))
            .collect();
        ancestors.reverse();
        for ancestor in ancestors {
            if self.made.contains(ancestor) {
                continue;
            }
            // The closest mount decides: a bind brings the node's own folders, a
            // masking tmpfs is empty and needs them made.
            let closest = self
                .mounted
                .iter()
                .filter(|mount| ancestor.starts_with(mount))
                .max_by_key(|mount| mount.components().count());
            let inside_tmpfs_mask = closest.is_some_and(|mount| self.is_mask(mount));
            if closest.is_some() && !inside_tmpfs_mask {
                continue;
            }
            let mode = if inside_tmpfs_mask { 0o111 } else { mode };
            self.args.push("--perms".into());
            self.args.push(format!("{mode:04o}").into());
            self.args.push("--dir".into());
            self.args.push(ancestor.as_os_str().to_owned());
            self.made.insert(ancestor.to_path_buf());
        }
    }

    fn is_mask(&self, mount: &Path) -> bool {
        self.args
            .windows(2)
            .any(|pair| pair[0] == "--tmpfs" && Path::new(&pair[1]) == mount)
    }
}

#[cfg(test)]
pub(crate) mod simulation {
    //! Reads a bubblewrap command line back into a mount table and answers what a path
    //! allows, so tests can compare the command line with the plan and the profile.

    use super::*;

    #[derive(Debug)]
    struct Mount {
        dest: PathBuf,
        source: Option<PathBuf>,
        writable: bool,
    }

    #[derive(Debug, Default)]
    pub struct Simulation {
        mounts: Vec<Mount>,
        read_only: Vec<PathBuf>,
        pub flags: Vec<String>,
        pub command: Vec<String>,
    }

    impl Simulation {
        pub fn parse(args: &[OsString]) -> Self {
            let args: Vec<String> = args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            let mut sim = Self::default();
            let mut i = 0;
            while i < args.len() {
                let arg = args[i].as_str();
                let next = |n: usize| PathBuf::from(&args[i + n]);
                match arg {
                    "--bind" | "--ro-bind" => {
                        sim.mount(Mount {
                            dest: next(2),
                            source: Some(next(1)),
                            writable: arg == "--bind",
                        });
                        i += 3;
                    }
                    "--tmpfs" | "--proc" | "--dev" => {
                        sim.mount(Mount {
                            dest: next(1),
                            source: None,
                            writable: false,
                        });
                        i += 2;
                    }
                    "--remount-ro" => {
                        sim.read_only.push(next(1));
                        i += 2;
                    }
                    "--symlink" => i += 3,
                    "--dir" | "--perms" | "--chdir" | "--seccomp" | "--info-fd" | "--cap-add"
                    | "--cap-drop" => {
                        sim.flags.push(format!("{arg} {}", args[i + 1]));
                        i += 2;
                    }
                    "--" => {
                        sim.command = args[i + 1..].to_vec();
                        break;
                    }
                    flag => {
                        sim.flags.push(flag.to_owned());
                        i += 1;
                    }
                }
            }
            sim
        }

        fn mount(&mut self, mount: Mount) {
            // A mount hides everything mounted at or below its destination before.
            self.mounts.retain(|m| !m.dest.starts_with(&mount.dest));
            self.mounts.push(mount);
        }

        /// What the sandbox allows on the node's own content at `path`.
        pub fn access(&self, path: &Path) -> Access {
            let Some(mount) = self
                .mounts
                .iter()
                .filter(|m| path.starts_with(&m.dest))
                .max_by_key(|m| m.dest.components().count())
            else {
                return Access::Hidden;
            };
            let Some(source) = &mount.source else {
                return Access::Hidden;
            };
            let Ok(rest) = path.strip_prefix(&mount.dest) else {
                return Access::Hidden;
            };
            if source.join(rest) != path {
                return Access::Hidden;
            }
            if mount.writable && !self.read_only.contains(&mount.dest) {
                Access::ReadWrite
            } else {
                Access::ReadOnly
            }
        }

        pub fn is_mount_point(&self, path: &Path) -> bool {
            self.mounts.iter().any(|m| m.dest == path)
        }
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    //! A policy over a temp tree shared by the bubblewrap and Seatbelt tests.

    use super::*;
    use crate::plan::Plan;
    use crate::policy::{ProxyAccess, RunAs};

    pub(crate) struct Fixture {
        pub root: tempfile::TempDir,
        pub policy: SandboxPolicy,
    }

    pub(crate) fn fixture() -> Fixture {
        let root = tempfile::tempdir().expect("tempdir");
        let base = std::fs::canonicalize(root.path()).expect("canonical");
        for dir in [
            "jobs/a/ws/.git/hooks",
            "jobs/a/ws/.claude/agents",
            "jobs/b/ws",
            "tmp",
            "home/.ssh",
            "tools/bin",
        ] {
            std::fs::create_dir_all(base.join(dir)).expect("mkdir");
        }
        std::fs::write(base.join("jobs/a/ws/.git/config"), "").expect("write");
        std::fs::write(base.join("home/.netrc"), "machine x").expect("write");
        let mut policy = SandboxPolicy::new(
            &base.join("jobs/a/ws"),
            &base.join("tmp"),
            &base.join("home"),
        );
        policy.read_only.push(base.join("tools"));
        policy.denied.push(base.join("jobs"));
        policy.run_as = Some(RunAs {
            uid: 65534,
            gid: 65534,
        });
        policy.network = Network::Proxy(ProxyAccess {
            port: 3128,
            socket: Some(base.join("proxy.sock")),
        });
        Fixture { root, policy }
    }

    pub(crate) fn arguments_for(plan: &Plan, policy: &SandboxPolicy) -> Vec<OsString> {
        arguments(&Inputs {
            plan,
            policy,
            init: Path::new("/opt/paddock/paddock-sandbox-init"),
            empty_file: Path::new("/run/paddock/empty"),
            seccomp_fd: Some(7),
            info_fd: Some(8),
            nproc: None,
            program: Path::new("/usr/bin/true"),
            args: &["--flag".to_owned()],
        })
    }

    /// Paths worth asking about: every rule and pin, a child and a sibling of each,
    /// and their ancestors.
    pub(crate) fn probe_paths(plan: &Plan) -> Vec<PathBuf> {
        let mut paths = BTreeSet::new();
        let bases: Vec<PathBuf> = plan
            .rules
            .iter()
            .map(|r| r.path.clone())
            .chain(plan.pinned.iter().map(|p| p.path.clone()))
            .collect();
        for base in bases {
            paths.insert(base.join("child"));
            paths.insert(base.with_file_name("sibling-of-rule"));
            for ancestor in base.ancestors() {
                paths.insert(ancestor.to_path_buf());
            }
        }
        paths.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::simulation::Simulation;
    use super::tests_support::{arguments_for, fixture, probe_paths};
    use super::*;
    use crate::plan::Plan;

    #[test]
    fn the_command_line_has_the_required_isolation_and_no_user_namespace() {
        let fixture = fixture();
        let _keep = &fixture.root;
        let plan = Plan::resolve(&fixture.policy).expect("plan");
        let sim = Simulation::parse(&arguments_for(&plan, &fixture.policy));
        for flag in [
            "--new-session",
            "--die-with-parent",
            "--unshare-pid",
            "--unshare-net",
            "--cap-drop ALL",
            "--seccomp 7",
            "--info-fd 8",
        ] {
            assert!(
                sim.flags.iter().any(|f| f == flag),
                "missing {flag}: {:?}",
                sim.flags
            );
        }
        assert!(
            !sim.flags
                .iter()
                .any(|f| f.contains("--unshare-user") || f.contains("--userns"))
        );
        assert_eq!(
            sim.command.first().map(String::as_str),
            Some("/run/paddock-sandbox/init")
        );
        assert!(sim.command.iter().any(|a| a == "--uid"));
        assert!(
            sim.command
                .windows(2)
                .any(|w| w[0] == "--forward" && w[1] == "3128:/run/paddock-sandbox/proxy.sock")
        );
        assert_eq!(sim.command.last().map(String::as_str), Some("--flag"));
    }

    #[test]
    fn the_command_line_means_what_the_plan_says() {
        let fixture = fixture();
        let plan = Plan::resolve(&fixture.policy).expect("plan");
        let sim = Simulation::parse(&arguments_for(&plan, &fixture.policy));
        for path in probe_paths(&plan) {
            let Some(rule) = plan.rule_for(&path) else {
                assert_eq!(sim.access(&path), Access::Hidden, "{}", path.display());
                continue;
            };
            if !rule.exists {
                continue; // nothing to mount over: audited after the run instead
            }
            assert_eq!(sim.access(&path), plan.access(&path), "{}", path.display());
        }
        for pinned in plan.pinned.iter().filter(|p| p.exists) {
            assert!(
                sim.is_mount_point(&pinned.path),
                "not pinned: {}",
                pinned.path.display()
            );
        }
        // The other job's workspace is not there at all, the secret is masked.
        let base = fixture.root.path().canonicalize().expect("canonical");
        assert_eq!(sim.access(&base.join("jobs/b/ws/file")), Access::Hidden);
        assert_eq!(sim.access(&base.join("home/.ssh/id_rsa")), Access::Hidden);
        assert_eq!(sim.access(&base.join("home/.netrc")), Access::Hidden);
        assert_eq!(
            sim.access(&base.join("jobs/a/ws/.claude/agents/x.md")),
            Access::ReadOnly
        );
        assert!(sim.is_mount_point(&base.join("jobs/a/ws/.claude")));
    }

    #[test]
    fn parents_come_before_children_and_scaffolding_is_traversable() {
        let fixture = fixture();
        let plan = Plan::resolve(&fixture.policy).expect("plan");
        let args: Vec<String> = arguments_for(&plan, &fixture.policy)
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let position = |needle: &str| {
            args.iter()
                .position(|a| a == needle)
                .unwrap_or_else(|| panic!("{needle} not in {args:?}"))
        };
        let base = fixture.root.path().canonicalize().expect("canonical");
        let jobs = base.join("jobs");
        let ws = base.join("jobs/a/ws");
        let hooks = base.join("jobs/a/ws/.git/hooks");
        assert!(position(&jobs.to_string_lossy()) < position(&ws.to_string_lossy()));
        assert!(position(&ws.to_string_lossy()) < position(&hooks.to_string_lossy()));
        // jobs/a is made inside the hidden jobs tmpfs: traversable, not listable.
        let a = base.join("jobs/a").to_string_lossy().into_owned();
        let dir_at = args
            .windows(2)
            .position(|w| w[0] == "--dir" && w[1] == a)
            .expect("jobs/a scaffolded");
        assert_eq!(args[dir_at - 1], "0111");
    }
}
