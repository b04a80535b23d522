//! The gateway's side of the audit log (stored by `paddock_accounts`): a helper for
//! handlers that record their own entries, and [`record_changes`], the middleware
//! that records every other state-changing request — a job submitted, cancelled,
//! steered — with who made it (from the `Caller` extractor, through a
//! [`CallerSlot`]), from where, on which job, and its outcome by status: 2xx
//! `success`; 401, 403, 404 and 429 `denied`; anything else `failure`.
//!
//! Reads are not audited. Writing an entry never fails a request: a failed write is
//! logged as an error instead.
//!
//! Actions: `auth.login`, `auth.refresh`, `auth.refresh_reuse`, `auth.logout`,
//! `auth.device_start`, `auth.device_approve`, `auth.device_login`, `device.revoke`,
//! `totp.begin`, `totp.enable`, `totp.disable`, `user.password`, `user.create`,
//! `user.update`, and the `job.*` actions of [`crate::access::ROUTES`]; a route not
//! in that table is recorded as `METHOD /its/route`.

use crate::access::{Audit, route_policy};
use crate::auth::CallerSlot;
use crate::state::AppState;
use axum::body::{Body, HttpBody};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use paddock_accounts::{AuditEntry, Outcome};

/// Largest response body read back to learn a submitted job's id.
const MAX_READ_BACK: usize = 64 * 1024;

/// Records `entry`; a failure is logged, never returned.
pub async fn record(state: &AppState, entry: AuditEntry) {
    let action = entry.action.clone();
    if let Err(error) = state.auth().accounts().audit(entry).await {
        tracing::error!(%action, error = %error, "writing an audit entry failed");
    }
}

/// The outcome a status stands for.
pub fn outcome_of(status: StatusCode) -> Outcome {
    match status.as_u16() {
        200..=299 => Outcome::Success,
        401 | 403 | 404 | 429 => Outcome::Denied,
        _ => Outcome::Failure,
    }
}

/// Keeps at most 64 characters without control characters: for names a client
/// chose (an attempted user name), which end up in the log.
pub fn clean(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// The `{id}` (a job) or `{name}` (a node, a user) segment of `path` under the
/// route `template`, if the route has one.
fn path_id(template: &str, path: &str) -> Option<String> {
    template
        .split('/')
        .zip(path.split('/'))
        .find(|(pattern, _)| matches!(*pattern, "{id}" | "{name}"))
        .map(|(_, value)| clean(value))
}

/// Middleware: audits the state-changing requests whose handlers do not.
pub async fn record_changes(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    if matches!(method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(request).await;
    }
    let Some(template) = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
    else {
        return next.run(request).await;
    };
    let action = match route_policy(&method, &template).map(|route| route.audit) {
        Some(Audit::Nothing | Audit::Handler) => return next.run(request).await,
        Some(Audit::Action(action)) => action.to_string(),
        None => format!("{method} {template}"),
    };
    let address = state
        .auth()
        .client_address(request.headers(), request.extensions());
    let mut target = path_id(&template, request.uri().path());
    let slot = CallerSlot::default();
    request.extensions_mut().insert(slot.clone());

    let mut response = next.run(request).await;
    let status = response.status();
    let small = response
        .body()
        .size_hint()
        .exact()
        .is_some_and(|size| size <= MAX_READ_BACK as u64);
    if target.is_none() && status.is_success() && small {
        // A submission: the job's id is in the answer.
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_READ_BACK)
            .await
            .unwrap_or_default();
        target = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|json| json.get("job_id").and_then(|id| id.as_str()).map(clean));
        response = Response::from_parts(parts, Body::from(bytes));
    }
    let caller = slot.get();
    let mut entry = AuditEntry::new(action, outcome_of(status))
        .address(address)
        .device(caller.and_then(|c| c.device_id().map(str::to_string)))
        .detail(format!("status {}", status.as_u16()));
    if let Some(caller) = caller {
        entry = entry.actor(caller.user.clone());
    }
    if let Some(target) = target {
        entry = entry.target(target);
    }
    record(&state, entry).await;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_job_id_comes_from_the_path() {
        assert_eq!(
            path_id("/v1/jobs/{id}/cancel", "/v1/jobs/abc/cancel").as_deref(),
            Some("abc")
        );
        assert_eq!(path_id("/v1/jobs", "/v1/jobs"), None);
        assert_eq!(
            path_id("/v1/nodes/{name}/drain", "/v1/nodes/mini-1/drain").as_deref(),
            Some("mini-1")
        );
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(outcome_of(StatusCode::ACCEPTED), Outcome::Success);
        assert_eq!(outcome_of(StatusCode::FORBIDDEN), Outcome::Denied);
        assert_eq!(outcome_of(StatusCode::TOO_MANY_REQUESTS), Outcome::Denied);
        assert_eq!(outcome_of(StatusCode::CONFLICT), Outcome::Failure);
        assert_eq!(clean("a\nb"), "ab");
    }
}
