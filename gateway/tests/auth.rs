//! Accounts and tokens through the API, against a real gateway (nats-server, SQLite):
//! every route refuses missing and bad tokens and callers without its scope; login,
//! refresh rotation and reuse detection; logout and device revocation; TOTP; the
//! device authorization grant; users managed by admins; other users' jobs hidden;
//! rate limits; and an audit row for each state change.

mod common;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{ADA, ADMIN_PASSWORD, AUDIENCE, ISSUER, PASSWORD, TestGateway, WAIT};
use paddock_accounts::{Scope, totp_code};
use paddock_gateway::access::{Access, ROUTES};
use paddock_gateway::config::RateLimit;
use paddock_gateway::jwt::{AccessClaims, TokenKeys};
use paddock_testkit::eventually;
use serde_json::{Value, json};
use std::time::Duration;

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no code>")
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// A request to `method path` (route parameters filled in) with an optional bearer
/// token and a JSON body for methods that take one.
async fn call(
    gateway: &TestGateway,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let path = path
        .replace("{id}", &uuid::Uuid::new_v4().to_string())
        .replace("{request_id}", "request-1")
        .replace("{name}", "nobody");
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut request = gateway.http.request(method.clone(), gateway.url(&path));
    if method != reqwest::Method::GET {
        request = request.json(&json!({}));
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Claims like the gateway's for a signed-in device, valid unless changed.
fn claims_for(gateway_token_claims: &AccessClaims) -> AccessClaims {
    AccessClaims {
        iat: now(),
        exp: now() + 600,
        jti: uuid::Uuid::new_v4().to_string(),
        ..gateway_token_claims.clone()
    }
}

/// `alg: none`: the claims unsigned.
fn unsigned_token(claims: &AccessClaims) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims"));
    format!("{header}.{body}.")
}

/// An HMAC token using the key id and the public key as secret (the classic
/// algorithm-confusion attack).
fn hmac_token(claims: &AccessClaims, kid: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    header.kid = Some(kid.to_string());
    let header = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).expect("header"));
    let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims"));
    let message = format!("{header}.{body}");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, kid.as_bytes());
    let tag = ring::hmac::sign(&key, message.as_bytes());
    format!("{message}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

#[tokio::test]
async fn every_route_refuses_missing_and_bad_tokens_and_callers_without_its_scope() {
    let gateway = TestGateway::start().await;
    gateway.create_user("nobody", &[]).await;
    let (valid, _, _) = gateway.login("nobody", PASSWORD).await;
    let keys = gateway.keys_with(ISSUER, AUDIENCE);
    let base = claims_for(&keys.verify(&valid).expect("the gateway's own token"));
    let other_key = TokenKeys::from_pkcs8(
        &paddock_gateway::jwt::generate_pkcs8().expect("key"),
        &[],
        ISSUER,
        AUDIENCE,
        Duration::from_secs(900),
    )
    .expect("keys");
    let sign = |keys: &TokenKeys, claims: AccessClaims| keys.sign(&claims).expect("sign");
    let all_scopes = "jobs:read jobs:submit tools:approve nodes:admin users:admin".to_string();
    let bad_tokens: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("garbage", Some("garbage".into())),
        (
            "expired",
            Some(sign(
                &keys,
                AccessClaims {
                    iat: now() - 1200,
                    exp: now() - 60,
                    scope: all_scopes.clone(),
                    ..base.clone()
                },
            )),
        ),
        (
            "wrong audience",
            Some(sign(
                &keys,
                AccessClaims {
                    aud: "someone-else".into(),
                    scope: all_scopes.clone(),
                    ..base.clone()
                },
            )),
        ),
        (
            "wrong issuer",
            Some(sign(
                &keys,
                AccessClaims {
                    iss: "evil".into(),
                    scope: all_scopes.clone(),
                    ..base.clone()
                },
            )),
        ),
        (
            "alg none",
            Some(unsigned_token(&AccessClaims {
                scope: all_scopes.clone(),
                ..base.clone()
            })),
        ),
        (
            "HS256 with the key id as secret",
            Some(hmac_token(
                &AccessClaims {
                    scope: all_scopes.clone(),
                    ..base.clone()
                },
                keys.signing_kid(),
            )),
        ),
        (
            "signed with another key",
            Some(sign(
                &other_key,
                AccessClaims {
                    scope: all_scopes.clone(),
                    ..base.clone()
                },
            )),
        ),
        (
            "an unknown device",
            Some(sign(
                &keys,
                AccessClaims {
                    did: "no-such-device".into(),
                    scope: all_scopes.clone(),
                    ..base.clone()
                },
            )),
        ),
        (
            "an unknown scope",
            Some(sign(
                &keys,
                AccessClaims {
                    scope: "jobs:read root".into(),
                    ..base.clone()
                },
            )),
        ),
    ];
    // The control: the same forged claims, correctly signed, are accepted.
    let admin_like = sign(
        &keys,
        AccessClaims {
            scope: all_scopes.clone(),
            ..base.clone()
        },
    );
    assert_eq!(
        call(&gateway, "GET", "/v1/audit", Some(&admin_like))
            .await
            .0,
        200
    );
    let mut checked = 0;
    // Logout ends the sign-in the forged tokens name, so it goes last.
    let mut routes: Vec<_> = ROUTES
        .iter()
        .filter(|r| r.access != Access::Public)
        .collect();
    routes.sort_by_key(|r| r.path == "/v1/auth/logout");
    for route in routes {
        for (what, token) in &bad_tokens {
            let (status, body) = call(&gateway, route.method, route.path, token.as_deref()).await;
            assert_eq!(
                (status, code(&body)),
                (401, "unauthorized"),
                "{} {} with {what}",
                route.method,
                route.path
            );
            checked += 1;
        }
        // A valid token without the route's scope: 403; a valid token without any
        // scope still reaches the routes of one's own account.
        let (status, body) = call(&gateway, route.method, route.path, Some(&valid)).await;
        match route.access {
            Access::Scope(scope) => assert_eq!(
                (status, code(&body)),
                (403, "forbidden"),
                "{} {} without {scope}",
                route.method,
                route.path
            ),
            _ => assert!(
                status != 401 && status != 403,
                "{} {} refused a signed-in caller: {status} {body}",
                route.method,
                route.path
            ),
        }
    }
    assert!(checked > 100, "only {checked} checks");
    assert_eq!(
        call(&gateway, "GET", "/v1/audit", Some(&admin_like))
            .await
            .0,
        401,
        "after the logout, no token of that sign-in counts"
    );
    // A service token without the scope is refused the same way.
    let (status, body) = call(&gateway, "GET", "/v1/audit", Some(ADA)).await;
    assert_eq!((status, code(&body)), (403, "forbidden"), "{body}");
    gateway.stop().await;
}

#[tokio::test]
async fn a_refresh_token_rotates_and_a_reused_one_revokes_the_whole_sign_in() {
    let gateway = TestGateway::start().await;
    let (access, first, device) = gateway.login("admin", ADMIN_PASSWORD).await;
    let (status, me) = gateway.get(&access, "/v1/auth/me").await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"], "admin");
    assert_eq!(me["device_id"], device.as_str());

    let refresh = |token: String| {
        let gateway = &gateway;
        async move {
            gateway
                .post_json(None, "/v1/auth/refresh", &json!({ "refresh_token": token }))
                .await
        }
    };
    let (status, rotated) = refresh(first.clone()).await;
    assert_eq!(status, 200, "{rotated}");
    let second = rotated["refresh_token"]
        .as_str()
        .expect("new refresh")
        .to_string();
    let second_access = rotated["access_token"]
        .as_str()
        .expect("new access")
        .to_string();
    assert_ne!(second, first);
    assert_eq!(rotated["device_id"], device.as_str());
    assert_eq!(rotated["expires_in"], 900);
    assert_eq!(gateway.get(&second_access, "/v1/auth/me").await.0, 200);

    // The first token again: reuse. Both refresh tokens die, and so do the access
    // tokens of that sign-in.
    let (status, body) = refresh(first.clone()).await;
    assert_eq!((status, code(&body)), (401, "invalid_grant"), "{body}");
    let (status, body) = refresh(second.clone()).await;
    assert_eq!((status, code(&body)), (401, "invalid_grant"), "{body}");
    assert_eq!(gateway.get(&second_access, "/v1/auth/me").await.0, 401);
    assert_eq!(gateway.get(&access, "/v1/auth/me").await.0, 401);

    let admin = gateway.admin().await;
    let (status, page) = gateway
        .get(&admin, "/v1/audit?action=auth.refresh_reuse")
        .await;
    assert_eq!(status, 200, "{page}");
    let entries = page["entries"].as_array().expect("entries");
    assert_eq!(entries.len(), 1, "{page}");
    assert_eq!(entries[0]["actor"], "admin");
    assert_eq!(entries[0]["device_id"], device.as_str());
    assert_eq!(entries[0]["outcome"], "denied");
    let (_, page) = gateway
        .get(&admin, "/v1/audit?action=auth.refresh&outcome=success")
        .await;
    assert_eq!(page["entries"].as_array().map(Vec::len), Some(1), "{page}");
    gateway.stop().await;
}

#[tokio::test]
async fn wrong_credentials_are_refused_alike_slowed_and_audited() {
    let gateway = TestGateway::start_with(|config| {
        config.auth.login_failure_delay = Duration::from_millis(300);
    })
    .await;
    gateway.create_user("ada", &[Scope::JobsRead]).await;
    for (user, password, reason) in [
        ("ada", "not her password", "wrong password"),
        ("nobody", PASSWORD, "unknown user"),
        ("ADA\u{7}", PASSWORD, "unknown user"),
    ] {
        let started = std::time::Instant::now();
        let (status, body) = gateway.login_raw(user, password, None).await;
        assert_eq!(
            (status, code(&body)),
            (401, "invalid_credentials"),
            "{body}"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "not slowed"
        );
        assert!(
            !body.to_string().contains(reason),
            "the reason leaked: {body}"
        );
    }
    gateway
        .accounts
        .set_disabled("ada", true)
        .await
        .expect("disable");
    let (status, body) = gateway.login_raw("ada", PASSWORD, None).await;
    assert_eq!((status, code(&body)), (401, "invalid_credentials"));

    let admin = gateway.admin().await;
    let (_, page) = gateway
        .get(&admin, "/v1/audit?action=auth.login&outcome=denied")
        .await;
    let details: Vec<&str> = page["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| e["detail"].as_str())
        .collect();
    assert_eq!(
        details,
        [
            "user disabled",
            "unknown user",
            "unknown user",
            "wrong password"
        ],
        "{page}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn logout_and_device_revocation_end_access_tokens_at_once() {
    let gateway = TestGateway::start().await;
    gateway.create_user("ada", &[Scope::JobsRead]).await;
    let (phone, phone_refresh, _) = gateway.login("ada", PASSWORD).await;
    let (laptop, _, laptop_device) = gateway.login("ada", PASSWORD).await;
    let (status, list) = gateway.get(&phone, "/v1/auth/devices").await;
    assert_eq!(status, 200, "{list}");
    let devices = list["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 2);
    assert_eq!(devices.iter().filter(|d| d["current"] == true).count(), 1);

    let (status, body) = gateway
        .post_json(Some(&phone), "/v1/auth/logout", &json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(gateway.get(&phone, "/v1/jobs").await.0, 401);
    let (status, _) = gateway
        .post_json(
            None,
            "/v1/auth/refresh",
            &json!({ "refresh_token": phone_refresh }),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(gateway.get(&laptop, "/v1/jobs").await.0, 200);

    // Another user cannot revoke ada's laptop; ada can.
    gateway.create_user("bob", &[Scope::JobsRead]).await;
    let (bob, _, _) = gateway.login("bob", PASSWORD).await;
    let path = format!("/v1/auth/devices/{laptop_device}");
    let response = gateway
        .http
        .delete(gateway.url(&path))
        .bearer_auth(&bob)
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status().as_u16(), 404);
    assert_eq!(gateway.get(&laptop, "/v1/jobs").await.0, 200);
    let response = gateway
        .http
        .delete(gateway.url(&path))
        .bearer_auth(&laptop)
        .send()
        .await
        .expect("delete");
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(gateway.get(&laptop, "/v1/jobs").await.0, 401);
    gateway.stop().await;
}

#[tokio::test]
async fn totp_is_enrolled_with_a_confirmation_and_then_needed_once_per_code() {
    let gateway = TestGateway::start().await;
    gateway.create_user("ada", &[Scope::JobsRead]).await;
    let (access, _, _) = gateway.login("ada", PASSWORD).await;
    let (status, enrolment) = gateway
        .post_json(Some(&access), "/v1/auth/totp", &json!({}))
        .await;
    assert_eq!(status, 200, "{enrolment}");
    let secret = enrolment["secret"].as_str().expect("secret").to_string();
    assert!(
        enrolment["otpauth_uri"]
            .as_str()
            .is_some_and(|u| u.starts_with("otpauth://totp/"))
    );
    // Until confirmed, a password is enough.
    gateway.login("ada", PASSWORD).await;
    let (status, body) = gateway
        .post_json(
            Some(&access),
            "/v1/auth/totp/confirm",
            &json!({ "code": "000000x" }),
        )
        .await;
    assert_eq!((status, code(&body)), (400, "bad_request"));
    let confirm = totp_code(&secret, now()).expect("code");
    let (status, body) = gateway
        .post_json(
            Some(&access),
            "/v1/auth/totp/confirm",
            &json!({ "code": confirm }),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let (status, body) = gateway.login_raw("ada", PASSWORD, None).await;
    assert_eq!((status, code(&body)), (401, "totp_required"));
    let (status, body) = gateway
        .login_raw("ada", "wrong password!", Some("123456"))
        .await;
    assert_eq!((status, code(&body)), (401, "invalid_credentials"));
    // The confirmation's code was used; the next step's works once.
    let (status, _) = gateway.login_raw("ada", PASSWORD, Some(&confirm)).await;
    assert_eq!(status, 401, "a used code is refused");
    let next = totp_code(&secret, now() + 30).expect("code");
    let (status, body) = gateway.login_raw("ada", PASSWORD, Some(&next)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = gateway.login_raw("ada", PASSWORD, Some(&next)).await;
    assert_eq!(status, 401, "a replayed code is refused");

    // Turning it off needs the password.
    let (status, _) = gateway
        .post_json(
            Some(&access),
            "/v1/auth/totp/disable",
            &json!({ "password": "nope nope nope" }),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = gateway
        .post_json(
            Some(&access),
            "/v1/auth/totp/disable",
            &json!({ "password": PASSWORD }),
        )
        .await;
    assert_eq!(status, 200);
    gateway.login("ada", PASSWORD).await;
    gateway.stop().await;
}

#[tokio::test]
async fn a_device_grant_is_approved_denied_or_expires() {
    let gateway = TestGateway::start().await;
    gateway.create_user("ada", &[Scope::JobsRead]).await;
    let (ada, _, _) = gateway.login("ada", PASSWORD).await;
    let start = |name: &'static str| {
        let gateway = &gateway;
        async move {
            let (status, grant) = gateway
                .post_json(None, "/v1/auth/device", &json!({ "client_name": name }))
                .await;
            assert_eq!(status, 200, "{grant}");
            grant
        }
    };
    let poll = |grant: &Value| {
        let gateway = &gateway;
        let device_code = grant["device_code"].clone();
        async move {
            gateway
                .post_json(
                    None,
                    "/v1/auth/device/token",
                    &json!({ "device_code": device_code }),
                )
                .await
        }
    };

    let grant = start("build box").await;
    // Where a person approves it: the web app's page, with the code filled in.
    let page = grant["verification_uri"].as_str().unwrap_or_default();
    assert!(
        page.starts_with("http://") && page.ends_with("/device"),
        "{grant}"
    );
    assert_eq!(
        grant["verification_uri_complete"].as_str(),
        Some(
            format!(
                "{page}?code={}",
                grant["user_code"].as_str().unwrap_or_default()
            )
            .as_str()
        ),
        "{grant}"
    );
    let (status, body) = poll(&grant).await;
    assert_eq!((status, code(&body)), (400, "authorization_pending"));
    let (status, body) = gateway
        .post_json(
            Some(&ada),
            "/v1/auth/device/approve",
            &json!({ "user_code": grant["user_code"], "approve": true }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["client_name"], "build box");
    let (status, tokens) = poll(&grant).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["user"], "ada");
    let access = tokens["access_token"].as_str().expect("access");
    assert_eq!(gateway.get(access, "/v1/jobs").await.0, 200);
    let (status, body) = poll(&grant).await;
    assert_eq!(
        (status, code(&body)),
        (401, "invalid_grant"),
        "tokens come once"
    );

    let denied = start("tv").await;
    let (status, _) = gateway
        .post_json(
            Some(&ada),
            "/v1/auth/device/approve",
            &json!({ "user_code": denied["user_code"], "approve": false }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = poll(&denied).await;
    assert_eq!((status, code(&body)), (400, "access_denied"));
    let (status, _) = gateway
        .post_json(
            Some(&ada),
            "/v1/auth/device/approve",
            &json!({ "user_code": "BCDF-GHJK", "approve": true }),
        )
        .await;
    assert_eq!(status, 404);
    gateway.stop().await;

    let gateway = TestGateway::start_with(|config| {
        config.auth.device_grant_ttl = Duration::from_millis(200);
    })
    .await;
    let (status, grant) = gateway.post_json(None, "/v1/auth/device", &json!({})).await;
    assert_eq!(status, 200);
    eventually(WAIT, "the grant to expire", || {
        let gateway = &gateway;
        let device_code = grant["device_code"].clone();
        async move {
            let (status, body) = gateway
                .post_json(
                    None,
                    "/v1/auth/device/token",
                    &json!({ "device_code": device_code }),
                )
                .await;
            (status == 400 && code(&body) == "expired_token").then_some(())
        }
    })
    .await;
    gateway.stop().await;
}

#[tokio::test]
async fn admins_manage_users_and_scopes_take_effect_at_the_next_refresh() {
    let gateway = TestGateway::start().await;
    let admin = gateway.admin().await;
    let (status, body) = gateway
        .post_json(
            Some(&admin),
            "/v1/users",
            &json!({ "name": "bob", "password": PASSWORD, "scopes": ["jobs:read"] }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = gateway
        .post_json(
            Some(&admin),
            "/v1/users",
            &json!({ "name": "bob", "password": PASSWORD }),
        )
        .await;
    assert_eq!((status, code(&body)), (409, "conflict"));
    let (status, body) = gateway
        .post_json(
            Some(&admin),
            "/v1/users",
            &json!({ "name": "eve", "password": "short" }),
        )
        .await;
    assert_eq!((status, code(&body)), (400, "bad_request"), "{body}");

    let (bob, bob_refresh, _) = gateway.login("bob", PASSWORD).await;
    assert_eq!(gateway.get(&bob, "/v1/jobs").await.0, 200);
    let submission = json!({ "project": "web", "prompt": "hi" });
    let (status, _) = gateway.post_json(Some(&bob), "/v1/jobs", &submission).await;
    assert_eq!(status, 403);
    assert_eq!(gateway.get(&bob, "/v1/users").await.0, 403);

    let patch = |body: Value| {
        let gateway = &gateway;
        let admin = admin.clone();
        async move {
            let response = gateway
                .http
                .patch(gateway.url("/v1/users/bob"))
                .bearer_auth(&admin)
                .json(&body)
                .send()
                .await
                .expect("patch");
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, user) = patch(json!({ "scopes": ["jobs:read", "jobs:submit"] })).await;
    assert_eq!(status, 200, "{user}");
    let (_, tokens) = gateway
        .post_json(
            None,
            "/v1/auth/refresh",
            &json!({ "refresh_token": bob_refresh }),
        )
        .await;
    let bob = tokens["access_token"].as_str().expect("access").to_string();
    let (status, body) = gateway.post_json(Some(&bob), "/v1/jobs", &submission).await;
    assert_eq!(status, 202, "{body}");

    let (status, user) = patch(json!({ "disabled": true })).await;
    assert_eq!((status, user["disabled"].clone()), (200, json!(true)));
    assert_eq!(
        gateway.get(&bob, "/v1/jobs").await.0,
        401,
        "disabling ends sign-ins"
    );

    // An admin cannot lock themselves out.
    let response = gateway
        .http
        .patch(gateway.url("/v1/users/admin"))
        .bearer_auth(&admin)
        .json(&json!({ "scopes": ["jobs:read"] }))
        .send()
        .await
        .expect("patch");
    assert_eq!(response.status().as_u16(), 409);
    let (status, list) = gateway.get(&admin, "/v1/users").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["users"]
        .as_array()
        .expect("users")
        .iter()
        .filter_map(|u| u["name"].as_str())
        .collect();
    assert_eq!(names, ["admin", "bob"]);
    gateway.stop().await;
}

#[tokio::test]
async fn a_user_sees_and_steers_only_their_own_jobs_unless_admin() {
    let gateway = TestGateway::start().await;
    gateway
        .create_user("ada", &[Scope::JobsRead, Scope::JobsSubmit])
        .await;
    gateway
        .create_user("bob", &[Scope::JobsRead, Scope::JobsSubmit])
        .await;
    let (ada, _, _) = gateway.login("ada", PASSWORD).await;
    let (bob, _, _) = gateway.login("bob", PASSWORD).await;
    let admin = gateway.admin().await;
    let job = gateway.submit(&ada, "web", "ada's job").await;
    for path in [format!("/v1/jobs/{job}"), format!("/v1/jobs/{job}/events")] {
        let (status, body) = gateway.get(&bob, &path).await;
        assert_eq!((status, code(&body)), (404, "not_found"), "{path}");
        assert_eq!(gateway.get(&ada, &path).await.0, 200, "{path}");
        assert_eq!(gateway.get(&admin, &path).await.0, 200, "{path}");
    }
    let (status, _) = gateway.post(&bob, &format!("/v1/jobs/{job}/cancel")).await;
    assert_eq!(status, 404);
    let (_, page) = gateway.get(&bob, "/v1/jobs").await;
    assert_eq!(page["jobs"].as_array().map(Vec::len), Some(0));
    let (_, page) = gateway.get(&admin, "/v1/jobs?submitted_by=ada").await;
    assert_eq!(page["jobs"].as_array().map(Vec::len), Some(1));
    gateway.stop().await;
}

#[tokio::test]
async fn rate_limits_answer_429_with_retry_after_and_reset() {
    let gateway = TestGateway::start_with(|config| {
        let limit = RateLimit {
            burst: 2,
            every: Duration::from_millis(400),
        };
        config.rate_limits.login = limit;
        config.rate_limits.refresh = limit;
        config.rate_limits.submit = limit;
    })
    .await;
    gateway
        .create_user("ada", &[Scope::JobsRead, Scope::JobsSubmit])
        .await;
    let (ada, refresh, _) = gateway.login("ada", PASSWORD).await;
    gateway.login("ada", PASSWORD).await;
    let response = gateway
        .http
        .post(gateway.url("/v1/auth/login"))
        .json(&json!({ "user": "ada", "password": PASSWORD }))
        .send()
        .await
        .expect("login");
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("1")
    );
    // Another user from the same address is limited too (per address)…
    let (status, body) = gateway.login_raw("admin", ADMIN_PASSWORD, None).await;
    assert_eq!((status, code(&body)), (429, "rate_limited"));
    // …and all is well again once the allowance has refilled.
    eventually(WAIT, "the login limit to reset", || async {
        (gateway.login_raw("ada", PASSWORD, None).await.0 == 200).then_some(())
    })
    .await;

    // Submissions, per user.
    let submission = json!({ "project": "web", "prompt": "hi" });
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            gateway
                .post_json(Some(&ada), "/v1/jobs", &submission)
                .await
                .0,
        );
    }
    assert_eq!(statuses, [202, 202, 429]);
    eventually(WAIT, "the submission limit to reset", || async {
        (gateway
            .post_json(Some(&ada), "/v1/jobs", &submission)
            .await
            .0
            == 202)
            .then_some(())
    })
    .await;

    // Refreshes.
    let mut token = refresh;
    for _ in 0..2 {
        let (status, body) = gateway
            .post_json(None, "/v1/auth/refresh", &json!({ "refresh_token": token }))
            .await;
        assert_eq!(status, 200, "{body}");
        token = body["refresh_token"].as_str().expect("refresh").to_string();
    }
    let (status, _) = gateway
        .post_json(None, "/v1/auth/refresh", &json!({ "refresh_token": token }))
        .await;
    assert_eq!(status, 429, "limited before the token is used…");
    eventually(WAIT, "the refresh limit to reset", || {
        let token = token.clone();
        let gateway = &gateway;
        async move {
            let (status, _) = gateway
                .post_json(None, "/v1/auth/refresh", &json!({ "refresh_token": token }))
                .await;
            (status == 200).then_some(())
        }
    })
    .await;

    let admin = gateway.admin().await;
    let (_, page) = gateway
        .get(&admin, "/v1/audit?action=auth.login&outcome=denied")
        .await;
    assert!(
        page["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["detail"] == "rate limited"),
        "{page}"
    );
    gateway.stop().await;
}

#[tokio::test]
async fn every_state_change_leaves_an_audit_row() {
    let gateway = TestGateway::start().await;
    let admin = gateway.admin().await;
    let (status, _) = gateway
        .post_json(
            Some(&admin),
            "/v1/users",
            &json!({ "name": "ada", "password": PASSWORD, "scopes": ["jobs:read", "jobs:submit"] }),
        )
        .await;
    assert_eq!(status, 201);
    let (ada, _, ada_device) = gateway.login("ada", PASSWORD).await;
    let job = gateway.submit(&ada, "web", "audited").await;
    let (status, _) = gateway.post(&ada, &format!("/v1/jobs/{job}/cancel")).await;
    assert_eq!(status, 202);
    let (status, _) = gateway
        .post_json(
            Some(&ada),
            "/v1/auth/password",
            &json!({
                "current_password": PASSWORD,
                "new_password": "an even longer password",
            }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = gateway
        .post_json(Some(&ada), "/v1/auth/logout", &json!({}))
        .await;
    assert_eq!(status, 200);

    let (status, page) = gateway.get(&admin, "/v1/audit?limit=100").await;
    assert_eq!(status, 200, "{page}");
    let rows: Vec<(String, String, String, String)> = page["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .rev()
        .map(|e| {
            let text = |k: &str| e[k].as_str().unwrap_or("").to_string();
            (
                text("action"),
                text("actor"),
                text("target"),
                text("outcome"),
            )
        })
        .collect();
    let job = job.to_string();
    let expected = [
        ("auth.login", "admin", "", "success"),
        ("user.create", "admin", "ada", "success"),
        ("auth.login", "ada", ada_device.as_str(), "success"),
        ("job.submit", "ada", job.as_str(), "success"),
        ("job.cancel", "ada", job.as_str(), "success"),
        ("user.password", "ada", "ada", "success"),
        ("auth.logout", "ada", ada_device.as_str(), "success"),
    ];
    assert_eq!(rows.len(), expected.len(), "{rows:#?}");
    for (row, (action, actor, target, outcome)) in rows.iter().zip(expected) {
        assert_eq!(row.0, action, "{rows:#?}");
        assert_eq!(row.1, actor, "{rows:#?}");
        if !target.is_empty() {
            assert_eq!(row.2, target, "{rows:#?}");
        }
        assert_eq!(row.3, outcome, "{rows:#?}");
    }
    // Addresses are recorded; filters work.
    assert!(
        page["entries"][0]["address"]
            .as_str()
            .is_some_and(|a| a == "127.0.0.1")
    );
    let (_, jobs) = gateway.get(&admin, "/v1/audit?action=job.&actor=ada").await;
    assert_eq!(jobs["entries"].as_array().map(Vec::len), Some(2), "{jobs}");
    let (status, body) = gateway.get(&admin, "/v1/audit?outcome=maybe").await;
    assert_eq!((status, code(&body)), (400, "bad_request"));
    gateway.stop().await;
}

#[tokio::test]
async fn the_jwks_publishes_the_key_that_signs_access_tokens() {
    let gateway = TestGateway::start().await;
    let response = gateway
        .http
        .get(gateway.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks");
    assert_eq!(response.status().as_u16(), 200);
    let jwks: jsonwebtoken::jwk::JwkSet = response.json().await.expect("a JWK set");
    assert_eq!(jwks.keys.len(), 1);
    let access = gateway.admin().await;
    let header = jsonwebtoken::decode_header(&access).expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let kid = header.kid.expect("kid");
    let jwk = jwks.find(&kid).expect("the token's key is published");
    let key = jsonwebtoken::DecodingKey::from_jwk(jwk).expect("key");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    let claims = jsonwebtoken::decode::<AccessClaims>(&access, &key, &validation)
        .expect("verifies with the published key")
        .claims;
    assert_eq!(claims.name, "admin");
    assert!(claims.exp - claims.iat <= 15 * 60);
    gateway.stop().await;
}
