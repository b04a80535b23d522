//! The gateway's metrics: jobs submitted, the API's requests and their latency by
//! route, auth failures, rate limits, quota refusals, WebSocket connections, the
//! events sent on them and why they closed. HTTP requests are recorded by the
//! middleware in [`crate::http::track_requests`]; everything else by one call where
//! it happens.

use super::{
    HTTP_DURATION_BUCKETS, MetricGroup, counter, counter_vec, gauge, histogram_vec, quota_refusals,
    seconds,
};
use crate::TelemetryError;
use crate::labels::{BoundedLabel, http_method};
use prometheus::core::Collector;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use std::time::Duration;

/// Distinct projects tracked before the rest are counted as `other`.
const MAX_PROJECTS: usize = 200;
/// Distinct routes, auth failure reasons, scopes or quotas tracked.
const MAX_SMALL_SET: usize = 64;

/// The gateway's metrics. Clones share the same series.
#[derive(Clone, Debug)]
pub struct GatewayMetrics {
    jobs_submitted: IntCounterVec,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    auth_failures: IntCounterVec,
    rate_limited: IntCounterVec,
    quota_refusals: IntCounterVec,
    websocket_connections: IntGauge,
    websocket_events_sent: IntCounter,
    websocket_closes: IntCounterVec,
    push_notifications: IntCounterVec,
    projects: BoundedLabel,
    routes: BoundedLabel,
    small: BoundedLabel,
}

impl GatewayMetrics {
    /// Creates the gateway's metrics and registers them in `registry`.
    pub fn register(registry: &Registry) -> Result<Self, TelemetryError> {
        let metrics = Self::new()?;
        metrics.register_in(registry)?;
        Ok(metrics)
    }

    pub(crate) fn new() -> Result<Self, TelemetryError> {
        Ok(GatewayMetrics {
            jobs_submitted: counter_vec(
                Opts::new(
                    "paddock_jobs_submitted_total",
                    "Jobs accepted by the gateway (202), by project. A retried submission of the same job counts again.",
                ),
                &["project"],
            )?,
            http_requests: counter_vec(
                Opts::new(
                    "paddock_http_requests_total",
                    "HTTP requests answered by the gateway, by method, route template and status code.",
                ),
                &["method", "route", "status"],
            )?,
            http_duration: histogram_vec(
                HistogramOpts::new(
                    "paddock_http_request_duration_seconds",
                    "Time to answer an HTTP request of the gateway (to the response head for WebSocket upgrades), by method and route template.",
                )
                .buckets(HTTP_DURATION_BUCKETS.to_vec()),
                &["method", "route"],
            )?,
            auth_failures: counter_vec(
                Opts::new(
                    "paddock_auth_failures_total",
                    "Requests refused because the caller could not be authenticated or lacked a scope, by reason.",
                ),
                &["reason"],
            )?,
            rate_limited: counter_vec(
                Opts::new(
                    "paddock_rate_limited_total",
                    "Requests refused by a rate limit, by the limit's scope (user, device, address).",
                ),
                &["scope"],
            )?,
            quota_refusals: quota_refusals(&[])?,
            websocket_connections: gauge(Opts::new(
                "paddock_websocket_connections",
                "WebSocket connections open now.",
            ))?,
            websocket_events_sent: counter(Opts::new(
                "paddock_websocket_events_sent_total",
                "Job events sent to clients over WebSockets.",
            ))?,
            websocket_closes: counter_vec(
                Opts::new(
                    "paddock_websocket_closes_total",
                    "WebSockets ended, by reason: peer_gone (the client closed or stopped answering), token_expired (its access token expired without a refresh over the socket), too_many_bad_messages, gateway_stopping.",
                ),
                &["reason"],
            )?,
            push_notifications: push_notifications()?,
            projects: BoundedLabel::new(MAX_PROJECTS),
            routes: BoundedLabel::new(MAX_SMALL_SET),
            small: BoundedLabel::new(MAX_SMALL_SET),
        })
    }

    /// A job was accepted (the 202 of `POST /v1/jobs`).
    pub fn job_submitted(&self, project: &str) {
        self.jobs_submitted
            .with_label_values(&[&self.projects.value(project)])
            .inc();
    }

    /// An HTTP request was answered. `route` is the route's template
    /// (`/v1/jobs/{id}`), never the raw path, which holds ids.
    pub fn http_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let method = http_method(method);
        let route = self.routes.value(route);
        self.http_requests
            .with_label_values(&[method, &route, &status.to_string()])
            .inc();
        self.http_duration
            .with_label_values(&[method, &route])
            .observe(seconds(elapsed));
    }

    /// A caller was refused for want of valid credentials or scope
    /// (`missing_token`, `bad_token`, `expired`, `wrong_scope`, `bad_password`, …).
    pub fn auth_failure(&self, reason: &str) {
        self.auth_failures
            .with_label_values(&[&self.small.value(reason)])
            .inc();
    }

    /// A request was refused by a rate limit of `scope` (`user`, `device`, `address`).
    pub fn rate_limited(&self, scope: &str) {
        self.rate_limited
            .with_label_values(&[&self.small.value(scope)])
            .inc();
    }

    /// A submission was refused by a quota (`concurrent_jobs`, `jobs_per_day`, …).
    pub fn quota_refused(&self, quota: &str) {
        self.quota_refusals
            .with_label_values(&[&self.small.value(quota)])
            .inc();
    }

    /// A WebSocket was opened; the gauge goes down when the guard drops.
    pub fn websocket_opened(&self) -> WebSocketGuard {
        self.websocket_connections.inc();
        WebSocketGuard {
            gauge: self.websocket_connections.clone(),
        }
    }

    /// `count` job events were sent on a WebSocket.
    pub fn websocket_events_sent(&self, count: u64) {
        self.websocket_events_sent.inc_by(count);
    }

    /// A WebSocket ended for `reason` (`peer_gone`, `token_expired`,
    /// `too_many_bad_messages`, `gateway_stopping`).
    pub fn websocket_closed(&self, reason: &str) {
        self.websocket_closes
            .with_label_values(&[&self.small.value(reason)])
            .inc();
    }
}

impl MetricGroup for GatewayMetrics {
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.jobs_submitted.clone()),
            Box::new(self.http_requests.clone()),
            Box::new(self.http_duration.clone()),
            Box::new(self.auth_failures.clone()),
            Box::new(self.rate_limited.clone()),
            Box::new(self.quota_refusals.clone()),
            Box::new(self.websocket_connections.clone()),
            Box::new(self.websocket_events_sent.clone()),
            Box::new(self.websocket_closes.clone()),
            Box::new(self.push_notifications.clone()),
        ]
    }
}

/// Holds one open WebSocket in `paddock_websocket_connections`; keep it in the
/// socket's task.
#[derive(Debug)]
pub struct WebSocketGuard {
    gauge: IntGauge,
}

impl Drop for WebSocketGuard {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// What became of one Web Push notification for one subscription (or, for `stale`,
/// of one event too old to notify about).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushOutcome {
    /// The push service accepted it (2xx).
    Sent,
    /// The push service said the subscription is gone (404 or 410); it was removed.
    Gone,
    /// The push service refused it for good (another 4xx: a bad token, a payload
    /// too large, a key mismatch).
    Rejected,
    /// No answer, or still 429 or 5xx after the retries.
    Failed,
    /// The event was too old (the gateways were away) or its approval already past
    /// its deadline: nothing was sent.
    Stale,
}

impl PushOutcome {
    pub const ALL: [PushOutcome; 5] = [
        PushOutcome::Sent,
        PushOutcome::Gone,
        PushOutcome::Rejected,
        PushOutcome::Failed,
        PushOutcome::Stale,
    ];

    /// The `outcome` label.
    pub fn as_str(self) -> &'static str {
        match self {
            PushOutcome::Sent => "sent",
            PushOutcome::Gone => "gone",
            PushOutcome::Rejected => "rejected",
            PushOutcome::Failed => "failed",
            PushOutcome::Stale => "stale",
        }
    }
}

/// `paddock_push_notifications_total`, every outcome present from the start (at 0),
/// so a rate over it exists before the first notification.
fn push_notifications() -> Result<IntCounterVec, TelemetryError> {
    let counter = counter_vec(
        Opts::new(
            "paddock_push_notifications_total",
            "Web Push notifications by outcome: sent, gone (the subscription was removed), rejected, failed (after retries), stale (an event too old to notify about).",
        ),
        &["outcome"],
    )?;
    for outcome in PushOutcome::ALL {
        counter.with_label_values(&[outcome.as_str()]);
    }
    Ok(counter)
}

impl GatewayMetrics {
    /// A Web Push notification ended with `outcome`.
    pub fn push_notification(&self, outcome: PushOutcome) {
        self.push_notifications
            .with_label_values(&[outcome.as_str()])
            .inc();
    }
}
