//! Delivering one notification to one subscription (RFC 8030 §5): the payload
//! encrypted for the browser (RFC 8291, `aes128gcm`, by `web-push-native`), a VAPID
//! authorization for the push service's origin, `TTL` and `Urgency`, one POST.
//!
//! What the answer means: 2xx, delivered; 404 or 410, the subscription is gone for
//! good (the caller deletes it); 429 and 5xx, and no answer at all, are tried again
//! after a pause that doubles (or the push service's `Retry-After`, up to a minute),
//! up to `push.attempts` tries; any other 4xx is a refusal not worth repeating.
//! Requests in flight are bounded by `push.concurrency` for the whole gateway, each
//! has `push.request_timeout`, redirects are not followed (a push service does not
//! redirect; an endpoint that does is not one), and a pause ends early on shutdown.

use super::{PushSettings, VapidKey, browser_keys};
use paddock_accounts::PushSubscription;
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// What came of delivering to one subscription.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivered {
    Sent,
    /// 404 or 410: the browser unsubscribed or the subscription expired.
    Gone,
    /// Refused for good with this status.
    Rejected(u16),
    /// No success after every try; the last problem.
    Failed(String),
}

/// One message to send: the plaintext payload and its headers.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    pub payload: &'a [u8],
    /// Seconds the push service may keep it for a browser that is offline.
    pub ttl: u64,
    /// `very-low`, `low`, `normal` or `high` (RFC 8030 §5.3).
    pub urgency: &'static str,
}

/// Sends messages to push services; one per gateway, shared by its notifications.
pub struct Sender {
    http: reqwest::Client,
    key: Arc<VapidKey>,
    subject: String,
    attempts: u32,
    backoff: Duration,
    permits: Semaphore,
    shutdown: CancellationToken,
}

impl Sender {
    pub fn new(
        settings: &PushSettings,
        key: Arc<VapidKey>,
        shutdown: CancellationToken,
    ) -> Result<Sender, reqwest::Error> {
        // reqwest is built without a crypto provider of its own: use ring's, as the
        // rest of the gateway does (a provider installed earlier is kept).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("paddock-gateway/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Sender {
            http,
            key,
            subject: settings.subject.clone(),
            attempts: settings.attempts.max(1),
            backoff: settings.retry_backoff,
            permits: Semaphore::new(settings.concurrency.max(1)),
            shutdown,
        })
    }

    /// Encrypts `message` for `subscription` and sends it, trying again as the module
    /// says.
    pub async fn deliver(
        &self,
        subscription: &PushSubscription,
        message: &Message<'_>,
    ) -> Delivered {
        let endpoint = match reqwest::Url::parse(&subscription.endpoint) {
            Ok(url) => url,
            Err(e) => return Delivered::Failed(format!("stored endpoint is not a URL: {e}")),
        };
        let audience = endpoint.origin().ascii_serialization();
        let (public, auth) = match browser_keys(&subscription.p256dh, &subscription.auth) {
            Ok(keys) => keys,
            Err(problem) => return Delivered::Failed(format!("stored keys: {problem}")),
        };
        let body = match web_push_native::encrypt(message.payload.to_vec(), &public, &auth) {
            Ok(body) => body,
            Err(e) => return Delivered::Failed(format!("encrypting: {e}")),
        };
        let mut pause = self.backoff;
        let mut last_problem = String::new();
        for attempt in 1..=self.attempts {
            let retry_after = match self.send_once(&endpoint, &audience, &body, message).await {
                Ok(response) => {
                    let status = response.status();
                    if status.is_success() {
                        return Delivered::Sent;
                    }
                    if matches!(status.as_u16(), 404 | 410) {
                        return Delivered::Gone;
                    }
                    if status.as_u16() != 429 && !status.is_server_error() {
                        let detail = response.text().await.unwrap_or_default();
                        let detail: String = detail.chars().take(200).collect();
                        tracing::warn!(subscription = %subscription.id, %audience, status = status.as_u16(), %detail, "a push service refused a notification");
                        return Delivered::Rejected(status.as_u16());
                    }
                    last_problem = format!("status {}", status.as_u16());
                    retry_after_of(&response)
                }
                Err(problem) => {
                    last_problem = problem;
                    None
                }
            };
            if attempt == self.attempts {
                break;
            }
            let wait = retry_after.unwrap_or(pause).max(pause);
            tracing::debug!(subscription = %subscription.id, %audience, attempt, problem = %last_problem, ?wait, "push delivery failed; trying again");
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = tokio::time::sleep(wait) => {}
            }
            pause = pause.saturating_mul(2);
        }
        tracing::warn!(subscription = %subscription.id, %audience, problem = %last_problem, "a notification could not be delivered");
        Delivered::Failed(last_problem)
    }

    async fn send_once(
        &self,
        endpoint: &reqwest::Url,
        audience: &str,
        body: &[u8],
        message: &Message<'_>,
    ) -> Result<reqwest::Response, String> {
        let authorization = self
            .key
            .authorization(audience, &self.subject, now_secs())
            .map_err(|e| e.to_string())?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| "the sender is closed".to_string())?;
        self.http
            .post(endpoint.clone())
            .header(AUTHORIZATION, authorization)
            .header("TTL", message.ttl.to_string())
            .header("Urgency", message.urgency)
            .header(CONTENT_ENCODING, "aes128gcm")
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| format!("no answer: {e}"))
    }
}

/// A `Retry-After` in seconds, capped (an HTTP date is ignored).
fn retry_after_of(response: &reqwest::Response) -> Option<Duration> {
    let seconds: u64 = response
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_testkit::PushService;
    use paddock_testkit::push_service::BrowserSubscription;

    fn settings() -> PushSettings {
        PushSettings {
            allow_loopback_http: true,
            subject: "mailto:ops@paddock.test".into(),
            attempts: 3,
            retry_backoff: Duration::from_millis(20),
            request_timeout: Duration::from_secs(5),
            ..PushSettings::default()
        }
    }

    fn stored(browser: &BrowserSubscription) -> PushSubscription {
        PushSubscription {
            id: browser.id.clone(),
            user_id: "u1".into(),
            device_id: None,
            endpoint: browser.endpoint.clone(),
            p256dh: browser.p256dh.clone(),
            auth: browser.auth.clone(),
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    const MESSAGE: Message<'static> = Message {
        payload: br#"{"title":"Job finished"}"#,
        ttl: 60,
        urgency: "normal",
    };

    #[tokio::test]
    async fn answers_are_sorted_into_sent_gone_refused_and_retried() {
        let push = PushService::start().await;
        let key =
            Arc::new(VapidKey::from_pkcs8(&VapidKey::generate_pkcs8().expect("der")).expect("key"));
        let sender =
            Sender::new(&settings(), key.clone(), CancellationToken::new()).expect("sender");

        let browser = push.subscribe(key.public_key());
        assert_eq!(
            sender.deliver(&stored(&browser), &MESSAGE).await,
            Delivered::Sent
        );
        let delivered = push.deliveries_to(&browser.id);
        assert_eq!(delivered.len(), 1);
        assert_eq!(delivered[0].payload, MESSAGE.payload);
        assert_eq!(delivered[0].ttl, Some(60));
        assert_eq!(delivered[0].urgency.as_deref(), Some("normal"));

        // Two 503s, then success on the third try.
        let busy = push.subscribe(key.public_key());
        push.answer_unavailable(&busy.id, 2);
        assert_eq!(
            sender.deliver(&stored(&busy), &MESSAGE).await,
            Delivered::Sent
        );
        assert_eq!(push.deliveries_to(&busy.id).len(), 1);
        // Three 503s: every try used, given up.
        let down = push.subscribe(key.public_key());
        push.answer_unavailable(&down.id, 3);
        assert!(matches!(
            sender.deliver(&stored(&down), &MESSAGE).await,
            Delivered::Failed(problem) if problem.contains("503")
        ));
        assert!(push.deliveries_to(&down.id).is_empty());

        let gone = push.subscribe(key.public_key());
        push.answer_gone(&gone.id);
        assert_eq!(
            sender.deliver(&stored(&gone), &MESSAGE).await,
            Delivered::Gone
        );
        let mut unknown = stored(&gone);
        unknown.endpoint = format!("{}/push/nobody", push.origin());
        assert_eq!(sender.deliver(&unknown, &MESSAGE).await, Delivered::Gone);

        // A subscription made for another application server key: 403, not retried.
        let other = VapidKey::from_pkcs8(&VapidKey::generate_pkcs8().expect("der")).expect("key");
        let foreign = push.subscribe(other.public_key());
        assert_eq!(
            sender.deliver(&stored(&foreign), &MESSAGE).await,
            Delivered::Rejected(403)
        );
        let tries = push
            .refusals()
            .iter()
            .filter(|r| r.subscription == foreign.id)
            .count();
        assert_eq!(tries, 1);
    }

    #[tokio::test]
    async fn an_unreachable_push_service_is_given_up_on() {
        let push = PushService::start().await;
        let key =
            Arc::new(VapidKey::from_pkcs8(&VapidKey::generate_pkcs8().expect("der")).expect("key"));
        let browser = push.subscribe(key.public_key());
        let origin = push.origin().to_string();
        drop(push);
        let sender = Sender::new(&settings(), key, CancellationToken::new()).expect("sender");
        let mut subscription = stored(&browser);
        subscription.endpoint = format!("{origin}/push/{}", browser.id);
        assert!(matches!(
            sender.deliver(&subscription, &MESSAGE).await,
            Delivered::Failed(problem) if problem.contains("no answer")
        ));
    }
}
