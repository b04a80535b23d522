//! The operations listener every binary runs: `GET /metrics` (Prometheus text format),
//! `GET /healthz` (the process answers) and `GET /readyz` (every readiness check
//! passes: 200, else 503; both with a JSON body naming each check). A binary runs it
//! on its own port with [`serve`]; the gateway may instead merge [`router`] (or just
//! [`metrics_router`], keeping its own health routes) into its API router.
//!
//! [`track_requests`] is the axum middleware that records the gateway's requests by
//! route template, method and status, and the refusals that the gateway's error
//! mapping marks on responses with a [`Refusal`] (auth failures, rate limits, quotas).

use crate::TelemetryError;
use crate::metrics::{GatewayMetrics, render};
use crate::readiness::Readiness;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus::Registry;
use serde_json::json;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// The route label of requests that matched no route (404s of unknown paths).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// `/metrics`, `/healthz` and `/readyz`.
pub fn router(registry: Registry, readiness: Readiness) -> Router {
    metrics_router(registry)
        .route("/healthz", get(healthz))
        .route(
            "/readyz",
            get(move || {
                let readiness = readiness.clone();
                async move { readyz(&readiness).await }
            }),
        )
}

/// `/metrics` alone.
pub fn metrics_router(registry: Registry) -> Router {
    Router::new().route(
        "/metrics",
        get(move || {
            let registry = registry.clone();
            async move { metrics(&registry) }
        }),
    )
}

/// Serves [`router`] on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    registry: Registry,
    readiness: Readiness,
    shutdown: CancellationToken,
) -> Result<(), TelemetryError> {
    if let Ok(address) = listener.local_addr() {
        tracing::info!(%address, "metrics and health listening");
    }
    axum::serve(listener, router(registry, readiness))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
        .map_err(TelemetryError::Serve)
}

fn metrics(registry: &Registry) -> Response {
    match render(registry) {
        Ok(text) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text).into_response(),
        Err(error) => {
            tracing::error!(%error, "cannot render metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn healthz() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

async fn readyz(readiness: &Readiness) -> Response {
    let report = readiness.evaluate().await;
    let status = if report.is_ready() {
        StatusCode::OK
    } else {
        tracing::warn!(checks = ?report.checks, "not ready");
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(report)).into_response()
}

/// Why a request was refused, put in the response's extensions by the service's one
/// place that maps errors to responses, so that [`track_requests`] counts it in
/// `paddock_auth_failures_total`, `paddock_rate_limited_total` or
/// `paddock_quota_refusals_total` without the handlers knowing about metrics:
///
/// ```ignore
/// let mut response = (status, Json(body)).into_response();
/// if let ApiError::QuotaExceeded { quota, .. } = &self {
///     response.extensions_mut().insert(Refusal::Quota(quota.clone()));
/// }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not authenticated, or lacking a scope: the reason (`unauthorized`,
    /// `forbidden`, `expired`, …).
    Auth(String),
    /// A rate limit's scope (`user`, `device`, `address`).
    RateLimit(String),
    /// The quota reached (`concurrent_jobs`, `jobs_per_day`, `cost_per_day`, …).
    Quota(String),
}

/// Middleware recording every request in `paddock_http_requests_total` and
/// `paddock_http_request_duration_seconds`, labelled with the matched route template,
/// and the [`Refusal`] its response carries. Add it with `Router::layer` (so the
/// template is known):
///
/// ```ignore
/// router.layer(axum::middleware::from_fn_with_state(metrics.clone(), paddock_telemetry::http::track_requests))
/// ```
pub async fn track_requests(
    State(metrics): State<GatewayMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_string();
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || UNMATCHED_ROUTE.to_string(),
        |path| path.as_str().to_string(),
    );
    let response = next.run(request).await;
    metrics.http_request(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    match response.extensions().get::<Refusal>() {
        Some(Refusal::Auth(reason)) => metrics.auth_failure(reason),
        Some(Refusal::RateLimit(scope)) => metrics.rate_limited(scope),
        Some(Refusal::Quota(quota)) => metrics.quota_refused(quota),
        None => {}
    }
    response
}
