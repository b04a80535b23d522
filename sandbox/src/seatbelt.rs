//! The macOS back end: a Seatbelt profile for `/usr/bin/sandbox-exec`, generated from
//! the same [`Plan`] as the bubblewrap command line.
//!
//! The profile denies by default and only ever *allows*; each rule of the plan becomes
//! an allow over its own region — `(require-all (subpath R) (require-not (subpath Q))…)`
//! for every more specific rule `Q` below it — so the most specific rule wins without
//! depending on Seatbelt's rule order. Writes additionally exclude the *pinned*
//! folders' own nodes (`(require-not (literal P))`): they cannot be renamed or
//! removed. Every path is a `-D NAME=PATH` parameter read with `(param "NAME")`;
//! no path is pasted into the profile text (a test checks it). The network is one
//! outbound rule to the egress proxy on `localhost:PORT`.
//!
//! There is no Mac in CI: `tests` parse the profile back (a small SBPL reader) and
//! check that it allows exactly what the plan — and so the bubblewrap command line —
//! allows. `README.md` says how to check it on a Mac.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::plan::{Access, Plan};
use crate::policy::{Network, SandboxPolicy};

/// Called by absolute path: a `sandbox-exec` earlier on `PATH` is not trusted.
pub const SANDBOX_EXEC: &str = "/usr/bin/sandbox-exec";

/// Devices every program may read and write.
const DEVICES_READ_WRITE: &[&str] = &["/dev/null", "/dev/zero", "/dev/tty", "/dev/dtracehelper"];
/// Devices every program may read.
const DEVICES_READ: &[&str] = &["/dev/random", "/dev/urandom"];

/// Mach services the CLI needs: user lookup, TLS certificate checks, notifications.
const MACH_SERVICES: &[&str] = &[
    "com.apple.system.opendirectoryd.libinfo",
    "com.apple.system.opendirectoryd.membership",
    "com.apple.bsd.dirhelper",
    "com.apple.SecurityServer",
    "com.apple.trustd.agent",
    "com.apple.ocspd",
    "com.apple.system.notification_center",
    "com.apple.system.logger",
    "com.apple.logd",
    "com.apple.diagnosticd",
];

/// A profile and the parameters it reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    pub text: String,
    /// `(name, path)`, passed as `-D name=path`.
    pub params: Vec<(String, PathBuf)>,
}

#[derive(Default)]
struct Params {
    by_path: BTreeMap<PathBuf, String>,
    list: Vec<(String, PathBuf)>,
    counters: BTreeMap<&'static str, usize>,
}

impl Params {
    /// The parameter holding `path`, named after what it is the first time it is seen.
    fn name(&mut self, kind: &'static str, path: &Path) -> String {
        if let Some(name) = self.by_path.get(path) {
            return name.clone();
        }
        let counter = self.counters.entry(kind).or_default();
        let name = format!("{kind}_{counter}");
        *counter += 1;
        self.by_path.insert(path.to_path_buf(), name.clone());
        self.list.push((name.clone(), path.to_path_buf()));
        name
    }

    fn param(&mut self, kind: &'static str, path: &Path) -> String {
        format!("(param \"{}\")", self.name(kind, path))
    }
}

/// Generates the profile for `plan`. `init` is the in-sandbox init's path when the
/// agent is started through it (to switch user).
pub fn profile(plan: &Plan, policy: &SandboxPolicy, init: Option<&Path>) -> Profile {
    let mut params = Params::default();
    // Name every path after its rule first, so a reader of the profile sees
    // `WRITABLE_0`, not the name of the first place it happened to appear.
    for rule in plan.rules.iter().filter(|r| r.access != Access::Hidden) {
        params.name(kind(rule.access), &rule.path);
    }
    for pinned in &plan.pinned {
        params.name("PINNED", &pinned.path);
    }
    let mut text = String::from(
        "(version 1)\n\
         (deny default)\n\
         (allow process-exec)\n\
         (allow process-fork)\n\
         (allow signal (target same-sandbox))\n\
         (allow process-info* (target same-sandbox))\n\
         (allow sysctl-read)\n\
         (allow mach-host*)\n\
         (allow ipc-posix-sem)\n\
         (allow ipc-posix-shm)\n\
         (allow pseudo-tty)\n\
         (allow user-preference-read)\n",
    );
    text.push_str("(allow mach-lookup");
    for service in MACH_SERVICES {
        let _ = write!(text, " (global-name \"{service}\")");
    }
    text.push_str(")\n");

    let rw_devices: Vec<String> = DEVICES_READ_WRITE
        .iter()
        .map(|d| format!("(literal {})", params.param("DEVICE", Path::new(d))))
        .collect();
    let _ = writeln!(
        text,
        "(allow file-read* file-write* file-ioctl {})",
        rw_devices.join(" ")
    );
    let fd = params.param("DEVICE", Path::new("/dev/fd"));
    let ro_devices: Vec<String> = DEVICES_READ
        .iter()
        .map(|d| format!("(literal {})", params.param("DEVICE", Path::new(d))))
        .collect();
    let _ = writeln!(
        text,
        "(allow file-read* {} (subpath {fd}))",
        ro_devices.join(" ")
    );
    let _ = writeln!(text, "(allow file-write* (subpath {fd}))");

    // realpath() and friends stat every folder on the way to an allowed one.
    let mut ancestors: Vec<&Path> = plan
        .rules
        .iter()
        .filter(|rule| rule.access != Access::Hidden)
        .flat_map(|rule| rule.path.ancestors().skip(1))
        .collect();
    ancestors.sort();
    ancestors.dedup();
    if !ancestors.is_empty() || !plan.symlinks.is_empty() {
        text.push_str("(allow file-read-metadata");
        for ancestor in ancestors {
            let _ = write!(text, " (literal {})", params.param("ANCESTOR", ancestor));
        }
        // `/etc -> private/etc` on macOS: reading the link itself.
        for (link, _) in &plan.symlinks {
            let _ = write!(text, " (literal {})", params.param("SYMLINK", link));
        }
        text.push_str(")\n");
    }

    if let Some(init) = init {
        let _ = writeln!(
            text,
            "(allow file-read* (literal {}))",
            params.param("INIT", init)
        );
    }

    for rule in &plan.rules {
        if rule.access == Access::Hidden {
            continue;
        }
        let mut region = vec![format!(
            "(subpath {})",
            params.param(kind(rule.access), &rule.path)
        )];
        for inner in plan
            .rules
            .iter()
            .filter(|inner| inner.path != rule.path && inner.path.starts_with(&rule.path))
        {
            let kind = match inner.access {
                Access::Hidden => "DENIED",
                Access::ReadOnly => "READ_ONLY",
                Access::ReadWrite => "WRITABLE",
            };
            region.push(format!(
                "(require-not (subpath {}))",
                params.param(kind, &inner.path)
            ));
        }
        let _ = writeln!(
            text,
            "(allow file-read* (require-all {}))",
            region.join(" ")
        );
        if rule.access == Access::ReadWrite {
            for pinned in plan
                .pinned
                .iter()
                .filter(|p| p.path.starts_with(&rule.path))
            {
                region.push(format!(
                    "(require-not (literal {}))",
                    params.param("PINNED", &pinned.path)
                ));
            }
            let _ = writeln!(
                text,
                "(allow file-write* (require-all {}))",
                region.join(" ")
            );
        }
    }

    if let Network::Proxy(proxy) = &policy.network {
        // The only way out: the node's egress proxy on its loopback port.
        let _ = writeln!(
            text,
            "(allow network-outbound (remote ip \"localhost:{}\"))",
            proxy.port
        );
    }
    Profile {
        text,
        params: params.list,
    }
}

/// The parameter name prefix of a rule's path.
fn kind(access: Access) -> &'static str {
    match access {
        Access::Hidden => "DENIED",
        Access::ReadOnly => "READ_ONLY",
        Access::ReadWrite => "WRITABLE",
    }
}

/// The arguments of `sandbox-exec` (without the program name): the profile, its
/// parameters, then the command (`launcher` first when given, e.g. the init that
/// switches user).
pub fn arguments(
    profile: &Profile,
    launcher: &[OsString],
    program: &Path,
    args: &[String],
) -> Vec<OsString> {
    let mut out: Vec<OsString> = vec!["-p".into(), profile.text.clone().into()];
    for (name, path) in &profile.params {
        out.push("-D".into());
        let mut definition = OsString::from(format!("{name}="));
        definition.push(path.as_os_str());
        out.push(definition);
    }
    out.extend(launcher.iter().cloned());
    out.push(program.as_os_str().to_owned());
    out.extend(args.iter().map(OsString::from));
    out
}

#[cfg(test)]
pub(crate) mod sbpl {
    //! A reader for the subset of the Sandbox Profile Language the generator writes,
    //! and an evaluator answering whether a file operation on a path is allowed.

    use std::collections::BTreeMap;
    use std::path::{Path, PathBuf};

    #[derive(Clone, Debug, PartialEq)]
    pub enum Sexp {
        List(Vec<Sexp>),
        Symbol(String),
        Str(String),
        Int(i64),
    }

    pub fn parse(text: &str) -> Result<Vec<Sexp>, String> {
        let chars: Vec<char> = text.chars().collect();
        let mut pos = 0;
        let mut out = Vec::new();
        loop {
            skip_space(&chars, &mut pos);
            if pos >= chars.len() {
                return Ok(out);
            }
            out.push(parse_one(&chars, &mut pos)?);
        }
    }

    fn skip_space(chars: &[char], pos: &mut usize) {
        while *pos < chars.len() {
            if chars[*pos] == ';' {
                while *pos < chars.len() && chars[*pos] != '\n' {
                    *pos += 1;
                }
            } else if chars[*pos].is_whitespace() {
                *pos += 1;
            } else {
                return;
            }
        }
    }

    fn parse_one(chars: &[char], pos: &mut usize) -> Result<Sexp, String> {
        skip_space(chars, pos);
        match chars.get(*pos) {
            None => Err("unexpected end".into()),
            Some('(') => {
                *pos += 1;
                let mut items = Vec::new();
                loop {
                    skip_space(chars, pos);
                    match chars.get(*pos) {
                        None => return Err("unclosed list".into()),
                        Some(')') => {
                            *pos += 1;
                            return Ok(Sexp::List(items));
                        }
                        Some(_) => items.push(parse_one(chars, pos)?),
                    }
                }
            }
            Some(')') => Err(format!("unexpected ) at {pos}")),
            Some('"') => {
                *pos += 1;
                let mut s = String::new();
                loop {
                    match chars.get(*pos) {
                        None => return Err("unclosed string".into()),
                        Some('"') => {
                            *pos += 1;
                            return Ok(Sexp::Str(s));
                        }
                        Some('\\') => {
                            s.push(*chars.get(*pos + 1).ok_or("bad escape")?);
                            *pos += 2;
                        }
                        Some(c) => {
                            s.push(*c);
                            *pos += 1;
                        }
                    }
                }
            }
            Some(_) => {
                let start = *pos;
                while *pos < chars.len()
                    && !chars[*pos].is_whitespace()
                    && chars[*pos] != '('
                    && chars[*pos] != ')'
                {
                    *pos += 1;
                }
                let atom: String = chars[start..*pos].iter().collect();
                Ok(atom.parse().map(Sexp::Int).unwrap_or(Sexp::Symbol(atom)))
            }
        }
    }

    /// A parsed profile with its parameters bound.
    pub struct Evaluator {
        pub forms: Vec<Sexp>,
        pub params: BTreeMap<String, PathBuf>,
    }

    impl Evaluator {
        pub fn new(text: &str, params: &[(String, PathBuf)]) -> Result<Self, String> {
            Ok(Self {
                forms: parse(text)?,
                params: params.iter().cloned().collect(),
            })
        }

        /// Whether `operation` (e.g. `file-read-data`) on `path` is allowed. Only
        /// `(deny default)` may deny; anything else is an `allow`.
        pub fn allows(&self, operation: &str, path: &Path) -> Result<bool, String> {
            for form in &self.forms {
                let Sexp::List(items) = form else {
                    return Err(format!("top-level atom {form:?}"));
                };
                let Some(Sexp::Symbol(head)) = items.first() else {
                    return Err(format!("form without head {form:?}"));
                };
                match head.as_str() {
                    "version" => {}
                    "deny" => {
                        if items.get(1..) != Some(&[Sexp::Symbol("default".into())][..]) {
                            return Err(format!("a deny other than default: {form:?}"));
                        }
                    }
                    "allow" => {
                        let mut ops = Vec::new();
                        let mut filters = Vec::new();
                        for item in &items[1..] {
                            match item {
                                Sexp::Symbol(op) => ops.push(op.as_str()),
                                Sexp::List(_) => filters.push(item),
                                other => return Err(format!("odd allow item {other:?}")),
                            }
                        }
                        if !ops.iter().any(|op| op_covers(op, operation)) {
                            continue;
                        }
                        if filters.is_empty() {
                            return Ok(true);
                        }
                        for filter in filters {
                            if self.matches(filter, path)? {
                                return Ok(true);
                            }
                        }
                    }
                    other => return Err(format!("unknown form {other}")),
                }
            }
            Ok(false)
        }

        fn matches(&self, filter: &Sexp, path: &Path) -> Result<bool, String> {
            let Sexp::List(items) = filter else {
                return Err(format!("filter is not a list: {filter:?}"));
            };
            let Some(Sexp::Symbol(head)) = items.first() else {
                return Err(format!("filter without head {filter:?}"));
            };
            let args = &items[1..];
            match head.as_str() {
                "subpath" => Ok(path.starts_with(self.string(single(args)?)?)),
                "literal" => Ok(path == Path::new(&self.string(single(args)?)?)),
                "require-all" => {
                    for arg in args {
                        if !self.matches(arg, path)? {
                            return Ok(false);
                        }
                    }
                    Ok(true)
                }
                "require-any" => {
                    for arg in args {
                        if self.matches(arg, path)? {
                            return Ok(true);
                        }
                    }
                    Ok(false)
                }
                "require-not" => Ok(!self.matches(single(args)?, path)?),
                // Filters on something other than a file path never match a file.
                "global-name" | "target" | "remote" | "local" => Ok(false),
                other => Err(format!("unknown filter {other}")),
            }
        }

        pub fn string(&self, expr: &Sexp) -> Result<String, String> {
            match expr {
                Sexp::Str(s) => Ok(s.clone()),
                Sexp::List(items) => match items.as_slice() {
                    [Sexp::Symbol(head), Sexp::Str(name)] if head == "param" => self
                        .params
                        .get(name)
                        .map(|p| p.to_string_lossy().into_owned())
                        .ok_or_else(|| format!("undefined parameter {name}")),
                    [Sexp::Symbol(head), rest @ ..] if head == "string-append" => {
                        let mut out = String::new();
                        for part in rest {
                            out.push_str(&self.string(part)?);
                        }
                        Ok(out)
                    }
                    _ => Err(format!("not a string expression {expr:?}")),
                },
                other => Err(format!("not a string {other:?}")),
            }
        }
    }

    fn single(args: &[Sexp]) -> Result<&Sexp, String> {
        match args {
            [one] => Ok(one),
            _ => Err(format!("expected one argument, got {args:?}")),
        }
    }

    /// Whether the operation named in a rule covers a concrete operation
    /// (`file-read*` covers `file-read-data`).
    fn op_covers(rule_op: &str, operation: &str) -> bool {
        match rule_op.strip_suffix('*') {
            Some(prefix) => operation.starts_with(prefix),
            None => rule_op == operation,
        }
    }

    /// Every string literal anywhere in the forms.
    pub fn string_literals(forms: &[Sexp], out: &mut Vec<String>) {
        for form in forms {
            match form {
                Sexp::Str(s) => out.push(s.clone()),
                Sexp::List(items) => string_literals(items, out),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sbpl::{Evaluator, Sexp, string_literals};
    use super::*;
    use crate::bwrap::simulation::Simulation;
    use crate::plan::Plan;
    use std::collections::BTreeSet;

    fn evaluator(profile: &Profile) -> Evaluator {
        Evaluator::new(&profile.text, &profile.params).expect("the profile parses")
    }

    /// What the profile allows on the content at `path` (for a pinned folder, whose
    /// own node is not writable by design, on what is inside it).
    fn access(evaluator: &Evaluator, plan: &Plan, path: &Path) -> Access {
        let inside = path.join("inside");
        let write_path = if plan.is_pinned(path) { &inside } else { path };
        let allowed = |op: &str| evaluator.allows(op, path).expect("evaluates");
        let writable = |op: &str| evaluator.allows(op, write_path).expect("evaluates");
        if writable("file-write-create") && writable("file-write-data") {
            Access::ReadWrite
        } else if allowed("file-read-data") {
            Access::ReadOnly
        } else {
            Access::Hidden
        }
    }

    fn fixture() -> (tempfile::TempDir, SandboxPolicy, Plan) {
        let fixture = crate::bwrap::tests_support::fixture();
        let plan = Plan::resolve(&fixture.policy).expect("plan");
        (fixture.root, fixture.policy, plan)
    }

    #[test]
    fn the_profile_denies_by_default_and_pastes_no_path() {
        let (_root, policy, plan) = fixture();
        let profile = profile(&plan, &policy, Some(Path::new("/opt/paddock/init")));
        let forms = sbpl::parse(&profile.text).expect("parses");
        assert_eq!(
            forms.get(1),
            Some(&Sexp::List(vec![
                Sexp::Symbol("deny".into()),
                Sexp::Symbol("default".into())
            ]))
        );
        let mut literals = Vec::new();
        string_literals(&forms, &mut literals);
        let pasted: Vec<_> = literals.iter().filter(|s| s.contains('/')).collect();
        assert!(pasted.is_empty(), "paths in the profile text: {pasted:?}");
        for (_, path) in &profile.params {
            assert!(
                !profile.text.contains(path.to_string_lossy().as_ref()),
                "{} pasted",
                path.display()
            );
        }
        // Every parameter is defined exactly once and used.
        let names: BTreeSet<_> = profile.params.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(names.len(), profile.params.len());
        for name in &names {
            assert!(
                profile.text.contains(&format!("(param \"{name}\")")),
                "{name} unused"
            );
        }
        assert!(profile.text.contains("(remote ip \"localhost:3128\")"));
    }

    #[test]
    fn the_profile_allows_exactly_what_the_plan_allows() {
        let (_root, policy, plan) = fixture();
        let profile = profile(&plan, &policy, None);
        let evaluator = evaluator(&profile);
        for path in crate::bwrap::tests_support::probe_paths(&plan) {
            assert_eq!(
                access(&evaluator, &plan, &path),
                plan.access(&path),
                "{}",
                path.display()
            );
        }
        // Pinned folders: their contents are writable, their own node is not.
        for pinned in &plan.pinned {
            let unlink = evaluator
                .allows("file-write-unlink", &pinned.path)
                .expect("evaluates");
            assert!(!unlink, "{} can be renamed", pinned.path.display());
            if plan.access(&pinned.path.join("x")) == Access::ReadWrite {
                assert!(
                    evaluator
                        .allows("file-write-create", &pinned.path.join("x"))
                        .expect("evaluates")
                );
            }
        }
        // Metadata of the folders above a rule is readable, their listing is not.
        let root = Path::new("/");
        assert!(
            evaluator
                .allows("file-read-metadata", root)
                .expect("evaluates")
        );
        assert!(!evaluator.allows("file-read-data", root).expect("evaluates"));
    }

    /// The brief's check: the same paths in the same read-write, read-only and denied
    /// sets in the profile and on the bubblewrap command line.
    #[test]
    fn the_profile_and_the_bwrap_command_line_have_the_same_rule_sets() {
        let (_root, policy, plan) = fixture();
        let profile = profile(&plan, &policy, None);
        let evaluator = evaluator(&profile);
        let args = crate::bwrap::tests_support::arguments_for(&plan, &policy);
        let simulation = Simulation::parse(&args);

        let mut from_bwrap: BTreeMap<PathBuf, Access> = BTreeMap::new();
        let mut from_seatbelt: BTreeMap<PathBuf, Access> = BTreeMap::new();
        for rule in plan.rules.iter().filter(|r| r.exists) {
            let visible_parent = plan
                .parent_rule(&rule.path)
                .is_some_and(|p| p.access != Access::Hidden);
            if rule.access == Access::Hidden && !visible_parent {
                continue; // nothing to hide: neither back end mentions it
            }
            from_bwrap.insert(rule.path.clone(), simulation.access(&rule.path));
            from_seatbelt.insert(rule.path.clone(), access(&evaluator, &plan, &rule.path));
        }
        assert_eq!(from_bwrap, from_seatbelt);
        let set = |access: Access| -> BTreeSet<&PathBuf> {
            from_bwrap
                .iter()
                .filter(|(_, a)| **a == access)
                .map(|(p, _)| p)
                .collect()
        };
        assert_eq!(set(Access::ReadWrite).len(), 3, "workspace, temp, home");
        assert!(!set(Access::Hidden).is_empty());
        assert!(!set(Access::ReadOnly).is_empty());

        // And the parameters are exactly the plan's paths plus fixed devices and the
        // folders above them.
        let declared: BTreeSet<PathBuf> = profile.params.iter().map(|(_, p)| p.clone()).collect();
        for rule in plan.rules.iter().filter(|r| r.access != Access::Hidden) {
            assert!(
                declared.contains(&rule.path),
                "{} missing",
                rule.path.display()
            );
        }
    }

    #[test]
    fn sandbox_exec_gets_the_profile_and_parameters_before_the_command() {
        let (_root, policy, plan) = fixture();
        let profile = profile(&plan, &policy, None);
        let args = arguments(&profile, &[], Path::new("/usr/bin/true"), &["x".to_owned()]);
        assert_eq!(args[0], "-p");
        assert_eq!(args[2], "-D");
        let tail: Vec<_> = args.iter().rev().take(2).collect();
        assert_eq!(
            tail,
            [&OsString::from("x"), &OsString::from("/usr/bin/true")]
        );
        assert_eq!(args.len(), 2 + 2 * profile.params.len() + 2);
    }

    #[test]
    fn the_reader_rejects_what_it_does_not_understand() {
        assert!(sbpl::parse("(allow").is_err());
        let evaluator = Evaluator::new("(deny file-read* (subpath \"/x\"))", &[]).expect("parses");
        assert!(evaluator.allows("file-read-data", Path::new("/x")).is_err());
    }
}
