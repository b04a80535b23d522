//! The OpenAPI 3.1 description of the whole API, generated from the code with utoipa
//! and served at `GET /v1/openapi.json` (no token). Each handler in
//! [`crate::routes`] carries its own `#[utoipa::path]` (method, path, parameters,
//! body, its security requirement and the answers only it gives); the wire types derive
//! `ToSchema` (`paddock_contract` behind its `openapi` feature). [`ApiDoc`] gathers
//! them, and its modifiers add what every route shares, from the same sources the
//! gateway enforces: the security schemes, and the standard error answers each
//! operation can give by its shape and its policy in [`crate::access::ROUTES`] (401
//! and 403 with a token, 429 with `Retry-After` with a rate limit, 400/413/415 with a
//! body, 503 where a store is read). `error.code` is the enum of
//! [`crate::error::code::ALL`].
//!
//! The tests below keep the document true: every route of [`crate::access::ROUTES`]
//! is documented, nothing else is, and an operation lists a security requirement
//! (naming the scope) exactly when its policy needs a token. `tests/tests/api_fuzz.rs`
//! runs schemathesis against a live cluster with this document.
//!
//! The WebSocket (`GET /v1/ws`) is described by a stand-in below: a GET answered by
//! 101, its messages (`ClientMessage`, `ServerMessage`) as components.

use crate::access::ROUTES;
use crate::error::code;
use crate::routes;
use axum::http::header;
use axum::response::IntoResponse;
use std::sync::OnceLock;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Ref, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Components, Content, Header, RefOr};
use utoipa::{Modify, OpenApi};

/// The document. Add a handler here when you add a route.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Paddock API",
        description = "Run Claude Code jobs on a fleet of machines: submit, follow, steer and \
                       cancel jobs; sign in; manage users and nodes. Errors are always \
                       `ErrorBody` JSON with a stable `error.code`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        routes::health::alive,
        routes::health::ready,
        document,
        routes::auth::jwks,
        routes::auth::login,
        routes::auth::refresh,
        routes::auth::logout,
        routes::auth::me,
        routes::auth::devices,
        routes::auth::revoke_device,
        routes::auth::begin_totp,
        routes::auth::confirm_totp,
        routes::auth::disable_totp,
        routes::auth::change_password,
        routes::auth_device::start,
        routes::auth_device::token,
        routes::auth_device::approve,
        routes::auth_users::list,
        routes::auth_users::create,
        routes::auth_users::update,
        routes::auth_users::audit_log,
        routes::jobs::list_jobs,
        routes::jobs::get_job,
        routes::events::job_events,
        routes::cancel::cancel_job,
        routes::session::post_message,
        routes::session::post_approval,
        routes::session::post_interrupt,
        routes::submit::submit_job,
        websocket,
        routes::nodes::list_nodes,
        routes::nodes::drain_node,
        routes::nodes::undrain_node,
        routes::nodes::cordon_node,
        routes::node_tokens::create_token,
        routes::node_tokens::list_tokens,
        routes::node_tokens::revoke_token,
        routes::node_tokens::list_credentials,
        routes::node_tokens::revoke_credentials,
        routes::push::public_key,
        routes::push::subscribe,
        routes::push::unsubscribe,
    ),
    components(schemas(
        paddock_contract::api::ClientMessage,
        paddock_contract::api::ServerMessage,
        paddock_contract::api::ErrorBody,
    )),
    modifiers(&SecuritySchemes, &StandardErrors, &ErrorCodes),
    tags(
        (name = "meta", description = "Health and this document"),
        (name = "auth", description = "Signing in, tokens, devices, the second factor, device grants (RFC 8628)"),
        (name = "users", description = "Users and the audit log, for admins"),
        (name = "jobs", description = "Submitting, reading and cancelling jobs"),
        (name = "sessions", description = "Steering a live session: follow-ups, approvals, interrupts"),
        (name = "live", description = "Events over a WebSocket"),
        (name = "nodes", description = "The machines that run jobs, their join tokens and NATS credentials"),
        (name = "push", description = "Web Push notifications to the caller's browsers"),
    )
)]
pub struct ApiDoc;

/// The document as served, built once.
fn document_json() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| {
            tracing::error!(error = %e, "the OpenAPI document does not serialise");
            "{}".into()
        })
    })
}

/// This document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 description of this API", body = serde_json::Value))
)]
pub async fn document() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        document_json(),
    )
}

/// Live job events over a WebSocket (`crate::ws::upgrade` serves it). The client sends
/// `ClientMessage` JSON text messages (subscribe, unsubscribe, message, approve,
/// interrupt, authenticate); the gateway sends `ServerMessage` ones. Browsers, which
/// cannot set headers on a WebSocket, pass the access token as `?access_token=`.
#[utoipa::path(
    get,
    path = "/v1/ws",
    tag = "live",
    security(
        ("access_token" = ["jobs:read"]),
        ("api_token" = ["jobs:read"]),
        ("access_token_query" = ["jobs:read"]),
    ),
    responses(
        (status = 101, description = "Switching Protocols: the socket speaks `ClientMessage` and `ServerMessage` (components) as JSON text messages"),
        (status = 400, description = "`bad_request`: not a WebSocket upgrade request", body = paddock_contract::api::ErrorBody),
    )
)]
#[allow(dead_code)]
async fn websocket() {}

/// The ways to present a token.
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Components::new);
        components.add_security_scheme(
            "access_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from `POST /v1/auth/login`, `/v1/auth/refresh` or \
                         `/v1/auth/device/token` (EdDSA JWT, minutes long; keys at \
                         `/.well-known/jwks.json`). The roles of a requirement name the scope \
                         the operation needs.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A static service token from the gateway's `api_tokens` config, acting \
                         as the user and with the scopes it names (scripts, CI). Routes of \
                         one's own account (devices, TOTP, password) need an access token.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "access_token_query",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "access_token",
                "An access token in the query, for WebSockets only (browsers cannot set their \
                 headers).",
            ))),
        );
    }
}

/// Routes that answer from memory: no store behind them can be unavailable.
const IN_MEMORY: &[&str] = &["/healthz", "/v1/openapi.json", "/.well-known/jwks.json"];

/// Adds the error answers an operation gives by its shape and policy.
struct StandardErrors;

impl Modify for StandardErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                ("GET", &mut item.get),
                ("POST", &mut item.post),
                ("PUT", &mut item.put),
                ("PATCH", &mut item.patch),
                ("DELETE", &mut item.delete),
            ];
            for (method, operation) in operations {
                if let Some(operation) = operation {
                    add_standard_errors(path, method, operation);
                }
            }
        }
    }
}

fn add_standard_errors(path: &str, method: &str, operation: &mut Operation) {
    let policy = ROUTES
        .iter()
        .find(|route| route.path == path && route.method == method);
    let secured = operation
        .security
        .as_ref()
        .is_some_and(|requirements| !requirements.is_empty());
    if operation.request_body.is_some() || operation.parameters.is_some() {
        add(
            operation,
            400,
            "`bad_request`: the body, or a path or query parameter, is malformed (the message \
             says what)",
            None,
        );
    }
    if operation.request_body.is_some() {
        add(
            operation,
            413,
            "`payload_too_large`: the body is over the gateway's `max_body_bytes`",
            None,
        );
        add(
            operation,
            415,
            "`unsupported_media_type`: send the body as `application/json`",
            None,
        );
    }
    if secured {
        add(
            operation,
            401,
            "`unauthorized`: no valid token (missing, malformed, expired, revoked, or not \
             issued by this gateway)",
            Some(("WWW-Authenticate", Type::String, "`Bearer`")),
        );
        add(
            operation,
            403,
            "`forbidden`: the token lacks the scope the security requirement names, or the \
             operation needs a signed-in account and got a service token",
            None,
        );
    }
    if policy.is_some_and(|policy| policy.limit.is_some()) {
        add(
            operation,
            429,
            "`rate_limited`: too many requests from this user, device or address; \
             `quota_exceeded` (submissions): a per-user quota is used up. Try again after \
             `Retry-After` seconds",
            Some((
                "Retry-After",
                Type::Integer,
                "Seconds to wait before trying again",
            )),
        );
    }
    if !IN_MEMORY.contains(&path) {
        add(
            operation,
            503,
            "`unavailable`: NATS or a database does not answer; try again",
            None,
        );
    }
}

/// Adds an `ErrorBody` answer with `status`, or extends the description of the one the
/// handler documents.
fn add(
    operation: &mut Operation,
    status: u16,
    description: &str,
    header: Option<(&str, Type, &str)>,
) {
    let responses = &mut operation.responses.responses;
    let key = status.to_string();
    if let Some(RefOr::T(existing)) = responses.get_mut(&key) {
        if !existing.description.contains(description) {
            existing.description = format!("{}; {description}", existing.description);
        }
        if let Some((name, kind, about)) = header {
            existing
                .headers
                .insert(name.to_string(), header_of(kind, about));
        }
        return;
    }
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        Content::new(Some(Ref::from_schema_name("ErrorBody"))),
    );
    if let Some((name, kind, about)) = header {
        response = response.header(name, header_of(kind, about));
    }
    let response: Response = response.build();
    responses.insert(key, RefOr::T(response));
}

fn header_of(kind: Type, description: &str) -> Header {
    let mut header = Header::new(ObjectBuilder::new().schema_type(kind));
    header.description = Some(description.to_string());
    header
}

/// Makes `ErrorDetail.code` the enum of the stable codes.
struct ErrorCodes;

impl Modify for ErrorCodes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        if let Some(RefOr::T(Schema::Object(detail))) = components.schemas.get_mut("ErrorDetail") {
            let description = detail.properties.get("code").and_then(|code| match code {
                RefOr::T(Schema::Object(code)) => code.description.clone(),
                _ => None,
            });
            detail.properties.insert(
                "code".into(),
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(code::ALL.iter().copied()))
                    .description(description)
                    .into(),
            );
        }
    }
}

/// Schemas of types from crates that do not derive `ToSchema` (`paddock_accounts`,
/// `jsonwebtoken`). The tests below check each against what the real type serialises.
pub mod foreign {
    use std::borrow::Cow;
    use utoipa::openapi::RefOr;
    use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
    use utoipa::{PartialSchema, ToSchema};

    /// A scope: what an account may do.
    pub struct Scope;

    impl PartialSchema for Scope {
        fn schema() -> RefOr<Schema> {
            ObjectBuilder::new()
                .schema_type(Type::String)
                .enum_values(Some(
                    paddock_accounts::Scope::ALL
                        .iter()
                        .map(|scope| scope.as_str()),
                ))
                .description(Some(
                    "`jobs:read` (read and follow jobs), `jobs:submit` (submit and steer), \
                     `tools:approve` (answer approval requests), `nodes:admin` (drain and \
                     cordon nodes), `users:admin` (users, the audit log, every user's jobs)",
                ))
                .into()
        }
    }

    impl ToSchema for Scope {
        fn name() -> Cow<'static, str> {
            "Scope".into()
        }
    }

    /// A user as the API shows it: never the password hash or the TOTP secret.
    #[derive(ToSchema)]
    pub struct User {
        pub id: String,
        pub name: String,
        pub scopes: Vec<Scope>,
        pub totp_enabled: bool,
        pub disabled: bool,
        pub created_at_ms: i64,
    }

    /// A pending TOTP secret, shown once so the user can add it to an app.
    #[derive(ToSchema)]
    pub struct TotpEnrolment {
        /// The secret in base32, as apps take it typed.
        pub secret: String,
        /// `otpauth://totp/…`, as apps take it from a QR code.
        pub otpauth_uri: String,
    }

    /// How an audited action ended.
    #[derive(ToSchema)]
    #[schema(rename_all = "snake_case")]
    pub enum Outcome {
        Success,
        Denied,
        Failure,
    }

    /// One entry of the audit log.
    #[derive(ToSchema)]
    pub struct AuditRecord {
        pub id: String,
        pub at_ms: i64,
        pub actor: Option<String>,
        pub device_id: Option<String>,
        pub address: Option<String>,
        pub action: String,
        pub target: Option<String>,
        pub outcome: Outcome,
        pub detail: Option<String>,
    }

    /// A page of the audit log, newest first; `next_before` pages on.
    #[derive(ToSchema)]
    pub struct AuditPage {
        pub entries: Vec<AuditRecord>,
        pub next_before: Option<String>,
    }

    /// A public key of access tokens (an Ed25519 key, RFC 8037).
    #[derive(ToSchema)]
    pub struct Jwk {
        /// `OKP`.
        pub kty: String,
        /// `Ed25519`.
        pub crv: String,
        /// The public key, base64url.
        pub x: String,
        /// The key's id, as in the `kid` of the tokens it signs.
        pub kid: String,
        /// `sig`.
        #[schema(rename = "use")]
        pub public_key_use: String,
        /// `EdDSA`.
        pub alg: String,
    }

    /// The public keys of access tokens (RFC 7517).
    #[derive(ToSchema)]
    pub struct JwkSet {
        pub keys: Vec<Jwk>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Access;
    use serde_json::Value;
    use std::collections::BTreeSet;
    use utoipa::PartialSchema;

    fn document() -> Value {
        serde_json::from_str(document_json()).expect("the document is JSON")
    }

    /// Routes of the API, as opposed to the web app's pages and assets (`/`, `/app/…`,
    /// files), which are not described.
    fn is_api(path: &str) -> bool {
        path.starts_with("/v1/")
            || path.starts_with("/.well-known/")
            || path == "/healthz"
            || path == "/readyz"
    }

    const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];

    fn operations(doc: &Value) -> Vec<(String, String, Value)> {
        let mut found = Vec::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in METHODS {
                if let Some(operation) = item.get(method) {
                    found.push((method.to_uppercase(), path.clone(), operation.clone()));
                }
            }
        }
        found
    }

    #[test]
    fn every_route_is_documented_and_nothing_else() {
        let doc = document();
        let documented: BTreeSet<(String, String)> = operations(&doc)
            .into_iter()
            .map(|(method, path, _)| (method, path))
            .collect();
        let routed: BTreeSet<(String, String)> = ROUTES
            .iter()
            .filter(|route| is_api(route.path))
            .map(|route| (route.method.to_string(), route.path.to_string()))
            .collect();
        let missing: Vec<_> = routed.difference(&documented).collect();
        let extra: Vec<_> = documented.difference(&routed).collect();
        assert!(
            missing.is_empty(),
            "routes without a #[utoipa::path] in ApiDoc: {missing:?}"
        );
        assert!(
            extra.is_empty(),
            "documented but not in access::ROUTES: {extra:?}"
        );
    }

    #[test]
    fn an_operation_needs_a_token_exactly_when_its_policy_does() {
        let doc = document();
        let schemes = doc["components"]["securitySchemes"]
            .as_object()
            .expect("security schemes");
        for (method, path, operation) in operations(&doc) {
            let Some(policy) = ROUTES
                .iter()
                .find(|route| route.method == method && route.path == path)
            else {
                continue;
            };
            let requirements = operation["security"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let wanted_roles: Option<Vec<String>> = match policy.access {
                Access::Public => None,
                Access::Signed => Some(Vec::new()),
                Access::Scope(scope) => Some(vec![scope.to_string()]),
            };
            match wanted_roles {
                None => assert!(
                    requirements.is_empty(),
                    "{method} {path} is public but documents {requirements:?}"
                ),
                Some(roles) => {
                    assert!(
                        !requirements.is_empty(),
                        "{method} {path} needs a token but documents none"
                    );
                    let names: BTreeSet<&str> = requirements
                        .iter()
                        .flat_map(|r| r.as_object().expect("requirement").keys())
                        .map(String::as_str)
                        .collect();
                    assert!(
                        names.contains("access_token") && names.contains("api_token"),
                        "{method} {path}: {names:?}"
                    );
                    for requirement in &requirements {
                        for (scheme, listed) in requirement.as_object().expect("requirement") {
                            assert!(schemes.contains_key(scheme), "{scheme} is not defined");
                            let listed: Vec<String> =
                                serde_json::from_value(listed.clone()).expect("roles");
                            assert_eq!(listed, roles, "{method} {path} via {scheme}");
                        }
                    }
                    let responses = &operation["responses"];
                    assert!(responses.get("401").is_some(), "{method} {path} lacks 401");
                    assert!(responses.get("403").is_some(), "{method} {path} lacks 403");
                }
            }
            if policy.limit.is_some() {
                let limited = &operation["responses"]["429"];
                assert!(
                    limited["headers"].get("Retry-After").is_some(),
                    "{method} {path} lacks 429 with Retry-After"
                );
            }
        }
    }

    #[test]
    fn every_operation_answers_success_and_errors_as_error_bodies() {
        let doc = document();
        for (method, path, operation) in operations(&doc) {
            let responses = operation["responses"].as_object().expect("responses");
            assert!(
                responses
                    .keys()
                    .any(|status| status.starts_with('2') || status == "101"),
                "{method} {path} documents no success"
            );
            for (status, response) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        response["content"]["application/json"]["schema"]["$ref"],
                        "#/components/schemas/ErrorBody",
                        "{method} {path} {status}"
                    );
                }
            }
            let placeholders = path.matches('{').count();
            let path_parameters = operation["parameters"]
                .as_array()
                .map(|ps| ps.iter().filter(|p| p["in"] == "path").count())
                .unwrap_or(0);
            assert_eq!(placeholders, path_parameters, "{method} {path} parameters");
        }
        let codes = &doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"]["enum"];
        assert_eq!(codes.as_array().map(Vec::len), Some(code::ALL.len()));
        for schema in ["ClientMessage", "ServerMessage", "JobEvent", "JobView"] {
            assert!(
                doc["components"]["schemas"].get(schema).is_some(),
                "{schema} is not a component"
            );
        }
    }

    /// The property names of a schema.
    fn properties<T: PartialSchema>() -> BTreeSet<String> {
        let schema = serde_json::to_value(T::schema()).expect("schema");
        schema["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .cloned()
            .collect()
    }

    fn keys(value: impl serde::Serialize) -> BTreeSet<String> {
        serde_json::to_value(value)
            .expect("serialise")
            .as_object()
            .expect("an object")
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn foreign_schemas_match_what_the_real_types_send() {
        let user = paddock_accounts::User {
            id: "u".into(),
            name: "ada".into(),
            scopes: paddock_accounts::ScopeSet::all(),
            totp_enabled: false,
            disabled: false,
            created_at_ms: 1,
        };
        assert_eq!(keys(&user), properties::<foreign::User>());
        let record = paddock_accounts::AuditRecord {
            id: "a".into(),
            at_ms: 1,
            actor: None,
            device_id: None,
            address: None,
            action: "auth.login".into(),
            target: None,
            outcome: paddock_accounts::Outcome::Success,
            detail: None,
        };
        assert_eq!(keys(&record), properties::<foreign::AuditRecord>());
        let page = paddock_accounts::AuditPage {
            entries: vec![record],
            next_before: None,
        };
        assert_eq!(keys(&page), properties::<foreign::AuditPage>());
        let enrolment = paddock_accounts::TotpEnrolment {
            secret: "s".into(),
            otpauth_uri: "otpauth://totp/x".into(),
        };
        assert_eq!(keys(&enrolment), properties::<foreign::TotpEnrolment>());
        for outcome in ["success", "denied", "failure"] {
            let parsed: paddock_accounts::Outcome = outcome.parse().expect("an outcome");
            assert_eq!(serde_json::to_value(parsed).expect("outcome"), outcome);
        }
        let outcomes = serde_json::to_value(foreign::Outcome::schema()).expect("schema");
        assert_eq!(outcomes["enum"].as_array().map(Vec::len), Some(3));

        let dir = tempfile::tempdir().expect("temp dir");
        let keys_of_tokens = crate::jwt::TokenKeys::load_or_generate(
            &dir.path().join("key"),
            &[],
            "issuer",
            "audience",
            std::time::Duration::from_secs(60),
        )
        .expect("a key");
        let jwks = serde_json::to_value(keys_of_tokens.jwks()).expect("jwks");
        assert_eq!(keys(&jwks), properties::<foreign::JwkSet>());
        assert_eq!(keys(&jwks["keys"][0]), properties::<foreign::Jwk>());
    }
}
