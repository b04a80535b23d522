//! A WebSocket lives no longer than its access token unless the client refreshes over
//! it: with three-second access tokens, a socket left alone is warned
//! (`token_expiring`) and then closed with 4001 "token expired" (and counted in
//! `paddock_websocket_closes_total`); one that answers each warning with a refreshed
//! token (`authenticate`) stays open past its first token's expiry and keeps getting
//! events; another user's token is refused and extends nothing; a new token is held to
//! the socket's scope, and subscriptions it may not see end.

mod common;

use common::{TestGateway, WAIT};
use futures::{SinkExt, StreamExt};
use paddock_accounts::{Scope, ScopeSet};
use paddock_contract::api::{ClientMessage, ServerMessage};
use paddock_contract::{EventBody, JobId};
use paddock_testkit::eventually;
use std::time::Duration;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The access tokens' lifetime in these tests.
const TTL: Duration = Duration::from_secs(3);

/// A gateway issuing access tokens that live `ttl`, with its metrics on the returned
/// port.
async fn start(ttl: Duration) -> (TestGateway, u16) {
    let metrics_port = paddock_testkit::free_port();
    let gateway = TestGateway::start_with(|config| {
        config.auth.access_token_ttl = ttl;
        config.metrics_listen = Some(([127, 0, 0, 1], metrics_port).into());
    })
    .await;
    (gateway, metrics_port)
}

/// What came over the socket: a message, or the close (code and reason). A test
/// reads a few; their size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
enum Frame {
    Server(ServerMessage),
    Closed(Option<(u16, String)>),
}

/// The next message or close, skipping pings; fails after [`WAIT`].
async fn next_frame(socket: &mut Socket) -> Frame {
    loop {
        let frame = tokio::time::timeout(WAIT, socket.next())
            .await
            .unwrap_or_else(|_| panic!("nothing from the gateway within {WAIT:?}"));
        match frame {
            Some(Ok(Message::Text(text))) => {
                return Frame::Server(
                    serde_json::from_str(text.as_str())
                        .unwrap_or_else(|e| panic!("not a server message ({e}): {text}")),
                );
            }
            Some(Ok(Message::Close(frame))) => {
                return Frame::Closed(frame.map(|f| (u16::from(f.code), f.reason.to_string())));
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(other)) => panic!("unexpected frame {other:?}"),
            Some(Err(_)) | None => return Frame::Closed(None),
        }
    }
}

/// A signed-in user's socket, which answers `token_expiring` with a refreshed token
/// while `keep` is set.
struct Client<'a> {
    gateway: &'a TestGateway,
    socket: Socket,
    refresh_token: String,
    keep: bool,
    /// `authenticated` answers so far.
    authenticated: u32,
    warnings: u32,
    /// Sequences of the events received.
    events: Vec<u64>,
    errors: Vec<(String, String)>,
}

impl<'a> Client<'a> {
    async fn connect(gateway: &'a TestGateway, access: &str, refresh: &str) -> Client<'a> {
        let (socket, _) = tokio_tungstenite::connect_async(gateway.ws_url(access))
            .await
            .unwrap_or_else(|e| panic!("websocket: {e}"));
        Client {
            gateway,
            socket,
            refresh_token: refresh.to_string(),
            keep: false,
            authenticated: 0,
            warnings: 0,
            events: Vec::new(),
            errors: Vec::new(),
        }
    }

    async fn send(&mut self, message: &ClientMessage) {
        let text = serde_json::to_string(message).unwrap_or_else(|e| panic!("json: {e}"));
        self.socket
            .send(Message::text(text))
            .await
            .unwrap_or_else(|e| panic!("send: {e}"));
    }

    /// `POST /v1/auth/refresh` with the current refresh token; returns the new access
    /// token and keeps the new refresh token.
    async fn refresh(&mut self) -> String {
        let body = serde_json::json!({ "refresh_token": self.refresh_token });
        let (status, json) = self
            .gateway
            .post_json(None, "/v1/auth/refresh", &body)
            .await;
        assert_eq!(status, 200, "refresh: {json}");
        let field = |name: &str| {
            json[name]
                .as_str()
                .unwrap_or_else(|| panic!("no {name} in {json}"))
                .to_string()
        };
        self.refresh_token = field("refresh_token");
        field("access_token")
    }

    /// Records what `frame` says, refreshing over the socket when warned (and `keep`).
    async fn handle(&mut self, frame: Frame) {
        match frame {
            Frame::Server(ServerMessage::TokenExpiring { expires_in_secs }) => {
                assert!(expires_in_secs <= 60, "{expires_in_secs}");
                self.warnings += 1;
                if self.keep {
                    let token = self.refresh().await;
                    self.send(&ClientMessage::Authenticate { token }).await;
                }
            }
            Frame::Server(ServerMessage::Authenticated { expires_in_secs }) => {
                let left = expires_in_secs.unwrap_or_else(|| panic!("an access token expires"));
                assert!(left <= 60, "{left}");
                self.authenticated += 1;
            }
            Frame::Server(ServerMessage::Event { event }) => self.events.push(event.seq),
            Frame::Server(ServerMessage::Error { code, message }) => {
                self.errors.push((code, message));
            }
            Frame::Server(
                ServerMessage::Subscribed { .. } | ServerMessage::Unsubscribed { .. },
            ) => {}
            Frame::Closed(close) => panic!(
                "the socket closed ({close:?}); events {:?}, errors {:?}",
                self.events, self.errors
            ),
        }
    }

    /// Reads (handling what comes) until a frame matches `wanted`, and returns it.
    async fn until(&mut self, wanted: impl Fn(&Frame) -> bool) -> Frame {
        loop {
            let frame = next_frame(&mut self.socket).await;
            if wanted(&frame) {
                return frame;
            }
            self.handle(frame).await;
        }
    }

    async fn subscribe(&mut self, job_id: JobId) {
        self.send(&ClientMessage::Subscribe {
            job_id,
            after_seq: 0,
        })
        .await;
    }
}

fn text(n: u32) -> EventBody {
    EventBody::AssistantText {
        text: format!("line {n}"),
    }
}

/// Reads `socket` to its close and returns the close's code and reason.
async fn close_of(mut socket: Socket) -> Option<(u16, String)> {
    loop {
        if let Frame::Closed(close) = next_frame(&mut socket).await {
            return close;
        }
    }
}

/// Waits until the gateway's `/metrics` has `series` (exactly as rendered) at `value`.
async fn metric_reaches(port: u16, series: &str, value: f64) {
    let what = format!("{series} to reach {value}");
    eventually(WAIT, &what, || async move {
        let body = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        body.lines()
            .filter_map(|line| line.rsplit_once(' '))
            .any(|(name, sample)| name == series && sample.parse::<f64>().ok() == Some(value))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_socket_is_warned_then_closed_with_4001_when_its_token_expires() {
    let (gateway, metrics_port) = start(TTL).await;
    gateway
        .create_user("carol", &[Scope::JobsRead, Scope::JobsSubmit])
        .await;
    let issued = Instant::now();
    let (access, refresh, _) = gateway.login("carol", common::PASSWORD).await;
    let job = gateway.submit(&access, "web", "short-lived").await;

    let mut client = Client::connect(&gateway, &access, &refresh).await;
    client.subscribe(job).await;
    let closed = client.until(|f| matches!(f, Frame::Closed(_))).await;
    let lived = issued.elapsed();
    assert_eq!(
        closed,
        Frame::Closed(Some((
            paddock_gateway::ws::TOKEN_EXPIRED,
            "token expired".into()
        )))
    );
    assert_eq!(
        client.events,
        vec![1],
        "the job's event came before the end"
    );
    assert_eq!(client.warnings, 1, "warned once before the close");
    // `exp` is in whole seconds: a 3 s token lives 2 to 3 s.
    assert!(
        lived >= Duration::from_millis(1900) && lived < TTL + Duration::from_secs(3),
        "the socket lived {lived:?} for a {TTL:?} token"
    );
    metric_reaches(
        metrics_port,
        r#"paddock_websocket_closes_total{reason="token_expired"}"#,
        1.0,
    )
    .await;
    metric_reaches(metrics_port, "paddock_websocket_connections", 0.0).await;
}

#[tokio::test]
async fn a_socket_refreshed_over_itself_outlives_its_first_token_and_refuses_another_user() {
    let (gateway, metrics_port) = start(TTL).await;
    gateway
        .create_user("carol", &[Scope::JobsRead, Scope::JobsSubmit])
        .await;
    gateway.create_user("dave", &[Scope::JobsRead]).await;
    let (access, refresh, _) = gateway.login("carol", common::PASSWORD).await;
    let job = gateway.submit(&access, "web", "long-lived").await;

    // Two sockets opened with the same token: one refreshes, one does not.
    let mut plain = Client::connect(&gateway, &access, &refresh).await;
    plain.subscribe(job).await;
    let mut kept = Client::connect(&gateway, &access, &refresh).await;
    kept.keep = true;
    kept.subscribe(job).await;

    let mut plain_closed = tokio::spawn(close_of(plain.socket));
    let closed = loop {
        tokio::select! {
            closed = &mut plain_closed => break closed.unwrap_or_else(|e| panic!("join: {e}")),
            frame = next_frame(&mut kept.socket) => kept.handle(frame).await,
        }
    };
    assert_eq!(
        closed.map(|(code, _)| code),
        Some(paddock_gateway::ws::TOKEN_EXPIRED),
        "the socket that did not refresh is closed"
    );
    assert!(kept.authenticated >= 1, "the kept socket refreshed");

    // Past the first token's expiry, the refreshed socket still gets live events.
    gateway.append(job, vec![text(1)]).await;
    kept.until(|f| matches!(f, Frame::Server(ServerMessage::Event { event }) if event.seq == 2))
        .await;

    // Another user's token is refused, and the socket goes on as it was.
    let (daves, _, _) = gateway.login("dave", common::PASSWORD).await;
    kept.send(&ClientMessage::Authenticate { token: daves })
        .await;
    let refused = kept
        .until(|f| matches!(f, Frame::Server(ServerMessage::Error { .. })))
        .await;
    let Frame::Server(ServerMessage::Error { code, message }) = refused else {
        unreachable!("matched above")
    };
    assert_eq!(code, "forbidden", "{message}");
    gateway.append(job, vec![text(2)]).await;
    kept.until(|f| matches!(f, Frame::Server(ServerMessage::Event { event }) if event.seq == 3))
        .await;

    // Left alone, it ends with its last token: dave's extended nothing.
    kept.keep = false;
    let closed = kept.until(|f| matches!(f, Frame::Closed(_))).await;
    assert_eq!(
        closed,
        Frame::Closed(Some((
            paddock_gateway::ws::TOKEN_EXPIRED,
            "token expired".into()
        )))
    );
    metric_reaches(
        metrics_port,
        r#"paddock_websocket_closes_total{reason="token_expired"}"#,
        2.0,
    )
    .await;
    metric_reaches(
        metrics_port,
        r#"paddock_auth_failures_total{reason="wrong_user"}"#,
        1.0,
    )
    .await;
}

#[tokio::test]
async fn a_new_token_is_held_to_the_sockets_scope_and_its_subscriptions_checked_again() {
    // Long enough not to expire here: this is about what a new token may do.
    let (gateway, _) = start(Duration::from_secs(60)).await;
    gateway
        .create_user("carol", &[Scope::JobsRead, Scope::JobsSubmit])
        .await;
    gateway
        .create_user("erin", &[Scope::JobsRead, Scope::UsersAdmin])
        .await;
    let (carols, _, _) = gateway.login("carol", common::PASSWORD).await;
    let job = gateway.submit(&carols, "web", "carol's").await;

    // An admin follows carol's job.
    let (access, refresh, _) = gateway.login("erin", common::PASSWORD).await;
    let mut erin = Client::connect(&gateway, &access, &refresh).await;
    erin.subscribe(job).await;
    erin.until(|f| matches!(f, Frame::Server(ServerMessage::Event { event }) if event.seq == 1))
        .await;

    // Erin is no longer an admin: her refreshed token is taken, and the subscription
    // to a job that is not hers ends.
    let set = |scopes: &[Scope]| ScopeSet::new(scopes.iter().copied());
    gateway
        .accounts
        .set_scopes("erin", &set(&[Scope::JobsRead]))
        .await
        .unwrap_or_else(|e| panic!("scopes: {e}"));
    let token = erin.refresh().await;
    erin.send(&ClientMessage::Authenticate { token }).await;
    erin.until(|f| matches!(f, Frame::Server(ServerMessage::Authenticated { .. })))
        .await;
    let ended = erin
        .until(|f| matches!(f, Frame::Server(ServerMessage::Error { .. })))
        .await;
    let Frame::Server(ServerMessage::Error { code, message }) = ended else {
        unreachable!("matched above")
    };
    assert_eq!(code, "not_found", "{message}");
    assert!(message.contains(&job.to_string()), "{message}");
    erin.subscribe(job).await;
    let refused = erin
        .until(|f| matches!(f, Frame::Server(ServerMessage::Error { .. })))
        .await;
    assert!(
        matches!(&refused, Frame::Server(ServerMessage::Error { code, .. }) if code == "not_found"),
        "{refused:?}"
    );

    // A token without the socket's scope (jobs:read) is refused.
    gateway
        .accounts
        .set_scopes("erin", &set(&[Scope::JobsSubmit]))
        .await
        .unwrap_or_else(|e| panic!("scopes: {e}"));
    let token = erin.refresh().await;
    erin.send(&ClientMessage::Authenticate { token }).await;
    let refused = erin
        .until(|f| matches!(f, Frame::Server(ServerMessage::Error { .. })))
        .await;
    assert!(
        matches!(&refused, Frame::Server(ServerMessage::Error { code, .. }) if code == "forbidden"),
        "{refused:?}"
    );
}
