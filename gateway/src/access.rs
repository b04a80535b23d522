//! What a caller may do and see: the one place that decides it.
//!
//! [`ROUTES`] is the policy of every route: public, any signed-in caller, or a
//! scope; its rate limit; and how its state changes reach the audit log. The `Caller`
//! extractor applies it, so a handler cannot forget; the gateway's tests walk the
//! table and try every route without a token, with bad tokens and without its scope.
//! A route missing from the table still needs a valid token, and its handler checks
//! its scope with `caller.require(…)`; add it here so the tests cover it.
//!
//! Jobs: a plain user sees and acts on the jobs they submitted; an admin (the
//! `users:admin` scope) sees all. A job of someone else is reported as not found, so
//! ids of other users' jobs are neither confirmed nor denied.

use crate::auth::{Caller, Role, Scope};
use crate::error::ApiError;
use crate::limits::LimitKind;
use crate::state::AppState;
use axum::http::Method;
use paddock_contract::JobId;
use paddock_contract::api::JobView;

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No token (health, JWKS, login, refresh, device grants).
    Public,
    /// Any valid token: the caller's own account (`/v1/auth/me`, devices, TOTP).
    Signed,
    /// A valid token with this scope.
    Scope(Scope),
}

/// How a route's state changes are audited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audit {
    /// Reads, and routes that change nothing.
    Nothing,
    /// The handler writes its own, richer entries (the auth and user routes).
    Handler,
    /// The audit middleware records this action with the caller, the job and the
    /// outcome from the status.
    Action(&'static str),
}

/// The policy of one route.
#[derive(Clone, Copy, Debug)]
pub struct RoutePolicy {
    pub method: &'static str,
    /// The route as registered (`/v1/jobs/{id}`).
    pub path: &'static str,
    pub access: Access,
    pub limit: Option<LimitKind>,
    pub audit: Audit,
}

const fn route(
    method: &'static str,
    path: &'static str,
    access: Access,
    limit: Option<LimitKind>,
    audit: Audit,
) -> RoutePolicy {
    RoutePolicy {
        method,
        path,
        access,
        limit,
        audit,
    }
}

use Access::{Public, Signed};
use Audit::{Action, Handler, Nothing};
use LimitKind::{Login, Refresh, Submit};

/// Every route of the API and its policy.
pub const ROUTES: &[RoutePolicy] = &[
    route("GET", "/healthz", Public, None, Nothing),
    route("GET", "/readyz", Public, None, Nothing),
    route("GET", "/.well-known/jwks.json", Public, None, Nothing),
    route("GET", "/v1/openapi.json", Public, None, Nothing),
    // The web app (`crate::web`): the shell and its files hold no data.
    route("GET", "/", Public, None, Nothing),
    route("GET", "/index.html", Public, None, Nothing),
    route("GET", "/signin", Public, None, Nothing),
    route("GET", "/new", Public, None, Nothing),
    route("GET", "/jobs/{id}", Public, None, Nothing),
    route("GET", "/nodes", Public, None, Nothing),
    route("GET", "/settings", Public, None, Nothing),
    route("GET", "/device", Public, None, Nothing),
    route("GET", "/sw.js", Public, None, Nothing),
    route("GET", "/manifest.webmanifest", Public, None, Nothing),
    route("GET", "/static/{*path}", Public, None, Nothing),
    route("POST", "/v1/auth/login", Public, Some(Login), Handler),
    route("POST", "/v1/auth/refresh", Public, Some(Refresh), Handler),
    route("POST", "/v1/auth/device", Public, Some(Login), Handler),
    route(
        "POST",
        "/v1/auth/device/token",
        Public,
        Some(Refresh),
        Handler,
    ),
    route("POST", "/v1/auth/device/approve", Signed, None, Handler),
    route("POST", "/v1/auth/logout", Signed, None, Handler),
    route("GET", "/v1/auth/me", Signed, None, Nothing),
    route("GET", "/v1/auth/devices", Signed, None, Nothing),
    route("DELETE", "/v1/auth/devices/{id}", Signed, None, Handler),
    route("POST", "/v1/auth/totp", Signed, None, Handler),
    route("POST", "/v1/auth/totp/confirm", Signed, None, Handler),
    route("POST", "/v1/auth/totp/disable", Signed, None, Handler),
    route("POST", "/v1/auth/password", Signed, None, Handler),
    // Web Push for the caller's own browsers (`routes::push`).
    route("GET", "/v1/push/key", Signed, None, Nothing),
    route(
        "POST",
        "/v1/push/subscriptions",
        Signed,
        None,
        Action("push.subscribe"),
    ),
    route(
        "DELETE",
        "/v1/push/subscriptions",
        Signed,
        None,
        Action("push.unsubscribe"),
    ),
    route(
        "GET",
        "/v1/users",
        Access::Scope(Scope::UsersAdmin),
        None,
        Nothing,
    ),
    route(
        "POST",
        "/v1/users",
        Access::Scope(Scope::UsersAdmin),
        None,
        Handler,
    ),
    route(
        "PATCH",
        "/v1/users/{name}",
        Access::Scope(Scope::UsersAdmin),
        None,
        Handler,
    ),
    route(
        "GET",
        "/v1/audit",
        Access::Scope(Scope::UsersAdmin),
        None,
        Nothing,
    ),
    route(
        "GET",
        "/v1/jobs",
        Access::Scope(Scope::JobsRead),
        None,
        Nothing,
    ),
    route(
        "POST",
        "/v1/jobs",
        Access::Scope(Scope::JobsSubmit),
        Some(Submit),
        Action("job.submit"),
    ),
    route(
        "GET",
        "/v1/jobs/{id}",
        Access::Scope(Scope::JobsRead),
        None,
        Nothing,
    ),
    route(
        "GET",
        "/v1/jobs/{id}/events",
        Access::Scope(Scope::JobsRead),
        None,
        Nothing,
    ),
    route(
        "POST",
        "/v1/jobs/{id}/cancel",
        Access::Scope(Scope::JobsSubmit),
        None,
        Action("job.cancel"),
    ),
    route(
        "POST",
        "/v1/jobs/{id}/messages",
        Access::Scope(Scope::JobsSubmit),
        Some(Submit),
        Action("job.message"),
    ),
    route(
        "POST",
        "/v1/jobs/{id}/approvals/{request_id}",
        Access::Scope(Scope::ToolsApprove),
        None,
        Action("job.approval"),
    ),
    route(
        "POST",
        "/v1/jobs/{id}/interrupt",
        Access::Scope(Scope::JobsSubmit),
        None,
        Action("job.interrupt"),
    ),
    route(
        "GET",
        "/v1/ws",
        Access::Scope(Scope::JobsRead),
        None,
        Nothing,
    ),
    route(
        "GET",
        "/v1/nodes",
        Access::Scope(Scope::JobsRead),
        None,
        Nothing,
    ),
    route(
        "POST",
        "/v1/nodes/{name}/drain",
        Access::Scope(Scope::NodesAdmin),
        None,
        Action("node.drain"),
    ),
    route(
        "POST",
        "/v1/nodes/{name}/undrain",
        Access::Scope(Scope::NodesAdmin),
        None,
        Action("node.undrain"),
    ),
    route(
        "POST",
        "/v1/nodes/{name}/cordon",
        Access::Scope(Scope::NodesAdmin),
        None,
        Action("node.cordon"),
    ),
    route(
        "POST",
        "/v1/nodes/tokens",
        Access::Scope(Scope::NodesAdmin),
        None,
        Handler,
    ),
    route(
        "GET",
        "/v1/nodes/tokens",
        Access::Scope(Scope::NodesAdmin),
        None,
        Nothing,
    ),
    route(
        "DELETE",
        "/v1/nodes/tokens/{id}",
        Access::Scope(Scope::NodesAdmin),
        None,
        Handler,
    ),
    route(
        "GET",
        "/v1/nodes/credentials",
        Access::Scope(Scope::NodesAdmin),
        None,
        Nothing,
    ),
    route(
        "POST",
        "/v1/nodes/{name}/revoke-credentials",
        Access::Scope(Scope::NodesAdmin),
        None,
        Handler,
    ),
];

/// The policy of the route `path` (as registered) answers for `method`.
pub fn route_policy(method: &Method, path: &str) -> Option<&'static RoutePolicy> {
    ROUTES
        .iter()
        .find(|route| route.path == path && route.method == method.as_str())
}

/// True when `caller` may read and act on `job`.
pub fn may_access(caller: &Caller, job: &JobView) -> bool {
    caller.role == Role::Admin || job.submitted_by == caller.user
}

/// The `submitted_by` filter a listing runs with: a plain user's own name whatever
/// they asked for (asking for someone else's is refused), an admin's choice.
pub fn listing_scope(
    caller: &Caller,
    requested: Option<String>,
) -> Result<Option<String>, ApiError> {
    match (caller.role, requested) {
        (Role::Admin, requested) => Ok(requested),
        (Role::User, Some(other)) if other != caller.user => Err(ApiError::Forbidden(
            "only an admin may list other users' jobs".into(),
        )),
        (Role::User, _) => Ok(Some(caller.user.clone())),
    }
}

/// The job with `id` from the ledger, if it exists and `caller` may see it.
pub async fn visible_job(
    state: &AppState,
    caller: &Caller,
    id: JobId,
) -> Result<JobView, ApiError> {
    match state.ledger().get(id).await? {
        Some(job) if may_access(caller, &job) => Ok(job),
        _ => Err(ApiError::NotFound(format!("no job {id}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_contract::JobStatus;

    fn caller(user: &str, role: Role) -> Caller {
        let scopes = match role {
            Role::Admin => crate::auth::ScopeSet::all(),
            Role::User => crate::auth::ScopeSet::default_user(),
        };
        Caller::new(user, scopes, crate::auth::Identity::Service)
    }

    fn job_of(user: &str) -> JobView {
        JobView {
            id: JobId::new(),
            project: "web".into(),
            prompt: "p".into(),
            status: JobStatus::Queued,
            node: None,
            attempts: 0,
            submitted_by: user.into(),
            created_at_ms: 0,
            started_at_ms: None,
            finished_at_ms: None,
            exit_reason: None,
            exit_message: None,
            session_id: None,
            num_turns: None,
            cost_usd: None,
            input_tokens: None,
            output_tokens: None,
            last_seq: 1,
            session_state: None,
            attempt_reasons: Vec::new(),
        }
    }

    #[test]
    fn users_see_their_own_jobs_and_admins_all() {
        assert!(may_access(&caller("ada", Role::User), &job_of("ada")));
        assert!(!may_access(&caller("bob", Role::User), &job_of("ada")));
        assert!(may_access(&caller("root", Role::Admin), &job_of("ada")));
    }

    #[test]
    fn every_route_is_listed_once_and_only_public_routes_need_no_token() {
        let mut seen = std::collections::HashSet::new();
        for route in ROUTES {
            assert!(seen.insert((route.method, route.path)), "{route:?} twice");
            let public = route.path.starts_with("/v1/auth/login")
                || route.path.starts_with("/v1/auth/refresh")
                || route.path == "/v1/auth/device"
                || route.path == "/v1/auth/device/token"
                || route.path == "/v1/openapi.json"
                || !route.path.starts_with("/v1/");
            assert_eq!(route.access == Access::Public, public, "{route:?}");
            if route.method != "GET" {
                assert_ne!(
                    route.audit,
                    Audit::Nothing,
                    "{route:?} changes state unaudited"
                );
            }
        }
        let found = route_policy(&Method::POST, "/v1/jobs").expect("listed");
        assert_eq!(found.access, Access::Scope(Scope::JobsSubmit));
        assert!(route_policy(&Method::PUT, "/v1/jobs").is_none());
    }

    #[test]
    fn users_list_only_their_own_jobs() {
        let ada = caller("ada", Role::User);
        assert_eq!(listing_scope(&ada, None), Ok(Some("ada".into())));
        assert_eq!(
            listing_scope(&ada, Some("ada".into())),
            Ok(Some("ada".into()))
        );
        assert!(listing_scope(&ada, Some("bob".into())).is_err());
        let root = caller("root", Role::Admin);
        assert_eq!(listing_scope(&root, None), Ok(None));
        assert_eq!(
            listing_scope(&root, Some("bob".into())),
            Ok(Some("bob".into()))
        );
    }
}
