//! `GET /v1/ws`: live job events over a WebSocket. The client sends
//! `ClientMessage::Subscribe { job_id, after_seq }`; the gateway answers `Subscribed`,
//! then `Event` for every event of the job with a sequence above `after_seq`, each
//! once and in order, stored ones first and then live ones (through
//! `EventLog::follow`). After the job's terminal event the gateway sends
//! `Unsubscribed`: nothing more will come. A client that reconnects with the last
//! sequence it saw misses and repeats nothing.
//!
//! One socket carries up to [`MAX_SUBSCRIPTIONS`] jobs. A message the gateway cannot
//! use gets an `Error` and the socket stays open, unless a client sends
//! [`MAX_BAD_MESSAGES`] of them (abuse: closed with 1008). The gateway pings every
//! [`PING_INTERVAL`] and drops a peer it has not heard from within [`PEER_TIMEOUT`],
//! or that does not take a message within [`SEND_TIMEOUT`]. When the socket closes,
//! or the gateway stops, every subscription of the socket ends with it.
//!
//! Each subscription is a task that reads the job's log and feeds one bounded outbox
//! per socket; the socket's loop writes the outbox, so a slow client slows its own
//! subscriptions and nothing else. Items in the outbox carry the id of the
//! subscription that made them, so nothing of a subscription is sent after its
//! `Unsubscribed`.
//!
//! A socket lives no longer than the access token it was opened with. The gateway
//! remembers the token's expiry at the upgrade, sends `TokenExpiring`
//! [`TOKEN_WARNING`] before it (halfway, for a token with less than twice that left),
//! and at the expiry closes the socket with [`TOKEN_EXPIRED`] ("token expired"). A
//! client keeps its socket by sending `Authenticate { token }` with a fresh access
//! token (from `POST /v1/auth/refresh`): checked as the upgrade's was (valid, a live
//! sign-in, the route's scope) and refused unless it is the same user's; once
//! accepted it is the socket's caller, its expiry the socket's, and every
//! subscription is checked again with it (one the new token may not see ends with an
//! `Error`). A refused token counts as a bad message. Service tokens do not expire.
//!
//! Each delivered event gets a `ws.deliver` span, a child of the span that appended
//! the event (its `traceparent` header), lasting until the event is on the socket, so
//! a job's trace ends at the client. Only events whose producer was sampled get one.

use crate::access::{self, Access, visible_job};
use crate::auth::{Caller, WsCaller};
use crate::error::{ApiError, code};
use crate::state::AppState;
use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use paddock_contract::JobId;
use paddock_contract::api::{ClientMessage, ServerMessage};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Jobs one socket may follow at once.
pub const MAX_SUBSCRIPTIONS: usize = 64;
/// Unusable messages after which a socket is closed as abusive.
pub const MAX_BAD_MESSAGES: u32 = 32;
/// Largest message a client may send.
pub const MAX_CLIENT_MESSAGE_BYTES: usize = 64 * 1024;
pub const PING_INTERVAL: Duration = Duration::from_secs(20);
pub const PEER_TIMEOUT: Duration = Duration::from_secs(60);
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long before its access token expires a socket is told (`TokenExpiring`), at
/// most: a token with less than twice this left is warned halfway through what it has.
pub const TOKEN_WARNING: Duration = Duration::from_secs(60);
/// The close code of a socket whose access token expired (4000–4999: private use).
pub const TOKEN_EXPIRED: u16 = 4001;
/// The route whose policy (scope, rate limit) a token sent over the socket must meet.
const WS_ROUTE: &str = "/v1/ws";
/// Messages waiting for the socket, across its subscriptions.
const OUTBOX: usize = 256;
/// Failed attempts in a row to read a job's log before the subscription gives up.
const MAX_FOLLOW_FAILURES: u32 = 5;

pub async fn upgrade(
    State(state): State<AppState>,
    WsCaller(caller): WsCaller,
    headers: HeaderMap,
    uri: Uri,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return ApiError::BadRequest(rejection.body_text()).into_response(),
    };
    let expires = presented_token(&headers, &uri).and_then(|token| token_expiry(&state, &token));
    let sessions = state.sessions().clone();
    upgrade
        .max_message_size(MAX_CLIENT_MESSAGE_BYTES)
        .on_upgrade(move |socket| {
            sessions.track_future(run_session(state, caller, expires, socket))
        })
}

/// The token the upgrade request was authenticated with, found where [`WsCaller`]
/// looks: the `Authorization: Bearer` header first, then `?access_token=`.
fn presented_token(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct AccessToken {
        access_token: Option<String>,
    }
    let bearer = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim().to_string())
        .filter(|token| !token.is_empty());
    bearer.or_else(|| {
        axum::extract::Query::<AccessToken>::try_from_uri(uri)
            .ok()
            .and_then(|query| query.0.access_token)
    })
}

/// When an access token expires; `None` for a service token, which does not. A JWT
/// that no longer verifies (it expired between the check and now) expires now.
fn token_expiry(state: &AppState, token: &str) -> Option<Instant> {
    if token.split('.').count() != 3 {
        return None;
    }
    Some(match state.auth().keys().verify(token) {
        Ok(claims) => instant_of_unix(claims.exp),
        Err(_) => Instant::now(),
    })
}

/// The moment of a Unix time in seconds, on the monotonic clock timers use.
fn instant_of_unix(seconds: u64) -> Instant {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Instant::now() + Duration::from_secs(seconds).saturating_sub(now)
}

/// Serves one socket until it closes, then ends its subscriptions.
async fn run_session(state: AppState, caller: Caller, expires: Option<Instant>, socket: WebSocket) {
    let _open = state.metrics().websocket_opened();
    let (outbox, mut inbox) = mpsc::channel(OUTBOX);
    let mut session = Session::new(state, caller, expires, outbox);
    let user = session.caller.user.clone();
    tracing::debug!(%user, "websocket opened");
    let exit = session.serve(socket, &mut inbox).await;
    session.closing.cancel();
    session.state.metrics().websocket_closed(exit.label());
    let reason = match exit {
        Exit::PeerGone => "peer gone",
        Exit::Close(_, reason) => reason,
    };
    tracing::debug!(%user, reason, "websocket closed");
}

/// What subscription tasks hand to the socket's loop.
enum Outgoing {
    /// The answer to a steering message (sent whatever the subscriptions).
    Reply(Box<ServerMessage>),
    Message {
        subscription: u64,
        job: JobId,
        message: Box<ServerMessage>,
        /// The event's `ws.deliver` span (or none), ended once the message is sent.
        span: tracing::Span,
    },
    /// The subscription's task has ended, after the job's last event or with an error.
    Finished {
        subscription: u64,
        job: JobId,
        error: Option<ApiError>,
    },
}

/// A steering request from the socket.
enum Steer {
    Message(String),
    Approve(String, bool, Option<String>),
    Interrupt,
}

struct Subscription {
    id: u64,
    stop: CancellationToken,
}

/// One socket and its subscriptions.
struct Session {
    state: AppState,
    caller: Caller,
    subscriptions: HashMap<JobId, Subscription>,
    next_subscription: u64,
    outbox: mpsc::Sender<Outgoing>,
    bad_messages: u32,
    /// When the caller's access token expires (`None`: a service token).
    expires: Option<Instant>,
    /// When to send `TokenExpiring` for the current token; `None` once sent.
    warn_at: Option<Instant>,
    /// Cancelled when the socket closes: stops every subscription task.
    closing: CancellationToken,
}

/// Why the socket's loop stops.
enum Exit {
    PeerGone,
    Close(u16, &'static str),
}

impl Exit {
    /// The reason in `paddock_websocket_closes_total`.
    fn label(&self) -> &'static str {
        match self {
            Exit::PeerGone => "peer_gone",
            Exit::Close(TOKEN_EXPIRED, _) => "token_expired",
            Exit::Close(close_code::POLICY, _) => "too_many_bad_messages",
            Exit::Close(close_code::AWAY, _) => "gateway_stopping",
            Exit::Close(..) => "other",
        }
    }
}

/// What one turn of the socket's loop sends, and the span (a `ws.deliver`, or none)
/// that lasts until it is sent.
struct Replies {
    messages: Vec<Message>,
    span: tracing::Span,
}

impl From<Vec<Message>> for Replies {
    fn from(messages: Vec<Message>) -> Self {
        Replies {
            messages,
            span: tracing::Span::none(),
        }
    }
}

/// When to warn about a token expiring at `expires`: [`TOKEN_WARNING`] before, or
/// halfway through what is left when that is less than twice the warning.
fn warning_time(expires: Option<Instant>) -> Option<Instant> {
    let expires = expires?;
    let left = expires.saturating_duration_since(Instant::now());
    Some(expires - TOKEN_WARNING.min(left / 2))
}

/// Sleeps until `at`; forever when there is no `at`.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Session {
    fn new(
        state: AppState,
        caller: Caller,
        expires: Option<Instant>,
        outbox: mpsc::Sender<Outgoing>,
    ) -> Self {
        let closing = state.shutdown().child_token();
        Session {
            state,
            caller,
            subscriptions: HashMap::new(),
            next_subscription: 0,
            outbox,
            bad_messages: 0,
            expires,
            warn_at: warning_time(expires),
            closing,
        }
    }

    async fn serve(&mut self, mut socket: WebSocket, inbox: &mut mpsc::Receiver<Outgoing>) -> Exit {
        let mut ping = tokio::time::interval_at(Instant::now() + PING_INTERVAL, PING_INTERVAL);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        let shutdown = self.state.shutdown().clone();
        let exit = loop {
            let outcome: Result<Replies, Exit> = tokio::select! {
                () = shutdown.cancelled() => Err(Exit::Close(close_code::AWAY, "the gateway is stopping")),
                () = sleep_until(self.expires) => Err(Exit::Close(TOKEN_EXPIRED, "token expired")),
                () = sleep_until(self.warn_at) => {
                    self.warn_at = None;
                    let left = self.expires.map(|expires| expires.saturating_duration_since(Instant::now()));
                    let warning = ServerMessage::TokenExpiring {
                        expires_in_secs: left.unwrap_or_default().as_secs(),
                    };
                    Ok(vec![encode(warning)].into())
                }
                incoming = socket.recv() => match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => Err(Exit::PeerGone),
                    Some(Ok(message)) => {
                        last_heard = Instant::now();
                        self.take(message).await.map(Replies::from)
                    }
                },
                Some(outgoing) = inbox.recv() => Ok(self.deliver(outgoing)),
                _ = ping.tick() => {
                    if last_heard.elapsed() > PEER_TIMEOUT {
                        Err(Exit::PeerGone)
                    } else {
                        Ok(vec![Message::Ping(Default::default())].into())
                    }
                }
            };
            match outcome {
                Ok(Replies { messages, span }) => {
                    for message in messages {
                        if send(&mut socket, message).await.is_err() {
                            return Exit::PeerGone;
                        }
                    }
                    // The event is on the socket: its delivery span ends here.
                    drop(span);
                }
                Err(exit) => break exit,
            }
        };
        if let Exit::Close(code, reason) = &exit {
            let frame = CloseFrame {
                code: *code,
                reason: (*reason).into(),
            };
            let _ = send(&mut socket, Message::Close(Some(frame))).await;
        }
        exit
    }

    /// Handles one message from the client; returns what to send back now.
    async fn take(&mut self, message: Message) -> Result<Vec<Message>, Exit> {
        let parsed = match &message {
            Message::Text(text) => serde_json::from_str::<ClientMessage>(text.as_str())
                .map_err(|e| format!("not a client message: {e}")),
            Message::Binary(_) => Err("send JSON text messages, not binary ones".to_string()),
            // Pongs prove the peer is alive; axum answers pings itself.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => return Ok(Vec::new()),
        };
        let reply = match parsed {
            Ok(ClientMessage::Subscribe { job_id, after_seq }) => self.subscribe(job_id, after_seq),
            Ok(ClientMessage::Unsubscribe { job_id }) => {
                if let Some(subscription) = self.subscriptions.remove(&job_id) {
                    subscription.stop.cancel();
                }
                Some(ServerMessage::Unsubscribed { job_id })
            }
            Ok(ClientMessage::Message { job_id, text }) => {
                self.steer(job_id, Steer::Message(text));
                None
            }
            Ok(ClientMessage::Approve {
                job_id,
                request_id,
                allow,
                reason,
            }) => {
                self.steer(job_id, Steer::Approve(request_id, allow, reason));
                None
            }
            Ok(ClientMessage::Interrupt { job_id }) => {
                self.steer(job_id, Steer::Interrupt);
                None
            }
            Ok(ClientMessage::Authenticate { token }) => match self.authenticate(&token).await {
                Ok(reply) => Some(reply),
                Err(error) => {
                    self.count_bad_message()?;
                    Some(error_message(
                        error.code(),
                        format!("the token was not taken: {error}"),
                    ))
                }
            },
            Err(problem) => {
                self.count_bad_message()?;
                Some(error_message(code::BAD_REQUEST, problem))
            }
        };
        Ok(reply.map(encode).into_iter().collect())
    }

    /// Counts an unusable message; too many close the socket as abusive.
    fn count_bad_message(&mut self) -> Result<(), Exit> {
        self.bad_messages += 1;
        if self.bad_messages >= MAX_BAD_MESSAGES {
            return Err(Exit::Close(close_code::POLICY, "too many bad messages"));
        }
        Ok(())
    }

    /// Takes a fresh token over the socket (`ClientMessage::Authenticate`): checked
    /// as the upgrade's was, then the same user's or refused. On success it becomes
    /// the socket's caller and expiry, and each subscription is checked again with it.
    async fn authenticate(&mut self, token: &str) -> Result<ServerMessage, ApiError> {
        let metrics = self.state.metrics();
        let mut caller = match self.state.auth().authenticate(token).await {
            Ok(caller) => caller,
            Err(error) => {
                if matches!(error, ApiError::Unauthorized) {
                    metrics.auth_failure("unauthorized");
                }
                return Err(error);
            }
        };
        if !same_user(&self.caller, &caller) {
            metrics.auth_failure("wrong_user");
            return Err(ApiError::Forbidden(
                "a socket keeps its user: the token is another user's".into(),
            ));
        }
        if let Some(policy) = access::route_policy(&Method::GET, WS_ROUTE) {
            if let Access::Scope(scope) = policy.access
                && let Err(error) = caller.require(scope)
            {
                metrics.auth_failure("forbidden");
                return Err(error);
            }
            if let Some(kind) = policy.limit {
                self.state
                    .auth()
                    .limits()
                    .check(kind, &caller.limit_keys())?;
            }
        }
        caller.address = self.caller.address.clone();
        self.caller = caller;
        self.expires = token_expiry(&self.state, token);
        self.warn_at = warning_time(self.expires);
        self.recheck_subscriptions();
        let left = self
            .expires
            .map(|expires| expires.saturating_duration_since(Instant::now()).as_secs());
        Ok(ServerMessage::Authenticated {
            expires_in_secs: left,
        })
    }

    /// Checks every subscription again with the current caller (after a new token):
    /// one it may no longer see is stopped and ends with an error.
    fn recheck_subscriptions(&self) {
        for (job, subscription) in &self.subscriptions {
            let state = self.state.clone();
            let caller = self.caller.clone();
            let outbox = self.outbox.clone();
            let stop = subscription.stop.clone();
            let (job, id) = (*job, subscription.id);
            self.state.sessions().spawn(async move {
                let allowed = tokio::select! {
                    () = stop.cancelled() => return,
                    allowed = visible_job(&state, &caller, job) => allowed,
                };
                if let Err(error) = allowed {
                    stop.cancel();
                    let finished = Outgoing::Finished {
                        subscription: id,
                        job,
                        error: Some(error),
                    };
                    let _ = outbox.send(finished).await;
                }
            });
        }
    }

    /// Runs a steering request as the REST routes do; only a failure is answered (its
    /// effect shows in the job's events).
    fn steer(&mut self, job: JobId, steer: Steer) {
        let state = self.state.clone();
        let caller = self.caller.clone();
        let outbox = self.outbox.clone();
        self.state.sessions().spawn(async move {
            let outcome = match steer {
                Steer::Message(text) => {
                    crate::routes::session::send_message(&state, &caller, job, text)
                        .await
                        .map(|_| ())
                }
                Steer::Approve(request_id, allow, reason) => {
                    crate::routes::session::decide(&state, &caller, job, request_id, allow, reason)
                        .await
                }
                Steer::Interrupt => crate::routes::session::interrupt(&state, &caller, job).await,
            };
            if let Err(error) = outcome {
                let message = error_message(error.code(), format!("job {job}: {error}"));
                let _ = outbox.send(Outgoing::Reply(Box::new(message))).await;
            }
        });
    }

    /// Starts following a job; its task sends `Subscribed` (or an error) first.
    fn subscribe(&mut self, job: JobId, after_seq: u64) -> Option<ServerMessage> {
        if self.subscriptions.contains_key(&job) {
            return Some(error_message(
                code::CONFLICT,
                format!("already subscribed to job {job}; unsubscribe first"),
            ));
        }
        if self.subscriptions.len() >= MAX_SUBSCRIPTIONS {
            return Some(error_message(
                code::TOO_MANY_SUBSCRIPTIONS,
                format!("a socket follows at most {MAX_SUBSCRIPTIONS} jobs"),
            ));
        }
        self.next_subscription += 1;
        let subscription = Subscription {
            id: self.next_subscription,
            stop: self.closing.child_token(),
        };
        let follower = Follower {
            state: self.state.clone(),
            caller: self.caller.clone(),
            job,
            subscription: subscription.id,
            outbox: self.outbox.clone(),
            stop: subscription.stop.clone(),
        };
        self.subscriptions.insert(job, subscription);
        self.state.sessions().spawn(follower.run(after_seq));
        None
    }

    /// Turns what a subscription task produced into what goes on the socket, dropping
    /// whatever belongs to a subscription that has ended.
    fn deliver(&mut self, outgoing: Outgoing) -> Replies {
        let current = |subscriptions: &HashMap<JobId, Subscription>, job: &JobId, id: u64| {
            subscriptions.get(job).is_some_and(|s| s.id == id)
        };
        match outgoing {
            Outgoing::Reply(message) => vec![encode(*message)].into(),
            Outgoing::Message {
                subscription,
                job,
                message,
                span,
            } => {
                if current(&self.subscriptions, &job, subscription) {
                    if matches!(*message, ServerMessage::Event { .. }) {
                        self.state.metrics().websocket_events_sent(1);
                    }
                    Replies {
                        messages: vec![encode(*message)],
                        span,
                    }
                } else {
                    Vec::new().into()
                }
            }
            Outgoing::Finished {
                subscription,
                job,
                error,
            } => {
                if !current(&self.subscriptions, &job, subscription) {
                    return Vec::new().into();
                }
                self.subscriptions.remove(&job);
                let message = match error {
                    None => ServerMessage::Unsubscribed { job_id: job },
                    Some(error) => error_message(error.code(), format!("job {job}: {error}")),
                };
                vec![encode(message)].into()
            }
        }
    }
}

/// The task behind one subscription.
struct Follower {
    state: AppState,
    caller: Caller,
    job: JobId,
    subscription: u64,
    outbox: mpsc::Sender<Outgoing>,
    stop: CancellationToken,
}

/// Why a follower stopped sending.
enum Stopped {
    /// The job's terminal event went out.
    JobEnded,
    /// Unsubscribed, or the socket closed.
    Cancelled,
}

impl Follower {
    async fn run(self, after_seq: u64) {
        let result = self.follow(after_seq).await;
        let error = match result {
            Ok(Stopped::Cancelled) => return,
            Ok(Stopped::JobEnded) => None,
            Err(error) => Some(error),
        };
        let _ = self
            .outbox
            .send(Outgoing::Finished {
                subscription: self.subscription,
                job: self.job,
                error,
            })
            .await;
    }

    async fn send(&self, message: ServerMessage, span: tracing::Span) -> Result<(), Stopped> {
        let item = Outgoing::Message {
            subscription: self.subscription,
            job: self.job,
            message: Box::new(message),
            span,
        };
        self.outbox.send(item).await.map_err(|_| Stopped::Cancelled)
    }

    async fn follow(&self, after_seq: u64) -> Result<Stopped, ApiError> {
        let allowed = tokio::select! {
            () = self.stop.cancelled() => return Ok(Stopped::Cancelled),
            allowed = visible_job(&self.state, &self.caller, self.job) => allowed,
        };
        allowed?;
        let subscribed = ServerMessage::Subscribed {
            job_id: self.job,
            after_seq,
        };
        if let Err(stopped) = self.send(subscribed, tracing::Span::none()).await {
            return Ok(stopped);
        }
        let mut last_seq = after_seq;
        let mut failures = 0;
        loop {
            match self.follow_from(&mut last_seq, &mut failures).await {
                Ok(stopped) => return Ok(stopped),
                Err(error) => {
                    failures += 1;
                    if failures >= MAX_FOLLOW_FAILURES {
                        return Err(ApiError::bus("following a job's events failed", error));
                    }
                    tracing::warn!(job = %self.job, error = %error, failures, "following a job's events failed; retrying");
                }
            }
            let pause = Duration::from_millis(250 * 2u64.pow(failures));
            tokio::select! {
                () = self.stop.cancelled() => return Ok(Stopped::Cancelled),
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Sends the job's events after `last_seq` until the job ends, the subscription
    /// stops or reading fails (then `last_seq` says where to resume).
    async fn follow_from(
        &self,
        last_seq: &mut u64,
        failures: &mut u32,
    ) -> Result<Stopped, paddock_bus::EventLogError> {
        let events = tokio::select! {
            () = self.stop.cancelled() => return Ok(Stopped::Cancelled),
            events = self.state.events().follow_logged(self.job, *last_seq) => events?,
        };
        futures::pin_mut!(events);
        loop {
            let next = tokio::select! {
                () = self.stop.cancelled() => return Ok(Stopped::Cancelled),
                next = events.next() => next,
            };
            let logged = match next {
                Some(Ok(logged)) => logged,
                Some(Err(error)) => return Err(error),
                None => {
                    return Err(paddock_bus::EventLogError::Read {
                        job: self.job,
                        detail: "the event stream ended".into(),
                    });
                }
            };
            *failures = 0;
            let event = logged.event;
            *last_seq = event.seq;
            let terminal = event.is_terminal();
            let span = paddock_telemetry::propagation::sampled_child(
                logged.headers.as_ref(),
                || tracing::info_span!(parent: None, "ws.deliver", job = %self.job, seq = event.seq, kind = event.kind()),
            );
            if let Err(stopped) = self.send(ServerMessage::Event { event }, span).await {
                return Ok(stopped);
            }
            if terminal {
                return Ok(Stopped::JobEnded);
            }
        }
    }
}

/// Whether two callers are the same user: the same name (what jobs record) and, for
/// two signed-in accounts, the same account.
fn same_user(current: &Caller, presented: &Caller) -> bool {
    current.user == presented.user
        && match (current.user_id(), presented.user_id()) {
            (Some(current), Some(presented)) => current == presented,
            _ => true,
        }
}

fn error_message(code: &str, message: impl Into<String>) -> ServerMessage {
    ServerMessage::Error {
        code: code.to_string(),
        message: message.into(),
    }
}

fn encode(message: ServerMessage) -> Message {
    match serde_json::to_string(&message) {
        Ok(text) => Message::Text(text.into()),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialise a server message");
            let fallback = r#"{"type":"error","code":"internal","message":"internal error"}"#;
            Message::Text(fallback.into())
        }
    }
}

async fn send(socket: &mut WebSocket, message: Message) -> Result<(), ()> {
    match tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}
