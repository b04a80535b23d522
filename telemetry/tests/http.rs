//! The operations listener, started on port 0 and spoken to like Prometheus and a
//! load balancer would: `/metrics` in the text format, `/healthz`, `/readyz` following
//! its checks, a clean stop on shutdown; and the request middleware labelling requests
//! by route template, never by raw path.

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::get;
use paddock_telemetry::http::{Refusal, UNMATCHED_ROUTE, serve, track_requests};
use paddock_telemetry::{GatewayMetrics, Readiness, ReadinessCheck, new_registry, render};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client")
}

#[tokio::test]
async fn the_listener_serves_metrics_health_and_readiness_then_stops() {
    let registry = new_registry("paddock-test").expect("registry");
    let gateway = GatewayMetrics::register(&registry).expect("metrics");
    gateway.job_submitted("demo");
    let database_up = Arc::new(AtomicBool::new(false));
    let flag = database_up.clone();
    let readiness = Readiness::new().with_check(ReadinessCheck::new("database", move || {
        let up = flag.load(Ordering::SeqCst);
        async move {
            if up {
                Ok(())
            } else {
                Err("database does not answer".to_string())
            }
        }
    }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(listener, registry, readiness, shutdown.clone()));
    let http = http_client();

    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(metrics.status(), 200);
    let content_type = metrics
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = metrics.text().await.expect("body");
    assert!(
        text.contains("paddock_jobs_submitted_total{project=\"demo\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("paddock_build_info{service=\"paddock-test\""),
        "{text}"
    );

    let health = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("GET /healthz");
    assert_eq!(health.status(), 200);

    let not_ready = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    assert_eq!(not_ready.status(), 503);
    let body: serde_json::Value = not_ready.json().await.expect("JSON");
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["checks"]["database"], "database does not answer");

    database_up.store(true, Ordering::SeqCst);
    let ready = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("GET /readyz");
    assert_eq!(ready.status(), 200);
    let body: serde_json::Value = ready.json().await.expect("JSON");
    assert_eq!(body["checks"]["database"], "ok");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the listener stops on shutdown")
        .expect("join")
        .expect("serve returns Ok");
}

#[tokio::test]
async fn requests_are_counted_by_route_template() {
    let registry = new_registry("paddock-test").expect("registry");
    let metrics = GatewayMetrics::register(&registry).expect("metrics");
    let refused = |refusal: Refusal, status: u16| {
        move || {
            let refusal = refusal.clone();
            async move {
                let status = axum::http::StatusCode::from_u16(status).expect("status");
                let mut response = (status, "refused").into_response();
                response.extensions_mut().insert(refusal);
                response
            }
        }
    };
    let app = Router::new()
        .route("/v1/jobs/{id}", get(|| async { "job" }))
        .route(
            "/v1/secret",
            get(refused(Refusal::Auth("unauthorized".into()), 401)),
        )
        .route(
            "/v1/busy",
            get(refused(Refusal::RateLimit("address".into()), 429)),
        )
        .route(
            "/v1/greedy",
            get(refused(Refusal::Quota("jobs_per_day".into()), 429)),
        )
        .layer(axum::middleware::from_fn_with_state(
            metrics.clone(),
            track_requests,
        ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    });
    let http = http_client();
    for id in ["a", "b", "c"] {
        let response = http
            .get(format!("{base}/v1/jobs/{id}"))
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status(), 200);
    }
    let missing = http
        .get(format!("{base}/nowhere/42"))
        .send()
        .await
        .expect("GET");
    assert_eq!(missing.status(), 404);
    for path in ["secret", "busy", "greedy"] {
        let response = http
            .get(format!("{base}/v1/{path}"))
            .send()
            .await
            .expect("GET");
        assert!(
            response.status().is_client_error(),
            "{path}: {}",
            response.status()
        );
    }

    let text = render(&registry).expect("render");
    assert!(
        text.contains(
            "paddock_http_requests_total{method=\"GET\",route=\"/v1/jobs/{id}\",status=\"200\"} 3"
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "paddock_http_requests_total{{method=\"GET\",route=\"{UNMATCHED_ROUTE}\",status=\"404\"}} 1"
        )),
        "{text}"
    );
    assert!(
        !text.contains("/v1/jobs/a"),
        "a raw path became a label: {text}"
    );
    assert!(text.contains(
        "paddock_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/jobs/{id}\"} 3"
    ));
    for counted in [
        "paddock_auth_failures_total{reason=\"unauthorized\"} 1",
        "paddock_rate_limited_total{scope=\"address\"} 1",
        "paddock_quota_refusals_total{quota=\"jobs_per_day\"} 1",
    ] {
        assert!(text.contains(counted), "no {counted} in {text}");
    }

    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}
