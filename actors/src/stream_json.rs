//! Turns the Claude Code CLI's stream-json output lines into job events. Parsing is
//! lenient: unknown fields are ignored, unknown line types become `cli.output`, and a
//! line that is not JSON becomes `cli.garbage`; nothing here can fail or panic on what
//! the CLI prints. The raw line always travels with the event.

use paddock_contract::{EventBody, RunSummary};
use serde_json::Value;

/// Longest text kept in a `tool.result` or a summary's `result` field.
pub const MAX_TEXT_CHARS: usize = 16 * 1024;

/// What one output line means.
#[derive(Debug, PartialEq)]
pub struct ParsedLine {
    /// Events to publish for it, in order (an assistant line with two blocks gives two).
    pub events: Vec<EventBody>,
    /// The run's summary when the line is the `result` line.
    pub result: Option<RunSummary>,
    /// A request from the CLI that waits for an answer on its stdin.
    pub control: Option<CliRequest>,
}

/// A `control_request` line of the CLI.
#[derive(Debug, PartialEq)]
pub struct CliRequest {
    pub request_id: String,
    /// `can_use_tool`, or a subtype this version does not know.
    pub subtype: String,
    pub tool_name: String,
    pub input: Value,
}

pub fn parse_line(line: &str) -> ParsedLine {
    let value: Value = match serde_json::from_str(line) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return garbage("a JSON value that is not an object");
        }
        Err(e) => return garbage(&format!("not JSON: {e}")),
    };
    let line_type = value.get("type").and_then(Value::as_str).unwrap_or("");
    let subtype = value.get("subtype").and_then(Value::as_str).unwrap_or("");
    match (line_type, subtype) {
        ("system", "init") => single(EventBody::SessionInit {
            session_id: str_field(&value, "session_id").unwrap_or_default(),
            model: str_field(&value, "model"),
            cwd: str_field(&value, "cwd"),
            tools: value
                .get("tools")
                .and_then(Value::as_array)
                .map(|tools| {
                    tools
                        .iter()
                        .filter_map(|t| t.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
        }),
        ("assistant", _) => ParsedLine {
            events: content_blocks(&value)
                .iter()
                .filter_map(assistant_block)
                .collect::<Vec<_>>()
                .pipe_or_output(line_type),
            result: None,
            control: None,
        },
        ("user", _) => ParsedLine {
            events: content_blocks(&value)
                .iter()
                .filter_map(tool_result_block)
                .collect::<Vec<_>>()
                .pipe_or_output(line_type),
            result: None,
            control: None,
        },
        ("control_request", _) => ParsedLine {
            events: Vec::new(),
            result: None,
            control: Some(CliRequest {
                request_id: str_field(&value, "request_id").unwrap_or_default(),
                subtype: value
                    .pointer("/request/subtype")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                tool_name: value
                    .pointer("/request/tool_name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                input: value
                    .pointer("/request/input")
                    .cloned()
                    .unwrap_or(Value::Null),
            }),
        },
        ("result", _) => {
            let summary = summary(&value);
            let denials = value
                .get("permission_denials")
                .and_then(Value::as_array)
                .map(|denials| {
                    denials
                        .iter()
                        .map(|d| EventBody::ToolDenied {
                            tool_name: str_field(d, "tool_name").unwrap_or_default(),
                            tool_use_id: str_field(d, "tool_use_id").unwrap_or_default(),
                        })
                        .collect()
                })
                .unwrap_or_default();
            ParsedLine {
                events: denials,
                result: Some(summary),
                control: None,
            }
        }
        _ => single(EventBody::CliOutput {
            line_type: Some(if subtype.is_empty() {
                line_type.to_string()
            } else {
                format!("{line_type}/{subtype}")
            }),
        }),
    }
}

trait OrOutput {
    fn pipe_or_output(self, line_type: &str) -> Vec<EventBody>;
}

impl OrOutput for Vec<EventBody> {
    /// A line with no block we normalise is still recorded, as `cli.output`.
    fn pipe_or_output(self, line_type: &str) -> Vec<EventBody> {
        if self.is_empty() {
            vec![EventBody::CliOutput {
                line_type: Some(line_type.to_string()),
            }]
        } else {
            self
        }
    }
}

fn single(event: EventBody) -> ParsedLine {
    ParsedLine {
        events: vec![event],
        result: None,
        control: None,
    }
}

fn garbage(error: &str) -> ParsedLine {
    single(EventBody::CliGarbage {
        error: error.to_string(),
    })
}

fn str_field(value: &Value, key: &str) -> Option<String> {
    value.get(key).and_then(Value::as_str).map(str::to_string)
}

fn content_blocks(value: &Value) -> Vec<Value> {
    match value.pointer("/message/content") {
        Some(Value::Array(blocks)) => blocks.clone(),
        Some(Value::String(text)) => vec![serde_json::json!({"type": "text", "text": text})],
        _ => Vec::new(),
    }
}

fn assistant_block(block: &Value) -> Option<EventBody> {
    match block.get("type").and_then(Value::as_str)? {
        "text" => Some(EventBody::AssistantText {
            text: str_field(block, "text").unwrap_or_default(),
        }),
        "tool_use" => Some(EventBody::ToolCall {
            tool_use_id: str_field(block, "id").unwrap_or_default(),
            name: str_field(block, "name").unwrap_or_default(),
            input: block.get("input").cloned().unwrap_or(Value::Null),
        }),
        _ => None,
    }
}

fn tool_result_block(block: &Value) -> Option<EventBody> {
    if block.get("type").and_then(Value::as_str)? != "tool_result" {
        return None;
    }
    let content = match block.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    };
    Some(EventBody::ToolResult {
        tool_use_id: str_field(block, "tool_use_id").unwrap_or_default(),
        is_error: block
            .get("is_error")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        content: truncate(content, MAX_TEXT_CHARS),
    })
}

fn summary(value: &Value) -> RunSummary {
    let u64_at = |pointer: &str| value.pointer(pointer).and_then(Value::as_u64);
    let usage_sum = |key: &str| {
        // Input tokens include cache reads and writes, which the API reports apart.
        let direct = u64_at(&format!("/usage/{key}"));
        if key == "input_tokens" {
            let cached = u64_at("/usage/cache_read_input_tokens").unwrap_or(0)
                + u64_at("/usage/cache_creation_input_tokens").unwrap_or(0);
            direct.map(|d| d + cached)
        } else {
            direct
        }
    };
    RunSummary {
        session_id: str_field(value, "session_id"),
        num_turns: u64_at("/num_turns").map(|n| n.min(u64::from(u32::MAX)) as u32),
        duration_ms: u64_at("/duration_ms"),
        total_cost_usd: value.get("total_cost_usd").and_then(Value::as_f64),
        input_tokens: usage_sum("input_tokens"),
        output_tokens: usage_sum("output_tokens"),
        is_error: value
            .get("is_error")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        subtype: str_field(value, "subtype"),
        result: str_field(value, "result")
            .or_else(|| {
                value.get("errors").and_then(Value::as_array).map(|errors| {
                    errors
                        .iter()
                        .map(|e| {
                            e.as_str()
                                .map(str::to_string)
                                .unwrap_or_else(|| e.to_string())
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                })
            })
            .map(|text| truncate(text, MAX_TEXT_CHARS)),
    }
}

/// Whether a failed result came from the model API in a way worth trying again
/// (rate limit, overload, server error).
pub fn is_retryable_api_error(line: &Value) -> bool {
    let status = line.get("api_error_status").and_then(Value::as_u64);
    line.get("is_error").and_then(Value::as_bool) == Some(true)
        && line.get("terminal_reason").and_then(Value::as_str) == Some("api_error")
        && matches!(status, Some(429 | 500 | 502 | 503 | 504 | 529) | None)
}

/// Cuts `text` to at most `max` characters, on a character boundary.
pub fn truncate(mut text: String, max: usize) -> String {
    if let Some((cut, _)) = text.char_indices().nth(max) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_line_gives_the_session_id() {
        let parsed = parse_line(
            r#"{"type":"system","subtype":"init","session_id":"s-1","model":"m","tools":["Bash"],"extra":1}"#,
        );
        assert_eq!(
            parsed.events,
            vec![EventBody::SessionInit {
                session_id: "s-1".into(),
                model: Some("m".into()),
                cwd: None,
                tools: vec!["Bash".into()],
            }]
        );
    }

    #[test]
    fn assistant_blocks_become_text_and_tool_calls() {
        let parsed = parse_line(
            r#"{"type":"assistant","message":{"content":[{"type":"text","text":"hi"},{"type":"tool_use","id":"t1","name":"Bash","input":{"command":"ls"}}]}}"#,
        );
        assert_eq!(parsed.events.len(), 2);
        assert!(matches!(&parsed.events[1], EventBody::ToolCall { name, .. } if name == "Bash"));
    }

    #[test]
    fn tool_results_keep_their_text() {
        let parsed = parse_line(
            r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t1","content":[{"type":"text","text":"out"}],"is_error":true}]}}"#,
        );
        assert_eq!(
            parsed.events,
            vec![EventBody::ToolResult {
                tool_use_id: "t1".into(),
                is_error: true,
                content: "out".into()
            }]
        );
    }

    #[test]
    fn result_line_gives_the_summary_and_denials() {
        let parsed = parse_line(
            r#"{"type":"result","subtype":"success","is_error":false,"result":"done","session_id":"s","num_turns":2,"duration_ms":10,"total_cost_usd":0.5,"usage":{"input_tokens":3,"cache_read_input_tokens":4,"output_tokens":5},"permission_denials":[{"tool_name":"Write","tool_use_id":"t9","tool_input":{}}]}"#,
        );
        let summary = parsed.result.expect("summary");
        assert_eq!(summary.num_turns, Some(2));
        assert_eq!(summary.input_tokens, Some(7));
        assert_eq!(summary.output_tokens, Some(5));
        assert_eq!(summary.total_cost_usd, Some(0.5));
        assert_eq!(summary.result.as_deref(), Some("done"));
        assert_eq!(parsed.events.len(), 1);
    }

    #[test]
    fn garbage_and_unknown_lines_never_fail() {
        for line in ["", "not json", "[1,2]", "{\"type\":", "\u{0}"] {
            let parsed = parse_line(line);
            assert!(
                matches!(parsed.events[..], [EventBody::CliGarbage { .. }]),
                "{line:?}"
            );
        }
        let parsed = parse_line(r#"{"type":"brand_new","subtype":"thing"}"#);
        assert_eq!(
            parsed.events,
            vec![EventBody::CliOutput {
                line_type: Some("brand_new/thing".into())
            }]
        );
        let parsed = parse_line(r#"{"type":"assistant","message":42}"#);
        assert!(matches!(parsed.events[..], [EventBody::CliOutput { .. }]));
    }

    #[test]
    fn tool_permission_requests_are_recognised() {
        let parsed = parse_line(
            r#"{"type":"control_request","request_id":"r1","request":{"subtype":"can_use_tool","tool_name":"Bash","input":{"command":"ls"}}}"#,
        );
        assert!(parsed.events.is_empty());
        let control = parsed.control.expect("control");
        assert_eq!(control.request_id, "r1");
        assert_eq!(control.subtype, "can_use_tool");
        assert_eq!(control.tool_name, "Bash");
        assert_eq!(control.input["command"], "ls");
    }

    #[test]
    fn api_errors_worth_retrying_are_told_apart() {
        let overloaded: Value = serde_json::from_str(
            r#"{"type":"result","is_error":true,"terminal_reason":"api_error","api_error_status":529}"#,
        )
        .expect("json");
        assert!(is_retryable_api_error(&overloaded));
        let bad_request: Value = serde_json::from_str(
            r#"{"type":"result","is_error":true,"terminal_reason":"api_error","api_error_status":400}"#,
        )
        .expect("json");
        assert!(!is_retryable_api_error(&bad_request));
        let tool_error: Value = serde_json::from_str(
            r#"{"type":"result","is_error":true,"terminal_reason":"completed"}"#,
        )
        .expect("json");
        assert!(!is_retryable_api_error(&tool_error));
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        assert_eq!(truncate("héllo".into(), 2), "hé…");
        assert_eq!(truncate("ok".into(), 5), "ok");
    }
}
