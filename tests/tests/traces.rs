//! One job, one trace, across the real binaries: an OTLP/HTTP receiver runs in the
//! test, and the gateway, coordinator and node agent export their spans to it
//! (`otlp_endpoint`). A job that runs a tool (the real CLI against the Messages API
//! double) is submitted over HTTP and followed over the WebSocket. Its trace must hold
//! the gateway's HTTP submission span, the node's `job.claim` and `job.run` spans, a
//! span for the tool call, and a `ws.deliver` span for every event the socket
//! delivered; spans of both services (`service.name` paddock-gateway and
//! paddock-node), linked by parent span ids: the node's first span is a child of a
//! gateway span, and each event's delivery a child of the span that appended it.

use paddock_contract::{EventBody, JobOptions};
use paddock_testkit::{OtlpReceiver, ReceivedSpan, eventually};
use paddock_tests::{Agent, Cluster, ClusterOptions, kinds};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

const GATEWAY: &str = "paddock-gateway";
const NODE: &str = "paddock-node";

/// The spans of one trace, by span id.
struct Trace {
    spans: BTreeMap<String, ReceivedSpan>,
}

impl Trace {
    fn named<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a ReceivedSpan> + 'a {
        self.spans.values().filter(move |span| span.name == name)
    }

    fn one<'a>(&'a self, name: &'a str, service: &str) -> &'a ReceivedSpan {
        let found: Vec<&ReceivedSpan> = self.named(name).collect();
        assert_eq!(found.len(), 1, "one {name} span: {found:#?}");
        assert_eq!(found[0].service, service, "{name}'s service");
        found[0]
    }

    fn parent(&self, span: &ReceivedSpan) -> Option<&ReceivedSpan> {
        self.spans.get(&span.parent_span_id)
    }

    /// The span and its ancestors, nearest first.
    fn lineage<'a>(&'a self, span: &'a ReceivedSpan) -> Vec<&'a ReceivedSpan> {
        let mut chain = vec![span];
        while let Some(parent) = chain.last().and_then(|s| self.parent(s)) {
            if chain.len() > self.spans.len() {
                panic!("a cycle of parents at {}", parent.name);
            }
            chain.push(parent);
        }
        chain
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_is_one_trace_from_the_http_submission_through_the_node_to_the_websocket() {
    let receiver = OtlpReceiver::start().await;
    let collector = receiver.url().to_string();
    let script = json!({
        "conversations": [{
            "match": "create the traced file",
            "steps": [
                {"content": [{"type": "tool_use", "name": "Bash", "input": {"command": "echo traced > traced.txt", "description": "create the file"}}]},
                {"content": [{"type": "text", "text": "I created traced.txt."}]}
            ]
        }]
    });
    let cluster = Cluster::start(ClusterOptions {
        agent: Agent::RealCli { script },
        otlp_endpoint: Some(collector),
        ..Default::default()
    })
    .await;
    let job = cluster
        .submit(
            "please create the traced file",
            JobOptions {
                allowed_tools: vec!["Bash".into()],
                ..Default::default()
            },
        )
        .await;
    let events = cluster
        .follow_to_end(job, 0, Duration::from_secs(120))
        .await;
    assert!(
        matches!(events[events.len() - 1].body, EventBody::Completed { .. }),
        "{:?}",
        kinds(&events)
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.body, EventBody::ToolCall { name, .. } if name == "Bash")),
        "the agent called no tool: {:?}",
        kinds(&events)
    );

    // The submission's span, then its whole trace once every delivery is in (the
    // binaries export every 100 ms).
    let job_id = job.to_string();
    let trace = eventually(
        Duration::from_secs(30),
        "the job's trace to hold a delivery span per event and its node spans",
        || {
            let receiver = receiver.clone();
            let job_id = job_id.clone();
            let delivered = events.len();
            async move {
                let spans = receiver.spans();
                let submission = spans.iter().find(|span| {
                    span.service == GATEWAY
                        && span.name == "request"
                        && span.attributes.get("method").map(String::as_str) == Some("POST")
                        && span.attributes.get("path").map(String::as_str) == Some("/v1/jobs")
                })?;
                let trace = Trace {
                    spans: spans
                        .iter()
                        .filter(|span| span.trace_id == submission.trace_id)
                        .map(|span| (span.span_id.clone(), span.clone()))
                        .collect(),
                };
                let deliveries = trace
                    .named("ws.deliver")
                    .filter(|span| span.attributes.get("job") == Some(&job_id))
                    .count();
                let complete = deliveries == delivered
                    && trace.named("job.claim").count() == 1
                    && trace.named("job.run").count() == 1
                    && trace.named("tool Bash").count() == 1;
                complete.then_some(trace)
            }
        },
    )
    .await;

    // The submission is the trace's root, in the gateway.
    let submission = trace
        .spans
        .values()
        .find(|span| span.name == "request" && span.parent_span_id.is_empty())
        .unwrap_or_else(|| panic!("no root request span: {:#?}", trace.spans));
    assert_eq!(submission.service, GATEWAY);
    assert_eq!(
        submission.attributes.get("path").map(String::as_str),
        Some("/v1/jobs")
    );

    // The node's first span hangs below a gateway span of the submission.
    let claim = trace.one("job.claim", NODE);
    let claim_parent = trace
        .parent(claim)
        .unwrap_or_else(|| panic!("job.claim's parent was not exported: {claim:#?}"));
    assert_eq!(claim_parent.service, GATEWAY, "job.claim's parent");
    assert!(
        trace
            .lineage(claim)
            .iter()
            .any(|span| span.span_id == submission.span_id),
        "job.claim descends from the submission"
    );
    assert_eq!(claim.attributes.get("job"), Some(&job_id));
    let run = trace.one("job.run", NODE);
    assert_eq!(run.parent_span_id, claim.span_id, "job.run's parent");
    let tool = trace.one("tool Bash", NODE);
    assert_eq!(tool.parent_span_id, run.span_id, "the tool call's parent");

    // Every delivered event has its span in the gateway, a child of the span that
    // appended the event: the submission for `job.queued`, the node's for the rest.
    for delivery in trace.named("ws.deliver") {
        assert_eq!(delivery.service, GATEWAY, "{delivery:#?}");
        let producer = trace
            .parent(delivery)
            .unwrap_or_else(|| panic!("a delivery's parent was not exported: {delivery:#?}"));
        let seq = delivery
            .attributes
            .get("seq")
            .unwrap_or_else(|| panic!("a delivery without its seq: {delivery:#?}"));
        if seq == "1" {
            assert_eq!(
                producer.span_id, submission.span_id,
                "job.queued's delivery"
            );
        } else {
            assert_eq!(
                producer.service, NODE,
                "event {seq}'s delivery: {producer:#?}"
            );
        }
    }
    assert!(
        trace
            .named("ws.deliver")
            .any(|delivery| delivery.parent_span_id == run.span_id),
        "some delivery is a child of job.run"
    );

    // Nothing in the trace points at a parent outside it.
    for span in trace.spans.values() {
        assert!(
            span.parent_span_id.is_empty() || trace.spans.contains_key(&span.parent_span_id),
            "{} ({}) has a parent that is not in the trace",
            span.name,
            span.service
        );
    }
}
