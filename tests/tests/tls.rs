//! HTTPS and WSS with the development certificate that `paddock up` makes
//! (`paddock_cli::dev_cert`): a client that trusts its CA gets answers over HTTP/2 and
//! HTTP/1.1 and follows a job over a WSS WebSocket; one that does not is refused with
//! a certificate error; plain HTTP to the port gets no API answer; and the real
//! `paddock` binary runs a job with `--ca-cert`, signs in remembering the CA, and —
//! with no OS keychain, as on CI — keeps its refresh token in a 0600 file, saying so
//! once. The gateway refuses to start on unusable certificate files and serves a
//! renewed certificate after SIGHUP.

use paddock_cli::client::{Client, Trust};
use paddock_contract::{EventBody, JobId, JobOptions};
use paddock_testkit::{eventually, workspace_binary};
use paddock_tests::{ADMIN_PASSWORD, Agent, Cluster, ClusterOptions, TOKEN, kinds};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

async fn https_cluster(agent: Agent) -> Cluster {
    let cluster = Cluster::start(ClusterOptions {
        agent,
        tls: true,
        ..Default::default()
    })
    .await;
    assert!(cluster.url.starts_with("https://"), "{}", cluster.url);
    cluster
}

fn ca_of(cluster: &Cluster) -> &Path {
    cluster
        .ca_cert
        .as_deref()
        .unwrap_or_else(|| panic!("a TLS cluster has a CA"))
}

#[tokio::test]
async fn only_clients_that_trust_the_dev_ca_get_answers() {
    let cluster = https_cluster(Agent::Fake).await;
    let ca = ca_of(&cluster);

    // The cluster's client trusts the CA: a handshake and a REST call.
    cluster
        .client
        .jobs(None, 5)
        .await
        .unwrap_or_else(|e| panic!("jobs over HTTPS: {e:#}"));

    // ALPN: HTTP/2 when the client offers it, HTTP/1.1 when it offers only that.
    let trusting = Trust::new(Some(ca)).unwrap_or_else(|e| panic!("{e:#}"));
    let http = trusting
        .http_client(None)
        .unwrap_or_else(|e| panic!("{e:#}"));
    let response = http
        .get(format!("{}/v1/jobs", cluster.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap_or_else(|e| panic!("h2: {e:#}"));
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let ca_pem = std::fs::read(ca).unwrap_or_else(|e| panic!("{e}"));
    let http1 = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&ca_pem).unwrap_or_else(|e| panic!("{e}"))])
        .http1_only()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let response = http1
        .get(format!("{}/v1/jobs", cluster.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap_or_else(|e| panic!("http/1.1: {e:#}"));
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), reqwest::Version::HTTP_11);

    // Trusting only the system's roots: refused, with the hint to pass --ca-cert.
    let system_only = Trust::new(None).unwrap_or_else(|e| panic!("{e:#}"));
    let stranger =
        Client::with_trust(&cluster.url, TOKEN, system_only).unwrap_or_else(|e| panic!("{e:#}"));
    let error = format!(
        "{:#}",
        stranger
            .jobs(None, 5)
            .await
            .expect_err("an untrusted certificate")
    );
    assert!(error.contains("UnknownIssuer"), "{error}");
    assert!(error.contains("--ca-cert"), "{error}");
    let error = match stranger.follow(JobId::new(), 0).await {
        Ok(_) => panic!("a WebSocket to an untrusted gateway opened"),
        Err(e) => format!("{e:#}"),
    };
    assert!(error.contains("UnknownIssuer"), "{error}");

    // Another machine's development CA does not vouch for this gateway either.
    let elsewhere = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let other =
        paddock_cli::dev_cert::ensure(elsewhere.path(), &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let wrong_ca = Trust::new(Some(&other.ca_file)).unwrap_or_else(|e| panic!("{e:#}"));
    let wrong =
        Client::with_trust(&cluster.url, TOKEN, wrong_ca).unwrap_or_else(|e| panic!("{e:#}"));
    let error = format!("{:#}", wrong.jobs(None, 5).await.expect_err("another CA"));
    assert!(error.contains("UnknownIssuer"), "{error}");

    // Plain HTTP to the HTTPS port: no HTTP answer at all, let alone the API's.
    let plain_url = cluster.url.replacen("https://", "http://", 1);
    let plain = reqwest::Client::new()
        .get(format!("{plain_url}/v1/jobs"))
        .bearer_auth(TOKEN)
        .send()
        .await;
    if let Ok(response) = plain {
        panic!("plain HTTP got an answer: {}", response.status());
    }

    // None of that disturbed the listener.
    cluster
        .client
        .jobs(None, 5)
        .await
        .unwrap_or_else(|e| panic!("jobs after the refusals: {e:#}"));
}

#[tokio::test]
async fn a_websocket_over_wss_follows_a_job_to_its_end() {
    let cluster = https_cluster(Agent::Fake).await;
    let job = cluster
        .submit("hello fake:bytes=10", JobOptions::default())
        .await;
    // `follow` subscribes over wss:// (tokio-tungstenite with rustls, the dev CA).
    let events = cluster.follow_to_end(job, 0, Duration::from_secs(60)).await;
    let seen = kinds(&events);
    assert_eq!(seen.first(), Some(&"job.queued"), "{seen:?}");
    assert_eq!(seen.last(), Some(&"job.completed"), "{seen:?}");
    for (i, event) in events.iter().enumerate() {
        assert_eq!(event.seq, i as u64 + 1, "{seen:?}");
    }
    // Subscribing again from the middle replays only what came after.
    let rest = cluster.follow_to_end(job, 2, Duration::from_secs(30)).await;
    assert_eq!(rest.first().map(|e| e.seq), Some(3));
}

#[tokio::test]
async fn a_hangup_makes_the_gateway_serve_a_renewed_certificate() {
    let cluster = https_cluster(Agent::Fake).await;
    let old_ca = Trust::new(Some(ca_of(&cluster))).unwrap_or_else(|e| panic!("{e:#}"));
    let renewal = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let renewed =
        paddock_cli::dev_cert::ensure(renewal.path(), &[]).unwrap_or_else(|e| panic!("{e:#}"));
    let live = cluster.dir().join("tls");
    for (from, to) in [
        (&renewed.cert_file, live.join("server.pem")),
        (&renewed.key_file, live.join("server-key.pem")),
    ] {
        std::fs::copy(from, to).unwrap_or_else(|e| panic!("{e}"));
    }
    let pid = cluster
        .gateway
        .pid()
        .and_then(|pid| i32::try_from(pid).ok())
        .unwrap_or_else(|| panic!("the gateway runs"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap_or_else(|e| panic!("SIGHUP: {e}"));
    let new_ca = Trust::new(Some(&renewed.ca_file)).unwrap_or_else(|e| panic!("{e:#}"));
    let client =
        Client::with_trust(&cluster.url, TOKEN, new_ca).unwrap_or_else(|e| panic!("{e:#}"));
    eventually(
        Duration::from_secs(10),
        "the renewed certificate to be served",
        || async { client.jobs(None, 1).await.ok() },
    )
    .await;
    let old = Client::with_trust(&cluster.url, TOKEN, old_ca).unwrap_or_else(|e| panic!("{e:#}"));
    let error = format!("{:#}", old.jobs(None, 1).await.expect_err("the old CA"));
    assert!(error.contains("certificate"), "{error}");
}

#[tokio::test]
async fn a_gateway_whose_certificate_cannot_be_read_stops_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let quote = |p: &Path| serde_json::to_string(&p.display().to_string()).unwrap_or_default();
    let key_only = dir.path().join("key.pem");
    let certificate = paddock_cli::dev_cert::ensure(&dir.path().join("tls"), &[])
        .unwrap_or_else(|e| panic!("{e:#}"));
    std::fs::copy(&certificate.key_file, &key_only).unwrap_or_else(|e| panic!("{e}"));
    let cases = [
        (
            dir.path().join("missing.pem"),
            certificate.key_file.clone(),
            "tls.cert_file",
        ),
        (
            key_only.clone(),
            certificate.key_file.clone(),
            "tls.cert_file",
        ),
        (
            certificate.cert_file.clone(),
            certificate.cert_file.clone(),
            "tls.key_file",
        ),
    ];
    for (cert_file, key_file, named) in cases {
        let config = dir.path().join("gateway.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{}\"\ndatabase_url = {}\ndata_dir = {}\n\
                 [nats]\nurl = \"nats://127.0.0.1:1\"\n\
                 [tls]\ncert_file = {}\nkey_file = {}\n[[projects]]\nname = \"demo\"\n",
                paddock_testkit::free_port(),
                quote(&dir.path().join("ledger.db")).replacen('"', "\"sqlite://", 1),
                quote(&dir.path().join("gateway")),
                quote(&cert_file),
                quote(&key_file),
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let run = tokio::process::Command::new(workspace_binary("paddock-gateway"))
            .arg("--config")
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(Duration::from_secs(30), run)
            .await
            .unwrap_or_else(|_| panic!("the gateway started with {named} unusable"))
            .unwrap_or_else(|e| panic!("running paddock-gateway: {e}"));
        assert!(!out.status.success(), "{}", text(&out));
        assert!(
            text(&out).contains(named),
            "expected {named}: {}",
            text(&out)
        );
    }
}

/// Runs the real `paddock` binary with its own config folder and no OS keychain
/// (the Secret Service's session bus points nowhere).
async fn paddock(cluster: &Cluster, config: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(workspace_binary("paddock"))
        .args(args)
        .env("PADDOCK_URL", &cluster.url)
        .env("PADDOCK_CONFIG_DIR", config)
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            "unix:path=/nonexistent/paddock-test-bus",
        )
        .env_remove("PADDOCK_TOKEN")
        .env_remove("PADDOCK_CA_CERT")
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("running paddock: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn stored(credentials: &Path) -> Value {
    let text = std::fs::read_to_string(credentials).unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[tokio::test]
async fn the_paddock_cli_runs_a_job_with_ca_cert_and_signs_in_remembering_it() {
    let script = json!({"conversations": [{"match": "", "steps": [
        {"content": [{"type": "text", "text": "Hello over TLS."}]}
    ]}]});
    let cluster = https_cluster(Agent::RealCli { script }).await;
    let ca = ca_of(&cluster).display().to_string();
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = home.path().join("config");

    // Without the CA: refused, and told what to do.
    let out = paddock(&cluster, &config, &["--token", TOKEN, "jobs"]).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("--ca-cert"), "{}", text(&out));

    // With it: a job runs, its events streamed over WSS and rendered.
    let out = paddock(
        &cluster,
        &config,
        &[
            "--ca-cert",
            &ca,
            "--token",
            TOKEN,
            "run",
            "--project",
            "demo",
            "say hello",
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("Hello over TLS."), "{}", text(&out));

    // `paddock login` remembers the CA. With no keychain it says so, once.
    let password_file = home.path().join("password");
    std::fs::write(&password_file, ADMIN_PASSWORD).unwrap_or_else(|e| panic!("{e}"));
    let out = paddock(
        &cluster,
        &config,
        &[
            "--ca-cert",
            &ca,
            "login",
            "--user",
            "admin",
            "--password-file",
            &password_file.display().to_string(),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(stderr.contains("no OS keychain"), "{}", text(&out));
    let credentials = config.join("credentials.json");
    assert_eq!(mode(&credentials), 0o600);
    let saved = stored(&credentials)["gateways"][cluster.url.as_str()].clone();
    assert_eq!(saved["ca_cert"].as_str(), Some(ca.as_str()), "{saved}");
    assert_eq!(saved["refresh_token_in_keychain"], json!(false), "{saved}");
    let first_refresh = saved["refresh_token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        !first_refresh.is_empty(),
        "the file keeps the refresh token: {saved}"
    );

    // Later commands need neither the flag nor a token, and do not repeat the notice.
    let out = paddock(&cluster, &config, &["jobs"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("say hello"), "{}", text(&out));
    assert!(!text(&out).contains("keychain"), "{}", text(&out));

    // An expired access token is refreshed from the file, which stays private.
    let mut all = stored(&credentials);
    all["gateways"][cluster.url.as_str()]["access_expires_at"] = json!(0);
    std::fs::write(&credentials, all.to_string()).unwrap_or_else(|e| panic!("{e}"));
    let out = paddock(&cluster, &config, &["jobs"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("keychain"), "{}", text(&out));
    assert_eq!(mode(&credentials), 0o600);
    let renewed = stored(&credentials)["gateways"][cluster.url.as_str()].clone();
    let second_refresh = renewed["refresh_token"].as_str().unwrap_or_default();
    assert!(!second_refresh.is_empty(), "{renewed}");
    assert_ne!(second_refresh, first_refresh, "the refresh token rotates");
    assert_eq!(renewed["ca_cert"].as_str(), Some(ca.as_str()), "{renewed}");

    // The job the CLI ran completed over the same path.
    let jobs = cluster
        .client
        .jobs(None, 5)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let job = jobs
        .jobs
        .iter()
        .find(|job| job.prompt == "say hello")
        .unwrap_or_else(|| panic!("the CLI's job is listed: {jobs:?}"));
    let events = cluster
        .client
        .events(job.id)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.body, EventBody::Completed { .. })),
        "{:?}",
        kinds(&events)
    );
}
