//! Web Push end to end: a real cluster (gateways, coordinator, node) sends its
//! notifications to the push-service double (`paddock_testkit::push_service`), which
//! checks each request's VAPID signature, audience and key, and decrypts the payload
//! with the keys the "browser" made when it subscribed.
//!
//! What is shown: a finished job reaches every browser of its owner exactly once, even
//! with two gateways pulling from the shared consumer, carrying only a title, a short
//! body, the job id and the kind; a subscription the push service calls gone (410) is
//! deleted from SQL; a removed one hears nothing; a tool call waiting for approval
//! notifies (with high urgency and a TTL no longer than its deadline), then the end of
//! the job does; the routes check what they are given; and a push service refuses a
//! token signed with another key than the subscription's.

use paddock_cli::client::Client;
use paddock_contract::api::SubmitJob;
use paddock_contract::{ApprovalMode, EventBody, JobEvent, JobId, JobOptions};
use paddock_testkit::push_service::{BrowserSubscription, Delivery};
use paddock_testkit::{PushService, eventually};
use paddock_tests::{ADMIN_PASSWORD, Agent, Cluster, ClusterOptions, Follower, PROJECT, TOKEN};
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);
/// Words of the prompts that must never appear in a notification.
const SECRET: &str = "watermelon";

fn push_table(extra: &str) -> String {
    format!("[push]\nallow_loopback_http = true\nsubject = \"mailto:ops@paddock.test\"\n{extra}\n")
}

/// Signs in as the first admin, as the web app does, and returns the access token.
async fn sign_in(cluster: &Cluster) -> String {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/auth/login", cluster.url))
        .json(&json!({ "user": "admin", "password": ADMIN_PASSWORD, "device_name": "phone" }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("login: {e}"));
    assert!(
        response.status().is_success(),
        "login: {}",
        response.status()
    );
    let body: Value = response
        .json()
        .await
        .unwrap_or_else(|e| panic!("login: {e}"));
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access token in {body}"))
        .to_string()
}

/// `method path` with a bearer token and an optional JSON body: the status and body.
async fn call(
    url: &str,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, format!("{url}{path}"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn public_key(url: &str, token: &str) -> String {
    let (status, body) = call(url, reqwest::Method::GET, "/v1/push/key", Some(token), None).await;
    assert_eq!(status, 200, "{body}");
    body["public_key"]
        .as_str()
        .unwrap_or_else(|| panic!("no key in {body}"))
        .to_string()
}

async fn register(url: &str, token: &str, browser: &BrowserSubscription) -> (u16, Value) {
    call(
        url,
        reqwest::Method::POST,
        "/v1/push/subscriptions",
        Some(token),
        Some(browser.to_json()),
    )
    .await
}

async fn submit(client: &Client, prompt: &str, options: JobOptions) -> JobId {
    client
        .submit(&SubmitJob {
            project: PROJECT.into(),
            prompt: prompt.into(),
            options,
            job_id: None,
        })
        .await
        .unwrap_or_else(|e| panic!("submit: {e:#}"))
        .job_id
}

/// Waits for a notification of `kind` about `job` at `browser`.
async fn notified(push: &PushService, browser: &str, job: JobId, kind: &str) -> Delivery {
    eventually(WAIT, &format!("a {kind} notification of {job}"), || async {
        push.deliveries_to(browser).into_iter().find(|d| {
            let json = d.json();
            json["job_id"] == job.to_string() && json["kind"] == kind
        })
    })
    .await
}

fn about(deliveries: &[Delivery], job: JobId) -> usize {
    deliveries
        .iter()
        .filter(|d| d.json()["job_id"] == job.to_string())
        .count()
}

/// `paddock_push_notifications_total{outcome}` of the gateway whose metrics are on `port`.
async fn pushed(port: u16, outcome: &str) -> f64 {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap_or_else(|e| panic!("metrics: {e}"))
        .text()
        .await
        .unwrap_or_default();
    let series = format!("paddock_push_notifications_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in the metrics"))
}

fn assert_plain(delivery: &Delivery) {
    let text = String::from_utf8_lossy(&delivery.payload).to_string();
    assert!(
        !text.contains(SECRET),
        "prompt text left the gateway: {text}"
    );
    let json = delivery.json();
    let keys: std::collections::BTreeSet<&str> = json
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {text}"))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["body", "job_id", "kind", "title"].into(), "{text}");
    assert!(text.len() < 300, "a short payload: {text}");
}

#[tokio::test]
async fn a_finished_job_reaches_each_browser_of_its_owner_once_and_dead_ones_are_dropped() {
    let database = paddock_testkit::PostgresDatabase::create()
        .await
        .unwrap_or_else(|e| panic!("postgres: {e}"));
    let push = PushService::start().await;
    let cluster = Cluster::start(ClusterOptions {
        database_url: Some(database.url().to_string()),
        gateway_tables: push_table(""),
        ..Default::default()
    })
    .await;
    // A second gateway pulls from the same consumer: each event reaches one of them.
    let second = cluster.start_another_gateway().await;
    let token = sign_in(&cluster).await;
    let key = public_key(&cluster.url, &token).await;
    assert_eq!(
        public_key(&second.url, &token).await,
        key,
        "every gateway signs with the one key browsers know"
    );

    let kept = push.subscribe(&key);
    let gone = push.subscribe(&key);
    let removed = push.subscribe(&key);
    let (status, first) = register(&cluster.url, &token, &kept).await;
    assert_eq!(status, 201, "{first}");
    let (status, again) = register(&second.url, &token, &kept).await;
    assert_eq!(
        (status, &again["id"]),
        (201, &first["id"]),
        "idempotent per endpoint"
    );
    for browser in [&gone, &removed] {
        let (status, body) = register(&cluster.url, &token, browser).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, _) = call(
        &cluster.url,
        reqwest::Method::DELETE,
        "/v1/push/subscriptions",
        Some(&token),
        Some(json!({ "endpoint": removed.endpoint })),
    )
    .await;
    assert_eq!(status, 204);
    push.answer_gone(&gone.id);

    let admin = Client::new(&cluster.url, &token).unwrap_or_else(|e| panic!("client: {e}"));
    let first_job = submit(
        &admin,
        &format!("tell me about the {SECRET}"),
        JobOptions::default(),
    )
    .await;
    let delivery = notified(&push, &kept.id, first_job, "completed").await;
    let json = delivery.json();
    assert_eq!(json["title"], "Job finished");
    let body = json["body"].as_str().unwrap_or_default();
    assert!(body.starts_with("demo · completed"), "{body}");
    assert_plain(&delivery);
    assert_eq!(delivery.urgency.as_deref(), Some("normal"));
    assert!(delivery.ttl.is_some_and(|ttl| ttl > 0));
    assert_eq!(delivery.token.sub, "mailto:ops@paddock.test");
    assert_eq!(delivery.token.aud, push.origin());

    // The push service said 410: the subscription is deleted from SQL.
    let accounts = paddock_accounts::Accounts::connect(database.url())
        .await
        .unwrap_or_else(|e| panic!("accounts: {e}"));
    let admin_user = accounts
        .user_by_name("admin")
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no admin"));
    eventually(WAIT, "the gone subscription to be deleted", || async {
        let stored = accounts
            .list_push_subscriptions(&admin_user.id)
            .await
            .ok()?;
        let endpoints: Vec<&str> = stored.iter().map(|s| s.endpoint.as_str()).collect();
        (endpoints == [kept.endpoint.as_str()]).then_some(())
    })
    .await;
    assert!(
        push.refusals()
            .iter()
            .any(|r| r.subscription == gone.id && r.status == 410)
    );

    let second_job = submit(&admin, SECRET, JobOptions::default()).await;
    let third_job = submit(&admin, SECRET, JobOptions::default()).await;
    notified(&push, &kept.id, second_job, "completed").await;
    notified(&push, &kept.id, third_job, "completed").await;
    let deliveries = push.deliveries();
    for job in [first_job, second_job, third_job] {
        assert_eq!(about(&deliveries, job), 1, "one notification of {job}");
    }
    assert!(
        push.deliveries_to(&removed.id).is_empty(),
        "a removed browser hears nothing"
    );
    assert!(push.deliveries_to(&gone.id).is_empty());
    assert_eq!(
        push.refusals()
            .iter()
            .filter(|r| r.subscription == gone.id)
            .count(),
        1,
        "a gone subscription is not tried again"
    );
    eventually(WAIT, "the gateways to count what they sent", || async {
        let sent = pushed(cluster.gateway_metrics_port, "sent").await
            + pushed(second.metrics_port, "sent").await;
        let dropped = pushed(cluster.gateway_metrics_port, "gone").await
            + pushed(second.metrics_port, "gone").await;
        (sent == 3.0 && dropped == 1.0).then_some(())
    })
    .await;
    accounts.close().await;
}

#[tokio::test]
async fn a_tool_call_waiting_for_approval_notifies_and_so_does_the_end() {
    let push = PushService::start().await;
    let cluster = Cluster::start(ClusterOptions {
        agent: Agent::RealCli {
            script: json!({"conversations": [{
                "match": SECRET,
                "steps": [
                    {"content": [{"type": "tool_use", "name": "Bash", "input": {"command": "echo watermelon > fruit.txt", "description": "fruit"}}]},
                    {"content": [{"type": "text", "text": "no watermelon then"}]}
                ]
            }]}),
        },
        gateway_tables: push_table(""),
        ..Default::default()
    })
    .await;
    let token = sign_in(&cluster).await;
    let browser = push.subscribe(&public_key(&cluster.url, &token).await);
    let (status, body) = register(&cluster.url, &token, &browser).await;
    assert_eq!(status, 201, "{body}");
    let admin = Client::new(&cluster.url, &token).unwrap_or_else(|e| panic!("client: {e}"));
    let job = submit(
        &admin,
        &format!("write {SECRET} to a file"),
        JobOptions {
            approval: ApprovalMode::Ask,
            approval_timeout_secs: Some(120),
            ..Default::default()
        },
    )
    .await;

    let approval = notified(&push, &browser.id, job, "approval").await;
    let json = approval.json();
    assert_eq!(json["title"], "Approval needed: Bash");
    assert_eq!(json["body"], "demo · waiting for your decision");
    assert_plain(&approval);
    assert_eq!(approval.urgency.as_deref(), Some("high"));
    assert!(
        approval.ttl.is_some_and(|ttl| ttl > 0 && ttl <= 120),
        "no longer than the deadline: {:?}",
        approval.ttl
    );

    // The person answers from the notification: no.
    let mut follower = Follower::start(&admin, job).await;
    let requested = follower
        .until("the approval request", WAIT, |e: &JobEvent| {
            e.kind() == "approval.requested"
        })
        .await;
    let EventBody::ApprovalRequested { request_id, .. } = requested.body else {
        unreachable!("filtered on the kind")
    };
    admin
        .approve(job, &request_id, false, None)
        .await
        .unwrap_or_else(|e| panic!("deny: {e:#}"));
    let completed = notified(&push, &browser.id, job, "completed").await;
    assert_plain(&completed);
    assert_eq!(
        push.deliveries_to(&browser.id).len(),
        2,
        "the request and the end"
    );
    assert!(!cluster.project_dir.join("fruit.txt").exists());
}

#[tokio::test]
async fn subscriptions_are_checked_and_a_push_service_refuses_a_foreign_key() {
    let push = PushService::start().await;
    let cluster = Cluster::start(ClusterOptions {
        gateway_tables: push_table("max_subscriptions_per_user = 2"),
        ..Default::default()
    })
    .await;
    let url = cluster.url.as_str();
    let token = sign_in(&cluster).await;
    let key = public_key(url, &token).await;
    let (status, _) = call(url, reqwest::Method::GET, "/v1/push/key", None, None).await;
    assert_eq!(status, 401);
    assert_eq!(public_key(url, TOKEN).await, key, "any signed-in caller");

    let browser = push.subscribe(&key);
    let (status, body) = register(url, TOKEN, &browser).await;
    assert_eq!(status, 403, "a service token has no browser: {body}");
    let with = |change: &dyn Fn(&mut Value)| {
        let mut json = browser.to_json();
        change(&mut json);
        json
    };
    for (what, bad) in [
        (
            "a private address",
            with(&|j| j["endpoint"] = json!("https://10.1.2.3/push/1")),
        ),
        (
            "not https",
            with(&|j| j["endpoint"] = json!("ftp://push.example/1")),
        ),
        (
            "not a point",
            with(&|j| j["keys"]["p256dh"] = json!("BAAA")),
        ),
        (
            "a short secret",
            with(&|j| j["keys"]["auth"] = json!("AAAAAAAAAAAAAAAAAAAA")),
        ),
        ("no keys", json!({ "endpoint": browser.endpoint })),
    ] {
        let (status, body) = call(
            url,
            reqwest::Method::POST,
            "/v1/push/subscriptions",
            Some(&token),
            Some(bad),
        )
        .await;
        assert_eq!(status, 400, "{what}: {body}");
    }

    // A browser that subscribed with another application server key (another
    // paddock's, or ours before the key file was replaced).
    // Any P-256 public key other than ours will do: a browser's own key is one.
    let other_key = push.subscribe(&key).p256dh;
    let foreign = push.subscribe(&other_key);
    let spare = push.subscribe(&key);
    for subscription in [&browser, &foreign] {
        let (status, body) = register(url, &token, subscription).await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = register(url, &token, &spare).await;
    assert_eq!(status, 409, "two subscriptions at most: {body}");

    let admin = Client::new(url, &token).unwrap_or_else(|e| panic!("client: {e}"));
    let job = submit(&admin, SECRET, JobOptions::default()).await;
    notified(&push, &browser.id, job, "completed").await;
    let refusal = eventually(
        WAIT,
        "the push service to refuse the foreign key",
        || async {
            push.refusals()
                .into_iter()
                .find(|r| r.subscription == foreign.id)
        },
    )
    .await;
    assert_eq!(refusal.status, 403, "{refusal:?}");
    assert!(push.deliveries_to(&foreign.id).is_empty());
    eventually(WAIT, "the refusal to be counted", || async {
        (pushed(cluster.gateway_metrics_port, "rejected").await == 1.0).then_some(())
    })
    .await;

    // Removing one makes room, and removing is idempotent.
    for _ in 0..2 {
        let (status, _) = call(
            url,
            reqwest::Method::DELETE,
            "/v1/push/subscriptions",
            Some(&token),
            Some(json!({ "endpoint": foreign.endpoint })),
        )
        .await;
        assert_eq!(status, 204);
    }
    let (status, body) = register(url, &token, &spare).await;
    assert_eq!(status, 201, "{body}");
}
