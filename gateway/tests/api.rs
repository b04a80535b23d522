//! The REST API against a real nats-server and a real SQLite ledger: submission and
//! its idempotency, refusals before anything is published, reads scoped to their
//! caller, the events endpoint, cancellation, health, and a clean stop.

mod common;

use async_nats::jetstream::consumer::pull;
use common::{ADA, BOB, TestGateway, WAIT, to_json};
use futures::StreamExt;
use paddock_contract::api::{EventPage, JobAccepted, JobPage, JobView, SubmitJob};
use paddock_contract::control::{ControlReply, ControlRequest};
use paddock_contract::{EventBody, JobId, JobOptions, JobSpec, JobStatus, RunSummary, subjects};
use serde_json::{Value, json};

fn submission(job_id: Option<JobId>, prompt: &str) -> Value {
    to_json(&SubmitJob {
        project: "web".into(),
        prompt: prompt.into(),
        options: JobOptions::default(),
        job_id,
    })
}

/// The first event a node records for a job it runs. `job.started` itself cannot be
/// used here yet: its body repeats the envelope's `node` and `attempt` fields, so it
/// does not deserialise (reported to the contract's owner).
fn node_took_it() -> EventBody {
    EventBody::SessionInit {
        session_id: "session-1".into(),
        model: None,
        cwd: None,
        tools: Vec::new(),
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no code>")
}

#[tokio::test]
async fn a_submission_is_queued_on_the_jobs_stream_with_its_queued_event() {
    let gateway = TestGateway::start().await;
    let body = json!({
        "project": "api",
        "prompt": "fix the flaky test",
        "options": { "subdir": "services/api", "allowed_tools": ["Read", "Bash(git diff:*)"] }
    });
    let (status, json) = gateway.submit_raw(ADA, &body).await;
    assert_eq!(status, 202, "{json}");
    let accepted: JobAccepted = serde_json::from_value(json).expect("JobAccepted");
    assert_eq!(accepted.status, JobStatus::Queued);
    let id = accepted.job_id;

    // The job message, read as a node would: a pull consumer on the pool's subject.
    let stream = gateway
        .jetstream
        .get_stream(subjects::JOBS_STREAM)
        .await
        .expect("jobs stream");
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("test-big".into()),
            filter_subject: subjects::pool_jobs("big"),
            ..Default::default()
        })
        .await
        .expect("consumer");
    let mut batch = consumer
        .fetch()
        .max_messages(10)
        .expires(std::time::Duration::from_secs(2))
        .messages()
        .await
        .expect("fetch");
    let message = tokio::time::timeout(WAIT, batch.next())
        .await
        .expect("a job message in time")
        .expect("a job message")
        .expect("a readable job message");
    let spec: JobSpec = serde_json::from_slice(&message.payload).expect("JobSpec");
    assert_eq!(spec.id, id);
    assert_eq!(spec.project, "api");
    assert_eq!(spec.pool, "big");
    assert_eq!(spec.submitted_by, "ada");
    assert_eq!(spec.prompt, "fix the flaky test");
    assert_eq!(spec.options.subdir.as_deref(), Some("services/api"));
    assert_eq!(spec.version, paddock_contract::CONTRACT_VERSION);
    let message_id = message
        .headers
        .as_ref()
        .and_then(|h| h.get("Nats-Msg-Id"))
        .map(|v| v.to_string());
    assert_eq!(message_id, Some(id.to_string()));

    let events = gateway.events.read_all(id).await.expect("events");
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].seq, 1);
    assert_eq!(
        events[0].body,
        EventBody::Queued {
            project: "api".into(),
            prompt: "fix the flaky test".into(),
            pool: "big".into(),
            submitted_by: "ada".into(),
            resumes: None,
            options: spec.options.clone(),
        }
    );
    let row = gateway
        .ledger
        .get(id)
        .await
        .expect("ledger")
        .expect("a row");
    assert_eq!(row.status, JobStatus::Queued);
    assert_eq!(row.submitted_by, "ada");
    gateway.stop().await;
}

#[tokio::test]
async fn resubmitting_a_job_id_queues_one_job() {
    let gateway = TestGateway::start().await;
    let id = JobId::new();
    for _ in 0..3 {
        let (status, json) = gateway
            .submit_raw(ADA, &submission(Some(id), "hello"))
            .await;
        assert_eq!(status, 202, "{json}");
        assert_eq!(json["job_id"], id.to_string());
    }
    // Concurrent retries of another job: still one job message and one queued event.
    let other = JobId::new();
    let body = submission(Some(other), "hello again");
    let (a, b, c) = tokio::join!(
        gateway.submit_raw(ADA, &body),
        gateway.submit_raw(ADA, &body),
        gateway.submit_raw(ADA, &body)
    );
    for (status, json) in [a, b, c] {
        assert_eq!(status, 202, "{json}");
    }
    assert_eq!(gateway.jobs_on_stream().await, 2);
    for job in [id, other] {
        let events = gateway.events.read_all(job).await.expect("events");
        assert_eq!(events.len(), 1, "{events:?}");
    }
}

#[tokio::test]
async fn a_job_id_reused_for_another_job_is_a_conflict() {
    let gateway = TestGateway::start().await;
    let id = JobId::new();
    let (status, _) = gateway.submit_raw(ADA, &submission(Some(id), "one")).await;
    assert_eq!(status, 202);
    let (status, json) = gateway.submit_raw(ADA, &submission(Some(id), "two")).await;
    assert_eq!((status, code(&json)), (409, "conflict"), "{json}");
    let (status, json) = gateway.submit_raw(BOB, &submission(Some(id), "one")).await;
    assert_eq!((status, code(&json)), (409, "conflict"), "{json}");
    assert_eq!(gateway.jobs_on_stream().await, 1);
}

#[tokio::test]
async fn a_resubmission_after_a_node_took_the_job_publishes_nothing() {
    let gateway = TestGateway::start().await;
    let id = JobId::new();
    let (status, _) = gateway.submit_raw(ADA, &submission(Some(id), "hi")).await;
    assert_eq!(status, 202);
    gateway.append(id, vec![node_took_it()]).await;
    // Drain the stream as the node's ack would, so a second message would show.
    gateway
        .jetstream
        .delete_stream(subjects::JOBS_STREAM)
        .await
        .expect("delete the jobs stream");
    paddock_bus::ensure_streams(&gateway.jetstream, &Default::default())
        .await
        .expect("recreate the jobs stream");
    let (status, json) = gateway.submit_raw(ADA, &submission(Some(id), "hi")).await;
    assert_eq!(status, 202, "{json}");
    assert_eq!(json["status"], "running");
    assert_eq!(gateway.jobs_on_stream().await, 0);
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_is_published() {
    let gateway = TestGateway::start().await;
    let jobs = gateway.url("/v1/jobs");
    let http = &gateway.http;
    let good = submission(None, "hello");
    let with = |key: &str, value: Value| {
        let mut body = good.clone();
        body[key] = value;
        body
    };
    let cases: Vec<(&str, reqwest::RequestBuilder, u16, &str)> = vec![
        (
            "no token",
            http.post(&jobs).json(&good),
            401,
            "unauthorized",
        ),
        (
            "wrong token",
            http.post(&jobs).bearer_auth("not-a-token").json(&good),
            401,
            "unauthorized",
        ),
        (
            "basic auth",
            http.post(&jobs).basic_auth("ada", Some(ADA)).json(&good),
            401,
            "unauthorized",
        ),
        (
            "token in the query of a REST call",
            http.post(format!("{jobs}?access_token={ADA}")).json(&good),
            401,
            "unauthorized",
        ),
        (
            "malformed JSON",
            http.post(&jobs)
                .bearer_auth(ADA)
                .header("content-type", "application/json")
                .body("{\"project\": \"web\", "),
            400,
            "bad_request",
        ),
        (
            "unknown field",
            http.post(&jobs)
                .bearer_auth(ADA)
                .json(&with("priority", json!(1))),
            400,
            "bad_request",
        ),
        (
            "unknown option",
            http.post(&jobs)
                .bearer_auth(ADA)
                .json(&with("options", json!({ "sudo": true }))),
            400,
            "bad_request",
        ),
        (
            "no content type",
            http.post(&jobs).bearer_auth(ADA).body(good.to_string()),
            415,
            "unsupported_media_type",
        ),
        (
            "unknown project",
            http.post(&jobs)
                .bearer_auth(ADA)
                .json(&with("project", json!("nope"))),
            400,
            "unknown_project",
        ),
        (
            "empty prompt",
            http.post(&jobs)
                .bearer_auth(ADA)
                .json(&with("prompt", json!("  "))),
            400,
            "bad_request",
        ),
        (
            "oversized prompt",
            http.post(&jobs)
                .bearer_auth(ADA)
                .json(&with("prompt", json!("x".repeat(1001)))),
            413,
            "payload_too_large",
        ),
        (
            "oversized body",
            http.post(&jobs)
                .bearer_auth(ADA)
                .json(&with("prompt", json!("x".repeat(5000)))),
            413,
            "payload_too_large",
        ),
        (
            "subdir with ..",
            http.post(&jobs)
                .bearer_auth(ADA)
                .json(&with("options", json!({ "subdir": "src/../../etc" }))),
            400,
            "bad_path",
        ),
        (
            "absolute subdir",
            http.post(&jobs)
                .bearer_auth(ADA)
                .json(&with("options", json!({ "subdir": "/etc" }))),
            400,
            "bad_path",
        ),
        (
            "tool that is a flag",
            http.post(&jobs).bearer_auth(ADA).json(&with(
                "options",
                json!({ "allowed_tools": ["--dangerously-skip-permissions"] }),
            )),
            400,
            "bad_request",
        ),
        (
            "malformed job id",
            http.post(&jobs)
                .bearer_auth(ADA)
                .json(&with("job_id", json!("not-a-uuid"))),
            400,
            "bad_request",
        ),
        (
            "bad id in the path",
            http.get(gateway.url("/v1/jobs/not-a-uuid"))
                .bearer_auth(ADA),
            400,
            "bad_request",
        ),
        (
            "bad id to cancel",
            http.post(gateway.url("/v1/jobs/42/cancel"))
                .bearer_auth(ADA),
            400,
            "bad_request",
        ),
        (
            "unknown job",
            http.get(gateway.url(&format!("/v1/jobs/{}", JobId::new())))
                .bearer_auth(ADA),
            404,
            "not_found",
        ),
        (
            "bad status filter",
            http.get(gateway.url("/v1/jobs?status=done"))
                .bearer_auth(ADA),
            400,
            "bad_request",
        ),
        (
            "another user's listing",
            http.get(gateway.url("/v1/jobs?submitted_by=bob"))
                .bearer_auth(ADA),
            403,
            "forbidden",
        ),
        (
            "unknown path",
            http.get(gateway.url("/v2/jobs")).bearer_auth(ADA),
            404,
            "not_found",
        ),
        (
            "wrong method",
            http.delete(&jobs).bearer_auth(ADA),
            405,
            "method_not_allowed",
        ),
        (
            "websocket without a token",
            http.get(gateway.url("/v1/ws")),
            401,
            "unauthorized",
        ),
        (
            "websocket without an upgrade",
            http.get(gateway.url("/v1/ws")).bearer_auth(ADA),
            400,
            "bad_request",
        ),
    ];
    for (what, request, status, error_code) in cases {
        let response = request.send().await.expect(what);
        assert_eq!(response.status().as_u16(), status, "{what}");
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        assert_eq!(content_type.as_deref(), Some("application/json"), "{what}");
        let body: Value = response.json().await.expect(what);
        assert_eq!(code(&body), error_code, "{what}: {body}");
        assert!(body["error"]["message"].is_string(), "{what}: {body}");
    }
    assert_eq!(gateway.jobs_on_stream().await, 0);
    assert_eq!(gateway.stream_messages(subjects::EVENTS_STREAM).await, 0);
    let page = gateway
        .ledger
        .list(&Default::default())
        .await
        .expect("list");
    assert!(page.jobs.is_empty(), "{page:?}");
}

#[tokio::test]
async fn unknown_fields_are_named_in_the_error() {
    let gateway = TestGateway::start().await;
    let mut body = submission(None, "hello");
    body["priority"] = json!(1);
    let (status, json) = gateway.submit_raw(ADA, &body).await;
    assert_eq!(status, 400);
    let message = json["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("priority"), "{message}");
}

#[tokio::test]
async fn jobs_are_read_from_the_ledger_and_scoped_to_their_submitter() {
    let gateway = TestGateway::start().await;
    let first = gateway.submit(ADA, "web", "first").await;
    let second = gateway.submit(ADA, "api", "second").await;
    let bobs = gateway.submit(BOB, "web", "bob's").await;
    gateway.sync_ledger(first).await;
    gateway
        .append(
            first,
            vec![
                node_took_it(),
                EventBody::Completed {
                    summary: RunSummary {
                        total_cost_usd: Some(0.25),
                        num_turns: Some(3),
                        ..RunSummary::default()
                    },
                },
            ],
        )
        .await;

    let (status, json) = gateway.get(ADA, &format!("/v1/jobs/{first}")).await;
    assert_eq!(status, 200, "{json}");
    let view: JobView = serde_json::from_value(json).expect("JobView");
    assert_eq!(view.status, JobStatus::Completed);
    assert_eq!(view.cost_usd, Some(0.25));
    assert_eq!(view.submitted_by, "ada");

    // Another user's job is not found, not forbidden.
    let (status, json) = gateway.get(ADA, &format!("/v1/jobs/{bobs}")).await;
    assert_eq!((status, code(&json)), (404, "not_found"));

    let list = |token: &'static str, query: &'static str| {
        let gateway = &gateway;
        async move {
            let (status, json) = gateway.get(token, &format!("/v1/jobs{query}")).await;
            assert_eq!(status, 200, "{json}");
            serde_json::from_value::<JobPage>(json).expect("JobPage")
        }
    };
    let ids = |page: &JobPage| page.jobs.iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(ids(&list(ADA, "").await), vec![second, first]);
    assert_eq!(ids(&list(BOB, "").await), vec![bobs]);
    assert_eq!(ids(&list(ADA, "?status=completed").await), vec![first]);
    assert_eq!(ids(&list(ADA, "?status=queued").await), vec![second]);
    assert_eq!(ids(&list(ADA, "?project=api").await), vec![second]);
    assert_eq!(
        ids(&list(ADA, "?submitted_by=ada&limit=10").await),
        vec![second, first]
    );

    let page = list(ADA, "?limit=1").await;
    assert_eq!(ids(&page), vec![second]);
    let before = page.next_before.expect("a next page");
    let (status, json) = gateway
        .get(ADA, &format!("/v1/jobs?limit=1&before={before}"))
        .await;
    assert_eq!(status, 200, "{json}");
    let page: JobPage = serde_json::from_value(json).expect("JobPage");
    assert_eq!(ids(&page), vec![first]);
}

#[tokio::test]
async fn the_events_endpoint_returns_the_log_after_a_sequence() {
    let gateway = TestGateway::start().await;
    let id = gateway.submit(ADA, "web", "talk").await;
    gateway
        .append(
            id,
            vec![
                node_took_it(),
                EventBody::AssistantText { text: "one".into() },
                EventBody::AssistantText { text: "two".into() },
            ],
        )
        .await;
    let seqs = |json: Value| {
        let page: EventPage = serde_json::from_value(json).expect("EventPage");
        page.events.iter().map(|e| e.seq).collect::<Vec<_>>()
    };
    let (status, json) = gateway.get(ADA, &format!("/v1/jobs/{id}/events")).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(seqs(json), vec![1, 2, 3, 4]);
    let (status, json) = gateway
        .get(ADA, &format!("/v1/jobs/{id}/events?after_seq=2"))
        .await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(seqs(json), vec![3, 4]);
    let (status, json) = gateway.get(BOB, &format!("/v1/jobs/{id}/events")).await;
    assert_eq!((status, code(&json)), (404, "not_found"));
    let (status, json) = gateway
        .get(ADA, &format!("/v1/jobs/{id}/events?after_seq=-1"))
        .await;
    assert_eq!((status, code(&json)), (400, "bad_request"));
}

#[tokio::test]
async fn cancelling_a_queued_job_records_job_cancelled() {
    let gateway = TestGateway::start().await;
    let id = gateway.submit(ADA, "web", "never mind").await;
    let (status, json) = gateway.post(BOB, &format!("/v1/jobs/{id}/cancel")).await;
    assert_eq!(
        (status, code(&json)),
        (404, "not_found"),
        "bob may not cancel ada's job"
    );
    let (status, json) = gateway.post(ADA, &format!("/v1/jobs/{id}/cancel")).await;
    assert_eq!(status, 202, "{json}");
    assert_eq!(json["status"], "cancelled");
    let events = gateway.events.read_all(id).await.expect("events");
    let last = events.last().expect("events");
    assert_eq!(last.seq, 2);
    assert_eq!(
        last.body,
        EventBody::Cancelled {
            by: "ada".into(),
            summary: None
        }
    );
    // The log has ended, whatever the ledger says yet.
    let (status, json) = gateway.post(ADA, &format!("/v1/jobs/{id}/cancel")).await;
    assert_eq!((status, code(&json)), (409, "already_ended"), "{json}");
}

#[tokio::test]
async fn cancelling_an_ended_job_is_a_conflict() {
    let gateway = TestGateway::start().await;
    let id = gateway.submit(ADA, "web", "done soon").await;
    gateway.sync_ledger(id).await;
    gateway
        .append(
            id,
            vec![
                node_took_it(),
                EventBody::Failed {
                    reason: "agent_exited".into(),
                    message: "exit 1".into(),
                    summary: None,
                },
            ],
        )
        .await;
    let (status, json) = gateway.post(ADA, &format!("/v1/jobs/{id}/cancel")).await;
    assert_eq!((status, code(&json)), (409, "already_ended"), "{json}");
    let events = gateway.events.read_all(id).await.expect("events");
    assert_eq!(events.len(), 3);
}

#[tokio::test]
async fn cancelling_a_running_job_asks_its_node() {
    let gateway = TestGateway::start().await;
    let id = gateway.submit(ADA, "web", "long job").await;
    // A node that runs the job answers on its control subject.
    let mut control = gateway
        .nats_client
        .subscribe(subjects::job_control(&id))
        .await
        .expect("subscribe");
    gateway.nats_client.flush().await.expect("flush");
    let node = gateway.nats_client.clone();
    let answered = tokio::spawn(async move {
        let request = control.next().await.expect("a control request");
        let parsed: ControlRequest = serde_json::from_slice(&request.payload).expect("request");
        let reply = serde_json::to_vec(&ControlReply::Accepted).expect("reply");
        node.publish(request.reply.expect("a reply subject"), reply.into())
            .await
            .expect("reply");
        node.flush().await.expect("flush");
        parsed
    });
    let (status, json) = gateway.post(ADA, &format!("/v1/jobs/{id}/cancel")).await;
    assert_eq!(status, 202, "{json}");
    assert_eq!(json["status"], "running");
    let request = tokio::time::timeout(WAIT, answered)
        .await
        .expect("the node was asked in time")
        .expect("node task");
    assert_eq!(request, ControlRequest::Cancel { by: "ada".into() });
    // The node records the cancellation itself; the gateway wrote nothing.
    assert_eq!(gateway.events.read_all(id).await.expect("events").len(), 1);
}

#[tokio::test]
async fn health_needs_no_token_and_readiness_checks_its_dependencies() {
    let gateway = TestGateway::start().await;
    let response = gateway
        .http
        .get(gateway.url("/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(response.status().as_u16(), 200);
    let response = gateway
        .http
        .get(gateway.url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(response.status().as_u16(), 200);
    gateway.stop().await;
}
