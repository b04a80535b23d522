//! The HTTP server: routes of the Messages API the CLI calls, the double's own
//! inspection routes, the request log and the per-step failure counters.
//!
//! Routes:
//! - `POST /v1/messages` (any query, e.g. `?beta=true`): the scripted step, streamed as
//!   server-sent events when the body says `stream: true`, else one JSON message;
//! - `POST /v1/messages/count_tokens`: `{"input_tokens": N}`;
//! - `GET /_double/requests`: every request received so far, as JSON (see
//!   [`RecordedRequest`]); `DELETE /_double/requests` forgets them;
//! - anything else: a 404 with an Anthropic-style error body (and it is recorded, so a
//!   test sees what the CLI tried).

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Json, Response as HttpResponse};
use axum::routing::{get, post};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::reply::{self, Response};
use crate::script::{RequestView, Script, Selection, SelectionKind};

/// The model named in replies when a request names none.
const DEFAULT_MODEL: &str = "claude-opus-5-5";

/// A running double's script and memory; cheap to clone, shared by every request.
#[derive(Clone)]
pub struct ModelDouble {
    shared: Arc<Shared>,
}

struct Shared {
    script: Script,
    /// Requests seen per (conversation, step), for `error.fail_times`.
    attempts: Mutex<HashMap<(Option<usize>, usize), u32>>,
    requests: Mutex<Vec<RecordedRequest>>,
    next_seq: AtomicU64,
}

#[derive(Clone)]
struct AppState {
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

/// One request the double received and how it answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// 0 for the first request, counting up.
    pub seq: u64,
    pub method: String,
    /// Path and query, e.g. `/v1/messages?beta=true`.
    pub uri: String,
    pub model: Option<String>,
    pub stream: bool,
    /// What step selection read from the body (see [`RequestView`]).
    pub first_user_text: Option<String>,
    pub assistant_turns: usize,
    pub offers_tools: bool,
    /// The `match` of the conversation chosen, if any.
    pub conversation: Option<String>,
    pub selection: Option<SelectionKind>,
    pub reply: Reply,
    /// The request body: JSON, or a string when it was not JSON.
    pub body: Value,
}

/// How the double answered a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    /// A server-sent event stream.
    Stream,
    /// One JSON message (`stream` was not true).
    Message,
    /// An HTTP error, scripted or because the request was not understood.
    Error { status: u16 },
    /// A `count_tokens` answer.
    TokenCount,
}

impl ModelDouble {
    pub fn new(script: Script) -> Self {
        Self {
            shared: Arc::new(Shared {
                script,
                attempts: Mutex::new(HashMap::new()),
                requests: Mutex::new(Vec::new()),
                next_seq: AtomicU64::new(0),
            }),
        }
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// The routes; streams in flight end when `shutdown` is cancelled.
    pub fn router(&self, shutdown: CancellationToken) -> Router {
        Router::new()
            .route("/v1/messages", post(messages))
            .route("/v1/messages/count_tokens", post(count_tokens))
            .route(
                "/_double/requests",
                get(list_requests).delete(clear_requests),
            )
            .fallback(not_found)
            // Long conversations (long outputs sent back as history) exceed axum's
            // 2 MB default; a test double has no reason to refuse them.
            .layer(DefaultBodyLimit::disable())
            .with_state(AppState {
                shared: Arc::clone(&self.shared),
                shutdown,
            })
    }

    /// Serves on `listener` until `shutdown` is cancelled.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let address = listener
            .local_addr()
            .context("reading the listener's address")?;
        tracing::info!(%address, "model double serving");
        axum::serve(listener, self.router(shutdown.clone()))
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
            .with_context(|| format!("serving the model double on {address}"))
    }
}

impl Shared {
    fn record(&self, request: RecordedRequest) {
        tracing::info!(
            seq = request.seq,
            uri = %request.uri,
            conversation = ?request.conversation,
            step = request.assistant_turns,
            reply = ?request.reply,
            "request"
        );
        lock(&self.requests).push(request);
    }

    fn next_seq(&self) -> u64 {
        self.next_seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts one more try of this step and returns the count (1 for the first).
    fn count_attempt(&self, selection: &Selection) -> u32 {
        let mut attempts = lock(&self.attempts);
        let count = attempts
            .entry((selection.conversation, selection.step))
            .or_insert(0);
        *count = count.saturating_add(1);
        *count
    }
}

/// A lock that survives a panicked holder: the data is a log and counters, still usable.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// The body as JSON, or as a string when it is not JSON.
fn parse_body(body: &Bytes) -> Result<Value, Value> {
    serde_json::from_slice(body)
        .map_err(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

fn recorded(seq: u64, method: &Method, uri: &Uri, body: Value, reply: Reply) -> RecordedRequest {
    RecordedRequest {
        seq,
        method: method.to_string(),
        uri: uri.to_string(),
        model: body.get("model").and_then(Value::as_str).map(str::to_owned),
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        first_user_text: None,
        assistant_turns: 0,
        offers_tools: false,
        conversation: None,
        selection: None,
        reply,
        body,
    }
}

fn error_response(
    status: u16,
    message: &str,
    request_id: &str,
    retry_after_seconds: Option<u64>,
) -> HttpResponse {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(request_id) {
        headers.insert("request-id", value);
    }
    if let Some(seconds) = retry_after_seconds {
        headers.insert("retry-after", HeaderValue::from(seconds));
    }
    let body = reply::error_json(code.as_u16(), message, request_id);
    (code, headers, Json(body)).into_response()
}

async fn messages(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> HttpResponse {
    let shared = &state.shared;
    let seq = shared.next_seq();
    let request_id = new_id("req_");
    let json = match parse_body(&body) {
        Ok(json) => json,
        Err(raw) => {
            shared.record(recorded(
                seq,
                &method,
                &uri,
                raw,
                Reply::Error { status: 400 },
            ));
            return error_response(400, "the request body is not JSON", &request_id, None);
        }
    };
    let view = RequestView::from_body(&json);
    let selection = shared.script.select(&view);
    let step = shared.script.step_for(&selection);
    let model = json
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or(DEFAULT_MODEL)
        .to_owned();
    let stream = json.get("stream").and_then(Value::as_bool).unwrap_or(false);

    let failure = step.error.as_ref().filter(|error| {
        let attempt = shared.count_attempt(&selection);
        error.fail_times.is_none_or(|times| attempt <= times)
    });
    let reply_kind = match (failure, stream) {
        (Some(error), _) => Reply::Error {
            status: error.status,
        },
        (None, true) => Reply::Stream,
        (None, false) => Reply::Message,
    };
    let mut record = recorded(seq, &method, &uri, Value::Null, reply_kind);
    record.first_user_text.clone_from(&view.first_user_text);
    record.assistant_turns = view.assistant_turns;
    record.offers_tools = view.offers_tools;
    record.conversation = shared
        .script
        .conversation_match(&selection)
        .map(str::to_owned);
    record.selection = Some(selection.kind);
    record.model = Some(model.clone());
    record.stream = stream;
    record.body = json;
    shared.record(record);

    if let Some(error) = failure {
        let message = reply::error_message(error);
        return error_response(
            error.status,
            &message,
            &request_id,
            error.retry_after_seconds,
        );
    }

    let response = Response::build(&step, &model, body.len(), new_id);
    let request_id_header = HeaderValue::from_str(&request_id).ok();
    let mut headers = HeaderMap::new();
    if let Some(value) = request_id_header {
        headers.insert("request-id", value);
    }
    if !stream {
        return (headers, Json(response.message_json())).into_response();
    }
    let delay = step.chunk_delay_ms.map(Duration::from_millis);
    let events = futures::stream::iter(response.events().into_iter().enumerate())
        .then(move |(index, event)| async move {
            if let Some(delay) = delay
                && index > 0
            {
                tokio::time::sleep(delay).await;
            }
            Ok::<_, Infallible>(
                Event::default()
                    .event(event.name)
                    .data(event.data.to_string()),
            )
        })
        .take_until(state.shutdown.clone().cancelled_owned());
    (headers, Sse::new(events)).into_response()
}

async fn count_tokens(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> HttpResponse {
    let seq = state.shared.next_seq();
    let json = parse_body(&body).unwrap_or_else(|raw| raw);
    state
        .shared
        .record(recorded(seq, &method, &uri, json, Reply::TokenCount));
    Json(json!({"input_tokens": reply::tokens_for(body.len())})).into_response()
}

async fn not_found(
    State(state): State<AppState>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> HttpResponse {
    let seq = state.shared.next_seq();
    let json = if body.is_empty() {
        Value::Null
    } else {
        parse_body(&body).unwrap_or_else(|raw| raw)
    };
    state.shared.record(recorded(
        seq,
        &method,
        &uri,
        json,
        Reply::Error { status: 404 },
    ));
    let message = format!("paddock-model-double has no route {method} {}", uri.path());
    error_response(404, &message, &new_id("req_"), None)
}

async fn list_requests(State(state): State<AppState>) -> Json<Vec<RecordedRequest>> {
    Json(lock(&state.shared.requests).clone())
}

async fn clear_requests(State(state): State<AppState>) -> StatusCode {
    lock(&state.shared.requests).clear();
    StatusCode::NO_CONTENT
}
