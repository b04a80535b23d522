//! A scripted double of the Anthropic Messages API, so the real Claude Code CLI can run
//! whole agent loops in tests and benchmarks with no account and no network.
//!
//! Point the CLI at it with `ANTHROPIC_BASE_URL=http://ADDR` (and any
//! `ANTHROPIC_API_KEY`). Each `POST /v1/messages` gets the step of a [`Script`] chosen
//! from the request alone (its first user prompt and how many assistant messages its
//! history holds), streamed as the API streams: text, tool calls, slow streams, long
//! outputs, or HTTP errors (429, 500, 529) for the first N tries. Tests read what the
//! CLI sent from [`ModelDouble::requests`] or `GET /_double/requests`.
//!
//! `script` holds the format and step selection, `reply` the wire shapes, `server` the
//! HTTP routes; `main.rs` is the thin `paddock-model-double` binary.

pub mod reply;
pub mod script;
mod server;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use script::{Block, Conversation, ErrorReply, Script, ScriptError, Step, StopReason};
pub use server::{ModelDouble, RecordedRequest, Reply};

/// Serves `script` on `listener` until `shutdown` is cancelled.
///
/// Use [`ModelDouble`] directly to keep a handle on the requests received.
pub async fn run(
    listener: TcpListener,
    script: Script,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    ModelDouble::new(script).serve(listener, shutdown).await
}
