//! One job, one trace, across services and a real NATS server: an OTLP/HTTP receiver
//! runs in the test; a "gateway" and a "node" (two tracing setups with their own
//! service names, both exporting to it) hand the trace context to each other in
//! JetStream message headers, the way the real services do: the gateway's submission
//! publishes the job, the node claims it, runs it (a tool call) and publishes an event,
//! the gateway delivers that event. Every span must land in one trace with the right
//! parent. And a log line inside a span carries that span's trace id.

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;
use opentelemetry::trace::TraceContextExt;
use paddock_contract::{CONTRACT_VERSION, EventBody, JobEvent, JobId};
use paddock_telemetry::{ClaimSpans, JobObserver, NodeMetrics, TracingSetup, propagation};
use paddock_testkit::{NatsServer, OtlpReceiver, ReceivedSpan, eventually};
use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing::instrument::WithSubscriber;
use tracing::{Instrument, info_span};
use tracing_opentelemetry::OpenTelemetrySpanExt;

fn span_id_of(span: &tracing::Span) -> String {
    span.context().span().span_context().span_id().to_string()
}

fn event(job: JobId, seq: u64, body: EventBody) -> JobEvent {
    JobEvent {
        version: CONTRACT_VERSION,
        job_id: job,
        seq,
        at_ms: paddock_contract::now_unix_ms(),
        node: Some("mini-1".into()),
        attempt: 1,
        body,
        raw: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_job_is_one_trace_across_gateway_nats_and_node() {
    // No crypto provider is installed here: setting up the exporter must install
    // one (its HTTP client is reqwest with rustls), as it does in the binaries.
    let receiver = OtlpReceiver::start().await;
    let collector = receiver.url().to_string();
    let setup = |service: &str| {
        TracingSetup::new(service)
            .otlp_endpoint(Some(collector.clone()))
            .filter("info")
            .dispatch(std::io::sink)
            .expect("tracing setup")
    };
    let (gateway, gateway_guard) = setup("paddock-gateway");
    let (node, node_guard) = setup("paddock-node");

    let nats = NatsServer::start().await;
    let client = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(client.clone());
    let stream = js
        .create_stream(stream::Config {
            name: "TELEMETRY_TRACE_TEST".into(),
            subjects: vec!["telemetry.test.>".into()],
            ..Default::default()
        })
        .await
        .expect("stream");
    let jobs = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("jobs".into()),
            filter_subject: "telemetry.test.job".into(),
            ..Default::default()
        })
        .await
        .expect("jobs consumer");
    let events = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some("events".into()),
            filter_subject: "telemetry.test.event".into(),
            ..Default::default()
        })
        .await
        .expect("events consumer");
    let job = JobId::new();

    // The gateway: the HTTP submission publishes the job.
    let (submit_id, publish_id, trace_id) = {
        let js = js.clone();
        async move {
            let submit = info_span!("POST /v1/jobs");
            let submit_id = span_id_of(&submit);
            let trace_id = submit
                .context()
                .span()
                .span_context()
                .trace_id()
                .to_string();
            let publish_id = async {
                let publish = info_span!("publish job");
                let headers = publish.in_scope(propagation::headers);
                js.publish_with_headers("telemetry.test.job", headers, "{}".into())
                    .await
                    .expect("publish")
                    .await
                    .expect("stored");
                span_id_of(&publish)
            }
            .instrument(submit)
            .await;
            (submit_id, publish_id, trace_id)
        }
        .with_subscriber(gateway.clone())
        .await
    };
    assert_eq!(trace_id.len(), 32);

    // The node: claims the job, runs it (one tool call) and publishes an event.
    let (claim_id, run_id) = {
        let js = js.clone();
        async move {
            let mut batch = jobs
                .fetch()
                .max_messages(1)
                .expires(Duration::from_secs(5))
                .messages()
                .await
                .expect("fetch");
            let message = batch.next().await.expect("a job").expect("message");
            let claims = ClaimSpans::default();
            let claim = claims.claim(job, "mini-1", message.headers.as_ref());
            let claim_id = span_id_of(&claim);
            let parent = claims.take(job).expect("the claim span");
            let metrics = NodeMetrics::register(&prometheus::Registry::new(), "mini-1")
                .expect("node metrics");
            let mut observer = JobObserver::new(metrics, parent);
            observer.observe(&event(
                job,
                2,
                EventBody::Started {
                    node: "mini-1".into(),
                    attempt: 1,
                },
            ));
            let run_id = span_id_of(observer.span());
            observer.observe(&event(
                job,
                3,
                EventBody::ToolCall {
                    tool_use_id: "t1".into(),
                    name: "Bash".into(),
                    input: serde_json::json!({"command": "ls"}),
                },
            ));
            observer.observe(&event(
                job,
                4,
                EventBody::ToolResult {
                    tool_use_id: "t1".into(),
                    is_error: false,
                    content: "ok".into(),
                },
            ));
            let headers = observer.span().in_scope(propagation::headers);
            js.publish_with_headers("telemetry.test.event", headers, "{}".into())
                .await
                .expect("publish event")
                .await
                .expect("stored");
            observer.observe(&event(
                job,
                5,
                EventBody::Completed {
                    summary: Default::default(),
                },
            ));
            message.ack().await.expect("ack");
            drop(observer);
            drop(claim);
            (claim_id, run_id)
        }
        .with_subscriber(node.clone())
        .await
    };

    // The gateway again: delivers the event to a WebSocket client.
    let deliver_id = async move {
        let mut batch = events
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .expect("fetch");
        let message = batch.next().await.expect("an event").expect("message");
        let deliver = info_span!("ws.deliver");
        assert!(propagation::set_parent(&deliver, message.headers.as_ref()));
        let id = span_id_of(&deliver);
        drop(deliver);
        id
    }
    .with_subscriber(gateway.clone())
    .await;

    tokio::task::spawn_blocking(move || {
        gateway_guard.flush().expect("flush gateway spans");
        node_guard.flush().expect("flush node spans");
    })
    .await
    .expect("flush");

    let spans: BTreeMap<String, ReceivedSpan> = eventually(
        Duration::from_secs(15),
        "the receiver to get all six spans",
        || {
            let receiver = receiver.clone();
            async move {
                let spans = receiver.spans();
                (spans.len() >= 6).then(|| {
                    spans
                        .into_iter()
                        .map(|span| (span.name.clone(), span))
                        .collect::<BTreeMap<_, _>>()
                })
            }
        },
    )
    .await;

    let names: Vec<&str> = spans.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "POST /v1/jobs",
            "job.claim",
            "job.run",
            "publish job",
            "tool Bash",
            "ws.deliver"
        ],
        "{spans:#?}"
    );
    for span in spans.values() {
        assert_eq!(span.trace_id, trace_id, "{} is in another trace", span.name);
    }
    let expect = |name: &str, service: &str, id: &str, parent: &str| {
        let span = &spans[name];
        assert_eq!(span.service, service, "{name}'s service");
        assert_eq!(span.span_id, id, "{name}'s id");
        assert_eq!(span.parent_span_id, parent, "{name}'s parent");
    };
    expect("POST /v1/jobs", "paddock-gateway", &submit_id, "");
    expect("publish job", "paddock-gateway", &publish_id, &submit_id);
    expect("job.claim", "paddock-node", &claim_id, &publish_id);
    expect("job.run", "paddock-node", &run_id, &claim_id);
    let tool = &spans["tool Bash"];
    assert_eq!(tool.service, "paddock-node");
    assert_eq!(tool.parent_span_id, run_id, "the tool call's parent");
    expect("ws.deliver", "paddock-gateway", &deliver_id, &run_id);
}

/// A writer the test reads back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().expect("lock"))
            .lines()
            .map(str::to_string)
            .collect()
    }
}

#[test]
fn log_lines_carry_their_span_trace_id() {
    for json in [false, true] {
        let logs = Captured::default();
        let (dispatch, _guard) = TracingSetup::new("paddock-test")
            .json_logs(json)
            .filter("info")
            .dispatch(logs.clone())
            .expect("tracing setup");
        let (trace_id, span_id) = tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!("outside any span");
            let span = info_span!("work", job = "j1");
            let _entered = span.enter();
            tracing::info!(answer = 42, "inside a span");
            let trace_id = propagation::current_trace_id().expect("a trace id");
            (trace_id, span_id_of(&span))
        });
        let lines = logs.lines();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(!lines[0].contains("trace_id"), "{}", lines[0]);
        if json {
            let line: serde_json::Value = serde_json::from_str(&lines[1]).expect("JSON line");
            assert_eq!(line["trace_id"], trace_id.as_str());
            assert_eq!(line["span_id"], span_id.as_str());
            assert_eq!(line["fields"]["message"], "inside a span");
            assert_eq!(line["fields"]["answer"], 42);
        } else {
            assert!(lines[1].contains("inside a span"), "{}", lines[1]);
            assert!(
                lines[1].ends_with(&format!(" trace_id={trace_id} span_id={span_id}")),
                "{}",
                lines[1]
            );
        }
    }
}
