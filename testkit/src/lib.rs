//! The shared test harness. Tests start real things through it: a current
//! `nats-server` with JetStream on a free port and a temporary store (which a test can
//! stop and start again), a fresh PostgreSQL database, the workspace's own binaries,
//! a double of a browser's Web Push service ([`push_service`]).
//! Every handle stops its process and removes its temporary files on `Drop`, so a
//! failing test leaves nothing behind. [`eventually`] is the one way to wait.

pub mod metrics;
mod nats;
mod nats_cluster;
pub mod otlp;
mod postgres;
mod process;
pub mod push_service;

pub use nats::NatsServer;
pub use nats_cluster::NatsCluster;
pub use otlp::{OtlpReceiver, ReceivedSpan};
pub use postgres::PostgresDatabase;
pub use process::{ChildProcess, workspace_binary};
pub use push_service::PushService;

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

/// The repository's root folder.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where `ops/install-deps.sh` puts nats-server and the Claude Code CLI.
pub fn tools_bin() -> PathBuf {
    std::env::var_os("PADDOCK_TOOLS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".tools/bin"))
}

/// The real Claude Code CLI installed by `ops/install-deps.sh`.
pub fn claude_cli() -> PathBuf {
    tools_bin().join("claude")
}

/// A TCP port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Polls `check` until it returns `Some`, or fails the test loudly after `timeout`
/// with `what` in the message. Never sleep to synchronise: wait for the thing.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Installs a test log subscriber once (RUST_LOG decides; quiet by default).
pub fn init_logs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::new());
    });
}

/// Re-exported for [`on_sqlite_and_postgres!`].
pub use tempfile;

/// Runs each named test body, an `async fn(Store) -> anyhow::Result<()>` of the calling
/// file, once on a fresh SQLite file and once on a fresh PostgreSQL database, as
/// `sqlite::NAME` and `postgres::NAME`. `open` names an `async fn(&str) ->
/// anyhow::Result<Store>` of the calling file; `Store` is `Clone` with an async `close`.
#[macro_export]
macro_rules! on_sqlite_and_postgres {
    (open = $open:ident; $($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    let dir = $crate::tempfile::tempdir()?;
                    let url = format!("sqlite://{}/store.db", dir.path().display());
                    let store = super::$open(&url).await?;
                    super::$name(store).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() -> anyhow::Result<()> {
                    let database = $crate::PostgresDatabase::create().await?;
                    let store = super::$open(database.url()).await?;
                    let outcome = super::$name(store.clone()).await;
                    store.close().await;
                    outcome
                }
            )*
        }
    };
}
