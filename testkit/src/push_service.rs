//! A double of a browser's Web Push service (RFC 8030), for tests of whatever sends
//! notifications: an HTTP server on a free port of 127.0.0.1 that takes
//! `POST /push/<id>` like a real push service, and checks what a real one checks before
//! it records a message:
//!
//! - the VAPID `Authorization: vapid t=<JWT>, k=<key>` header (RFC 8292): an ES256
//!   token signed by `k`, whose `aud` is this service's origin, whose `exp` is in the
//!   future and at most 24 hours away, with a `sub` contact (`mailto:` or `https:`);
//!   and `k` must be the application server key the subscription was made with
//!   (401 for a bad token, 403 for another key);
//! - a `TTL` header, and `Content-Encoding: aes128gcm` (400 otherwise);
//! - a body that decrypts (RFC 8291) with the subscription's private key and auth
//!   secret (400 otherwise).
//!
//! [`PushService::subscribe`] plays the browser's `pushManager.subscribe`: it makes a
//! P-256 key pair and a 16-byte auth secret, and hands back the `PushSubscription`
//! JSON a page would send to its server. A test can make a subscription answer 410
//! Gone ([`PushService::answer_gone`]) or 503 a few times
//! ([`PushService::answer_unavailable`]); an unknown id answers 404. What was accepted
//! is kept as [`Delivery`]s (with the decrypted payload), what was refused as
//! [`Refusal`]s. [`verify_vapid`] is the token check on its own, so a test can show it
//! refusing a forged or tampered token. Dropping the double stops its server.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use web_push_native::p256;
use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint;

/// The longest a VAPID token may still be valid for (RFC 8292 §2).
pub const MAX_VAPID_LIFETIME_SECS: u64 = 24 * 3600;

/// A running push-service double.
pub struct PushService {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    origin: String,
    state: Mutex<ServiceState>,
}

#[derive(Default)]
struct ServiceState {
    subscriptions: HashMap<String, BrowserKeys>,
    gone: HashSet<String>,
    /// Answers of 503 still to give per subscription.
    unavailable: HashMap<String, u32>,
    deliveries: Vec<Delivery>,
    refusals: Vec<Refusal>,
    next_id: u64,
}

/// What the "browser" keeps of one subscription.
struct BrowserKeys {
    secret: p256::SecretKey,
    auth: web_push_native::Auth,
    application_server_key: Vec<u8>,
}

/// What `pushManager.subscribe` gives a page: the subscription to send to its server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrowserSubscription {
    /// The double's id of the subscription (the last segment of the endpoint).
    pub id: String,
    pub endpoint: String,
    /// The browser's public key, an uncompressed P-256 point, base64url.
    pub p256dh: String,
    /// The 16-byte authentication secret, base64url.
    pub auth: String,
}

impl BrowserSubscription {
    /// The JSON of `PushSubscription.toJSON()`, as a page posts it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "endpoint": self.endpoint,
            "expirationTime": null,
            "keys": { "p256dh": self.p256dh, "auth": self.auth },
        })
    }
}

/// A push message the double accepted.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub subscription: String,
    /// The decrypted payload.
    pub payload: Vec<u8>,
    pub ttl: Option<u64>,
    pub urgency: Option<String>,
    pub topic: Option<String>,
    pub token: VapidToken,
}

impl Delivery {
    /// The payload as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.payload).unwrap_or(serde_json::Value::Null)
    }
}

/// A push message the double refused, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub subscription: String,
    pub status: u16,
    pub reason: String,
}

/// The checked contents of a VAPID authorization.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VapidToken {
    /// The application server's public key (`k`), 65 bytes.
    pub public_key: Vec<u8>,
    pub aud: String,
    pub exp: u64,
    pub sub: String,
}

/// Why a VAPID authorization was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VapidError {
    Malformed(String),
    BadSignature,
    WrongAudience { expected: String, found: String },
    Expired,
    TooLong,
    NoContact,
}

impl std::fmt::Display for VapidError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VapidError::Malformed(what) => write!(f, "malformed VAPID authorization: {what}"),
            VapidError::BadSignature => f.write_str("the token's signature does not verify with k"),
            VapidError::WrongAudience { expected, found } => {
                write!(f, "the token's aud is {found:?}, not {expected:?}")
            }
            VapidError::Expired => f.write_str("the token has expired"),
            VapidError::TooLong => f.write_str("the token's exp is more than 24 hours away"),
            VapidError::NoContact => {
                f.write_str("the token's sub is not a mailto: or https: contact")
            }
        }
    }
}

impl std::error::Error for VapidError {}

/// Checks an `Authorization` header value as a push service does (RFC 8292): the
/// `vapid` scheme with `t` (an ES256 JWT) and `k` (the uncompressed P-256 public key,
/// base64url); the signature verifies with `k`; `aud` is `audience` (the push
/// service's origin); `exp` is after `now_secs` and at most 24 hours later; `sub` is a
/// `mailto:` or `https:` contact.
pub fn verify_vapid(
    authorization: &str,
    audience: &str,
    now_secs: u64,
) -> Result<VapidToken, VapidError> {
    let malformed = |what: &str| VapidError::Malformed(what.to_string());
    let (scheme, params) = authorization
        .trim()
        .split_once(' ')
        .ok_or_else(|| malformed("no scheme"))?;
    if !scheme.eq_ignore_ascii_case("vapid") {
        return Err(malformed("the scheme is not vapid"));
    }
    let mut token = None;
    let mut key = None;
    for param in params.split(',') {
        let (name, value) = param
            .trim()
            .split_once('=')
            .ok_or_else(|| malformed("a parameter without '='"))?;
        match name.trim() {
            "t" => token = Some(value.trim()),
            "k" => key = Some(value.trim()),
            _ => {}
        }
    }
    let token = token.ok_or_else(|| malformed("no t="))?;
    let public_key = URL_SAFE_NO_PAD
        .decode(key.ok_or_else(|| malformed("no k="))?)
        .map_err(|_| malformed("k is not base64url"))?;
    if public_key.len() != 65 || public_key[0] != 4 {
        return Err(malformed("k is not an uncompressed P-256 point"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed("t is not a JWS in compact form"));
    };
    let decode_json = |part: &str, what: &str| -> Result<serde_json::Value, VapidError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| malformed(&format!("the token's {what} is not base64url")))?;
        serde_json::from_slice(&bytes)
            .map_err(|_| malformed(&format!("the token's {what} is not JSON")))
    };
    let header_json = decode_json(header, "header")?;
    if header_json.get("alg").and_then(|a| a.as_str()) != Some("ES256") {
        return Err(malformed("the token's alg is not ES256"));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| malformed("the signature is not base64url"))?;
    let signed = &token[..header.len() + 1 + claims.len()];
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, &public_key)
        .verify(signed.as_bytes(), &signature)
        .map_err(|_| VapidError::BadSignature)?;
    let claims = decode_json(claims, "claims")?;
    let aud = claims
        .get("aud")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    if aud != audience {
        return Err(VapidError::WrongAudience {
            expected: audience.to_string(),
            found: aud,
        });
    }
    let exp = claims
        .get("exp")
        .and_then(|v| v.as_u64())
        .ok_or_else(|| malformed("exp is not a number"))?;
    if exp <= now_secs {
        return Err(VapidError::Expired);
    }
    if exp > now_secs.saturating_add(MAX_VAPID_LIFETIME_SECS) {
        return Err(VapidError::TooLong);
    }
    let sub = claims
        .get("sub")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let contact = sub
        .strip_prefix("mailto:")
        .or_else(|| sub.strip_prefix("https://"));
    if contact.is_none_or(str::is_empty) {
        return Err(VapidError::NoContact);
    }
    Ok(VapidToken {
        public_key,
        aud,
        exp,
        sub,
    })
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl PushService {
    /// Starts the double on a free port of 127.0.0.1.
    pub async fn start() -> PushService {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("push service double: bind: {e}"));
        let address = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("push service double: address: {e}"));
        let shared = Arc::new(Shared {
            origin: format!("http://{address}"),
            state: Mutex::new(ServiceState::default()),
        });
        let app = Router::new()
            .route("/push/{id}", post(receive))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("push service double stopped: {e}");
            }
        });
        PushService { shared, task }
    }

    /// `http://127.0.0.1:<port>`: the `aud` VAPID tokens must name.
    pub fn origin(&self) -> &str {
        &self.shared.origin
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ServiceState> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A new subscription, as `pushManager.subscribe({ applicationServerKey })` makes
    /// one: a fresh key pair and auth secret, bound to the application server's key
    /// (base64url, as the page got it from its server).
    pub fn subscribe(&self, application_server_key: &str) -> BrowserSubscription {
        let application_server_key = URL_SAFE_NO_PAD
            .decode(application_server_key)
            .unwrap_or_else(|e| panic!("the application server key is not base64url: {e}"));
        let rng = ring::rand::SystemRandom::new();
        let secret = loop {
            let bytes: [u8; 32] = ring::rand::generate(&rng)
                .map(|random| random.expose())
                .unwrap_or_else(|_| panic!("no randomness"));
            if let Ok(secret) = p256::SecretKey::from_slice(&bytes) {
                break secret;
            }
        };
        let auth: [u8; 16] = ring::rand::generate(&rng)
            .map(|random| random.expose())
            .unwrap_or_else(|_| panic!("no randomness"));
        let public = secret.public_key().to_encoded_point(false);
        let mut state = self.state();
        state.next_id += 1;
        let id = format!("sub-{}", state.next_id);
        let subscription = BrowserSubscription {
            endpoint: format!("{}/push/{id}", self.shared.origin),
            p256dh: URL_SAFE_NO_PAD.encode(public.as_bytes()),
            auth: URL_SAFE_NO_PAD.encode(auth),
            id: id.clone(),
        };
        state.subscriptions.insert(
            id,
            BrowserKeys {
                secret,
                auth: web_push_native::Auth::clone_from_slice(&auth),
                application_server_key,
            },
        );
        subscription
    }

    /// From now on, messages to subscription `id` are answered 410 Gone (the user
    /// unsubscribed in the browser, or it expired).
    pub fn answer_gone(&self, id: &str) {
        self.state().gone.insert(id.to_string());
    }

    /// The next `times` messages to subscription `id` are answered 503 Service
    /// Unavailable (a push service under load), then it accepts again.
    pub fn answer_unavailable(&self, id: &str, times: u32) {
        self.state().unavailable.insert(id.to_string(), times);
    }

    /// Every message accepted so far, oldest first.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state().deliveries.clone()
    }

    /// The messages accepted for subscription `id`.
    pub fn deliveries_to(&self, id: &str) -> Vec<Delivery> {
        self.state()
            .deliveries
            .iter()
            .filter(|d| d.subscription == id)
            .cloned()
            .collect()
    }

    /// Every message refused so far, oldest first.
    pub fn refusals(&self) -> Vec<Refusal> {
        self.state().refusals.clone()
    }
}

impl Drop for PushService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn receive(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(left) = state.unavailable.get_mut(&id).filter(|left| **left > 0) {
        *left -= 1;
        state.refusals.push(Refusal {
            subscription: id,
            status: 503,
            reason: "unavailable, as the test asked".into(),
        });
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let outcome = check(&shared.origin, &state, &id, &headers, &body);
    match outcome {
        Ok(delivery) => {
            state.deliveries.push(delivery);
            let location = format!("{}/message/{}", shared.origin, state.deliveries.len());
            (StatusCode::CREATED, [(header::LOCATION, location)]).into_response()
        }
        Err((status, reason)) => {
            state.refusals.push(Refusal {
                subscription: id,
                status: status.as_u16(),
                reason: reason.clone(),
            });
            (status, reason).into_response()
        }
    }
}

fn check(
    origin: &str,
    state: &ServiceState,
    id: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Delivery, (StatusCode, String)> {
    if state.gone.contains(id) {
        return Err((StatusCode::GONE, "the subscription is gone".into()));
    }
    let Some(keys) = state.subscriptions.get(id) else {
        return Err((StatusCode::NOT_FOUND, "no such subscription".into()));
    };
    let authorization = header_text(headers, "authorization").ok_or((
        StatusCode::UNAUTHORIZED,
        "no Authorization header".to_string(),
    ))?;
    let token = verify_vapid(authorization, origin, now_secs())
        .map_err(|e| (StatusCode::UNAUTHORIZED, e.to_string()))?;
    if token.public_key != keys.application_server_key {
        return Err((
            StatusCode::FORBIDDEN,
            "k is not the application server key this subscription was made with".into(),
        ));
    }
    let ttl = header_text(headers, "ttl")
        .ok_or((StatusCode::BAD_REQUEST, "no TTL header".to_string()))?
        .trim()
        .parse::<u64>()
        .map_err(|_| (StatusCode::BAD_REQUEST, "TTL is not a number".to_string()))?;
    if header_text(headers, "content-encoding") != Some("aes128gcm") {
        return Err((
            StatusCode::BAD_REQUEST,
            "Content-Encoding is not aes128gcm".into(),
        ));
    }
    let payload =
        web_push_native::decrypt(body.to_vec(), &keys.secret, &keys.auth).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!("the body does not decrypt: {e}"),
            )
        })?;
    Ok(Delivery {
        subscription: id.to_string(),
        payload,
        ttl: Some(ttl),
        urgency: header_text(headers, "urgency").map(str::to_string),
        topic: header_text(headers, "topic").map(str::to_string),
        token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

    const AUDIENCE: &str = "http://127.0.0.1:4000";

    fn key_pair() -> EcdsaKeyPair {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap_or_else(|_| panic!("key"));
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap_or_else(|_| panic!("key"))
    }

    fn token(pair: &EcdsaKeyPair, header: &str, claims: &serde_json::Value) -> String {
        let signed = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let rng = ring::rand::SystemRandom::new();
        let signature = pair
            .sign(&rng, signed.as_bytes())
            .unwrap_or_else(|_| panic!("sign"));
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }

    fn authorization(pair: &EcdsaKeyPair, token: &str) -> String {
        format!(
            "vapid t={token}, k={}",
            URL_SAFE_NO_PAD.encode(pair.public_key().as_ref())
        )
    }

    const HEADER: &str = r#"{"typ":"JWT","alg":"ES256"}"#;
    const NOW: u64 = 1_700_000_000;

    fn good_claims() -> serde_json::Value {
        serde_json::json!({"aud": AUDIENCE, "exp": NOW + 3600, "sub": "mailto:ops@example.com"})
    }

    #[test]
    fn a_well_made_token_verifies() {
        let pair = key_pair();
        let header = authorization(&pair, &token(&pair, HEADER, &good_claims()));
        let verified = verify_vapid(&header, AUDIENCE, NOW).expect("valid");
        assert_eq!(verified.public_key, pair.public_key().as_ref());
        assert_eq!(verified.sub, "mailto:ops@example.com");
    }

    #[test]
    fn a_tampered_or_foreign_token_is_refused() {
        let pair = key_pair();
        let good = token(&pair, HEADER, &good_claims());
        // Claims swapped after signing: the signature no longer covers them.
        let (head, rest) = good.split_once('.').expect("dots");
        let (_, signature) = rest.split_once('.').expect("dots");
        let forged_claims = URL_SAFE_NO_PAD.encode(
            serde_json::json!({"aud": AUDIENCE, "exp": NOW + 7200, "sub": "mailto:x@y.z"})
                .to_string(),
        );
        let tampered = format!("{head}.{forged_claims}.{signature}");
        assert_eq!(
            verify_vapid(&authorization(&pair, &tampered), AUDIENCE, NOW),
            Err(VapidError::BadSignature)
        );
        // Signed by another key than the k it comes with.
        let other = key_pair();
        let foreign = token(&other, HEADER, &good_claims());
        assert_eq!(
            verify_vapid(&authorization(&pair, &foreign), AUDIENCE, NOW),
            Err(VapidError::BadSignature)
        );
        // A flipped bit in the signature.
        let mut bytes = URL_SAFE_NO_PAD.decode(signature).expect("base64");
        bytes[10] ^= 1;
        let flipped = format!(
            "{}.{}",
            &good[..good.rfind('.').expect("dot")],
            URL_SAFE_NO_PAD.encode(bytes)
        );
        assert_eq!(
            verify_vapid(&authorization(&pair, &flipped), AUDIENCE, NOW),
            Err(VapidError::BadSignature)
        );
    }

    #[test]
    fn audience_lifetime_contact_and_algorithm_are_checked() {
        let pair = key_pair();
        let with = |claims: serde_json::Value| {
            verify_vapid(
                &authorization(&pair, &token(&pair, HEADER, &claims)),
                AUDIENCE,
                NOW,
            )
        };
        assert!(matches!(
            with(
                serde_json::json!({"aud": "https://other.example", "exp": NOW + 60, "sub": "mailto:a@b.c"})
            ),
            Err(VapidError::WrongAudience { .. })
        ));
        assert_eq!(
            with(serde_json::json!({"aud": AUDIENCE, "exp": NOW - 1, "sub": "mailto:a@b.c"})),
            Err(VapidError::Expired)
        );
        assert_eq!(
            with(
                serde_json::json!({"aud": AUDIENCE, "exp": NOW + 25 * 3600, "sub": "mailto:a@b.c"})
            ),
            Err(VapidError::TooLong)
        );
        assert_eq!(
            with(serde_json::json!({"aud": AUDIENCE, "exp": NOW + 60})),
            Err(VapidError::NoContact)
        );
        let hs256 = token(&pair, r#"{"typ":"JWT","alg":"HS256"}"#, &good_claims());
        assert!(matches!(
            verify_vapid(&authorization(&pair, &hs256), AUDIENCE, NOW),
            Err(VapidError::Malformed(_))
        ));
        let good = token(&pair, HEADER, &good_claims());
        assert!(matches!(
            verify_vapid(&format!("Bearer {good}"), AUDIENCE, NOW),
            Err(VapidError::Malformed(_))
        ));
        assert!(matches!(
            verify_vapid(&format!("vapid t={good}"), AUDIENCE, NOW),
            Err(VapidError::Malformed(_))
        ));
    }
}
