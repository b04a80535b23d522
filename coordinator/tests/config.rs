//! The coordinator binary's configuration as an operator meets it: a TOML file, then
//! `PADDOCK_COORDINATOR_*` variables, then flags, and errors that name the bad key.
//! Each case runs the real binary with `--print-config`, so nothing here touches this
//! process's environment.

use std::path::Path;
use std::process::{Command, Output};

fn coordinator(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_paddock-coordinator"));
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("PADDOCK_COORDINATOR_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run paddock-coordinator: {e}"))
}

fn printed(output: &Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("--print-config printed no JSON ({e})"))
}

fn write_config(dir: &Path, text: &str) -> String {
    let path = dir.join("coordinator.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path.display().to_string()
}

#[test]
fn file_then_environment_then_flags_take_precedence() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let file = write_config(
        dir.path(),
        r#"
database_url = "sqlite:///from/file.db"
[nats]
url = "nats://file:4222"
[streams]
ack_wait = "45s"
[ledger_writer]
batch_size = 10
"#,
    );
    let from_file = printed(&coordinator(&["--config", &file, "--print-config"], &[]));
    assert_eq!(from_file["database_url"], "sqlite:///from/file.db");
    assert_eq!(from_file["nats"]["url"], "nats://file:4222");
    assert_eq!(from_file["streams"]["ack_wait"], "45000ms");
    assert_eq!(from_file["ledger_writer"]["batch_size"], 10);

    let env = [
        ("PADDOCK_COORDINATOR_NATS__URL", "nats://env:4222"),
        ("PADDOCK_COORDINATOR_DATABASE_URL", "sqlite:///from/env.db"),
        ("PADDOCK_COORDINATOR_LEDGER_WRITER__BATCH_SIZE", "20"),
    ];
    let from_env = printed(&coordinator(&["--config", &file, "--print-config"], &env));
    assert_eq!(from_env["nats"]["url"], "nats://env:4222");
    assert_eq!(from_env["database_url"], "sqlite:///from/env.db");
    assert_eq!(from_env["ledger_writer"]["batch_size"], 20);
    assert_eq!(
        from_env["streams"]["ack_wait"], "45000ms",
        "the file still counts"
    );

    let from_flags = printed(&coordinator(
        &[
            "--config",
            &file,
            "--nats-url",
            "nats://flag:4222",
            "--database-url",
            "postgres://paddock:hunter2@db/paddock",
            "--print-config",
        ],
        &env,
    ));
    assert_eq!(from_flags["nats"]["url"], "nats://flag:4222");
    assert_eq!(
        from_flags["database_url"],
        "postgres://paddock:***@db/paddock"
    );
    assert_eq!(from_flags["ledger_writer"]["batch_size"], 20);
}

#[test]
fn without_a_file_the_defaults_run_on_one_machine() {
    let config = printed(&coordinator(&["--print-config"], &[]));
    assert_eq!(config["database_url"], "sqlite://.paddock/ledger.db");
    assert_eq!(config["nats"]["url"], "nats://127.0.0.1:4222");
}

#[test]
fn an_unknown_key_in_the_file_is_named() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let file = write_config(dir.path(), "[ledger_writer]\nbatch_sise = 10\n");
    let output = coordinator(&["--config", &file, "--print-config"], &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("batch_sise"), "{stderr}");
    assert!(stderr.contains("ledger_writer"), "{stderr}");
}

#[test]
fn a_value_of_the_wrong_type_is_named_by_its_key() {
    let output = coordinator(
        &["--print-config"],
        &[("PADDOCK_COORDINATOR_STREAMS__REPLICAS", "three")],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    // figment names a key from the environment as it was spelled there.
    assert!(
        stderr.to_lowercase().contains("streams.replicas"),
        "{stderr}"
    );
}

#[test]
fn a_value_that_cannot_work_is_named_by_its_key() {
    let output = coordinator(
        &["--print-config"],
        &[("PADDOCK_COORDINATOR_LEDGER_WRITER__GAP_WAIT", "5s")],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("ledger_writer.gap_wait"), "{stderr}");
}

#[test]
fn a_missing_config_file_is_an_error() {
    let output = coordinator(
        &[
            "--config",
            "/nonexistent/coordinator.toml",
            "--print-config",
        ],
        &[],
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("/nonexistent/coordinator.toml"), "{stderr}");
}
