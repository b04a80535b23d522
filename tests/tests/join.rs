//! Joining machines, with real processes: a nats-server that lets in only known users
//! (the gateway and the coordinator by password, nodes by the nkeys the coordinator
//! issues), the coordinator with its HTTPS join endpoint, the gateway, and node agents
//! configured by `paddock-node join` (the real binary). Join tokens are made through the
//! gateway (the `paddock` CLI and the API); a reused, expired, revoked or unknown token
//! is refused; a node whose credentials are revoked is cut off while the others keep
//! working; a node without credentials cannot connect at all.

use paddock_cli::client::Client;
use paddock_contract::api::SubmitJob;
use paddock_contract::{JobId, JobOptions, JobStatus};
use paddock_testkit::{ChildProcess, NatsServer, eventually, free_port, workspace_binary};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const ADMIN_TOKEN: &str = "join-test-admin-token-0123456789";
const GATEWAY_PASSWORD: &str = "gateway nats password";
const COORDINATOR_PASSWORD: &str = "coordinator nats password";
const PROJECT: &str = "demo";

/// NATS with authorization, the coordinator (join endpoint on HTTPS) and the gateway.
struct Paddock {
    nats: NatsServer,
    gateway: ChildProcess,
    coordinator: ChildProcess,
    gateway_url: String,
    join_url: String,
    /// The CA of the join endpoint's certificate.
    ca_file: PathBuf,
    project_dir: PathBuf,
    client: Client,
    http: reqwest::Client,
    dir: tempfile::TempDir,
}

fn quote(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_default()
}

fn quote_path(path: &Path) -> String {
    quote(&path.display().to_string())
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn start_binary(name: &str, config: &Path) -> ChildProcess {
    let mut command = Command::new(workspace_binary(name));
    command.arg("--config").arg(config).env("RUST_LOG", "info");
    ChildProcess::spawn(name, command)
}

impl Paddock {
    async fn start() -> Paddock {
        // Installs rustls' crypto provider for the HTTP clients below.
        paddock_cli::client::Trust::new(None)
            .unwrap_or_else(|e| panic!("trust: {e:#}"))
            .install();
        let dir = tempfile::Builder::new()
            .prefix("paddock-join-")
            .tempdir()
            .unwrap_or_else(|e| panic!("temp dir: {e}"));
        let project_dir = dir.path().join("projects/demo");
        std::fs::create_dir_all(&project_dir).unwrap_or_else(|e| panic!("mkdir: {e}"));
        let nats = NatsServer::start_with_authorization(&[
            ("gateway", GATEWAY_PASSWORD),
            ("coordinator", COORDINATOR_PASSWORD),
        ])
        .await;
        let database_url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        let certificate = paddock_cli::dev_cert::ensure(&dir.path().join("join-tls"), &[])
            .unwrap_or_else(|e| panic!("join certificate: {e:#}"));
        let password_file = dir.path().join("coordinator-nats-password");
        write(&password_file, COORDINATOR_PASSWORD);

        let join_port = free_port();
        let coordinator_file = dir.path().join("coordinator.toml");
        write(
            &coordinator_file,
            &format!(
                "database_url = {}\nmetrics_listen = \"127.0.0.1:{}\"\n\
                 [nats]\nurl = {}\nuser = \"coordinator\"\npassword_file = {}\n\
                 [ledger_writer]\nack_wait = \"3s\"\ngap_wait = \"5s\"\n\
                 [join]\nlisten = \"127.0.0.1:{join_port}\"\ntls_cert_file = {}\ntls_key_file = {}\n\
                 nats_users_file = {}\nnats_static_users_file = {}\nnats_pid_files = [{}]\n\
                 reconcile_interval_secs = 1\n",
                quote(&database_url),
                free_port(),
                quote(&nats.url()),
                quote_path(&password_file),
                quote_path(&certificate.cert_file),
                quote_path(&certificate.key_file),
                quote_path(&nats.users_file()),
                quote_path(&nats.static_users_file()),
                quote_path(&nats.pid_file()),
            ),
        );
        let port = free_port();
        let admin_password_file = dir.path().join("admin-password");
        write(&admin_password_file, "join test admin password");
        let gateway_file = dir.path().join("gateway.toml");
        write(
            &gateway_file,
            &format!(
                "listen = \"127.0.0.1:{port}\"\ndatabase_url = {}\ndata_dir = {}\n\
                 [nats]\nurl = {}\nuser = \"gateway\"\npassword = {}\n\
                 [auth]\nadmin_password_file = {}\n\
                 password_cost = {{ memory_kib = 8, iterations = 1, parallelism = 1 }}\n\
                 [[api_tokens]]\nuser = \"ops\"\ntoken = \"{ADMIN_TOKEN}\"\n\
                 scopes = [\"jobs:read\", \"jobs:submit\", \"nodes:admin\"]\n\
                 [[api_tokens]]\nuser = \"bob\"\ntoken = \"bob-token-0123456789\"\n\
                 scopes = [\"jobs:read\", \"jobs:submit\"]\n\
                 [[projects]]\nname = \"{PROJECT}\"\n",
                quote(&database_url),
                quote_path(&dir.path().join("gateway")),
                quote(&nats.url()),
                quote(GATEWAY_PASSWORD),
                quote_path(&admin_password_file),
            ),
        );
        let coordinator = start_binary("paddock-coordinator", &coordinator_file);
        let gateway = start_binary("paddock-gateway", &gateway_file);
        let gateway_url = format!("http://127.0.0.1:{port}");
        let ready = format!("{gateway_url}/readyz");
        eventually(Duration::from_secs(30), "the gateway to be ready", || {
            let ready = ready.clone();
            async move {
                reqwest::get(&ready)
                    .await
                    .ok()
                    .filter(|r| r.status().is_success())
                    .map(|_| ())
            }
        })
        .await;
        eventually(
            Duration::from_secs(30),
            "the join endpoint to listen",
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", join_port))
                    .await
                    .ok()
                    .map(|_| ())
            },
        )
        .await;
        let client =
            Client::new(&gateway_url, ADMIN_TOKEN).unwrap_or_else(|e| panic!("client: {e:#}"));
        Paddock {
            nats,
            gateway,
            coordinator,
            gateway_url,
            join_url: format!("https://127.0.0.1:{join_port}"),
            ca_file: certificate.ca_file,
            project_dir,
            client,
            http: reqwest::Client::new(),
            dir,
        }
    }

    /// `POST /v1/nodes/tokens` with `body`: (id, token).
    async fn create_token(&self, body: Value) -> (String, String) {
        let response = self
            .http
            .post(format!("{}/v1/nodes/tokens", self.gateway_url))
            .bearer_auth(ADMIN_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("creating a token: {e}"));
        assert_eq!(response.status().as_u16(), 201, "creating a token");
        let created: Value = response.json().await.unwrap_or_else(|e| panic!("{e}"));
        let text = |key: &str| created[key].as_str().unwrap_or_default().to_string();
        (text("id"), text("token"))
    }

    async fn tokens(&self) -> Vec<Value> {
        self.http
            .get(format!("{}/v1/nodes/tokens", self.gateway_url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap_or_else(|e| panic!("listing tokens: {e}"))
            .json()
            .await
            .unwrap_or_else(|e| panic!("listing tokens: {e}"))
    }

    /// The folder of node `name`'s files.
    fn node_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Runs `paddock-node join` for node `name` with `token`.
    async fn join(&self, name: &str, token: &str) -> std::process::Output {
        tokio::process::Command::new(workspace_binary("paddock-node"))
            .arg("join")
            .args([
                "--coordinator",
                &self.join_url,
                "--token",
                token,
                "--name",
                name,
            ])
            .arg("--ca-cert")
            .arg(&self.ca_file)
            .arg("--config")
            .arg(self.node_dir(name).join("node.toml"))
            .env("RUST_LOG", "info")
            .output()
            .await
            .unwrap_or_else(|e| panic!("running paddock-node join: {e}"))
    }

    /// The config `paddock-node join` wrote for `name`, with what a test node needs
    /// around it (the fake agent, the project, quick heartbeats): keys first, tables
    /// after, as an operator would edit it.
    fn runnable_config(&self, name: &str, joined: &str) -> PathBuf {
        let keys = format!(
            "slots = 1\nmetrics_listen = \"127.0.0.1:{}\"\nkill_grace_secs = 2\nshutdown_grace_secs = 2\n\
             fetch_wait_secs = 1\nheartbeat_interval_secs = 1\nheartbeat_ttl_secs = 3\nprogress_interval_secs = 1\n",
            free_port()
        );
        let tables = format!(
            "\n[agent]\nprogram = {}\nhome = {}\nanthropic_api_key = \"test-key\"\n\
             [sandbox]\nmode = \"off\"\n[[projects]]\nname = \"{PROJECT}\"\npath = {}\n",
            quote_path(&workspace_binary("paddock-fake-agent")),
            quote_path(&self.node_dir(name).join("agent-home")),
            quote_path(&self.project_dir),
        );
        std::fs::create_dir_all(self.node_dir(name)).unwrap_or_else(|e| panic!("mkdir: {e}"));
        let file = self.node_dir(name).join("run.toml");
        write(&file, &format!("{keys}{joined}{tables}"));
        file
    }

    /// Starts node `name` from the config its join wrote; waits for its heartbeat.
    async fn start_node(&self, name: &str) -> ChildProcess {
        let joined = std::fs::read_to_string(self.node_dir(name).join("node.toml"))
            .unwrap_or_else(|e| panic!("reading {name}'s joined config: {e}"));
        let node = start_binary("paddock-node", &self.runnable_config(name, &joined));
        eventually(
            Duration::from_secs(30),
            "the joined node's heartbeat",
            || async {
                let nodes = self.client.nodes().await.ok()?;
                nodes
                    .iter()
                    .any(|n| n.name == name && n.last_seen_ms.is_some())
                    .then_some(())
            },
        )
        .await;
        node
    }

    /// Submits a job and waits for the ledger to record its end.
    async fn run_job(&self, prompt: &str) -> paddock_contract::api::JobView {
        let job: JobId = self
            .client
            .submit(&SubmitJob {
                project: PROJECT.into(),
                prompt: prompt.into(),
                options: JobOptions::default(),
                job_id: None,
            })
            .await
            .unwrap_or_else(|e| panic!("submit: {e:#}"))
            .job_id;
        eventually(Duration::from_secs(60), "the job to end", || async {
            self.client
                .job(job)
                .await
                .ok()
                .filter(|view| view.status.is_terminal())
        })
        .await
    }
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs a node agent with `config` and returns its exit and output: for nodes that
/// must fail to connect (the agent gives up after 15 s without a connection).
async fn run_to_exit(config: &Path) -> (std::process::ExitStatus, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(workspace_binary("paddock-node"))
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "info")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("paddock-node with {} did not give up", config.display()))
    .unwrap_or_else(|e| panic!("running paddock-node: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status, text)
}

#[tokio::test]
async fn a_joined_node_works_with_its_own_credentials_and_revoking_them_cuts_off_that_node_alone() {
    let paddock = Paddock::start().await;

    // A single-use token from the CLI, as an operator makes one.
    let created = tokio::process::Command::new(workspace_binary("paddock"))
        .args(["--url", &paddock.gateway_url, "--token", ADMIN_TOKEN])
        .args([
            "nodes",
            "token",
            "create",
            "--uses",
            "1",
            "--expires",
            "10m",
        ])
        .args(["--label", "rack=top"])
        .output()
        .await
        .unwrap_or_else(|e| panic!("running paddock: {e}"));
    assert!(created.status.success(), "{}", stderr(&created));
    let token = String::from_utf8_lossy(&created.stdout).trim().to_string();
    assert!(token.starts_with("pdj_"), "{token:?}");

    let joined = paddock.join("mini-a", &token).await;
    assert!(joined.status.success(), "join failed: {}", stderr(&joined));
    let config_file = paddock.node_dir("mini-a").join("node.toml");
    let credential_file = paddock.node_dir("mini-a").join("nats-credential.nk");
    let config = std::fs::read_to_string(&config_file).unwrap_or_default();
    let seed = std::fs::read_to_string(&credential_file).unwrap_or_default();
    assert!(seed.trim().starts_with("SU"), "no nkey seed written");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&credential_file)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or_default();
        assert_eq!(mode, 0o600, "the credential file is readable by others");
    }
    assert!(config.contains("name = \"mini-a\""), "{config}");
    assert!(
        config.contains("rack"),
        "the token's labels are missing: {config}"
    );
    assert!(!config.contains(seed.trim()), "the seed is in the config");

    // The same token again: refused, and nothing is written.
    let reused = paddock.join("mini-b", &token).await;
    assert!(!reused.status.success(), "a reused token was accepted");
    assert!(
        stderr(&reused).contains("join_token_used"),
        "{}",
        stderr(&reused)
    );
    assert!(!paddock.node_dir("mini-b").join("node.toml").exists());
    // Joining again over an existing config needs --force.
    let again = paddock.join("mini-a", &token).await;
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));

    // The joined node connects with its own nkey and runs a job.
    let mut node_a = paddock.start_node("mini-a").await;
    let job = paddock.run_job("first job fake:bytes=10").await;
    assert_eq!(job.status, JobStatus::Completed, "{job:?}");
    assert_eq!(job.node.as_deref(), Some("mini-a"));

    // A second machine with a token of its own.
    let (_, second) = paddock.create_token(json!({ "uses": 1 })).await;
    let joined = paddock.join("mini-b", &second).await;
    assert!(joined.status.success(), "join failed: {}", stderr(&joined));
    let _node_b = paddock.start_node("mini-b").await;

    // Neither the seed nor a token reached a log.
    for (process, log) in [
        ("coordinator", paddock.coordinator.output()),
        ("gateway", paddock.gateway.output()),
    ] {
        assert!(
            !log.contains(seed.trim()),
            "the seed is in the {process}'s log"
        );
        assert!(!log.contains(&token), "the token is in the {process}'s log");
        assert!(!log.contains(&second), "a token is in the {process}'s log");
    }

    // Revoke mini-a's credentials: nats-server drops it, mini-b goes on.
    let revoked = tokio::process::Command::new(workspace_binary("paddock"))
        .args(["--url", &paddock.gateway_url, "--token", ADMIN_TOKEN])
        .args(["nodes", "revoke-credentials", "mini-a"])
        .output()
        .await
        .unwrap_or_else(|e| panic!("running paddock: {e}"));
    assert!(revoked.status.success(), "{}", stderr(&revoked));
    eventually(
        Duration::from_secs(30),
        "nats-server to refuse the revoked node",
        || async {
            let log = node_a.output().to_lowercase();
            log.contains("authorization violation").then_some(())
        },
    )
    .await;
    for n in 0..2 {
        let job = paddock
            .run_job(&format!("after the revocation {n} fake:bytes=10"))
            .await;
        assert_eq!(job.status, JobStatus::Completed, "{job:?}");
        assert_eq!(job.node.as_deref(), Some("mini-b"), "{job:?}");
    }
    node_a.kill();

    // The revoked machine cannot come back with its old key, and a node without any
    // credential cannot connect either.
    let revoked_config = paddock.node_dir("mini-a").join("run.toml");
    let anonymous_config = paddock.runnable_config(
        "mini-c",
        &format!(
            "name = \"mini-c\"\n[nats]\nurl = {}\n",
            quote(&paddock.nats.url())
        ),
    );
    let ((revoked_exit, revoked_log), (anonymous_exit, anonymous_log)) =
        tokio::join!(run_to_exit(&revoked_config), run_to_exit(&anonymous_config));
    assert!(
        !revoked_exit.success(),
        "the revoked node started: {revoked_log}"
    );
    assert!(
        revoked_log.to_lowercase().contains("authorization"),
        "{revoked_log}"
    );
    assert!(
        !anonymous_exit.success(),
        "a node without credentials started: {anonymous_log}"
    );
    assert!(
        anonymous_log.to_lowercase().contains("authorization"),
        "{anonymous_log}"
    );
}

#[tokio::test]
async fn expired_revoked_and_unknown_join_tokens_are_refused() {
    let paddock = Paddock::start().await;

    let (_, expiring) = paddock.create_token(json!({ "expires_in_secs": 1 })).await;
    let expires_at = paddock.tokens().await[0]["expires_at_ms"]
        .as_i64()
        .unwrap_or_default();
    eventually(Duration::from_secs(10), "the token's expiry", || async {
        (paddock_contract::now_unix_ms() > expires_at).then_some(())
    })
    .await;
    let expired = paddock.join("late", &expiring).await;
    assert!(!expired.status.success());
    assert!(
        stderr(&expired).contains("join_token_expired"),
        "{}",
        stderr(&expired)
    );

    let (id, revoked_token) = paddock.create_token(json!({ "uses": 3 })).await;
    let revoke = paddock
        .http
        .delete(format!("{}/v1/nodes/tokens/{id}", paddock.gateway_url))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap_or_else(|e| panic!("revoking: {e}"));
    assert_eq!(revoke.status().as_u16(), 204);
    let revoked = paddock.join("revoked", &revoked_token).await;
    assert!(
        stderr(&revoked).contains("join_token_revoked"),
        "{}",
        stderr(&revoked)
    );

    let unknown = paddock.join("stranger", "pdj_not-a-real-token").await;
    assert!(
        stderr(&unknown).contains("join_token_invalid"),
        "{}",
        stderr(&unknown)
    );

    // No use was spent by a refusal, and no credential was issued.
    let tokens = paddock.tokens().await;
    assert!(
        tokens.iter().all(|t| t["uses_left"] == t["uses"]),
        "{tokens:#?}"
    );
    let users = std::fs::read_to_string(paddock.nats.users_file()).unwrap_or_default();
    assert!(!users.contains("nkey"), "{users}");

    // Only an operator with nodes:admin may make tokens.
    let forbidden = paddock
        .http
        .post(format!("{}/v1/nodes/tokens", paddock.gateway_url))
        .bearer_auth("bob-token-0123456789")
        .json(&json!({}))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(forbidden.status().as_u16(), 403);
}
