//! The Prometheus files in `ops/prometheus/`: `promtool check config` on the scrape
//! config, `promtool check rules` and `promtool test rules` on the alerts, every alert
//! exercised by a unit test, and every alert expression reading only metrics the
//! telemetry crate defines.

mod common;

use common::{assert_promtool_ok, exported_series, promql_metric_names, repo_root, run_promtool};
use std::collections::{BTreeMap, BTreeSet};

const CONFIG: &str = "ops/prometheus/prometheus.yml";
const RULES: &str = "ops/prometheus/alerts.yml";
const RULE_TESTS: &str = "ops/prometheus/alerts.test.yml";

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// `(alert, expr)` of every rule: `expr:` on one line or as a `|` block.
fn alert_expressions(rules: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = rules.lines().collect();
    let mut found = Vec::new();
    let mut alert = String::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start();
        if let Some(name) = trimmed.strip_prefix("- alert:") {
            alert = name.trim().to_string();
        } else if let Some(rest) = trimmed.strip_prefix("expr:") {
            let rest = rest.trim();
            if rest == "|" || rest == ">" {
                let indent = line.len() - trimmed.len();
                let mut block = Vec::new();
                i += 1;
                while i < lines.len() {
                    let next = lines[i];
                    let next_indent = next.len() - next.trim_start().len();
                    if !next.trim().is_empty() && next_indent <= indent {
                        break;
                    }
                    block.push(next.trim());
                    i += 1;
                }
                found.push((alert.clone(), block.join(" ")));
                continue;
            }
            found.push((alert.clone(), rest.to_string()));
        }
        i += 1;
    }
    found
}

#[test]
fn the_scrape_config_is_valid() {
    assert_promtool_ok(CONFIG, &run_promtool(&["check", "config", CONFIG], None));
}

#[test]
fn the_alert_rules_are_valid() {
    assert_promtool_ok(RULES, &run_promtool(&["check", "rules", RULES], None));
}

#[test]
fn the_alert_rules_pass_their_unit_tests() {
    assert_promtool_ok(
        RULE_TESTS,
        &run_promtool(&["test", "rules", RULE_TESTS], None),
    );
}

#[test]
fn every_alert_has_a_unit_test() {
    let tests = read(RULE_TESTS);
    let untested: Vec<String> = alert_expressions(&read(RULES))
        .into_iter()
        .map(|(alert, _)| alert)
        .filter(|alert| !tests.contains(&format!("alertname: {alert}\n")))
        .collect();
    assert!(
        untested.is_empty(),
        "alerts without a test in {RULE_TESTS}: {untested:?}"
    );
}

#[test]
fn alert_expressions_use_only_exported_metrics() {
    let exported = exported_series();
    let expressions = alert_expressions(&read(RULES));
    assert!(expressions.len() >= 5, "found only {expressions:?}");
    let mut unknown: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (alert, expr) in expressions {
        let names = promql_metric_names(&expr);
        assert!(!names.is_empty(), "{alert}: no metric found in {expr:?}");
        for name in names {
            if !exported.contains(&name) {
                unknown.entry(alert.clone()).or_default().insert(name);
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "alerts read metrics nothing exports: {unknown:#?}"
    );
}

#[test]
fn the_required_alerts_exist() {
    let alerts: BTreeSet<String> = alert_expressions(&read(RULES))
        .into_iter()
        .map(|(alert, _)| alert)
        .collect();
    for required in [
        "PaddockNodeLost",
        "PaddockQueueBacklogGrowing",
        "PaddockJobFailureRatioHigh",
        "PaddockApprovalsWaitingTooLong",
        "PaddockNodeDrainOverdue",
    ] {
        assert!(
            alerts.contains(required),
            "{required} is missing from {RULES}"
        );
    }
}

#[test]
fn promtool_rejects_a_broken_rule_file() {
    // The checks above would pass vacuously if promtool accepted anything.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("broken.yml");
    std::fs::write(
        &path,
        "groups:\n  - name: broken\n    rules:\n      - alert: Broken\n        expr: sum(rate(x[5m]) >\n",
    )
    .expect("write");
    let output = run_promtool(&["check", "rules", &path.to_string_lossy()], None);
    assert!(!output.status.success(), "promtool accepted a broken rule");
}
