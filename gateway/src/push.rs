//! Web Push notifications (RFC 8030, with VAPID, RFC 8292, and payload encryption,
//! RFC 8291): a signed-in user's browsers hear when one of their jobs finishes or
//! waits for an approval, with the page closed.
//!
//! The pieces: [`PushSettings`] (`[push]` in the config), [`vapid`] (the key pair that
//! identifies this paddock to push services, and the token on each request), the
//! routes in `crate::routes::push` (the public key, registering and removing a
//! browser's subscription, kept by `paddock_accounts`), [`sender`] (one encrypted POST
//! to a push service, with retries) and [`notifier`] (the durable consumer of job
//! events that decides who hears what). [`start`] loads the key and starts the
//! notifier when the gateway starts.
//!
//! A notification carries a short title and body and the job's id, never prompt text,
//! model output or tool input ([`Notification::for_event`]): push services and the
//! phone's lock screen see it. Payload encryption is `web-push-native` (RustCrypto:
//! P-256 ECDH, HKDF, AES-128-GCM); the `web-push` crate would bring OpenSSL (through
//! `ece`) and an HTTP client of its own.

pub mod notifier;
pub mod sender;
pub mod vapid;

pub use vapid::VapidKey;

use crate::config::GatewayConfig;
use crate::state::AppState;
use anyhow::Context as _;
use base64::Engine;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use paddock_contract::{EventBody, JobEvent, JobId};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use web_push_native::p256;

/// `[push]`: Web Push notifications.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSettings {
    /// Send notifications at all. Off: the push routes answer 404 and no consumer runs.
    #[serde(default = "default_enabled")]
    pub enabled: bool,
    /// The VAPID private key (P-256, PKCS#8 PEM), made on first start when missing;
    /// default `vapid-key.pem` beside the JWT signing key. Every gateway of one paddock
    /// must use the same file: browsers bind their subscriptions to its public key.
    #[serde(default)]
    pub vapid_key_file: Option<PathBuf>,
    /// The operator's contact in every VAPID token (`sub`): `mailto:ops@example.com`
    /// or an `https://` URL. Push services write to it about problems; set a real one
    /// (Apple's refuses tokens whose contact it cannot use).
    #[serde(default = "default_subject")]
    pub subject: String,
    /// Subscriptions one user may have (browsers, devices).
    #[serde(default = "default_max_subscriptions")]
    pub max_subscriptions_per_user: usize,
    /// Accept `http://` endpoints on loopback addresses, and loopback endpoints on any
    /// port: for tests and development with a local push service only.
    #[serde(default)]
    pub allow_loopback_http: bool,
    /// Time limit of one request to a push service.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Requests to push services in flight at once, per gateway.
    #[serde(default = "default_concurrency")]
    pub concurrency: usize,
    /// Tries per notification and subscription when a push service answers 429 or
    /// 5xx, or not at all.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// The pause before the second try; it doubles after each (a push service's
    /// `Retry-After`, up to a minute, wins when longer).
    #[serde(default = "default_retry_backoff", with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Events older than this when they are read (the gateways were stopped) are not
    /// notified about.
    #[serde(default = "default_max_event_age", with = "humantime_serde")]
    pub max_event_age: Duration,
}

fn default_enabled() -> bool {
    true
}

fn default_subject() -> String {
    "mailto:paddock@localhost".into()
}

fn default_max_subscriptions() -> usize {
    10
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_concurrency() -> usize {
    16
}

fn default_attempts() -> u32 {
    3
}

fn default_retry_backoff() -> Duration {
    Duration::from_secs(1)
}

fn default_max_event_age() -> Duration {
    Duration::from_secs(3600)
}

impl Default for PushSettings {
    fn default() -> Self {
        PushSettings {
            enabled: default_enabled(),
            vapid_key_file: None,
            subject: default_subject(),
            max_subscriptions_per_user: default_max_subscriptions(),
            allow_loopback_http: false,
            request_timeout: default_request_timeout(),
            concurrency: default_concurrency(),
            attempts: default_attempts(),
            retry_backoff: default_retry_backoff(),
            max_event_age: default_max_event_age(),
        }
    }
}

impl PushSettings {
    /// The first thing wrong with the settings, as (key, problem).
    pub fn problem(&self) -> Option<(&'static str, String)> {
        let contact = self
            .subject
            .strip_prefix("mailto:")
            .or_else(|| self.subject.strip_prefix("https://"));
        if contact.is_none_or(str::is_empty)
            || self
                .subject
                .chars()
                .any(|c| c.is_control() || c.is_whitespace())
        {
            return Some((
                "push.subject",
                "must be a mailto: address or an https:// URL (RFC 8292)".into(),
            ));
        }
        let checks: [(&'static str, bool, &str); 5] = [
            (
                "push.max_subscriptions_per_user",
                self.max_subscriptions_per_user == 0,
                "must be above 0",
            ),
            ("push.concurrency", self.concurrency == 0, "must be above 0"),
            ("push.attempts", self.attempts == 0, "must be above 0"),
            (
                "push.request_timeout",
                self.request_timeout.is_zero(),
                "must be above 0",
            ),
            (
                "push.max_event_age",
                self.max_event_age.is_zero(),
                "must be above 0",
            ),
        ];
        checks
            .into_iter()
            .find(|(_, bad, _)| *bad)
            .map(|(key, _, problem)| (key, problem.to_string()))
    }
}

/// The VAPID key's file: `push.vapid_key_file`, else beside the JWT signing key.
pub fn vapid_key_file(config: &GatewayConfig) -> PathBuf {
    if let Some(file) = &config.push.vapid_key_file {
        return file.clone();
    }
    let signing_key = config.signing_key_file();
    signing_key
        .parent()
        .map(|folder| folder.join("vapid-key.pem"))
        .unwrap_or_else(|| PathBuf::from("vapid-key.pem"))
}

/// Loads (or makes) the VAPID key and starts the notifier, unless `push.enabled` is
/// false. The notifier stops with the gateway (`state.shutdown()`).
pub fn start(state: &AppState) -> anyhow::Result<()> {
    let settings = &state.config().push;
    if !settings.enabled {
        tracing::info!("Web Push notifications are off (push.enabled = false)");
        return Ok(());
    }
    let file = vapid_key_file(state.config());
    let key = Arc::new(VapidKey::load_or_generate(&file).with_context(|| {
        format!(
            "loading the VAPID key {} (push.vapid_key_file)",
            file.display()
        )
    })?);
    state.set_push_key(key.clone());
    let sender = sender::Sender::new(settings, key, state.shutdown().clone())
        .context("making the Web Push HTTP client")?;
    tokio::spawn(notifier::run(state.clone(), Arc::new(sender)));
    Ok(())
}

/// What a notification is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    Completed,
    Failed,
    Approval,
}

/// The payload of a notification, as the web app's service worker reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// "Job finished", "Job failed", "Approval needed: Bash".
    pub title: String,
    /// The project, the status, the cost: never prompt text or output.
    pub body: String,
    pub job_id: JobId,
    pub kind: NotificationKind,
}

/// Keeps at most `max` characters, without control characters.
fn short(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// A failure reason as a stable code: letters, digits and `_` only.
fn reason_code(reason: &str) -> String {
    reason
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(40)
        .collect()
}

fn cost(summary: Option<&paddock_contract::RunSummary>) -> Option<String> {
    let usd = summary?.total_cost_usd?;
    (usd.is_finite() && usd >= 0.0).then(|| format!("${usd:.2}"))
}

impl Notification {
    /// The notification for `event` of a job in `project`, for the three kinds of
    /// event that have one. Built from fixed words, the project's name, the failure's
    /// reason code, the tool's name, the turn count and the cost: nothing a person or
    /// the model wrote.
    pub fn for_event(event: &JobEvent, project: &str) -> Option<Notification> {
        let project = short(project, 64);
        let (kind, title, details) = match &event.body {
            EventBody::Completed { summary } => {
                let mut details = vec!["completed".to_string()];
                if let Some(turns) = summary.num_turns {
                    details.push(format!("{turns} turn{}", if turns == 1 { "" } else { "s" }));
                }
                details.extend(cost(Some(summary)));
                (
                    NotificationKind::Completed,
                    "Job finished".to_string(),
                    details,
                )
            }
            EventBody::Failed {
                reason, summary, ..
            } => {
                let mut details = vec![format!("failed ({})", reason_code(reason))];
                details.extend(cost(summary.as_ref()));
                (NotificationKind::Failed, "Job failed".to_string(), details)
            }
            EventBody::ApprovalRequested { tool_name, .. } => (
                NotificationKind::Approval,
                format!("Approval needed: {}", short(tool_name, 64)),
                vec!["waiting for your decision".to_string()],
            ),
            _ => return None,
        };
        let mut body = vec![project];
        body.extend(details);
        Some(Notification {
            title,
            body: body.join(" · "),
            job_id: event.job_id,
            kind,
        })
    }
}

/// Decodes base64url, with or without padding (browsers send it without).
fn base64url(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .or_else(|_| URL_SAFE.decode(text))
        .ok()
}

/// A browser's subscription keys, checked: `p256dh` an uncompressed P-256 point
/// (65 bytes) on the curve, `auth` 16 bytes.
pub fn browser_keys(
    p256dh: &str,
    auth: &str,
) -> Result<(p256::PublicKey, web_push_native::Auth), String> {
    let point = base64url(p256dh).ok_or("keys.p256dh is not base64url")?;
    if point.len() != 65 || point.first() != Some(&4) {
        return Err("keys.p256dh must be an uncompressed P-256 point (65 bytes)".into());
    }
    let public = p256::PublicKey::from_sec1_bytes(&point)
        .map_err(|_| "keys.p256dh is not a point on P-256".to_string())?;
    let secret = base64url(auth).ok_or("keys.auth is not base64url")?;
    if secret.len() != 16 {
        return Err("keys.auth must be 16 bytes".into());
    }
    Ok((public, web_push_native::Auth::clone_from_slice(&secret)))
}

/// The keys in the form they are stored: base64url without padding.
pub fn normalised_keys(p256dh: &str, auth: &str) -> Result<(String, String), String> {
    browser_keys(p256dh, auth)?;
    let encode = |text: &str| base64url(text).map(|bytes| URL_SAFE_NO_PAD.encode(bytes));
    match (encode(p256dh), encode(auth)) {
        (Some(p256dh), Some(auth)) => Ok((p256dh, auth)),
        _ => Err("keys are not base64url".into()),
    }
}

/// True for `localhost` and loopback addresses.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Checks a subscription's endpoint: an `https://` URL of a push service on the
/// default port, named by a host name rather than an address, without credentials.
/// With `allow_loopback_http`, an endpoint on a loopback address may also be
/// `http://` and use any port (a local push service in tests). The gateway posts to
/// what is stored here, so this also keeps it from being aimed at addresses inside
/// the network.
pub fn check_endpoint(endpoint: &str, allow_loopback_http: bool) -> Result<reqwest::Url, String> {
    if endpoint.len() > paddock_accounts::MAX_ENDPOINT_BYTES {
        return Err(format!(
            "endpoint is longer than {} bytes",
            paddock_accounts::MAX_ENDPOINT_BYTES
        ));
    }
    let url = reqwest::Url::parse(endpoint).map_err(|_| "endpoint is not a URL".to_string())?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("endpoint must not carry credentials".into());
    }
    let host = url.host_str().unwrap_or_default();
    if host.is_empty() {
        return Err("endpoint has no host".into());
    }
    let local = allow_loopback_http && is_loopback(host);
    match url.scheme() {
        "https" => {}
        "http" if local => {}
        _ => return Err("endpoint must be an https:// URL".into()),
    }
    if local {
        return Ok(url);
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok() || bare.eq_ignore_ascii_case("localhost") {
        return Err("endpoint must name a push service's host, not an address".into());
    }
    if url.port().is_some() {
        return Err("endpoint must use the default https port".into());
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_contract::RunSummary;
    use web_push_native::p256::elliptic_curve::sec1::ToEncodedPoint;

    fn b64(text: &str) -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(text).expect("base64url")
    }

    // RFC 8291 §5: "Push Message Encryption Example".
    const PLAINTEXT: &str = "When I grow up, I want to be a watermelon";
    const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
    const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AS_PUBLIC: &str =
        "BP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A8";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const MESSAGE: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

    fn rfc_user_agent() -> (p256::SecretKey, web_push_native::Auth) {
        let secret = p256::SecretKey::from_slice(&b64(UA_PRIVATE)).expect("private key");
        let (public, auth) = browser_keys(UA_PUBLIC, AUTH).expect("the RFC's keys are valid");
        assert_eq!(secret.public_key(), public, "the RFC's key pair matches");
        (secret, auth)
    }

    #[test]
    fn the_rfc_8291_example_decrypts_to_its_plaintext() {
        let (secret, auth) = rfc_user_agent();
        let message = b64(MESSAGE);
        // The header: salt, record size 4096, the sender's public key as key id.
        assert_eq!(&message[..16], b64(SALT).as_slice());
        assert_eq!(&message[16..20], &4096u32.to_be_bytes());
        assert_eq!(message[20], 65);
        assert_eq!(&message[21..86], b64(AS_PUBLIC).as_slice());
        let plaintext =
            web_push_native::decrypt(message.clone(), &secret, &auth).expect("decrypts");
        assert_eq!(plaintext, PLAINTEXT.as_bytes());
        // One bit off in the ciphertext, or another auth secret: no plaintext.
        let mut tampered = message.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(web_push_native::decrypt(tampered, &secret, &auth).is_err());
        let other_auth = web_push_native::Auth::clone_from_slice(&[7u8; 16]);
        assert!(web_push_native::decrypt(message, &secret, &other_auth).is_err());
    }

    #[test]
    fn what_we_encrypt_has_the_rfc_layout_and_decrypts_with_the_browser_keys() {
        let (secret, auth) = rfc_user_agent();
        let public = secret.public_key();
        let payload = br#"{"title":"Job finished"}"#.to_vec();
        let body = web_push_native::encrypt(payload.clone(), &public, &auth).expect("encrypts");
        assert_eq!(
            body[20], 65,
            "the key id is the sender's uncompressed public key"
        );
        assert_eq!(body[21], 4);
        let record_size = u32::from_be_bytes(body[16..20].try_into().expect("4 bytes"));
        assert!(
            record_size as usize >= payload.len() + 17,
            "one record holds it all"
        );
        assert_eq!(
            body.len(),
            86 + payload.len() + 17,
            "padding delimiter and tag"
        );
        assert_ne!(
            &body[86..86 + payload.len()],
            payload.as_slice(),
            "encrypted"
        );
        let again = web_push_native::encrypt(payload.clone(), &public, &auth).expect("encrypts");
        assert_ne!(body[..16], again[..16], "a fresh salt each time");
        assert_ne!(body[21..86], again[21..86], "a fresh sender key each time");
        assert_eq!(
            web_push_native::decrypt(body, &secret, &auth).expect("decrypts"),
            payload
        );
    }

    #[test]
    fn browser_keys_are_checked() {
        assert!(browser_keys(UA_PUBLIC, AUTH).is_ok());
        assert!(browser_keys(&format!("{UA_PUBLIC}="), &format!("{AUTH}==")).is_ok());
        let compressed = p256::SecretKey::from_slice(&b64(UA_PRIVATE))
            .expect("key")
            .public_key()
            .to_encoded_point(true);
        let compressed = URL_SAFE_NO_PAD.encode(compressed.as_bytes());
        assert!(browser_keys(&compressed, AUTH).is_err());
        let mut off_curve = b64(UA_PUBLIC);
        off_curve[64] ^= 1;
        assert!(browser_keys(&URL_SAFE_NO_PAD.encode(off_curve), AUTH).is_err());
        assert!(browser_keys(UA_PUBLIC, &URL_SAFE_NO_PAD.encode([1u8; 15])).is_err());
        assert!(browser_keys("not base64!", AUTH).is_err());
        assert_eq!(
            normalised_keys(&format!("{UA_PUBLIC}="), AUTH).expect("valid"),
            (UA_PUBLIC.to_string(), AUTH.to_string())
        );
    }

    #[test]
    fn endpoints_must_be_public_https_push_services() {
        for good in [
            "https://fcm.googleapis.com/fcm/send/abc:def",
            "https://updates.push.services.mozilla.com/wpush/v2/gAAA",
            "https://web.push.apple.com/QGx",
        ] {
            assert!(check_endpoint(good, false).is_ok(), "{good}");
        }
        for bad in [
            "http://fcm.googleapis.com/fcm/send/abc",
            "ftp://push.example/x",
            "https://10.0.0.5/push",
            "https://[fd00::1]/push",
            "https://127.0.0.1/push",
            "https://localhost/push",
            "https://push.example:8443/x",
            "https://user:pw@push.example/x",
            "not a url",
            "http://127.0.0.1:9000/push/1",
        ] {
            assert!(check_endpoint(bad, false).is_err(), "{bad}");
        }
        assert!(check_endpoint("http://127.0.0.1:9000/push/1", true).is_ok());
        assert!(check_endpoint("http://[::1]:9000/push/1", true).is_ok());
        assert!(check_endpoint("http://localhost:9000/push/1", true).is_ok());
        assert!(check_endpoint("http://10.0.0.5:9000/push/1", true).is_err());
        let long = format!("https://push.example/{}", "x".repeat(2000));
        assert!(check_endpoint(&long, false).is_err());
    }

    fn event(body: EventBody) -> JobEvent {
        JobEvent {
            version: paddock_contract::CONTRACT_VERSION,
            job_id: JobId::new(),
            seq: 9,
            at_ms: 0,
            node: Some("mini-1".into()),
            attempt: 1,
            body,
            raw: Some("the secret plan to take over the world".into()),
        }
    }

    #[test]
    fn notifications_say_what_happened_and_nothing_of_the_prompt_or_output() {
        let secret = "the secret plan to take over the world";
        let completed = event(EventBody::Completed {
            summary: RunSummary {
                num_turns: Some(3),
                total_cost_usd: Some(0.04213),
                result: Some(secret.into()),
                ..RunSummary::default()
            },
        });
        let shown = Notification::for_event(&completed, "demo").expect("notified");
        assert_eq!(shown.title, "Job finished");
        assert_eq!(shown.body, "demo · completed · 3 turns · $0.04");
        assert_eq!(shown.kind, NotificationKind::Completed);
        assert_eq!(shown.job_id, completed.job_id);

        let failed = event(EventBody::Failed {
            reason: "timeout".into(),
            message: secret.into(),
            summary: None,
        });
        let shown = Notification::for_event(&failed, "demo").expect("notified");
        assert_eq!(shown.title, "Job failed");
        assert_eq!(shown.body, "demo · failed (timeout)");

        let approval = event(EventBody::ApprovalRequested {
            request_id: "r1".into(),
            tool_name: "Bash".into(),
            input: serde_json::json!({ "command": secret }),
            deadline_ms: 1,
        });
        let shown = Notification::for_event(&approval, "demo").expect("notified");
        assert_eq!(shown.title, "Approval needed: Bash");
        assert_eq!(shown.kind, NotificationKind::Approval);

        for event in [completed, failed, approval] {
            let shown = Notification::for_event(&event, "demo").expect("notified");
            let json = serde_json::to_value(&shown).expect("json");
            assert!(!json.to_string().contains("secret"), "{json}");
            let keys: std::collections::BTreeSet<&str> = json
                .as_object()
                .expect("object")
                .keys()
                .map(String::as_str)
                .collect();
            assert_eq!(keys, ["body", "job_id", "kind", "title"].into());
        }
        assert!(
            Notification::for_event(
                &event(EventBody::AssistantText {
                    text: secret.into()
                }),
                "demo"
            )
            .is_none()
        );
    }

    #[test]
    fn settings_name_their_bad_key() {
        assert_eq!(PushSettings::default().problem(), None);
        let with = |change: fn(&mut PushSettings)| {
            let mut settings = PushSettings::default();
            change(&mut settings);
            settings.problem().map(|(key, _)| key)
        };
        assert_eq!(
            with(|s| s.subject = "ops@example.com".into()),
            Some("push.subject")
        );
        assert_eq!(with(|s| s.subject = "mailto:".into()), Some("push.subject"));
        assert_eq!(
            with(|s| s.subject = "https://paddock.example/contact".into()),
            None
        );
        assert_eq!(with(|s| s.attempts = 0), Some("push.attempts"));
        assert_eq!(
            with(|s| s.max_subscriptions_per_user = 0),
            Some("push.max_subscriptions_per_user")
        );
    }
}
