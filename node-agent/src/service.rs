//! Installing the node agent as a system service: a systemd unit on Linux, a launchd
//! daemon on macOS, both rendered from the templates in `ops/` (embedded at build
//! time) with this machine's paths, user and credential file. `print` shows what
//! `install` would write; `install` writes it and loads it with the service manager.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

const SYSTEMD_TEMPLATE: &str = include_str!("../../ops/systemd/paddock-node.service");
const LAUNCHD_TEMPLATE: &str = include_str!("../../ops/launchd/dev.paddock.node.plist");

/// Which service manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Platform {
    Systemd,
    Launchd,
}

impl Platform {
    /// The service manager of the machine this runs on.
    pub fn current() -> Platform {
        if cfg!(target_os = "macos") {
            Platform::Launchd
        } else {
            Platform::Systemd
        }
    }

    /// Where `install` writes the service file.
    pub fn service_file(self) -> PathBuf {
        match self {
            Platform::Systemd => "/etc/systemd/system/paddock-node.service".into(),
            Platform::Launchd => "/Library/LaunchDaemons/dev.paddock.node.plist".into(),
        }
    }
}

/// What the service file is made from.
#[derive(Clone, Debug)]
pub struct ServiceParams {
    pub binary: PathBuf,
    pub config: PathBuf,
    /// The dedicated, unprivileged user the agent runs as.
    pub user: String,
    pub group: String,
    /// A root-only file holding the model credential.
    pub credential_file: PathBuf,
    pub log_dir: PathBuf,
    /// Seconds the service manager waits after SIGTERM (the drain grace plus margin).
    pub stop_timeout_secs: u64,
}

/// The service file for `platform`.
pub fn render(platform: Platform, params: &ServiceParams) -> String {
    let (template, escape): (&str, fn(&str) -> String) = match platform {
        Platform::Systemd => (SYSTEMD_TEMPLATE, |s| s.replace('%', "%%")),
        Platform::Launchd => (LAUNCHD_TEMPLATE, xml_escape),
    };
    let path = |p: &Path| escape(&p.display().to_string());
    template
        .replace("{{BINARY}}", &path(&params.binary))
        .replace("{{CONFIG}}", &path(&params.config))
        .replace("{{USER}}", &escape(&params.user))
        .replace("{{GROUP}}", &escape(&params.group))
        .replace("{{CREDENTIAL_FILE}}", &path(&params.credential_file))
        .replace("{{LOG_DIR}}", &path(&params.log_dir))
        .replace("{{DOCS}}", &path(&params.config))
        .replace("{{STOP_TIMEOUT}}", &params.stop_timeout_secs.to_string())
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Writes the service file and loads it with the service manager.
pub fn install(platform: Platform, params: &ServiceParams) -> anyhow::Result<PathBuf> {
    if params.user == "root" {
        bail!("--user: the agent must run as an unprivileged user, not root");
    }
    check_credential_file(&params.credential_file)?;
    let target = platform.service_file();
    std::fs::write(&target, render(platform, params))
        .with_context(|| format!("writing {} (run as root)", target.display()))?;
    let commands: Vec<Vec<String>> = match platform {
        Platform::Systemd => vec![
            vec!["systemctl".into(), "daemon-reload".into()],
            vec![
                "systemctl".into(),
                "enable".into(),
                "--now".into(),
                "paddock-node.service".into(),
            ],
        ],
        Platform::Launchd => vec![vec![
            "launchctl".into(),
            "bootstrap".into(),
            "system".into(),
            target.display().to_string(),
        ]],
    };
    for command in commands {
        let status = std::process::Command::new(&command[0])
            .args(&command[1..])
            .status()
            .with_context(|| format!("running {}", command.join(" ")))?;
        if !status.success() {
            bail!("{} failed ({status})", command.join(" "));
        }
    }
    Ok(target)
}

/// The credential file must exist and be readable by its owner only.
pub fn check_credential_file(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let metadata =
        std::fs::metadata(path).with_context(|| format!("credential file {}", path.display()))?;
    let mode = metadata.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "credential file {} is readable by others (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
    Ok(())
}

/// Reads a credential file: `ANTHROPIC_API_KEY=…` / `CLAUDE_CODE_OAUTH_TOKEN=…` lines,
/// or the credential alone (an OAuth token from `claude setup-token` starts with
/// `sk-ant-oat`). Returns `(variable, value)`.
pub fn read_credential_file(path: &Path) -> anyhow::Result<(&'static str, String)> {
    check_credential_file(path)?;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading credential file {}", path.display()))?;
    parse_credential(&text)
        .with_context(|| format!("credential file {} holds no credential", path.display()))
}

fn parse_credential(text: &str) -> Option<(&'static str, String)> {
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if let Some(value) = line.strip_prefix("ANTHROPIC_API_KEY=") {
            return Some(("ANTHROPIC_API_KEY", value.trim().to_string()));
        }
        if let Some(value) = line.strip_prefix("CLAUDE_CODE_OAUTH_TOKEN=") {
            return Some(("CLAUDE_CODE_OAUTH_TOKEN", value.trim().to_string()));
        }
        if !line.contains('=') {
            let name = if line.starts_with("sk-ant-oat") {
                "CLAUDE_CODE_OAUTH_TOKEN"
            } else {
                "ANTHROPIC_API_KEY"
            };
            return Some((name, line.to_string()));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ServiceParams {
        ServiceParams {
            binary: "/usr/local/bin/paddock-node".into(),
            config: "/etc/paddock/node.toml".into(),
            user: "_paddock".into(),
            group: "_paddock".into(),
            credential_file: "/etc/paddock/credential".into(),
            log_dir: "/var/log/paddock".into(),
            stop_timeout_secs: 60,
        }
    }

    #[test]
    fn the_systemd_unit_restarts_on_failure_with_hardening() {
        let unit = render(Platform::Systemd, &params());
        assert!(!unit.contains("{{"), "every placeholder is filled: {unit}");
        let keys: Vec<(&str, &str)> = unit
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('='))
            .collect();
        let get = |key: &str| keys.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        assert_eq!(get("Restart"), Some("on-failure"));
        assert_eq!(get("User"), Some("_paddock"));
        assert_eq!(
            get("ExecStart"),
            Some("/usr/local/bin/paddock-node --config /etc/paddock/node.toml")
        );
        assert_eq!(
            get("LoadCredential"),
            Some("model-credential:/etc/paddock/credential")
        );
        assert_eq!(get("KillSignal"), Some("SIGTERM"));
        assert_eq!(get("TimeoutStopSec"), Some("60"));
        for hardening in [
            "PrivateTmp",
            "ProtectSystem",
            "ProtectKernelModules",
            "RestrictSUIDSGID",
        ] {
            assert!(get(hardening).is_some(), "{hardening}");
        }
        assert!(unit.contains("[Install]\nWantedBy=multi-user.target"));
    }

    #[test]
    fn the_launchd_plist_parses_and_keeps_the_agent_alive() {
        let text = render(Platform::Launchd, &params());
        let value: plist::Value = plist::from_bytes(text.as_bytes()).expect("a valid plist");
        let dict = value.as_dictionary().expect("a dictionary");
        assert_eq!(
            dict.get("Label").and_then(|v| v.as_string()),
            Some("dev.paddock.node")
        );
        assert_eq!(
            dict.get("UserName").and_then(|v| v.as_string()),
            Some("_paddock")
        );
        let args: Vec<&str> = dict
            .get("ProgramArguments")
            .and_then(|v| v.as_array())
            .expect("arguments")
            .iter()
            .filter_map(|v| v.as_string())
            .collect();
        assert_eq!(
            args,
            [
                "/usr/local/bin/paddock-node",
                "--config",
                "/etc/paddock/node.toml"
            ]
        );
        let keep_alive = dict
            .get("KeepAlive")
            .and_then(|v| v.as_dictionary())
            .expect("KeepAlive");
        assert_eq!(
            keep_alive
                .get("SuccessfulExit")
                .and_then(|v| v.as_boolean()),
            Some(false)
        );
        assert!(dict.get("ThrottleInterval").is_some());
        assert!(dict.get("StandardOutPath").is_some());
        // No resource limits in a system daemon: they would change kernel-wide limits.
        assert!(dict.get("SoftResourceLimits").is_none());
        assert!(dict.get("HardResourceLimits").is_none());
        let env = dict
            .get("EnvironmentVariables")
            .and_then(|v| v.as_dictionary())
            .expect("env");
        assert_eq!(
            env.get("PADDOCK_NODE_CREDENTIAL_FILE")
                .and_then(|v| v.as_string()),
            Some("/etc/paddock/credential")
        );
    }

    #[test]
    fn values_are_escaped_for_the_plist() {
        let mut p = params();
        p.config = "/etc/a&b<c>.toml".into();
        let text = render(Platform::Launchd, &p);
        let value: plist::Value = plist::from_bytes(text.as_bytes()).expect("still valid");
        let args = value
            .as_dictionary()
            .and_then(|d| d.get("ProgramArguments"))
            .and_then(|v| v.as_array())
            .expect("args");
        assert_eq!(args[2].as_string(), Some("/etc/a&b<c>.toml"));
    }

    #[test]
    fn credentials_are_read_from_a_private_file_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("credential");
        std::fs::write(&file, "# the key\nANTHROPIC_API_KEY=sk-ant-api-123\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(
            read_credential_file(&file).is_err(),
            "a world-readable file is refused"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        assert_eq!(
            read_credential_file(&file).expect("read"),
            ("ANTHROPIC_API_KEY", "sk-ant-api-123".to_string())
        );
        assert_eq!(
            parse_credential("sk-ant-oat01-xyz\n"),
            Some(("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat01-xyz".to_string()))
        );
        assert_eq!(parse_credential("# nothing\n"), None);
    }
}
