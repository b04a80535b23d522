//! Connecting to NATS, with the checks every service makes at start: the server is
//! 2.10 or newer and JetStream answers. A failure names the URL and what to do.

use crate::{BusError, parse_version};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How a service reaches NATS. Shared by every binary's config (`[nats]`).
///
/// Credentials, at most one kind: a `.creds` file (JWT + nkey seed), an nkey seed file
/// (what `paddock-node join` writes), a user with a password (inline or, better, from a
/// file), or a token from a file. Secrets are read from their files at connect and
/// never logged: `Debug` shows file paths and hides inline values.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSettings {
    /// One URL or several, comma separated (a cluster).
    pub url: String,
    /// A `.creds` file (JWT + nkey seed) issued for this service or node.
    pub credentials_file: Option<PathBuf>,
    /// A file holding an nkey seed (`SU…`), readable by its owner only.
    pub nkey_seed_file: Option<PathBuf>,
    /// Plain user and password, for a server configured with them. Prefer
    /// `password_file` to an inline password.
    pub user: Option<String>,
    pub password: Option<String>,
    pub password_file: Option<PathBuf>,
    /// A file holding the server's authorization token.
    pub token_file: Option<PathBuf>,
    /// Extra root certificate (PEM) for a NATS server with TLS from a private CA.
    pub tls_root_certificate: Option<PathBuf>,
    /// Client certificate and key (PEM) for a server that verifies clients.
    pub tls_client_certificate: Option<PathBuf>,
    pub tls_client_key: Option<PathBuf>,
    /// Require TLS even for a URL that does not say `tls://`.
    pub tls_required: bool,
}

impl std::fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSettings")
            .field("url", &self.url)
            .field("credentials_file", &self.credentials_file)
            .field("nkey_seed_file", &self.nkey_seed_file)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("password_file", &self.password_file)
            .field("token_file", &self.token_file)
            .field("tls_root_certificate", &self.tls_root_certificate)
            .field("tls_client_certificate", &self.tls_client_certificate)
            .field("tls_client_key", &self.tls_client_key)
            .field("tls_required", &self.tls_required)
            .finish()
    }
}

impl Default for NatsSettings {
    fn default() -> Self {
        NatsSettings {
            url: "nats://127.0.0.1:4222".into(),
            credentials_file: None,
            nkey_seed_file: None,
            user: None,
            password: None,
            password_file: None,
            token_file: None,
            tls_root_certificate: None,
            tls_client_certificate: None,
            tls_client_key: None,
            tls_required: false,
        }
    }
}

impl NatsSettings {
    /// What cannot work, each problem naming its key under `section` (`nats`).
    pub fn problems(&self, section: &str) -> Vec<String> {
        let mut problems = Vec::new();
        if self.url.trim().is_empty() {
            problems.push(format!("{section}.url: is empty"));
        }
        let has_password = self.password.is_some() || self.password_file.is_some();
        if self.user.is_some() != has_password {
            problems.push(format!(
                "{section}.user: {section}.user and {section}.password (or password_file) go together"
            ));
        }
        if self.password.is_some() && self.password_file.is_some() {
            problems.push(format!(
                "{section}.password: give password or password_file, not both"
            ));
        }
        let kinds = [
            self.credentials_file.is_some(),
            self.nkey_seed_file.is_some(),
            self.user.is_some(),
            self.token_file.is_some(),
        ];
        if kinds.iter().filter(|set| **set).count() > 1 {
            problems.push(format!(
                "{section}: use one of credentials_file, nkey_seed_file, user/password and token_file"
            ));
        }
        if self.tls_client_certificate.is_some() != self.tls_client_key.is_some() {
            problems.push(format!(
                "{section}.tls_client_certificate: tls_client_certificate and tls_client_key go together"
            ));
        }
        problems
    }

    /// A copy safe to print: an inline password becomes `***`.
    pub fn redacted(&self) -> NatsSettings {
        let mut shown = self.clone();
        if shown.password.is_some() {
            shown.password = Some("***".into());
        }
        shown
    }

    /// The connect options for these credentials and TLS settings (reads the secret
    /// files; an error names the file, never its content).
    async fn options(&self) -> Result<async_nats::ConnectOptions, BusError> {
        let refused = |what: String| BusError::Connect {
            url: self.url.clone(),
            source: async_nats::ConnectError::with_source(
                async_nats::ConnectErrorKind::Authentication,
                std::io::Error::other(what),
            ),
        };
        let mut options = if let Some(path) = &self.credentials_file {
            async_nats::ConnectOptions::with_credentials_file(path.clone())
                .await
                .map_err(|e| refused(format!("credentials_file {}: {e}", path.display())))?
        } else if let Some(path) = &self.nkey_seed_file {
            let seed = read_nkey_seed(path).map_err(refused)?;
            async_nats::ConnectOptions::with_nkey(seed)
        } else if let Some(path) = &self.token_file {
            let token = read_secret(path, "token_file").map_err(refused)?;
            async_nats::ConnectOptions::with_token(token)
        } else {
            async_nats::ConnectOptions::new()
        };
        if let Some(user) = &self.user {
            let password = match (&self.password, &self.password_file) {
                (Some(password), _) => password.clone(),
                (None, Some(path)) => read_secret(path, "password_file").map_err(refused)?,
                (None, None) => String::new(),
            };
            options = options.user_and_password(user.clone(), password);
        }
        if let Some(root) = &self.tls_root_certificate {
            options = options.add_root_certificates(root.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_client_certificate, &self.tls_client_key) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.tls_required {
            options = options.require_tls(true);
        }
        Ok(options)
    }
}

/// A secret from a file, without surrounding whitespace.
fn read_secret(path: &Path, key: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{key} {}: cannot read it: {e}", path.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(format!("{key} {} is empty", path.display()));
    }
    Ok(secret.to_string())
}

/// The nkey seed in `path`: the first line that looks like a user seed (`SU…`), so a
/// file with comments works too.
fn read_nkey_seed(path: &Path) -> Result<String, String> {
    let text = read_secret(path, "nkey_seed_file")?;
    text.lines()
        .map(str::trim)
        .find(|line| line.starts_with("SU"))
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "nkey_seed_file {} holds no user seed (a line starting with SU)",
                path.display()
            )
        })
}

/// Connects, then checks the server version and that JetStream is on.
/// `name` shows in the server's connection list (`paddock-node mini-1`, …).
pub async fn connect(settings: &NatsSettings, name: &str) -> Result<async_nats::Client, BusError> {
    // The last connection error, so that a refused connection says why (an
    // authorization violation) instead of only timing out.
    let last_error = std::sync::Arc::new(std::sync::Mutex::new(None::<String>));
    let noted = last_error.clone();
    let options = settings
        .options()
        .await?
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .event_callback(move |event| {
            let last_error = noted.clone();
            async move {
                if matches!(
                    event,
                    async_nats::Event::ClientError(_) | async_nats::Event::ServerError(_)
                ) && let Ok(mut slot) = last_error.lock()
                {
                    *slot = Some(event.to_string());
                }
                tracing::info!(%event, "nats connection event");
            }
        });
    // `retry_on_initial_connect` makes connect return at once; the first handshake is
    // awaited below with a deadline so that a wrong URL fails start-up clearly.
    let servers = server_list(&settings.url).map_err(|source| BusError::Connect {
        url: settings.url.clone(),
        source,
    })?;
    let client = options
        .connect(servers.as_slice())
        .await
        .map_err(|source| BusError::Connect {
            url: settings.url.clone(),
            source,
        })?;
    wait_connected(&client, &settings.url, &last_error).await?;
    check_server(&client, &settings.url).await?;
    Ok(client)
}

/// Connects once with the nkey `seed` (instead of the credentials in `settings`, with
/// its URL and TLS), retrying until the server accepts it or `within` passes. The
/// coordinator checks a new node's key this way after a reload of nats-server.
pub async fn check_nkey(
    settings: &NatsSettings,
    seed: &str,
    within: Duration,
) -> Result<(), BusError> {
    let tls_only = NatsSettings {
        url: settings.url.clone(),
        tls_root_certificate: settings.tls_root_certificate.clone(),
        tls_client_certificate: settings.tls_client_certificate.clone(),
        tls_client_key: settings.tls_client_key.clone(),
        tls_required: settings.tls_required,
        ..NatsSettings::default()
    };
    let servers = server_list(&settings.url).map_err(|source| BusError::Connect {
        url: settings.url.clone(),
        source,
    })?;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let attempt = tls_only
            .options()
            .await?
            .nkey(seed.to_string())
            .name("paddock-coordinator key check")
            .connection_timeout(Duration::from_secs(2))
            .max_reconnects(Some(0))
            .connect(servers.as_slice())
            .await;
        match attempt {
            Ok(client) => {
                let flushed = client.flush().await;
                drop(client);
                if flushed.is_ok() {
                    return Ok(());
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(BusError::Connect {
                        url: settings.url.clone(),
                        source: async_nats::ConnectError::with_source(
                            async_nats::ConnectErrorKind::TimedOut,
                            std::io::Error::other("connected, but the server did not answer"),
                        ),
                    });
                }
            }
            Err(source) if tokio::time::Instant::now() >= deadline => {
                return Err(BusError::Connect {
                    url: settings.url.clone(),
                    source,
                });
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `nats://a:4222,nats://b:4222` → each server's address.
fn server_list(urls: &str) -> Result<Vec<async_nats::ServerAddr>, async_nats::ConnectError> {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse::<async_nats::ServerAddr>().map_err(|e| {
                async_nats::ConnectError::with_source(async_nats::ConnectErrorKind::ServerParse, e)
            })
        })
        .collect()
}

async fn wait_connected(
    client: &async_nats::Client,
    url: &str,
    last_error: &std::sync::Mutex<Option<String>>,
) -> Result<(), BusError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while client.connection_state() != async_nats::connection::State::Connected {
        if tokio::time::Instant::now() > deadline {
            let why = last_error.lock().ok().and_then(|slot| slot.clone());
            let (kind, detail) = match why {
                Some(error) if error.contains("authorization") => (
                    async_nats::ConnectErrorKind::AuthorizationViolation,
                    format!("no connection within 15 s: {error} (check the [nats] credentials)"),
                ),
                Some(error) => (
                    async_nats::ConnectErrorKind::TimedOut,
                    format!("no connection within 15 s: {error}"),
                ),
                None => (
                    async_nats::ConnectErrorKind::TimedOut,
                    "no connection within 15 s".to_string(),
                ),
            };
            return Err(BusError::Connect {
                url: url.to_string(),
                source: async_nats::ConnectError::with_source(kind, std::io::Error::other(detail)),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn check_server(client: &async_nats::Client, url: &str) -> Result<(), BusError> {
    let info = client.server_info();
    match parse_version(&info.version) {
        Some(version) if version >= (2, 10) => {}
        _ => {
            return Err(BusError::ServerTooOld {
                url: url.to_string(),
                found: info.version,
            });
        }
    }
    let js = async_nats::jetstream::new(client.clone());
    js.query_account()
        .await
        .map_err(|e| BusError::JetStreamOff {
            url: url.to_string(),
            detail: e.to_string(),
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug_and_problems_name_their_key() {
        let settings = NatsSettings {
            user: Some("gateway".into()),
            password: Some("hunter2".into()),
            token_file: Some("/etc/paddock/token".into()),
            tls_client_certificate: Some("/etc/paddock/client.pem".into()),
            ..NatsSettings::default()
        };
        let shown = format!("{settings:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("gateway"));
        let problems = settings.problems("nats").join("; ");
        assert!(problems.contains("use one of"), "{problems}");
        assert!(
            problems.contains("nats.tls_client_certificate"),
            "{problems}"
        );
        assert!(
            !serde_json::to_string(&settings.redacted())
                .unwrap_or_default()
                .contains("hunter2")
        );
        assert!(NatsSettings::default().problems("nats").is_empty());
    }

    #[test]
    fn an_nkey_seed_file_may_hold_comments_but_must_hold_a_seed() {
        let dir = std::env::temp_dir().join(format!("paddock-nkey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let file = dir.join("node.nk");
        std::fs::write(&file, "# node mini-1\nSUAEXAMPLE\n").expect("write");
        assert_eq!(read_nkey_seed(&file).as_deref(), Ok("SUAEXAMPLE"));
        std::fs::write(&file, "not a seed\n").expect("write");
        let error = read_nkey_seed(&file).expect_err("refused");
        assert!(error.contains("no user seed"), "{error}");
        assert!(!error.contains("not a seed"), "the content leaked: {error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_cluster_is_given_as_comma_separated_urls() {
        let servers = server_list("nats://127.0.0.1:4222, nats://127.0.0.1:4223").expect("parse");
        assert_eq!(servers.len(), 2);
        assert!(server_list("nats://127.0.0.1:notaport").is_err());
    }
}
