//! Helpers shared by the telemetry tests: finding and running `promtool`, the series
//! names the telemetry crate exports, and a small PromQL scanner that lists the
//! metric names an expression reads.

#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

/// The repository's root.
pub fn repo_root() -> PathBuf {
    paddock_testkit::repo_root()
}

/// `promtool`: `$PADDOCK_PROMTOOL`, `.tools/bin/promtool`, or the one on `PATH`
/// (Debian's `prometheus` package, installed by `ops/install-deps.sh`).
pub fn promtool() -> PathBuf {
    if let Some(path) = std::env::var_os("PADDOCK_PROMTOOL") {
        return PathBuf::from(path);
    }
    let tools = paddock_testkit::tools_bin().join("promtool");
    if tools.exists() {
        return tools;
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("promtool"))
                .find(|candidate| candidate.exists())
        })
        .unwrap_or_default();
    on_path.unwrap_or_else(|| {
        panic!(
            "promtool is missing: run ops/install-deps.sh (Debian package `prometheus`; `brew install prometheus` on a Mac)"
        )
    })
}

/// Runs `promtool` with `args`, feeding it `stdin`.
pub fn run_promtool(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(promtool())
        .args(args)
        .current_dir(repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    {
        let mut input = child.stdin.take().expect("promtool stdin");
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).expect("write to promtool");
        }
    }
    child.wait_with_output().expect("promtool output")
}

/// Panics with promtool's output unless it succeeded.
pub fn assert_promtool_ok(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "promtool rejected {what}:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Every series name the telemetry crate exports (with `_bucket`, `_sum`, `_count`
/// for histograms), plus Prometheus' own `up`, which the scrape produces.
pub fn exported_series() -> BTreeSet<String> {
    let mut names: BTreeSet<String> = paddock_telemetry::catalogue()
        .expect("catalogue")
        .iter()
        .flat_map(|metric| metric.series_names())
        .collect();
    names.insert("up".to_string());
    names
}

/// Operators and keywords: never metric names, though aggregations may be followed by
/// a grouping clause instead of their parenthesis (`sum by (x) (…)`).
const KEYWORDS: &[&str] = &[
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "inf",
    "nan",
    "atan2",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// The metric names a PromQL expression reads. Grafana's variables (`$project`,
/// `${node}`, `$__rate_interval`) are allowed anywhere.
pub fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    let stripped = strip_enclosed(&strip_strings(expr));
    let chars: Vec<char> = stripped.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '$' {
            // A Grafana variable: `$name` or `${name}`.
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || "_{}:".contains(chars[i])) {
                i += 1;
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number or a duration (`0.95`, `1e3`, `5m`, `1h30m`).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
            {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            let mut next = i;
            while next < chars.len() && chars[next].is_whitespace() {
                next += 1;
            }
            let called = chars.get(next) == Some(&'(');
            if GROUPING.contains(&word.as_str()) && called {
                // Skip the label list of a grouping clause.
                while i < chars.len() && chars[i] != ')' {
                    i += 1;
                }
            } else if !called && !KEYWORDS.contains(&word.as_str()) {
                names.insert(word);
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Removes string literals (label values, `label_replace` arguments).
fn strip_strings(expr: &str) -> String {
    let mut out = String::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in expr.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '\'' || c == '`' => quote = Some(c),
            None => out.push(c),
        }
    }
    out
}

/// Removes label matchers `{…}` and ranges `[…]`.
fn strip_enclosed(expr: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    for c in expr.chars() {
        match c {
            '{' | '[' => depth += 1,
            '}' | ']' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}
