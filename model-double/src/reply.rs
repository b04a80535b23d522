//! Turns a scripted step into Messages API wire shapes: the server-sent events of a
//! streamed response, the JSON of a non-streamed one, and Anthropic-style error bodies.
//!
//! Everything here is pure (ids are passed in), so the shapes are unit-tested without a
//! server; `server.rs` adds the timing and the HTTP around them.

use serde_json::{Value, json};

use crate::script::{Block, ErrorReply, Step, StopReason};

/// Text a long-output step repeats when it has no text of its own.
const FILLER: &str = "The quick brown fox jumps over the lazy dog. ";

/// Largest delta of a slow stream, so text arrives as if typed.
const SLOW_CHUNK_BYTES: usize = 16;
/// Largest delta otherwise, so long outputs stream in few events.
const FAST_CHUNK_BYTES: usize = 4096;

/// One server-sent event: its `event:` name and its `data:` JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub name: &'static str,
    pub data: Value,
}

/// A step made concrete for one response: ids chosen, text expanded, usage counted.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub message_id: String,
    pub model: String,
    /// Content blocks in their final Messages API form.
    pub content: Vec<Value>,
    pub stop_reason: StopReason,
    pub input_tokens: u64,
    pub output_tokens: u64,
    chunk_bytes: usize,
}

impl Response {
    /// Makes `step` concrete. `request_bytes` sizes the default input token count;
    /// `new_id` is called once per generated id, with the prefix (`msg_`, `toolu_`).
    pub fn build(
        step: &Step,
        model: &str,
        request_bytes: usize,
        mut new_id: impl FnMut(&str) -> String,
    ) -> Self {
        let mut blocks = step.content.clone();
        if let Some(bytes) = step.repeat_text_bytes {
            let mut has_text = false;
            for block in &mut blocks {
                if let Block::Text { text } = block {
                    *text = repeat_to(text, bytes);
                    has_text = true;
                }
            }
            if !has_text {
                blocks.push(Block::Text {
                    text: repeat_to(FILLER, bytes),
                });
            }
        }
        let content: Vec<Value> = blocks
            .iter()
            .map(|block| match block {
                Block::Text { text } => json!({"type": "text", "text": text}),
                Block::ToolUse { name, input, id } => json!({
                    "type": "tool_use",
                    "id": id.clone().unwrap_or_else(|| new_id("toolu_")),
                    "name": name,
                    "input": input,
                }),
            })
            .collect();
        let has_tool_use = blocks
            .iter()
            .any(|block| matches!(block, Block::ToolUse { .. }));
        let stop_reason = step.stop_reason.unwrap_or(if has_tool_use {
            StopReason::ToolUse
        } else {
            StopReason::EndTurn
        });
        let output_bytes: usize = content.iter().map(|block| block.to_string().len()).sum();
        let usage = step.usage.unwrap_or_default();
        let chunk_bytes = step
            .chunk_bytes
            .unwrap_or(if step.chunk_delay_ms.is_some() {
                SLOW_CHUNK_BYTES
            } else {
                FAST_CHUNK_BYTES
            });
        Self {
            message_id: new_id("msg_"),
            model: model.to_owned(),
            content,
            stop_reason,
            input_tokens: usage.input_tokens.unwrap_or(tokens_for(request_bytes)),
            output_tokens: usage.output_tokens.unwrap_or(tokens_for(output_bytes)),
            chunk_bytes: chunk_bytes.max(1),
        }
    }

    /// The `usage` object as the API reports it once a message is complete.
    fn usage(&self, output_tokens: u64) -> Value {
        json!({
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        })
    }

    /// The body of a non-streamed (`stream: false`) response.
    pub fn message_json(&self) -> Value {
        json!({
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": self.content,
            "stop_reason": self.stop_reason.as_str(),
            "stop_sequence": null,
            "usage": self.usage(self.output_tokens),
        })
    }

    /// The events of a streamed response, in the order the API sends them.
    pub fn events(&self) -> Vec<SseEvent> {
        let event = |name: &'static str, data: Value| SseEvent { name, data };
        let mut events = vec![
            event(
                "message_start",
                json!({"type": "message_start", "message": {
                    "id": self.message_id,
                    "type": "message",
                    "role": "assistant",
                    "model": self.model,
                    "content": [],
                    "stop_reason": null,
                    "stop_sequence": null,
                    "usage": self.usage(1),
                }}),
            ),
            event("ping", json!({"type": "ping"})),
        ];
        for (index, block) in self.content.iter().enumerate() {
            let (start, delta_type, delta_key, body) =
                match block.get("type").and_then(Value::as_str) {
                    Some("tool_use") => {
                        let mut start = block.clone();
                        start["input"] = json!({});
                        let input = block.get("input").map(Value::to_string).unwrap_or_default();
                        (start, "input_json_delta", "partial_json", input)
                    }
                    _ => {
                        let text = block
                            .get("text")
                            .and_then(Value::as_str)
                            .unwrap_or_default();
                        (
                            json!({"type": "text", "text": ""}),
                            "text_delta",
                            "text",
                            text.to_owned(),
                        )
                    }
                };
            events.push(event(
                "content_block_start",
                json!({"type": "content_block_start", "index": index, "content_block": start}),
            ));
            for piece in chunks(&body, self.chunk_bytes) {
                events.push(event(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                           "delta": {"type": delta_type, delta_key: piece}}),
                ));
            }
            events.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            ));
        }
        events.push(event(
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": self.stop_reason.as_str(), "stop_sequence": null},
                   "usage": {"output_tokens": self.output_tokens}}),
        ));
        events.push(event("message_stop", json!({"type": "message_stop"})));
        events
    }
}

/// The Anthropic error `type` for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        504 => "timeout_error",
        529 => "overloaded_error",
        _ => "api_error",
    }
}

/// The JSON body of an error response, as the Messages API writes it.
pub fn error_json(status: u16, message: &str, request_id: &str) -> Value {
    json!({
        "type": "error",
        "error": {"type": error_type(status), "message": message},
        "request_id": request_id,
    })
}

/// The message of a scripted error: the script's, or one naming the status.
pub fn error_message(error: &ErrorReply) -> String {
    error.message.clone().unwrap_or_else(|| match error.status {
        429 => "paddock-model-double: scripted rate limit".to_owned(),
        529 => "Overloaded".to_owned(),
        status => format!("paddock-model-double: scripted error {status}"),
    })
}

/// A rough token count: a quarter of the bytes, at least one.
pub fn tokens_for(bytes: usize) -> u64 {
    u64::try_from(bytes.div_ceil(4)).unwrap_or(u64::MAX).max(1)
}

/// `text` repeated until it is `bytes` long, cut on a character boundary.
fn repeat_to(text: &str, bytes: usize) -> String {
    let unit = if text.is_empty() { FILLER } else { text };
    let mut out = String::with_capacity(bytes + unit.len());
    while out.len() < bytes {
        out.push_str(unit);
    }
    let mut end = bytes.min(out.len());
    while !out.is_char_boundary(end) {
        end -= 1;
    }
    out.truncate(end);
    out
}

/// `text` cut into pieces of at most `max` bytes (more only to finish a character).
fn chunks(text: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = max.max(1).min(rest.len());
        while !rest.is_char_boundary(end) {
            end += 1;
        }
        let (piece, tail) = rest.split_at(end);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::UsageOverride;

    fn counter() -> impl FnMut(&str) -> String {
        let mut n = 0;
        move |prefix| {
            n += 1;
            format!("{prefix}{n}")
        }
    }

    fn text_of(events: &[SseEvent], delta_key: &str) -> String {
        events
            .iter()
            .filter_map(|event| event.data.pointer(&format!("/delta/{delta_key}"))?.as_str())
            .collect()
    }

    #[test]
    fn a_tool_call_streams_its_input_as_json_deltas_and_stops_for_tool_use() {
        let step = Step {
            content: vec![
                Block::Text {
                    text: "Let me.".into(),
                },
                Block::ToolUse {
                    name: "Bash".into(),
                    input: json!({"command": "touch f"}),
                    id: None,
                },
            ],
            ..Step::default()
        };
        let response = Response::build(&step, "claude-opus-5-5", 400, counter());
        let events = response.events();
        let names: Vec<&str> = events.iter().map(|event| event.name).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert_eq!(events[0].data["message"]["model"], "claude-opus-5-5");
        assert_eq!(events[0].data["message"]["usage"]["input_tokens"], 100);
        assert_eq!(
            events[5].data["content_block"],
            json!({"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {}})
        );
        let input: Value =
            serde_json::from_str(&text_of(&events, "partial_json")).expect("valid input JSON");
        assert_eq!(input, json!({"command": "touch f"}));
        assert_eq!(events[8].data["delta"]["stop_reason"], "tool_use");
        assert_eq!(response.message_json()["stop_reason"], "tool_use");
    }

    #[test]
    fn a_slow_step_splits_text_into_small_deltas() {
        let step = Step {
            content: vec![Block::Text {
                text: "héllo wörld, this is slow".into(),
            }],
            chunk_delay_ms: Some(10),
            ..Step::default()
        };
        let events = Response::build(&step, "m", 0, counter()).events();
        let deltas = events
            .iter()
            .filter(|event| event.name == "content_block_delta")
            .count();
        assert!(deltas >= 2, "{deltas} deltas");
        assert_eq!(text_of(&events, "text"), "héllo wörld, this is slow");
    }

    #[test]
    fn repeat_text_bytes_makes_a_long_output_of_that_size() {
        let step = Step {
            content: vec![Block::Text {
                text: "ab€".into()
            }],
            repeat_text_bytes: Some(100_001),
            ..Step::default()
        };
        let response = Response::build(&step, "m", 0, counter());
        let text = text_of(&response.events(), "text");
        assert!(text.len() <= 100_001 && text.len() >= 100_000 - 4);
        assert!(text.starts_with("ab€ab€"));
        assert!(response.output_tokens >= tokens_for(text.len()));

        let no_text = Step {
            repeat_text_bytes: Some(1000),
            ..Step::default()
        };
        let response = Response::build(&no_text, "m", 0, counter());
        assert_eq!(text_of(&response.events(), "text").len(), 1000);
        assert_eq!(response.stop_reason, StopReason::EndTurn);
    }

    #[test]
    fn usage_and_stop_reason_can_be_forced() {
        let step = Step {
            content: vec![Block::Text { text: "x".into() }],
            stop_reason: Some(StopReason::MaxTokens),
            usage: Some(UsageOverride {
                input_tokens: Some(7),
                output_tokens: Some(9),
            }),
            ..Step::default()
        };
        let events = Response::build(&step, "m", 1_000_000, counter()).events();
        assert_eq!(events[0].data["message"]["usage"]["input_tokens"], 7);
        let delta = events
            .iter()
            .find(|event| event.name == "message_delta")
            .expect("a message_delta");
        assert_eq!(delta.data["usage"]["output_tokens"], 9);
        assert_eq!(delta.data["delta"]["stop_reason"], "max_tokens");
    }

    #[test]
    fn errors_use_the_anthropic_types() {
        let body = error_json(529, "Overloaded", "req_1");
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "overloaded_error");
        assert_eq!(error_type(429), "rate_limit_error");
        assert_eq!(error_type(500), "api_error");
    }

    #[test]
    fn chunks_never_split_a_character() {
        assert_eq!(chunks("ab€c", 3), ["ab€", "c"]);
        assert_eq!(chunks("", 3), Vec::<&str>::new());
        assert_eq!(chunks("abc", 0), ["a", "b", "c"]);
    }
}
