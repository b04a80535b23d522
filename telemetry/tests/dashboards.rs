//! The Grafana dashboards and provisioning files: every dashboard parses, has a
//! unique uid and unique panel ids, uses the Prometheus data source, and every query
//! of every panel and variable reads only metrics the telemetry crate defines, so no
//! panel waits for a series nothing exports.

mod common;

use common::{assert_promtool_ok, exported_series, promql_metric_names, repo_root, run_promtool};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn dashboards() -> Vec<(PathBuf, Value)> {
    let dir = repo_root().join("grafana/dashboards");
    let mut found: Vec<(PathBuf, Value)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("read dashboard");
            let json: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
            (path, json)
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(
        found.len() >= 3,
        "expected the jobs, nodes and gateway dashboards, found {found:?}"
    );
    found
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        for nested in panel["panels"].as_array().into_iter().flatten() {
            out.push(nested);
        }
    }
    out
}

/// Every PromQL expression of a dashboard with where it is, variables included.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("?").to_string();
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((format!("panel {title:?}"), expr.to_string()));
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if variable["type"] != "query" {
            continue;
        }
        let name = variable["name"].as_str().unwrap_or("?");
        let query = variable["query"]["query"]
            .as_str()
            .or_else(|| variable["query"].as_str())
            .unwrap_or_default();
        out.push((format!("variable ${name}"), variable_metric_selector(query)));
    }
    out
}

/// The series selector of a Grafana variable query: `label_values(metric{…}, label)`
/// reads `metric{…}`; `label_values(label)` reads nothing; `query_result(expr)` reads
/// `expr`.
fn variable_metric_selector(query: &str) -> String {
    let query = query.trim();
    if let Some(inner) = query
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        return match inner.rfind(',') {
            Some(comma) => inner[..comma].to_string(),
            None => String::new(),
        };
    }
    if let Some(inner) = query
        .strip_prefix("query_result(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        return inner.to_string();
    }
    query.to_string()
}

#[test]
fn every_dashboard_query_uses_only_exported_metrics() {
    let exported = exported_series();
    let mut unknown: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut used = BTreeSet::new();
    for (path, dashboard) in dashboards() {
        let file = path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let queries = queries(&dashboard);
        assert!(!queries.is_empty(), "{file} has no queries");
        for (place, expr) in queries {
            for name in promql_metric_names(&expr) {
                if exported.contains(&name) {
                    used.insert(name);
                } else {
                    unknown
                        .entry(format!("{file} {place}"))
                        .or_default()
                        .insert(name);
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "dashboards query metrics that no component exports: {unknown:#?}"
    );
    assert!(
        used.len() > 30,
        "the dashboards use suspiciously few metrics: {used:?}"
    );
}

#[test]
fn every_dashboard_query_is_valid_promql() {
    // promtool parses each query as a recording rule, with Grafana's variables given
    // the values Grafana would substitute.
    let mut rules = String::from("groups:\n  - name: dashboards\n    rules:\n");
    let mut count = 0;
    for (_, dashboard) in dashboards() {
        for (place, expr) in queries(&dashboard) {
            if expr.is_empty() {
                continue;
            }
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$__range", "1h")
                .replace("$__interval", "1m");
            count += 1;
            rules.push_str(&format!(
                "      # {}\n      - record: dashboard_query_{count}\n        expr: {}\n",
                place.replace('\n', " "),
                serde_json::to_string(&expr).expect("quote")
            ));
        }
    }
    assert!(count > 30, "only {count} queries");
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("dashboards.rules.yml");
    std::fs::write(&path, rules).expect("write rules");
    assert_promtool_ok(
        "the dashboards' queries",
        &run_promtool(&["check", "rules", &path.to_string_lossy()], None),
    );
}

#[test]
fn every_dashboard_is_well_formed() {
    let mut uids = BTreeSet::new();
    for (path, dashboard) in dashboards() {
        let file = path.display().to_string();
        let uid = dashboard["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: no uid"));
        assert!(
            uids.insert(uid.to_string()),
            "{file}: uid {uid} is used twice"
        );
        assert!(
            dashboard["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{file}: no title"
        );
        let variables: Vec<&str> = dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert!(
            variables.contains(&"datasource"),
            "{file}: no datasource variable"
        );

        let mut ids = BTreeSet::new();
        for panel in panels(&dashboard) {
            let title = panel["title"].as_str().unwrap_or("?");
            let id = panel["id"]
                .as_i64()
                .unwrap_or_else(|| panic!("{file}: panel {title:?} has no id"));
            assert!(ids.insert(id), "{file}: panel id {id} is used twice");
            let grid = &panel["gridPos"];
            for key in ["h", "w", "x", "y"] {
                assert!(
                    grid[key].is_u64(),
                    "{file}: panel {title:?} has no gridPos.{key}"
                );
            }
            assert!(
                grid["x"].as_u64().unwrap_or(0) + grid["w"].as_u64().unwrap_or(0) <= 24,
                "{file}: panel {title:?} is wider than the grid"
            );
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(
                panel["datasource"]["uid"], "${datasource}",
                "{file}: panel {title:?} does not use the datasource variable"
            );
            let targets = panel["targets"].as_array().map(Vec::len).unwrap_or(0);
            assert!(targets > 0, "{file}: panel {title:?} has no query");
            assert!(
                panel["description"].as_str().is_some_and(|d| !d.is_empty()),
                "{file}: panel {title:?} has no description"
            );
        }
    }
}

#[test]
fn provisioning_points_at_the_dashboards_and_prometheus() {
    let root = repo_root().join("grafana/provisioning");
    let datasources = std::fs::read_to_string(root.join("datasources/paddock.yml"))
        .expect("grafana/provisioning/datasources/paddock.yml");
    assert!(datasources.contains("type: prometheus"));
    assert!(datasources.contains("apiVersion: 1"));
    let providers = std::fs::read_to_string(root.join("dashboards/paddock.yml"))
        .expect("grafana/provisioning/dashboards/paddock.yml");
    assert!(providers.contains("type: file"));
    assert!(providers.contains("path:"));
}

#[test]
fn the_scanner_finds_metrics_and_nothing_else() {
    let names = promql_metric_names(
        r#"histogram_quantile(0.99, sum by (le, route) (rate(paddock_http_request_duration_seconds_bucket{route!="/v1/ws",instance=~"$instance"}[$__rate_interval]))) / on (node) group_left (state) max by (node) (paddock_fleet_node_state offset 5m) + sum without (x) (count(paddock_node_slots)) > bool 1e3 and time() - up{job="x"} or vector(0)"#,
    );
    let expected: BTreeSet<String> = [
        "paddock_http_request_duration_seconds_bucket",
        "paddock_fleet_node_state",
        "paddock_node_slots",
        "up",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(names, expected);
}

#[test]
fn the_scanner_flags_a_metric_nobody_exports() {
    let exported = exported_series();
    let names = promql_metric_names("sum(rate(paddock_jobs_teleported_total[5m]))");
    assert!(names.iter().any(|name| !exported.contains(name)));
}

#[test]
fn variable_queries_read_their_selector_only() {
    assert_eq!(
        variable_metric_selector("label_values(paddock_node_slots, node)"),
        "paddock_node_slots"
    );
    assert_eq!(variable_metric_selector("label_values(node)"), "");
}
