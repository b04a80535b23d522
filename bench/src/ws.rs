//! One long-lived WebSocket to the gateway (`/v1/ws`), reused for every job of the
//! dispatch run so that opening a socket is not part of what is measured: subscribe
//! to a job, then read its events, noting when each arrived. Only the envelope fields
//! the benchmark needs are read (kind, sequence, stamp), so event kinds newer than
//! this build do not stop it.

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use paddock_contract::JobId;
use serde::Deserialize;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub struct EventSocket {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// The parts of a job event the benchmark reads.
#[derive(Clone, Debug, Deserialize)]
pub struct Event {
    pub job_id: JobId,
    pub seq: u64,
    pub at_ms: i64,
    pub kind: String,
}

impl Event {
    pub fn is_terminal(&self) -> bool {
        matches!(
            self.kind.as_str(),
            "job.completed" | "job.failed" | "job.cancelled"
        )
    }
}

/// What the gateway sends on the socket (the kinds the benchmark looks at).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerMessage {
    Subscribed {
        job_id: JobId,
    },
    Event {
        event: Event,
    },
    Error {
        code: String,
        message: String,
    },
    #[serde(other)]
    Other,
}

/// An event and the moment it came off the socket.
pub struct Arrival {
    pub at: Instant,
    pub event: Event,
}

impl EventSocket {
    /// Opens `/v1/ws` on a loopback gateway (`http://127.0.0.1:PORT`).
    pub async fn open(base: &str, token: &str) -> anyhow::Result<EventSocket> {
        let Some(rest) = base.strip_prefix("http://127.0.0.1:") else {
            bail!("the benchmark only talks to http://127.0.0.1, not {base}");
        };
        let mut request = format!("ws://127.0.0.1:{rest}/v1/ws")
            .into_client_request()
            .context("building the WebSocket request")?;
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}")
                .parse()
                .context("the token is not a valid header value")?,
        );
        // Nagle off on this side, so the client adds no delay of its own.
        let (socket, _) = tokio::time::timeout(
            Duration::from_secs(10),
            tokio_tungstenite::connect_async_with_config(request, None, true),
        )
        .await
        .context("opening the WebSocket timed out")?
        .context("opening the WebSocket")?;
        Ok(EventSocket { socket })
    }

    pub async fn subscribe(&mut self, job: JobId, after_seq: u64) -> anyhow::Result<()> {
        let text = serde_json::json!({
            "type": "subscribe",
            "job_id": job,
            "after_seq": after_seq,
        })
        .to_string();
        self.socket
            .send(tungstenite::Message::Text(text.into()))
            .await
            .context("subscribing")
    }

    /// Reads the job's events until its terminal one (inclusive), within `timeout`.
    /// Returns them with their arrival times, and when `Subscribed` arrived.
    pub async fn until_terminal(
        &mut self,
        job: JobId,
        timeout: Duration,
    ) -> anyhow::Result<(Option<Instant>, Vec<Arrival>)> {
        let mut arrivals = Vec::new();
        let mut subscribed = None;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .with_context(|| {
                    format!(
                        "job {job} did not end within {timeout:?}; events so far: {:?}",
                        arrivals
                            .iter()
                            .map(|a: &Arrival| a.event.kind.as_str())
                            .collect::<Vec<_>>()
                    )
                })?;
            let at = Instant::now();
            let message = match next {
                None => bail!("the gateway closed the WebSocket"),
                Some(message) => message.context("reading the WebSocket")?,
            };
            let text = match message {
                tungstenite::Message::Text(text) => text,
                tungstenite::Message::Close(_) => bail!("the gateway closed the WebSocket"),
                _ => continue,
            };
            let parsed: ServerMessage = serde_json::from_str(text.as_str())
                .with_context(|| format!("unreadable message from the gateway: {text}"))?;
            match parsed {
                ServerMessage::Subscribed { job_id } if job_id == job => subscribed = Some(at),
                ServerMessage::Event { event } if event.job_id == job => {
                    let terminal = event.is_terminal();
                    arrivals.push(Arrival { at, event });
                    if terminal {
                        return Ok((subscribed, arrivals));
                    }
                }
                ServerMessage::Error { code, message } => {
                    bail!("the gateway refused job {job}'s subscription: {code}: {message}")
                }
                _ => {}
            }
        }
    }
}
