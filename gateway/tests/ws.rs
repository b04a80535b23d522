//! The WebSocket against a real nats-server: replay from any sequence, then live
//! events, each once and in order; a reconnect that resumes where the client stopped;
//! several jobs on one socket; errors that keep the socket open; scoping to the
//! caller's jobs; the end of a job's stream; a clean stop with sockets open.

mod common;

use common::{ADA, BOB, TestGateway, WAIT};
use futures::{SinkExt, StreamExt};
use paddock_contract::api::{ClientMessage, ServerMessage};
use paddock_contract::{EventBody, JobId, RunSummary};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(gateway: &TestGateway, token: &str) -> Socket {
    let (socket, _) = tokio_tungstenite::connect_async(gateway.ws_url(token))
        .await
        .unwrap_or_else(|e| panic!("websocket: {e}"));
    socket
}

async fn send(socket: &mut Socket, message: &ClientMessage) {
    let text = serde_json::to_string(message).unwrap_or_else(|e| panic!("json: {e}"));
    socket
        .send(Message::text(text))
        .await
        .unwrap_or_else(|e| panic!("send: {e}"));
}

async fn subscribe(socket: &mut Socket, job_id: JobId, after_seq: u64) {
    send(socket, &ClientMessage::Subscribe { job_id, after_seq }).await;
}

/// The next message from the gateway, skipping pings; fails after [`WAIT`].
async fn next(socket: &mut Socket) -> ServerMessage {
    loop {
        let frame = tokio::time::timeout(WAIT, socket.next())
            .await
            .unwrap_or_else(|_| panic!("no message from the gateway within {WAIT:?}"))
            .unwrap_or_else(|| panic!("the socket closed"))
            .unwrap_or_else(|e| panic!("socket error: {e}"));
        match frame {
            Message::Text(text) => {
                return serde_json::from_str(text.as_str())
                    .unwrap_or_else(|e| panic!("not a server message ({e}): {text}"));
            }
            Message::Ping(_) | Message::Pong(_) => continue,
            other => panic!("unexpected frame {other:?}"),
        }
    }
}

/// The sequences of the next `n` messages, which must all be events of `job`.
async fn next_events(socket: &mut Socket, job: JobId, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    for _ in 0..n {
        match next(socket).await {
            ServerMessage::Event { event } => {
                assert_eq!(event.job_id, job);
                seqs.push(event.seq);
            }
            other => panic!("expected an event of {job}, got {other:?}"),
        }
    }
    seqs
}

fn text(n: u32) -> EventBody {
    EventBody::AssistantText {
        text: format!("line {n}"),
    }
}

/// The first event a node records for a job it runs. `job.started` itself cannot be
/// used here yet: its body repeats the envelope's `node` and `attempt` fields, so it
/// does not deserialise (reported to the contract's owner).
fn started() -> EventBody {
    EventBody::SessionInit {
        session_id: "session-1".into(),
        model: None,
        cwd: None,
        tools: Vec::new(),
    }
}

#[tokio::test]
async fn subscribing_from_zero_replays_every_event_in_order_then_live_ones() {
    let gateway = TestGateway::start().await;
    let job = gateway.submit(ADA, "web", "stream me").await;
    gateway.append(job, vec![started(), text(1), text(2)]).await;

    let mut socket = connect(&gateway, ADA).await;
    subscribe(&mut socket, job, 0).await;
    assert_eq!(
        next(&mut socket).await,
        ServerMessage::Subscribed {
            job_id: job,
            after_seq: 0
        }
    );
    assert_eq!(next_events(&mut socket, job, 4).await, vec![1, 2, 3, 4]);

    // Live events arrive after the stored ones, once each.
    gateway.append(job, vec![text(3), text(4)]).await;
    assert_eq!(next_events(&mut socket, job, 2).await, vec![5, 6]);

    // The terminal event is the last; the gateway then ends the subscription.
    gateway
        .append(
            job,
            vec![EventBody::Completed {
                summary: RunSummary::default(),
            }],
        )
        .await;
    assert_eq!(next_events(&mut socket, job, 1).await, vec![7]);
    assert_eq!(
        next(&mut socket).await,
        ServerMessage::Unsubscribed { job_id: job }
    );
}

#[tokio::test]
async fn a_reconnect_with_the_last_seen_sequence_gets_exactly_the_rest() {
    let gateway = TestGateway::start().await;
    let job = gateway.submit(ADA, "web", "resume me").await;
    gateway
        .append(job, vec![started(), text(1), text(2), text(3)])
        .await;

    let mut socket = connect(&gateway, ADA).await;
    subscribe(&mut socket, job, 0).await;
    assert!(matches!(
        next(&mut socket).await,
        ServerMessage::Subscribed { .. }
    ));
    let seen = next_events(&mut socket, job, 3).await;
    assert_eq!(seen, vec![1, 2, 3]);
    drop(socket);

    // Events keep coming while the client is away.
    gateway.append(job, vec![text(4)]).await;

    let mut socket = connect(&gateway, ADA).await;
    subscribe(&mut socket, job, 3).await;
    assert_eq!(
        next(&mut socket).await,
        ServerMessage::Subscribed {
            job_id: job,
            after_seq: 3
        }
    );
    assert_eq!(next_events(&mut socket, job, 3).await, vec![4, 5, 6]);
    gateway.append(job, vec![text(5)]).await;
    assert_eq!(next_events(&mut socket, job, 1).await, vec![7]);
    // Nothing is repeated: the next message is the next event, not an old one.
    gateway
        .append(
            job,
            vec![EventBody::Cancelled {
                by: "ada".into(),
                summary: None,
            }],
        )
        .await;
    assert_eq!(next_events(&mut socket, job, 1).await, vec![8]);
    assert_eq!(
        next(&mut socket).await,
        ServerMessage::Unsubscribed { job_id: job }
    );
}

#[tokio::test]
async fn one_socket_follows_several_jobs_and_unsubscribes_from_one() {
    let gateway = TestGateway::start().await;
    let first = gateway.submit(ADA, "web", "one").await;
    let second = gateway.submit(ADA, "api", "two").await;

    let mut socket = connect(&gateway, ADA).await;
    subscribe(&mut socket, first, 0).await;
    assert!(
        matches!(next(&mut socket).await, ServerMessage::Subscribed { job_id, .. } if job_id == first)
    );
    assert_eq!(next_events(&mut socket, first, 1).await, vec![1]);
    subscribe(&mut socket, second, 0).await;
    assert!(
        matches!(next(&mut socket).await, ServerMessage::Subscribed { job_id, .. } if job_id == second)
    );
    assert_eq!(next_events(&mut socket, second, 1).await, vec![1]);

    // Subscribing twice to one job is refused; the socket stays usable.
    subscribe(&mut socket, first, 0).await;
    assert!(
        matches!(next(&mut socket).await, ServerMessage::Error { code, .. } if code == "conflict")
    );

    send(&mut socket, &ClientMessage::Unsubscribe { job_id: first }).await;
    assert_eq!(
        next(&mut socket).await,
        ServerMessage::Unsubscribed { job_id: first }
    );
    gateway.append(first, vec![started()]).await;
    gateway.append(second, vec![started()]).await;
    // Only the job still subscribed sends its event.
    assert_eq!(next_events(&mut socket, second, 1).await, vec![2]);
}

#[tokio::test]
async fn bad_messages_get_errors_and_the_socket_stays_open() {
    let gateway = TestGateway::start().await;
    let job = gateway.submit(ADA, "web", "mine").await;
    let bobs = gateway.submit(BOB, "web", "bob's").await;
    let mut socket = connect(&gateway, ADA).await;

    for bad in [
        Message::text("not json"),
        Message::text(r#"{"type":"subscribe"}"#),
        Message::text(r#"{"type":"shout","job_id":"x"}"#),
        Message::binary(vec![1u8, 2, 3]),
    ] {
        socket
            .send(bad)
            .await
            .unwrap_or_else(|e| panic!("send: {e}"));
        match next(&mut socket).await {
            ServerMessage::Error { code, .. } => assert_eq!(code, "bad_request"),
            other => panic!("expected an error, got {other:?}"),
        }
    }
    // Another user's job is not found.
    subscribe(&mut socket, bobs, 0).await;
    match next(&mut socket).await {
        ServerMessage::Error { code, message } => {
            assert_eq!(code, "not_found");
            assert!(message.contains(&bobs.to_string()), "{message}");
        }
        other => panic!("expected an error, got {other:?}"),
    }
    // The socket still serves.
    subscribe(&mut socket, job, 0).await;
    assert!(matches!(
        next(&mut socket).await,
        ServerMessage::Subscribed { .. }
    ));
    assert_eq!(next_events(&mut socket, job, 1).await, vec![1]);
}

#[tokio::test]
async fn a_flood_of_bad_messages_closes_the_socket() {
    let gateway = TestGateway::start().await;
    let mut socket = connect(&gateway, ADA).await;
    for _ in 0..paddock_gateway::ws::MAX_BAD_MESSAGES {
        // The gateway may close while we still send: stop sending then.
        if socket.send(Message::text("nonsense")).await.is_err() {
            break;
        }
    }
    let closed = tokio::time::timeout(WAIT, async {
        while let Some(frame) = socket.next().await {
            match frame {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .unwrap_or_else(|_| panic!("the socket was not closed"));
    assert_eq!(closed, Some(1008));
}

#[tokio::test]
async fn the_header_token_works_and_a_wrong_token_is_refused() {
    let gateway = TestGateway::start().await;
    let job = gateway.submit(ADA, "web", "header").await;
    let mut request = format!("ws://{}/v1/ws", gateway.address)
        .into_client_request()
        .unwrap_or_else(|e| panic!("request: {e}"));
    let header = format!("Bearer {ADA}")
        .parse()
        .unwrap_or_else(|e| panic!("header: {e}"));
    request.headers_mut().insert("authorization", header);
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .unwrap_or_else(|e| panic!("websocket: {e}"));
    subscribe(&mut socket, job, 0).await;
    assert!(matches!(
        next(&mut socket).await,
        ServerMessage::Subscribed { .. }
    ));

    let refused = tokio_tungstenite::connect_async(gateway.ws_url("wrong")).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status().as_u16(), 401);
        }
        other => panic!("expected 401, got {other:?}"),
    }
}

#[tokio::test]
async fn the_gateway_stops_cleanly_with_sockets_open() {
    let gateway = TestGateway::start().await;
    let job = gateway.submit(ADA, "web", "open socket").await;
    let mut socket = connect(&gateway, ADA).await;
    subscribe(&mut socket, job, 0).await;
    assert!(matches!(
        next(&mut socket).await,
        ServerMessage::Subscribed { .. }
    ));
    assert_eq!(next_events(&mut socket, job, 1).await, vec![1]);
    gateway.stop().await;
    let closed = tokio::time::timeout(WAIT, async {
        while let Some(frame) = socket.next().await {
            match frame {
                Ok(Message::Close(frame)) => return frame.map(|f| u16::from(f.code)),
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
        None
    })
    .await
    .unwrap_or_else(|_| panic!("the socket was not closed"));
    assert_eq!(closed, Some(1001));
}
