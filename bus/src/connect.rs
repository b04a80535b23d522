//! Connecting to NATS, with the checks every service makes at start: the server is
//! 2.10 or newer and JetStream answers. A failure names the URL and what to do.

use crate::{BusError, parse_version};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// How a service reaches NATS. Shared by every binary's config. Its `Debug` hides the
/// password.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSettings {
    /// One URL or several, comma separated (a cluster).
    pub url: String,
    /// A `.creds` file (JWT + nkey seed) issued for this service or node.
    pub credentials_file: Option<PathBuf>,
    /// Plain user and password, for a server configured with them.
    pub user: Option<String>,
    pub password: Option<String>,
    /// Extra root certificate for a NATS server with TLS.
    pub tls_root_certificate: Option<PathBuf>,
    /// Require TLS even for a URL that does not say `tls://`.
    pub tls_required: bool,
}

impl std::fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsSettings")
            .field("url", &self.url)
            .field("credentials_file", &self.credentials_file)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<hidden>"))
            .field("tls_root_certificate", &self.tls_root_certificate)
            .field("tls_required", &self.tls_required)
            .finish()
    }
}

impl Default for NatsSettings {
    fn default() -> Self {
        NatsSettings {
            url: "nats://127.0.0.1:4222".into(),
            credentials_file: None,
            user: None,
            password: None,
            tls_root_certificate: None,
            tls_required: false,
        }
    }
}

/// Connects, then checks the server version and that JetStream is on.
/// `name` shows in the server's connection list (`paddock-node mini-1`, …).
pub async fn connect(settings: &NatsSettings, name: &str) -> Result<async_nats::Client, BusError> {
    let base = match &settings.credentials_file {
        Some(path) => async_nats::ConnectOptions::with_credentials_file(path.clone())
            .await
            .map_err(|e| BusError::Connect {
                url: settings.url.clone(),
                source: async_nats::ConnectError::with_source(
                    async_nats::ConnectErrorKind::Authentication,
                    e,
                ),
            })?,
        None => async_nats::ConnectOptions::new(),
    };
    let mut options = base
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .max_reconnects(None)
        .event_callback(|event| async move {
            tracing::info!(%event, "nats connection event");
        });
    if let (Some(user), Some(password)) = (&settings.user, &settings.password) {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(root) = &settings.tls_root_certificate {
        options = options.add_root_certificates(root.clone());
    }
    if settings.tls_required {
        options = options.require_tls(true);
    }
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
    wait_connected(&client, &settings.url).await?;
    check_server(&client, &settings.url).await?;
    Ok(client)
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

async fn wait_connected(client: &async_nats::Client, url: &str) -> Result<(), BusError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while client.connection_state() != async_nats::connection::State::Connected {
        if tokio::time::Instant::now() > deadline {
            return Err(BusError::Connect {
                url: url.to_string(),
                source: async_nats::ConnectError::with_source(
                    async_nats::ConnectErrorKind::TimedOut,
                    std::io::Error::other("no connection within 15 s"),
                ),
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
    use super::server_list;

    #[test]
    fn a_cluster_is_given_as_comma_separated_urls() {
        let servers = server_list("nats://127.0.0.1:4222, nats://127.0.0.1:4223").expect("parse");
        assert_eq!(servers.len(), 2);
        assert!(server_list("nats://127.0.0.1:notaport").is_err());
    }
}
