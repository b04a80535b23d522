//! `paddock-node join`: makes this machine a node of the paddock with one command.
//! It presents a join token (from `paddock nodes token create`) to the coordinator's
//! join endpoint, which answers with the node's own NATS credential (an nkey seed),
//! its name, pool and labels, and where NATS is. This writes the node's config file
//! (the usual `NodeConfig` TOML; add `[agent]` and `[[projects]]` to it) and, beside
//! it, the seed in a file only its owner may read (0600), which `nats.nkey_seed_file`
//! names. An existing config is never overwritten without `--force`.
//!
//! The token goes only over HTTPS, or plain HTTP to a loopback address; the seed is
//! written to its file and nowhere else (not to the terminal, not to a log).

use anyhow::{Context, bail};
use paddock_contract::api::ErrorBody;
use paddock_contract::join::{JoinAccepted, JoinRequest};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct JoinArgs {
    /// The coordinator's join endpoint: `https://coordinator.lan:7443`.
    #[arg(long)]
    pub coordinator: String,
    /// The join token (`paddock nodes token create`).
    #[arg(long, env = "PADDOCK_JOIN_TOKEN", hide_env_values = true)]
    pub token: String,
    /// A CA certificate (PEM) to verify the coordinator's certificate with, when it is
    /// not signed by a CA this system trusts.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Where to write the node's config.
    #[arg(long, value_name = "FILE", default_value = "node.toml")]
    pub config: PathBuf,
    /// Where to write the NATS credential (default: `nats-credential.nk` beside the
    /// config).
    #[arg(long, value_name = "FILE")]
    pub credential_file: Option<PathBuf>,
    /// This node's name (default: the host name).
    #[arg(long)]
    pub name: Option<String>,
    /// Overwrite an existing config and credential.
    #[arg(long)]
    pub force: bool,
}

/// What a join wrote.
#[derive(Debug)]
pub struct Joined {
    pub name: String,
    pub pool: String,
    pub config: PathBuf,
    pub credential_file: PathBuf,
}

/// Joins and writes the files. Prints nothing secret.
pub async fn join(args: &JoinArgs) -> anyhow::Result<Joined> {
    let config_path = absolute(&args.config)?;
    let credential_path = match &args.credential_file {
        Some(path) => absolute(path)?,
        None => config_path.with_file_name("nats-credential.nk"),
    };
    if !args.force {
        for path in [&config_path, &credential_path] {
            if path.exists() {
                bail!(
                    "{} exists; refusing to overwrite it (use --force to replace it)",
                    path.display()
                );
            }
        }
    }
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| crate::config::NodeConfig::default().name);
    if !paddock_contract::subjects::is_valid_token(&name) {
        bail!("--name: {name:?} must be 1-64 letters, digits, '-' or '_'");
    }
    let endpoint = join_url(&args.coordinator)?;
    let accepted = request_join(args, &endpoint, &name).await?;

    if let Some(folder) = config_path.parent() {
        std::fs::create_dir_all(folder)
            .with_context(|| format!("cannot create {}", folder.display()))?;
    }
    write_private(
        &credential_path,
        &format!("{}\n", accepted.nkey_seed),
        args.force,
    )?;
    let ca_path = match &accepted.nats_ca_certificate {
        Some(pem) => {
            let path = config_path.with_file_name("nats-ca.pem");
            std::fs::write(&path, pem)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Some(path)
        }
        None => None,
    };
    let text = render_config(&accepted, &credential_path, ca_path.as_deref());
    std::fs::write(&config_path, text)
        .with_context(|| format!("cannot write {}", config_path.display()))?;
    Ok(Joined {
        name: accepted.name,
        pool: accepted.pool,
        config: config_path,
        credential_file: credential_path,
    })
}

/// `https://host:port` → `https://host:port/v1/join`, refusing plain HTTP to any host
/// but this one (the token would cross the network in clear).
fn join_url(coordinator: &str) -> anyhow::Result<reqwest::Url> {
    let base = reqwest::Url::parse(coordinator)
        .with_context(|| format!("--coordinator: {coordinator:?} is not a URL"))?;
    match base.scheme() {
        "https" => {}
        "http" => {
            let host = base.host_str().unwrap_or_default();
            let loopback = host == "localhost"
                || host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                bail!(
                    "--coordinator: {coordinator} is plain HTTP to another machine; the join token must go over https://"
                );
            }
        }
        other => bail!("--coordinator: the scheme {other:?} is neither https nor http"),
    }
    base.join("/v1/join")
        .with_context(|| format!("--coordinator: {coordinator:?}"))
}

async fn request_join(
    args: &JoinArgs,
    endpoint: &reqwest::Url,
    name: &str,
) -> anyhow::Result<JoinAccepted> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("paddock-node/", env!("CARGO_PKG_VERSION")))
        .timeout(Duration::from_secs(60));
    if let Some(file) = &args.ca_cert {
        let pem = std::fs::read(file)
            .with_context(|| format!("--ca-cert: cannot read {}", file.display()))?;
        let certificate = reqwest::Certificate::from_pem(&pem)
            .with_context(|| format!("--ca-cert: {} is not a PEM certificate", file.display()))?;
        builder = builder.add_root_certificate(certificate);
    }
    let http = builder.build().context("building the HTTP client")?;
    let request = JoinRequest {
        token: args.token.trim().to_string(),
        name: name.to_string(),
        version: Some(env!("CARGO_PKG_VERSION").to_string()),
    };
    let response = http
        .post(endpoint.clone())
        .json(&request)
        .send()
        .await
        .with_context(|| format!("cannot reach the coordinator at {endpoint}"))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .context("reading the coordinator's answer")?;
    if status.is_success() {
        return serde_json::from_slice(&body)
            .context("the coordinator's answer is not a join answer");
    }
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(error) => bail!(
            "the coordinator refused to join {name}: {status} ({}): {}",
            error.error.code,
            error.error.message
        ),
        Err(_) => bail!(
            "the coordinator refused to join {name}: {status}: {}",
            String::from_utf8_lossy(&body)
        ),
    }
}

/// The node's config file for a join's answer.
pub fn render_config(accepted: &JoinAccepted, credential: &Path, ca: Option<&Path>) -> String {
    let quote = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    let labels: Vec<String> = accepted
        .labels
        .iter()
        .map(|(key, value)| format!("{} = {}", quote(key), quote(value)))
        .collect();
    let mut text = format!(
        "# Written by `paddock-node join`: this machine joined the paddock as {name}.\n\
         # Add [agent] (the model credential) and [[projects]] below, then start\n\
         # `paddock-node --config` with this file. The NATS credential is in\n\
         # nats.nkey_seed_file, readable by its owner only.\n\
         name = {}\npool = {}\nlabels = {{ {} }}\n\n[nats]\nurl = {}\nnkey_seed_file = {}\n",
        quote(&accepted.name),
        quote(&accepted.pool),
        labels.join(", "),
        quote(&accepted.nats_url),
        quote(&credential.display().to_string()),
        name = accepted.name,
    );
    if let Some(ca) = ca {
        text.push_str(&format!(
            "tls_root_certificate = {}\n",
            quote(&ca.display().to_string())
        ));
    }
    if accepted.nats_tls_required {
        text.push_str("tls_required = true\n");
    }
    text.push_str(&format!(
        "\n[streams]\nreplicas = {}\n",
        accepted.stream_replicas
    ));
    text
}

/// Writes `text` to a new file only its owner may read and write.
fn write_private(path: &Path, text: &str, replace: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if replace && path.exists() {
        std::fs::remove_file(path).with_context(|| format!("cannot replace {}", path.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(text.as_bytes())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn accepted() -> JoinAccepted {
        JoinAccepted {
            name: "mini-1".into(),
            pool: "builders".into(),
            labels: BTreeMap::from([("xcode".into(), "16.2".into())]),
            nats_url: "tls://nats.lan:4222".into(),
            nkey_seed: "SUSECRETSEED".into(),
            public_key: "UPUBLIC".into(),
            nats_ca_certificate: None,
            nats_tls_required: true,
            stream_replicas: 3,
        }
    }

    #[test]
    fn the_written_config_loads_and_holds_no_secret() {
        let dir = tempfile::tempdir().expect("tempdir");
        let credential = dir.path().join("nats-credential.nk");
        let text = render_config(&accepted(), &credential, Some(&dir.path().join("ca.pem")));
        assert!(!text.contains("SUSECRETSEED"), "{text}");
        let file = dir.path().join("node.toml");
        std::fs::write(&file, text).expect("write");
        let config = crate::config::NodeConfig::load(Some(&file)).expect("loads");
        assert_eq!(config.name, "mini-1");
        assert_eq!(config.pool, "builders");
        assert_eq!(config.labels.get("xcode").map(String::as_str), Some("16.2"));
        assert_eq!(
            config.nats.nkey_seed_file.as_deref(),
            Some(credential.as_path())
        );
        assert!(config.nats.tls_required);
        assert_eq!(config.streams.replicas, 3);
        assert!(!format!("{:?}", accepted()).contains("SUSECRETSEED"));
    }

    #[test]
    fn plain_http_is_refused_except_to_this_machine() {
        assert!(join_url("https://coordinator.lan:7443").is_ok());
        assert_eq!(
            join_url("http://127.0.0.1:7443")
                .expect("loopback")
                .as_str(),
            "http://127.0.0.1:7443/v1/join"
        );
        assert!(join_url("http://localhost:7443").is_ok());
        let refused = join_url("http://coordinator.lan:7443").expect_err("refused");
        assert!(refused.to_string().contains("https"), "{refused}");
        assert!(join_url("ftp://x").is_err());
    }

    #[test]
    fn the_credential_file_is_private_and_never_overwritten_silently() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("seed.nk");
        write_private(&file, "SUONE\n", false).expect("write");
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(write_private(&file, "SUTWO\n", false).is_err());
        write_private(&file, "SUTWO\n", true).expect("replace");
        assert_eq!(std::fs::read_to_string(&file).expect("read"), "SUTWO\n");
    }
}
