//! The API fuzz run: schemathesis (from PyPI, installed into `.tools/` by
//! `ops/install-deps.sh`) reads the gateway's OpenAPI document from a live cluster
//! (fake agent) and sends generated requests, valid and invalid, to every operation as
//! the signed-in admin. It fails on any 5xx, any status the operation does not
//! document, any response whose body breaks its schema, and any undocumented content
//! type; the failure message is schemathesis's report, with a `curl` line per finding.
//!
//! So that generated requests reach more than "not found", path and body values are
//! drawn part of the time from dictionaries of things that exist: a finished job, a
//! live session (idle, waiting for follow-ups), the project, the admin; the stateful
//! phase then chains operations along the links schemathesis infers (a submitted
//! job's id into its cancel, …).
//!
//! The run is bounded (examples per operation, a fixed seed) so it takes about a
//! minute on two cores and finds the same things every time.
//!
//! Left out, because they would end the run's own sign-in (documented here rather
//! than skipped silently):
//! - `POST /v1/auth/logout`: revokes the device of the token in use;
//! - `DELETE /v1/auth/devices/{id}`: given the current device's id it revokes it too;
//! - `POST /v1/auth/password`: needs the current password, so it could only answer
//!   401 after the login failure delay, one second per case (`tests/auth.rs` and the
//!   gateway's tests cover it).

use paddock_contract::JobOptions;
use paddock_testkit::tools_bin;
use paddock_tests::{ADMIN_PASSWORD, Cluster, ClusterOptions, PROJECT};
use serde_json::{Value, json};
use std::time::Duration;

/// Operations the fuzzer leaves out; see the module's note.
const EXCLUDED_PATHS: &[&str] = &[
    "/v1/auth/logout",
    "/v1/auth/devices/{id}",
    "/v1/auth/password",
];

/// Checks run on every response (schemathesis's names).
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance";

/// Generated cases per operation and phase.
const MAX_EXAMPLES: &str = "40";
const SEED: &str = "20261126";
/// Upper bound on the whole run (it normally takes under a minute), below nextest's
/// own limit so that a slow run fails with a message saying so.
const RUN_LIMIT: Duration = Duration::from_secs(240);

async fn admin_token(url: &str) -> String {
    let response = reqwest::Client::new()
        .post(format!("{url}/v1/auth/login"))
        .json(&json!({
            "user": "admin",
            "password": ADMIN_PASSWORD,
            "device_name": "api fuzz",
        }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("login: {e}"));
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .unwrap_or_else(|e| panic!("login body: {e}"));
    assert!(status.is_success(), "login: {status} {body}");
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access token in {body}"))
        .to_string()
}

/// The operations of the document that the run is to test.
async fn operations_to_test(url: &str) -> usize {
    let document: Value = reqwest::get(format!("{url}/v1/openapi.json"))
        .await
        .and_then(|r| r.error_for_status())
        .unwrap_or_else(|e| panic!("the OpenAPI document: {e}"))
        .json()
        .await
        .unwrap_or_else(|e| panic!("the OpenAPI document is not JSON: {e}"));
    let paths = document["paths"].as_object().expect("paths");
    paths
        .iter()
        // schemathesis does not test the document it reads.
        .filter(|(path, _)| *path != "/v1/openapi.json")
        .filter(|(path, _)| !EXCLUDED_PATHS.contains(&path.as_str()))
        .map(|(_, item)| {
            ["get", "post", "put", "patch", "delete"]
                .iter()
                .filter(|method| item.get(**method).is_some())
                .count()
        })
        .sum()
}

/// schemathesis's config: dictionaries of things that exist, used half of the time.
fn config(jobs: &[String]) -> String {
    let list = |values: &[String]| {
        let quoted: Vec<String> = values
            .iter()
            .map(|v| serde_json::to_string(v).unwrap_or_default())
            .collect();
        format!("[{}]", quoted.join(", "))
    };
    format!(
        "[dictionaries]\n\
         jobs = {{ values = {} }}\n\
         names = {{ values = [\"admin\"] }}\n\
         projects = {{ values = [\"{PROJECT}\"] }}\n\
         [parameters]\n\
         \"path.id\" = {{ dictionary = \"jobs\", probability = 0.5 }}\n\
         \"path.name\" = {{ dictionary = \"names\", probability = 0.5 }}\n\
         \"body.project\" = {{ dictionary = \"projects\", probability = 0.7 }}\n",
        list(jobs)
    )
}

#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_off_the_schema() {
    let schemathesis = tools_bin().join("schemathesis");
    assert!(
        schemathesis.is_file(),
        "{} is missing: run ops/install-deps.sh",
        schemathesis.display()
    );
    let cluster = Cluster::start(ClusterOptions {
        // Submissions are rate-limited per user; the fuzzer submits as one user, and
        // the limit would answer most of its cases before the logic behind it runs
        // (the limit itself is tested in the gateway's tests).
        gateway_tables: "[rate_limits.submit]\nburst = 100000\nevery = \"1ms\"\n".into(),
        ..ClusterOptions::default()
    })
    .await;
    // Something to read and steer: a finished job, and a session that waits for
    // follow-ups for the whole run.
    let ended = cluster.submit("hello", JobOptions::default()).await;
    cluster.ledger_final(ended).await;
    let live = cluster
        .submit(
            "hello, stay a while",
            JobOptions {
                idle_timeout_secs: Some(600),
                ..JobOptions::default()
            },
        )
        .await;
    let token = admin_token(&cluster.url).await;
    let expected = operations_to_test(&cluster.url).await;

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temp dir: {e}"));
    let config_file = dir.path().join("schemathesis.toml");
    std::fs::write(&config_file, config(&[ended.to_string(), live.to_string()]))
        .unwrap_or_else(|e| panic!("writing {}: {e}", config_file.display()));
    let mut command = tokio::process::Command::new(&schemathesis);
    command
        .current_dir(dir.path())
        .arg("--config-file")
        .arg(&config_file)
        .arg("run")
        .arg(format!("{}/v1/openapi.json", cluster.url))
        .args(["--checks", CHECKS])
        .args(["--header", &format!("Authorization: Bearer {token}")])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED])
        .args(["--generation-with-security-parameters", "false"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--workers", "2", "--request-timeout", "30"])
        .args(["--no-color", "--output-truncate", "false"]);
    for path in EXCLUDED_PATHS {
        command.args(["--exclude-path", path]);
    }
    command
        .env("PYTHONIOENCODING", "utf-8")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let started = std::time::Instant::now();
    let output = tokio::time::timeout(RUN_LIMIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("schemathesis ran longer than {RUN_LIMIT:?}"))
        .unwrap_or_else(|e| panic!("running {}: {e}", schemathesis.display()));
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("schemathesis ran for {:?}:\n{report}", started.elapsed());
    assert!(
        output.status.success(),
        "schemathesis found problems ({}):\n{report}",
        output.status
    );
    // A run that tested nothing would pass too: every operation but the excluded ones
    // must have been tested.
    let tested = report
        .lines()
        .find_map(|line| line.trim().strip_prefix("Tested: "))
        .and_then(|count| count.trim().parse::<usize>().ok());
    assert_eq!(
        tested,
        Some(expected),
        "schemathesis did not test every operation:\n{report}"
    );
}
