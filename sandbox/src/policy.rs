//! The one sandbox policy both back ends are generated from: which folders the agent
//! may write (its workspace, its temp folder, its own HOME), what it may only read
//! (system and toolchains), what it may not see at all (secrets, other jobs), which
//! metadata inside its writable folders stays read-only because it could run code later,
//! how it reaches the network (only through the node's egress proxy), its limits, the
//! unprivileged user it runs as and its environment.
//!
//! A [`SandboxPolicy`] is plain data. [`SandboxPolicy::validate`] checks it and names the
//! bad field; `plan.rs` resolves it against the file system into the rules that
//! `bwrap.rs` and `seatbelt.rs` turn into a command line and a profile.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Everything the sandbox of one agent run allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxPolicy {
    /// The job's working tree: read-write (except [`Self::protected_workspace`]).
    pub workspace: PathBuf,
    /// The job's temp folder: read-write, and `TMPDIR` inside.
    pub temp: PathBuf,
    /// The agent's state folder, its `HOME` inside: read-write (except
    /// [`Self::protected_home`]).
    pub home: PathBuf,
    /// Readable, never writable: system folders and toolchains (the CLI's install
    /// folder must be among them). Entries that do not exist are skipped.
    pub read_only: Vec<PathBuf>,
    /// Neither readable nor writable, even inside a readable or writable folder:
    /// secrets, the node's own config and credentials, the folder holding other jobs'
    /// workspaces. The most specific rule wins, so the job's own workspace may sit
    /// inside a denied folder of workspaces.
    pub denied: Vec<PathBuf>,
    /// Paths relative to the workspace that stay read-only (and whose parents cannot be
    /// renamed): metadata that could run code later, such as `.git/hooks`.
    pub protected_workspace: Vec<Protected>,
    /// Paths relative to the agent's HOME that stay read-only: its settings, agents
    /// and commands, shell rc files. Missing ones are created empty before the run.
    pub protected_home: Vec<Protected>,
    /// How the agent reaches the network.
    pub network: Network,
    /// Resource limits of the whole run.
    pub limits: Limits,
    /// The unprivileged user the agent runs as; `None` keeps the node's user.
    pub run_as: Option<RunAs>,
    /// The agent's whole environment (nothing is inherited). `HOME`, `TMPDIR` and the
    /// proxy variables are set by the sandbox and override entries here.
    pub env: BTreeMap<String, String>,
}

/// A path (relative to a writable root) that stays read-only inside it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Protected {
    pub path: PathBuf,
    /// A folder (`true`) or a file; decides the placeholder created when it is missing
    /// from the agent's HOME.
    pub dir: bool,
}

impl Protected {
    pub fn file(path: &str) -> Self {
        Self {
            path: path.into(),
            dir: false,
        }
    }

    pub fn dir(path: &str) -> Self {
        Self {
            path: path.into(),
            dir: true,
        }
    }

    /// Parses the settings spelling: a trailing `/` marks a folder.
    pub fn parse(spec: &str) -> Self {
        match spec.strip_suffix('/') {
            Some(dir) => Self::dir(dir),
            None => Self::file(spec),
        }
    }
}

/// The unprivileged user and group the agent runs as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// Looks a user up by name (its primary group is used).
    pub fn user(name: &str) -> Result<Self, PolicyError> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(user)) => Ok(Self {
                uid: user.uid.as_raw(),
                gid: user.gid.as_raw(),
            }),
            Ok(None) => Err(PolicyError::UnknownUser(name.to_owned())),
            Err(error) => Err(PolicyError::Io {
                path: PathBuf::from("/etc/passwd"),
                source: error.into(),
            }),
        }
    }

    /// Parses `uid:gid` or a user name.
    pub fn parse(spec: &str) -> Result<Self, PolicyError> {
        if let Some((uid, gid)) = spec.split_once(':')
            && let (Ok(uid), Ok(gid)) = (uid.parse(), gid.parse())
        {
            return Ok(Self { uid, gid });
        }
        Self::user(spec)
    }
}

/// How the sandboxed agent reaches the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Network {
    /// Not at all (on Linux, a network namespace with only its own loopback).
    None,
    /// Only through the node's egress proxy, which the agent finds at
    /// `http://127.0.0.1:{port}` (the proxy variables point there).
    Proxy(ProxyAccess),
}

/// Where the egress proxy is, seen from inside and from the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyAccess {
    /// The loopback port inside the sandbox. On Linux an in-sandbox forwarder listens
    /// there and relays to [`Self::socket`]; on macOS the proxy itself listens on the
    /// node's `127.0.0.1:port` and the profile allows only that destination.
    pub port: u16,
    /// The proxy's unix socket on the node (required by the bubblewrap back end).
    pub socket: Option<PathBuf>,
}

impl ProxyAccess {
    /// The proxy URL the agent's environment carries.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// Resource limits. rlimits (open files, file size, CPU time) apply per process;
/// processes and memory are counted for the whole run by a cgroup where the OS has one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// `RLIMIT_NOFILE`.
    pub open_files: Option<u64>,
    /// `RLIMIT_FSIZE`: no single file grows past this many bytes.
    pub file_size_bytes: Option<u64>,
    /// `RLIMIT_CPU`, in seconds of CPU time per process.
    pub cpu_seconds: Option<u64>,
    /// Processes and threads of the whole run (cgroup `pids`; `RLIMIT_NPROC` of the
    /// run-as user where there is no cgroup, as on macOS).
    pub processes: Option<u64>,
    /// Memory of the whole run (cgroup `memory`; not enforced on macOS).
    pub memory_bytes: Option<u64>,
}

impl Limits {
    /// Limits that suit one agent run on a Mac Mini.
    pub fn recommended() -> Self {
        Self {
            open_files: Some(4096),
            file_size_bytes: Some(1 << 30),
            cpu_seconds: Some(4 * 3600),
            processes: Some(512),
            memory_bytes: Some(8 << 30),
        }
    }
}

/// Secrets looked for in every home folder the policy knows of.
pub const SECRET_NAMES: &[&str] = &[
    ".ssh",
    ".aws",
    ".config/gcloud",
    ".azure",
    ".kube",
    ".docker",
    ".gnupg",
    ".config/gh",
    ".netrc",
    ".git-credentials",
    ".npmrc",
    ".pypirc",
    ".cargo/credentials",
    ".cargo/credentials.toml",
    "Library/Keychains",
];

/// Shell start-up files: whoever opens a shell with this folder as HOME (or `cd`s into
/// it, for `.envrc`) runs them.
const RC_FILES: &[&str] = &[
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".bash_logout",
    ".profile",
    ".zshrc",
    ".zshenv",
    ".zprofile",
    ".zlogin",
    ".zlogout",
];

/// Metadata in a workspace that runs code when someone later uses the tree: git hooks
/// and config (`core.hooksPath`, `core.fsmonitor`), the CLI's project settings (hooks),
/// agents, commands and skills, project MCP servers, shell rc files and direnv.
pub fn default_protected_workspace() -> Vec<Protected> {
    let mut entries = vec![
        Protected::dir(".git/hooks"),
        Protected::file(".git/config"),
        Protected::file(".claude/settings.json"),
        Protected::file(".claude/settings.local.json"),
        Protected::dir(".claude/agents"),
        Protected::dir(".claude/commands"),
        Protected::dir(".claude/skills"),
        Protected::dir(".claude/hooks"),
        Protected::file(".mcp.json"),
        Protected::file(".envrc"),
    ];
    entries.extend(RC_FILES.iter().map(|name| Protected::file(name)));
    entries
}

/// The agent's own configuration in its HOME: what the next run of the CLI (or a
/// shell) would load and execute.
pub fn default_protected_home() -> Vec<Protected> {
    let mut entries = vec![
        Protected::file(".claude.json"),
        Protected::file(".claude/settings.json"),
        Protected::file(".claude/settings.local.json"),
        Protected::dir(".claude/agents"),
        Protected::dir(".claude/commands"),
        Protected::dir(".claude/skills"),
        Protected::dir(".claude/hooks"),
        Protected::dir(".claude/plugins"),
        Protected::file(".gitconfig"),
        Protected::dir(".config/git"),
    ];
    entries.extend(RC_FILES.iter().map(|name| Protected::file(name)));
    entries
}

/// System folders and files every program needs to read.
pub fn default_read_only() -> Vec<PathBuf> {
    let paths: &[&str] = if cfg!(target_os = "macos") {
        &[
            "/usr",
            "/bin",
            "/sbin",
            "/System",
            "/Library/Apple",
            "/Library/Preferences",
            "/Library/Developer/CommandLineTools",
            "/Applications/Xcode.app",
            "/etc",
            "/private/var/db/timezone",
            "/opt/homebrew",
        ]
    } else {
        &[
            "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
        ]
    };
    paths.iter().map(PathBuf::from).collect()
}

/// Secrets of the system and of the node's own user (`node_home`), plus the usual
/// place of the node agent's configuration. Add the node's actual config and
/// credential files and the folder of all workspaces in the settings.
pub fn default_denied(node_home: Option<&Path>) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = [
        "/etc/shadow",
        "/etc/shadow-",
        "/etc/gshadow",
        "/etc/gshadow-",
        "/etc/sudoers",
        "/etc/sudoers.d",
        "/etc/ssh",
        "/etc/ssl/private",
        "/etc/paddock",
        "/Library/Keychains",
        "/private/etc/paddock",
        "/private/etc/ssh",
        "/private/etc/sudoers",
        "/private/etc/sudoers.d",
        "/private/etc/master.passwd",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    if let Some(home) = node_home {
        paths.extend(SECRET_NAMES.iter().map(|name| home.join(name)));
        paths.push(home.join(".config/paddock"));
    }
    paths
}

impl SandboxPolicy {
    /// A policy with the default read-only, denied and protected sets, no network,
    /// no limits, no user switch and an empty environment. Secrets are denied in
    /// the agent's HOME and in the HOME of the user running this process.
    pub fn new(workspace: &Path, temp: &Path, home: &Path) -> Self {
        let node_home = std::env::var_os("HOME").map(PathBuf::from);
        let mut denied = default_denied(node_home.as_deref());
        denied.extend(SECRET_NAMES.iter().map(|name| home.join(name)));
        Self {
            workspace: workspace.to_path_buf(),
            temp: temp.to_path_buf(),
            home: home.to_path_buf(),
            read_only: default_read_only(),
            denied,
            protected_workspace: default_protected_workspace(),
            protected_home: default_protected_home(),
            network: Network::None,
            limits: Limits::default(),
            run_as: None,
            env: BTreeMap::new(),
        }
    }

    /// Checks what can be checked without touching the file system beyond `stat`,
    /// naming the field at fault.
    pub fn validate(&self) -> Result<(), PolicyError> {
        for (field, path) in [
            ("workspace", &self.workspace),
            ("temp", &self.temp),
            ("home", &self.home),
        ] {
            absolute(field, path)?;
            if !path.is_dir() {
                return Err(PolicyError::MissingDirectory {
                    field,
                    path: path.clone(),
                });
            }
        }
        for path in &self.read_only {
            absolute("read_only", path)?;
        }
        for path in &self.denied {
            absolute("denied", path)?;
        }
        for (field, entries) in [
            ("protected_workspace", &self.protected_workspace),
            ("protected_home", &self.protected_home),
        ] {
            for entry in entries {
                plain_relative(field, &entry.path)?;
            }
        }
        if let Some(run_as) = self.run_as
            && (run_as.uid == 0 || run_as.gid == 0)
        {
            return Err(PolicyError::RunAsRoot);
        }
        for (name, value) in [
            ("open_files", self.limits.open_files),
            ("file_size_bytes", self.limits.file_size_bytes),
            ("cpu_seconds", self.limits.cpu_seconds),
            ("processes", self.limits.processes),
            ("memory_bytes", self.limits.memory_bytes),
        ] {
            if value == Some(0) {
                return Err(PolicyError::ZeroLimit(name));
            }
        }
        if let Network::Proxy(proxy) = &self.network {
            if proxy.port == 0 {
                return Err(PolicyError::ProxyPort);
            }
            if let Some(socket) = &proxy.socket {
                absolute("network.socket", socket)?;
            }
        }
        for (name, value) in &self.env {
            let valid_name = !name.is_empty()
                && !name.contains('=')
                && !name.contains('\0')
                && !name.starts_with(|c: char| c.is_ascii_digit());
            if !valid_name || value.contains('\0') {
                return Err(PolicyError::BadEnv(name.clone()));
            }
        }
        Ok(())
    }
}

fn absolute(field: &'static str, path: &Path) -> Result<(), PolicyError> {
    let plain = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if plain {
        Ok(())
    } else {
        Err(PolicyError::NotAbsolute {
            field,
            path: path.to_path_buf(),
        })
    }
}

fn plain_relative(field: &'static str, path: &Path) -> Result<(), PolicyError> {
    let plain = path.components().next().is_some()
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    if plain {
        Ok(())
    } else {
        Err(PolicyError::NotRelative {
            field,
            path: path.to_path_buf(),
        })
    }
}

/// A policy that cannot be enforced as written, with the field to fix.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{field}: {} must be an absolute path without `.` or `..`", path.display())]
    NotAbsolute { field: &'static str, path: PathBuf },
    #[error("{field}: {} must be a relative path without `.` or `..`", path.display())]
    NotRelative { field: &'static str, path: PathBuf },
    #[error("{field}: {} does not exist or is not a folder", path.display())]
    MissingDirectory { field: &'static str, path: PathBuf },
    #[error(
        "{field}: {} is or contains the read-only system path {}; it cannot be writable",
        path.display(),
        system.display()
    )]
    WritableSystem {
        field: &'static str,
        path: PathBuf,
        system: PathBuf,
    },
    #[error("run_as: uid or gid 0 is root; the agent never runs as root")]
    RunAsRoot,
    #[error("run_as: no user named {0:?}")]
    UnknownUser(String),
    #[error("limits.{0} must be greater than zero (leave it out for no limit)")]
    ZeroLimit(&'static str),
    #[error("network: the proxy port must not be 0")]
    ProxyPort,
    #[error("network: the bubblewrap back end needs the proxy's unix socket")]
    ProxySocketMissing,
    #[error("env: {0:?} is not a valid variable (name or value)")]
    BadEnv(String),
    #[error(
        "program {}: not readable inside the sandbox; add its install folder to read_only",
        .0.display()
    )]
    ProgramNotReadable(PathBuf),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dirs() -> (tempfile::TempDir, SandboxPolicy) {
        let root = tempfile::tempdir().expect("tempdir");
        for name in ["ws", "tmp", "home"] {
            std::fs::create_dir(root.path().join(name)).expect("mkdir");
        }
        let policy = SandboxPolicy::new(
            &root.path().join("ws"),
            &root.path().join("tmp"),
            &root.path().join("home"),
        );
        (root, policy)
    }

    #[test]
    fn a_fresh_policy_is_valid() {
        let (_root, policy) = dirs();
        policy.validate().expect("valid");
    }

    #[test]
    fn root_is_never_the_run_as_user() {
        let (_root, mut policy) = dirs();
        policy.run_as = Some(RunAs { uid: 0, gid: 100 });
        assert!(matches!(policy.validate(), Err(PolicyError::RunAsRoot)));
        policy.run_as = Some(RunAs { uid: 100, gid: 0 });
        assert!(matches!(policy.validate(), Err(PolicyError::RunAsRoot)));
    }

    #[test]
    fn relative_or_dotted_paths_are_refused_with_their_field() {
        let (_root, mut policy) = dirs();
        policy.read_only.push("usr/lib".into());
        let error = policy.validate().expect_err("relative read_only");
        assert!(error.to_string().starts_with("read_only:"), "{error}");

        let (_root, mut policy) = dirs();
        policy.denied.push("/home/../etc".into());
        assert!(matches!(
            policy.validate(),
            Err(PolicyError::NotAbsolute {
                field: "denied",
                ..
            })
        ));

        let (_root, mut policy) = dirs();
        policy
            .protected_workspace
            .push(Protected::file("../outside"));
        assert!(matches!(
            policy.validate(),
            Err(PolicyError::NotRelative { .. })
        ));
    }

    #[test]
    fn zero_limits_and_bad_env_names_are_refused() {
        let (_root, mut policy) = dirs();
        policy.limits.open_files = Some(0);
        assert!(matches!(
            policy.validate(),
            Err(PolicyError::ZeroLimit("open_files"))
        ));
        let (_root, mut policy) = dirs();
        policy.env.insert("A=B".into(), "x".into());
        assert!(matches!(policy.validate(), Err(PolicyError::BadEnv(_))));
    }

    #[test]
    fn a_missing_workspace_is_named() {
        let (root, mut policy) = dirs();
        policy.workspace = root.path().join("nope");
        let error = policy.validate().expect_err("missing");
        assert!(error.to_string().starts_with("workspace:"), "{error}");
    }

    #[test]
    fn run_as_parses_ids_and_names() {
        assert_eq!(
            RunAs::parse("1234:5678").expect("ids"),
            RunAs {
                uid: 1234,
                gid: 5678
            }
        );
        let nobody = RunAs::parse("nobody").expect("nobody exists");
        assert_ne!(nobody.uid, 0);
        assert!(matches!(
            RunAs::parse("no-such-user-here"),
            Err(PolicyError::UnknownUser(_))
        ));
    }

    #[test]
    fn protected_entries_parse_a_trailing_slash_as_a_folder() {
        assert_eq!(
            Protected::parse(".git/hooks/"),
            Protected::dir(".git/hooks")
        );
        assert_eq!(Protected::parse(".envrc"), Protected::file(".envrc"));
    }
}
