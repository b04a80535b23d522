//! Accounts through the real `paddock` CLI against a real cluster: `paddock login`
//! keeps a private sign-in that later commands use, `paddock users` manages users as
//! an admin, a user without a scope is refused, and `paddock logout` ends the sign-in.

use paddock_testkit::workspace_binary;
use paddock_tests::{ADMIN_PASSWORD, Cluster, ClusterOptions};
use std::path::Path;
use std::process::Output;

/// Runs `paddock args…` against the cluster with its own config folder.
async fn paddock(cluster: &Cluster, config: &Path, args: &[&str]) -> Output {
    tokio::process::Command::new(workspace_binary("paddock"))
        .args(args)
        .env("PADDOCK_URL", &cluster.url)
        .env("PADDOCK_CONFIG_DIR", config)
        .env_remove("PADDOCK_TOKEN")
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

#[tokio::test]
async fn the_cli_signs_in_manages_users_and_signs_out() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let admin_config = home.path().join("admin");
    let ada_config = home.path().join("ada");
    let secrets = home.path().join("secrets");
    std::fs::create_dir_all(&secrets).unwrap_or_else(|e| panic!("{e}"));
    let admin_password = secrets.join("admin");
    std::fs::write(&admin_password, format!("{ADMIN_PASSWORD}\n"))
        .unwrap_or_else(|e| panic!("{e}"));
    let ada_password = secrets.join("ada");
    std::fs::write(&ada_password, "ada's long password\n").unwrap_or_else(|e| panic!("{e}"));
    let file = |p: &Path| p.display().to_string();

    let out = paddock(&cluster, &admin_config, &["jobs"]).await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not signed in"), "{}", text(&out));

    let out = paddock(
        &cluster,
        &admin_config,
        &[
            "login",
            "--user",
            "admin",
            "--password-file",
            &file(&admin_password),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let credentials = admin_config.join("credentials.json");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&credentials)
            .unwrap_or_else(|e| panic!("credentials: {e}"))
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let stored = std::fs::read_to_string(&credentials).unwrap_or_default();
    assert!(!stored.contains(ADMIN_PASSWORD), "the password was stored");

    let out = paddock(&cluster, &admin_config, &["jobs"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = paddock(
        &cluster,
        &admin_config,
        &[
            "users",
            "add",
            "ada",
            "--scope",
            "jobs:read",
            "--password-file",
            &file(&ada_password),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    let out = paddock(&cluster, &admin_config, &["users", "list"]).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("ada"),
        "{}",
        text(&out)
    );

    // Ada may read but not submit, nor manage users.
    let out = paddock(
        &cluster,
        &ada_config,
        &[
            "login",
            "--user",
            "ada",
            "--password-file",
            &file(&ada_password),
        ],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        paddock(&cluster, &ada_config, &["jobs"])
            .await
            .status
            .success()
    );
    let out = paddock(
        &cluster,
        &ada_config,
        &["run", "--project", "demo", "--detach", "hi"],
    )
    .await;
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("forbidden"), "{}", text(&out));
    let out = paddock(&cluster, &ada_config, &["users", "list"]).await;
    assert!(text(&out).contains("users:admin"), "{}", text(&out));

    let out = paddock(
        &cluster,
        &admin_config,
        &["users", "audit", "--action", "auth."],
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("auth.login"),
        "{}",
        text(&out)
    );

    let out = paddock(&cluster, &ada_config, &["logout"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = paddock(&cluster, &ada_config, &["jobs"]).await;
    assert!(text(&out).contains("not signed in"), "{}", text(&out));
}

/// A `paddock run` that outlives its access token keeps its live connection: the
/// gateway warns before the token expires and the CLI answers on the same socket
/// with a renewed one, so the socket is never closed for an expired token.
#[tokio::test]
async fn a_run_outliving_its_access_token_keeps_its_connection() {
    let cluster = Cluster::start(ClusterOptions {
        gateway_auth_keys: "access_token_ttl = \"4s\"".into(),
        ..ClusterOptions::default()
    })
    .await;
    let home = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let config = home.path().join("admin");
    let password = home.path().join("password");
    std::fs::write(&password, ADMIN_PASSWORD).unwrap_or_else(|e| panic!("{e}"));
    let login = paddock(
        &cluster,
        &config,
        &[
            "login",
            "--user",
            "admin",
            "--password-file",
            &password.display().to_string(),
        ],
    )
    .await;
    assert!(login.status.success(), "{}", text(&login));
    // Three token lifetimes long.
    let run = paddock(
        &cluster,
        &config,
        &["run", "--project", "demo", "fake:sleep=12000 slow answer"],
    )
    .await;
    assert!(run.status.success(), "{}", text(&run));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        !stderr.contains("connection lost"),
        "the socket was closed under the run:\n{}",
        text(&run)
    );
    assert!(
        String::from_utf8_lossy(&run.stdout).contains("completed"),
        "{}",
        text(&run)
    );
}
