//! Every metric renders, passes `promtool check metrics` and shows the expected counts
//! after a scripted run of a few jobs (one failing, one handed back) through the
//! recording methods each component calls, the node's event observer, the
//! coordinator's ledger hook and the JetStream queue sampler against a real
//! nats-server. The catalogue is checked against what renders, so a metric added
//! without being exercised here fails the test.

mod common;

use async_nats::jetstream::{self, consumer, stream};
use common::{assert_promtool_ok, run_promtool};
use paddock_contract::api::JobView;
use paddock_contract::event::failure;
use paddock_contract::{
    CONTRACT_VERSION, EventBody, JobEvent, JobId, JobStatus, RunSummary, subjects,
};
use paddock_telemetry::metrics::{ApprovalOutcome, MetricKind};
use paddock_telemetry::{
    CoordinatorMetrics, FleetView, GatewayMetrics, JobObserver, NatsMetrics, NodeMetrics,
    NodeReport, NodeState, QueueMetrics, QueueSampler, catalogue, new_registry, render,
};
use paddock_testkit::NatsServer;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

/// One sample of the text format: name and labels.
type SampleKey = (String, BTreeMap<String, String>);

/// Parses Prometheus' text format (as this crate writes it: simple label values).
fn parse(text: &str) -> BTreeMap<SampleKey, f64> {
    let mut samples = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("sample line");
        let value: f64 = value.parse().expect("sample value");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (key, value) = pair.split_once("=\"").expect("label pair");
                    labels.insert(key.to_string(), value.trim_end_matches('"').to_string());
                }
                (name.to_string(), labels)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        samples.insert((name, labels), value);
    }
    samples
}

fn value(samples: &BTreeMap<SampleKey, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    *samples
        .get(&(name.to_string(), labels.clone()))
        .unwrap_or_else(|| {
            let same_name: Vec<_> = samples.keys().filter(|(n, _)| n == name).collect();
            panic!("no sample {name}{labels:?}; samples of that name: {same_name:#?}")
        })
}

fn event(job: JobId, seq: u64, at_ms: i64, body: EventBody) -> JobEvent {
    JobEvent {
        version: CONTRACT_VERSION,
        job_id: job,
        seq,
        at_ms,
        node: Some("mini-1".into()),
        attempt: 1,
        body,
        raw: None,
    }
}

fn view(job: JobId, created_at_ms: i64, started_at_ms: Option<i64>, usage: RunSummary) -> JobView {
    JobView {
        id: job,
        project: "demo".into(),
        prompt: "p".into(),
        status: JobStatus::Running,
        node: Some("mini-1".into()),
        attempts: 1,
        submitted_by: "ada".into(),
        created_at_ms,
        started_at_ms,
        finished_at_ms: None,
        exit_reason: None,
        exit_message: None,
        session_id: None,
        num_turns: None,
        cost_usd: usage.total_cost_usd,
        input_tokens: usage.input_tokens,
        output_tokens: usage.output_tokens,
        last_seq: 0,
        session_state: None,
        attempt_reasons: Vec::new(),
    }
}

fn summary(cost: f64, input: u64, output: u64) -> RunSummary {
    RunSummary {
        total_cost_usd: Some(cost),
        input_tokens: Some(input),
        output_tokens: Some(output),
        ..RunSummary::default()
    }
}

/// The events of one job after `job.queued`, as a node appends them: a tool call, a
/// denied one, an approval decided by `decided_by` and, on request, an agent restart
/// and a model API retry.
fn run_events(
    job: JobId,
    start_ms: i64,
    ending: EventBody,
    restart: bool,
    (allowed, decided_by): (bool, &str),
) -> Vec<JobEvent> {
    let mut bodies = vec![
        EventBody::Started {
            node: "mini-1".into(),
            attempt: 1,
        },
        EventBody::SessionInit {
            session_id: "s".into(),
            model: None,
            cwd: None,
            tools: vec![],
        },
        EventBody::AssistantText {
            text: "Looking.".into(),
        },
        EventBody::ToolCall {
            tool_use_id: "t1".into(),
            name: "Bash".into(),
            input: serde_json::json!({"command": "ls"}),
        },
        EventBody::ToolResult {
            tool_use_id: "t1".into(),
            is_error: false,
            content: "Cargo.toml".into(),
        },
        EventBody::ToolDenied {
            tool_name: "WebFetch".into(),
            tool_use_id: "t2".into(),
        },
    ];
    bodies.push(EventBody::ApprovalRequested {
        request_id: "r1".into(),
        tool_name: "Edit".into(),
        input: serde_json::json!({}),
        deadline_ms: start_ms + 60_000,
    });
    bodies.push(EventBody::ApprovalResolved {
        request_id: "r1".into(),
        allowed,
        by: decided_by.into(),
        reason: None,
    });
    if restart {
        bodies.push(EventBody::Restarting {
            restart: 1,
            reason: "agent died".into(),
            delay_ms: 100,
        });
        bodies.push(EventBody::TurnRetrying {
            retry: 1,
            reason: "overloaded".into(),
            delay_ms: 100,
        });
    }
    bodies.push(ending);
    bodies
        .into_iter()
        .enumerate()
        .map(|(i, body)| event(job, i as u64 + 2, start_ms + i as i64 * 1000, body))
        .collect()
}

async fn jobs_stream_with_two_queued_jobs(js: &jetstream::Context) {
    js.create_stream(stream::Config {
        name: subjects::JOBS_STREAM.into(),
        subjects: subjects::jobs_stream_subjects(),
        retention: stream::RetentionPolicy::WorkQueue,
        ..Default::default()
    })
    .await
    .expect("jobs stream");
    js.create_stream(stream::Config {
        name: subjects::EVENTS_STREAM.into(),
        subjects: subjects::events_stream_subjects(),
        ..Default::default()
    })
    .await
    .expect("events stream");
    let jobs = js
        .get_stream(subjects::JOBS_STREAM)
        .await
        .expect("get jobs stream");
    jobs.create_consumer(consumer::pull::Config {
        durable_name: Some(subjects::pool_consumer("default")),
        filter_subject: subjects::pool_jobs("default"),
        ..Default::default()
    })
    .await
    .expect("pool consumer");
    for _ in 0..2 {
        js.publish(subjects::pool_jobs("default"), "{}".into())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
}

#[tokio::test]
async fn a_scripted_run_renders_every_metric_with_the_expected_counts() {
    let nats = NatsServer::start().await;
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client.clone());
    jobs_stream_with_two_queued_jobs(&js).await;

    // One registry per component, as each serves its own /metrics.
    let gateway_registry = new_registry("paddock-gateway").expect("registry");
    let node_registry = new_registry("paddock-node").expect("registry");
    let coordinator_registry = new_registry("paddock-coordinator").expect("registry");
    let gateway = GatewayMetrics::register(&gateway_registry).expect("gateway metrics");
    let node = NodeMetrics::register(&node_registry, "mini-1").expect("node metrics");
    let coordinator =
        CoordinatorMetrics::register(&coordinator_registry).expect("coordinator metrics");
    let fleet = FleetView::register(&coordinator_registry).expect("fleet view");
    let queue = QueueMetrics::register(&coordinator_registry).expect("queue metrics");
    let membership = paddock_telemetry::metrics::MembershipMetrics::register(&coordinator_registry)
        .expect("membership metrics");
    let link = paddock_telemetry::metrics::ClusterLinkMetrics::register(&node_registry)
        .expect("cluster link metrics");
    for registry in [&gateway_registry, &node_registry, &coordinator_registry] {
        NatsMetrics::register(registry, client.clone()).expect("nats metrics");
    }
    QueueSampler::new(js.clone(), queue)
        .sample()
        .await
        .expect("sample the queue");

    // Four jobs: two complete, one fails on its cost budget, one is handed back after
    // it started.
    let t0 = 1_700_000_000_000_i64;
    let jobs = [
        (
            EventBody::Completed {
                summary: summary(0.10, 1000, 200),
            },
            summary(0.10, 1000, 200),
            (true, "ada"),
        ),
        (
            EventBody::Completed {
                summary: summary(0.20, 2000, 300),
            },
            summary(0.20, 2000, 300),
            (false, "timeout"),
        ),
        (
            EventBody::Failed {
                reason: failure::COST_BUDGET.into(),
                message: "over budget".into(),
                summary: None,
            },
            summary(0.05, 500, 50),
            (false, "ada"),
        ),
    ];
    for (n, (ending, usage, approval)) in jobs.into_iter().enumerate() {
        let job = JobId::new();
        let submitted = t0 + n as i64 * 60_000;
        let started = submitted + 1500;
        gateway.job_submitted("demo");
        let mut observer = JobObserver::new(node.clone(), tracing::Span::none());
        for event in run_events(job, started, ending, n == 0, approval) {
            observer.observe(&event);
            if CoordinatorMetrics::needs_job_view(&event) {
                let row = view(job, submitted, Some(started), usage.clone());
                coordinator.job_event_applied(&event, &row);
            }
            coordinator.event_applied(event.kind(), Duration::from_millis(2));
        }
    }
    let handed_back = JobId::new();
    gateway.job_submitted("demo");
    {
        let mut observer = JobObserver::new(node.clone(), tracing::Span::none());
        let started = event(
            handed_back,
            2,
            t0 + 500_000,
            EventBody::Started {
                node: "mini-1".into(),
                attempt: 1,
            },
        );
        observer.observe(&started);
        let row = view(handed_back, t0 + 499_000, None, RunSummary::default());
        coordinator.job_event_applied(&started, &row);
    }
    // Delivered again after the node handed it back.
    let retrying = event(
        handed_back,
        3,
        t0 + 530_000,
        EventBody::Retrying {
            attempt: 2,
            reason: "handed back".into(),
        },
    );
    let row = view(handed_back, t0 + 499_000, None, RunSummary::default());
    coordinator.job_event_applied(&retrying, &row);

    // What the other components record where it happens.
    membership.joined("mini-1", std::time::SystemTime::now(), 1);
    membership.reconcile_sent(paddock_telemetry::metrics::ReconcileReason::Joined);
    link.attempt(paddock_telemetry::metrics::JoinOutcome::Joined);
    link.reconcile_received();
    gateway.http_request("POST", "/v1/jobs", 202, Duration::from_millis(4));
    gateway.http_request("GET", "/v1/jobs/{id}", 404, Duration::from_millis(1));
    gateway.auth_failure("bad_token");
    gateway.rate_limited("user");
    gateway.quota_refused("jobs_per_day");
    let _socket = gateway.websocket_opened();
    gateway.websocket_events_sent(7);
    gateway.websocket_closed("token_expired");
    node.set_slots(2);
    node.set_state(NodeState::Ready);
    node.approval_requested().resolve(ApprovalOutcome::Approved);
    let _waiting = node.approval_requested();
    node.quota_refused("output_bytes");
    fleet.heartbeat(
        "mini-1",
        NodeReport {
            state: NodeState::Ready,
            slots: 2,
            running: 0,
        },
    );
    fleet.heartbeat(
        "mini-2",
        NodeReport {
            state: NodeState::Ready,
            slots: 4,
            running: 1,
        },
    );
    fleet.drain_started("mini-2", SystemTime::now() + Duration::from_secs(600));
    coordinator.event_held_back();
    coordinator.ledger_write_failed(true);

    let mut samples = BTreeMap::new();
    let mut rendered = BTreeSet::new();
    for (component, registry) in [
        ("gateway", &gateway_registry),
        ("node", &node_registry),
        ("coordinator", &coordinator_registry),
    ] {
        let text = render(registry).expect("render");
        assert_promtool_ok(
            &format!("the {component}'s metrics"),
            &run_promtool(&["check", "metrics"], Some(&text)),
        );
        rendered.extend(
            text.lines()
                .filter_map(|line| line.strip_prefix("# TYPE "))
                .filter_map(|line| line.split_whitespace().next())
                .map(str::to_string),
        );
        // The three share only the NATS and build metrics, which differ by value
        // alone here; the last one read wins.
        samples.extend(parse(&text));
    }

    let demo = [("project", "demo")];
    let mini1 = [("node", "mini-1")];
    assert_eq!(value(&samples, "paddock_jobs_submitted_total", &demo), 4.0);
    assert_eq!(value(&samples, "paddock_jobs_started_total", &demo), 4.0);
    assert_eq!(value(&samples, "paddock_jobs_retried_total", &demo), 1.0);
    assert_eq!(
        value(
            &samples,
            "paddock_jobs_finished_total",
            &[
                ("project", "demo"),
                ("status", "completed"),
                ("reason", "none")
            ]
        ),
        2.0
    );
    assert_eq!(
        value(
            &samples,
            "paddock_jobs_finished_total",
            &[
                ("project", "demo"),
                ("status", "failed"),
                ("reason", "cost_budget")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "paddock_job_dispatch_latency_seconds_count",
            &demo
        ),
        4.0
    );
    assert_eq!(
        value(&samples, "paddock_job_dispatch_latency_seconds_sum", &demo),
        5.5,
        "three dispatches of 1.5 s and one of 1 s"
    );
    assert_eq!(
        value(
            &samples,
            "paddock_job_duration_seconds_count",
            &[("project", "demo"), ("status", "completed")]
        ),
        2.0
    );
    let cost = value(
        &samples,
        "paddock_model_cost_usd_total",
        &[("project", "demo"), ("user", "ada")],
    );
    assert!((cost - 0.35).abs() < 1e-9, "cost {cost}");
    assert_eq!(
        value(
            &samples,
            "paddock_model_tokens_total",
            &[("project", "demo"), ("user", "ada"), ("direction", "input")]
        ),
        3500.0
    );
    assert_eq!(
        value(&samples, "paddock_node_jobs_started_total", &mini1),
        4.0
    );
    assert_eq!(value(&samples, "paddock_node_jobs_running", &mini1), 0.0);
    assert_eq!(
        value(&samples, "paddock_node_jobs_released_total", &mini1),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "paddock_node_jobs_finished_total",
            &[("node", "mini-1"), ("status", "failed")]
        ),
        1.0
    );
    assert_eq!(
        value(&samples, "paddock_node_session_restarts_total", &mini1),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "paddock_node_time_to_first_output_seconds_count",
            &mini1
        ),
        3.0
    );
    assert_eq!(
        value(
            &samples,
            "paddock_node_tool_calls_total",
            &[("node", "mini-1"), ("tool", "Bash")]
        ),
        3.0
    );
    assert_eq!(
        value(
            &samples,
            "paddock_node_tool_denials_total",
            &[("node", "mini-1"), ("tool", "WebFetch")]
        ),
        3.0
    );
    assert_eq!(
        value(&samples, "paddock_node_approvals_pending", &mini1),
        1.0
    );
    assert_eq!(
        value(&samples, "paddock_node_turn_retries_total", &mini1),
        1.0
    );
    for (outcome, count) in [("approved", 2.0), ("timed_out", 1.0), ("refused", 1.0)] {
        assert_eq!(
            value(
                &samples,
                "paddock_node_approval_wait_seconds_count",
                &[("node", "mini-1"), ("outcome", outcome)]
            ),
            count,
            "approvals {outcome}"
        );
    }
    assert_eq!(
        value(
            &samples,
            "paddock_quota_refusals_total",
            &[("node", "mini-1"), ("quota", "cost_budget")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "paddock_node_state",
            &[("node", "mini-1"), ("state", "ready")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "paddock_node_state",
            &[("node", "mini-1"), ("state", "starting")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &samples,
            "paddock_jobs_queued",
            &[("consumer", "pool-default")]
        ),
        2.0
    );
    assert_eq!(
        value(
            &samples,
            "paddock_jobs_claimed",
            &[("consumer", "pool-default")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &samples,
            "paddock_stream_messages",
            &[("stream", subjects::JOBS_STREAM)]
        ),
        2.0
    );
    assert_eq!(value(&samples, "paddock_nats_connected", &[]), 1.0);
    assert_eq!(value(&samples, "paddock_nats_reconnects_total", &[]), 0.0);
    assert!(value(&samples, "paddock_nats_messages_sent_total", &[]) > 0.0);
    assert_eq!(
        value(
            &samples,
            "paddock_fleet_node_state",
            &[("node", "mini-2"), ("state", "draining")]
        ),
        1.0
    );
    assert!(
        value(
            &samples,
            "paddock_fleet_node_drain_deadline_timestamp_seconds",
            &[("node", "mini-2")]
        ) > 1.0e9
    );
    assert!(
        !samples.contains_key(&(
            "paddock_fleet_node_drain_deadline_timestamp_seconds".to_string(),
            [("node".to_string(), "mini-1".to_string())].into()
        )),
        "a ready node has no drain deadline"
    );
    assert_eq!(value(&samples, "paddock_websocket_connections", &[]), 1.0);
    assert_eq!(
        value(
            &samples,
            "paddock_websocket_closes_total",
            &[("reason", "token_expired")]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "paddock_http_requests_total",
            &[
                ("method", "GET"),
                ("route", "/v1/jobs/{id}"),
                ("status", "404")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            "paddock_build_info",
            &[
                ("service", "paddock-coordinator"),
                ("version", env!("CARGO_PKG_VERSION"))
            ]
        ),
        1.0
    );

    // Every metric of the catalogue was exercised and rendered, and nothing else.
    let defined: BTreeSet<String> = catalogue()
        .expect("catalogue")
        .into_iter()
        .map(|m| m.name)
        .collect();
    let not_rendered: Vec<_> = defined.difference(&rendered).collect();
    let not_defined: Vec<_> = rendered.difference(&defined).collect();
    assert!(
        not_rendered.is_empty() && not_defined.is_empty(),
        "defined but not exercised here: {not_rendered:?}; rendered but not in the catalogue: {not_defined:?}"
    );
}

#[test]
fn the_catalogue_follows_prometheus_conventions() {
    let metrics = catalogue().expect("catalogue");
    assert!(metrics.len() >= 40, "only {} metrics", metrics.len());
    for metric in &metrics {
        let name = &metric.name;
        assert!(
            name.starts_with("paddock_"),
            "{name}: not in the paddock_ namespace"
        );
        assert!(!metric.help.is_empty(), "{name}: no help");
        match metric.kind {
            MetricKind::Counter => {
                assert!(name.ends_with("_total"), "{name}: a counter without _total")
            }
            MetricKind::Histogram => assert!(
                name.ends_with("_seconds"),
                "{name}: a histogram not in seconds"
            ),
            MetricKind::Gauge => assert!(
                !name.ends_with("_total"),
                "{name}: a gauge named like a counter"
            ),
            MetricKind::Other => panic!("{name}: unknown kind"),
        }
        for label in &metric.labels {
            assert!(
                !matches!(
                    label.as_str(),
                    "job_id" | "job" | "id" | "session_id" | "tool_use_id"
                ),
                "{name}: label {label} is unbounded"
            );
        }
        assert!(!metric.exported_by.is_empty());
    }
    let quota = metrics
        .iter()
        .find(|m| m.name == "paddock_quota_refusals_total")
        .expect("quota refusals");
    assert_eq!(quota.exported_by, vec!["gateway", "node"]);
}

#[test]
fn a_flood_of_projects_stays_a_bounded_set_of_series() {
    let registry = new_registry("paddock-test").expect("registry");
    let gateway = GatewayMetrics::register(&registry).expect("gateway metrics");
    for n in 0..1000 {
        gateway.job_submitted(&format!("project-{n}"));
    }
    let text = render(&registry).expect("render");
    let series = text
        .lines()
        .filter(|line| line.starts_with("paddock_jobs_submitted_total{"))
        .count();
    assert!(series <= 201, "{series} series for one counter");
    assert!(text.contains("paddock_jobs_submitted_total{project=\"other\"} 800"));
}

#[test]
fn promtool_rejects_badly_named_metrics() {
    // The promtool check above would pass vacuously if promtool accepted anything.
    let bad = "# HELP jobs Jobs.\n# TYPE jobs counter\njobs 1\n";
    let output = run_promtool(&["check", "metrics"], Some(bad));
    assert!(
        !output.status.success(),
        "promtool accepted a counter without _total: {}",
        String::from_utf8_lossy(&output.stdout)
    );
}
