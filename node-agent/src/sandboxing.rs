//! Starting the sandbox at node start, failing closed: the back end is probed once; a
//! node whose sandbox does not work claims no job (and says why in its logs and its
//! readiness) unless the operator set `sandbox.mode = "off"`. The egress proxy's base
//! rules get the model API's address when it is a local double (loopback is otherwise
//! refused), and every policy may read the agent's install folder.

use paddock_actors::agent::SandboxContext;
use paddock_sandbox::proxy::ProxyConfig;
use paddock_sandbox::{SandboxSettings, SandboxStatus};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What came of starting the sandbox.
pub struct SandboxStart {
    /// The context every job runs in; `None` when disabled or unavailable.
    pub context: Option<Arc<SandboxContext>>,
    /// Whether the node may claim jobs.
    pub may_run_jobs: bool,
    /// For the logs and the readiness endpoint.
    pub description: String,
}

/// Probes the configured back end (blocking work runs off the async threads).
pub async fn start(
    settings: &SandboxSettings,
    proxy: &ProxyConfig,
    program: &Path,
    model_api: Option<&str>,
) -> SandboxStart {
    let probe_settings = settings.clone();
    let status = match tokio::task::spawn_blocking(move || {
        paddock_sandbox::settings::start(&probe_settings)
    })
    .await
    {
        Ok(status) => status,
        Err(e) => SandboxStatus::Unavailable {
            reason: format!("the sandbox probe panicked: {e}"),
        },
    };
    let description = status.describe();
    let may_run_jobs = status.may_run_jobs();
    let context = status.sandbox().cloned().map(|sandbox| {
        let mut proxy = proxy.clone();
        if let Some(address) = model_api.and_then(loopback_address) {
            proxy.loopback_exceptions.push(address);
        }
        Arc::new(SandboxContext {
            sandbox,
            settings: settings.clone(),
            proxy,
            read_only: install_folders(program),
        })
    });
    SandboxStart {
        context,
        may_run_jobs,
        description,
    }
}

/// `http://127.0.0.1:8080/…` (or `localhost`) → that loopback address; anything else
/// → `None`. No name is looked up.
fn loopback_address(url: &str) -> Option<SocketAddr> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host_port = rest.split('/').next()?;
    let default_port = if url.starts_with("https") { 443 } else { 80 };
    let (host, port) = match host_port.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || host_port.ends_with(']') => {
            (host, port.parse().ok()?)
        }
        _ => (host_port, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = if host == "localhost" {
        IpAddr::from([127, 0, 0, 1])
    } else {
        host.parse().ok()?
    };
    ip.is_loopback().then_some(SocketAddr::new(ip, port))
}

/// The folders the agent's executable needs to read: its own folder and, for an npm
/// install, the `node_modules` tree it lives in.
fn install_folders(program: &Path) -> Vec<PathBuf> {
    let mut folders = Vec::new();
    for path in [
        program.to_path_buf(),
        program.canonicalize().unwrap_or_default(),
    ] {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            folders.push(parent.to_path_buf());
        }
        if let Some(modules) = path
            .ancestors()
            .find(|a| a.file_name().is_some_and(|n| n == "node_modules"))
        {
            folders.push(modules.to_path_buf());
        }
    }
    folders.sort();
    folders.dedup();
    folders
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_model_double_is_let_through_the_proxy() {
        assert_eq!(
            loopback_address("http://127.0.0.1:8123"),
            Some("127.0.0.1:8123".parse().expect("address"))
        );
        assert_eq!(loopback_address("https://api.anthropic.com"), None);
    }

    #[test]
    fn the_install_tree_of_an_npm_package_is_readable() {
        let folders = install_folders(Path::new("/opt/x/node_modules/@a/b/bin/claude"));
        assert!(folders.contains(&PathBuf::from("/opt/x/node_modules")));
        assert!(folders.contains(&PathBuf::from("/opt/x/node_modules/@a/b/bin")));
    }
}
