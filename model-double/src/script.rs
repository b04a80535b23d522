//! The script the double plays, and how a request picks its step.
//!
//! A script is a list of conversations. A request belongs to the first conversation
//! whose `match` is a substring of the request's first user prompt (the first user
//! text that is not a `<system-reminder>` the CLI adds), and it gets the step whose
//! index is the number of assistant messages already in its history. So the choice is
//! a pure function of the request: a CLI that retries, resumes a session or restarts
//! with `--resume` lands on the right step without the double keeping any state. The
//! one stateful part, `error.fail_times`, is counted by the server (see `server.rs`).

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What the double answers: scripted conversations plus a reply for everything else.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Tried in order; the first whose `match` fits the request wins.
    #[serde(default)]
    pub conversations: Vec<Conversation>,
    /// The reply to a request no conversation matches, or whose conversation has no
    /// step left. Without it the double answers a short text saying why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<Step>,
}

/// One scripted conversation: the steps an agent loop walks through.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conversation {
    /// A substring of the first user prompt of the requests this conversation answers.
    #[serde(rename = "match")]
    pub matches: String,
    /// Step `n` answers a request that already holds `n` assistant messages.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Match only requests that offer tools, that is the agent loop itself. Side
    /// requests the CLI may make (a title, a summary, with no tools) quote the user's
    /// prompt too; they get the fallback instead of replaying step 0.
    #[serde(default = "default_true")]
    pub only_with_tools: bool,
}

/// One assistant response, or an HTTP error in its place.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The content blocks of the response, in order.
    #[serde(default)]
    pub content: Vec<Block>,
    /// Wait this long before each event after `message_start`: a slow stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_delay_ms: Option<u64>,
    /// Largest text (or tool input JSON) delta, in bytes. Default: 16 for a slow
    /// stream (so text arrives as if typed), 4096 otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_bytes: Option<usize>,
    /// Repeat each text block until it is this many bytes long (a step without text
    /// gets one block of filler): a long output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_text_bytes: Option<usize>,
    /// Answer with this HTTP error instead of the content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReply>,
    /// Default: `tool_use` when the content has a tool call, else `end_turn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    /// Token counts to report. Default: a quarter of the request's bytes in, a
    /// quarter of the response's bytes out (at least 1 each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageOverride>,
}

/// A content block of a scripted response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Block {
    Text {
        text: String,
    },
    ToolUse {
        /// The tool's name as the CLI offers it, e.g. `Bash`.
        name: String,
        /// The tool's input object, e.g. `{"command": "ls"}`.
        #[serde(default = "empty_object")]
        input: Value,
        /// Fixed id; a fresh `toolu_…` id is generated per response when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
}

/// An HTTP error in place of a response, optionally only for the first tries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorReply {
    /// 429, 500, 529, … (any 4xx or 5xx).
    pub status: u16,
    /// Fail only the first N requests for this conversation and step, then play the
    /// content. Absent: fail every time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_times: Option<u32>,
    /// The error message in the body. Default: one naming the status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Send a `retry-after` header with this many seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<u64>,
}

/// Why a response stopped, as the Messages API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    EndTurn,
    ToolUse,
    MaxTokens,
    StopSequence,
    PauseTurn,
    Refusal,
}

impl StopReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EndTurn => "end_turn",
            Self::ToolUse => "tool_use",
            Self::MaxTokens => "max_tokens",
            Self::StopSequence => "stop_sequence",
            Self::PauseTurn => "pause_turn",
            Self::Refusal => "refusal",
        }
    }
}

/// Token counts that replace the computed defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tokens: Option<u64>,
}

/// A script that cannot be loaded, with what a person needs to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ScriptError {
    #[error("cannot read script {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("script {origin} is not valid: {source}")]
    Parse {
        origin: String,
        source: serde_json::Error,
    },
    #[error("script {origin}: {location}: {problem}")]
    Invalid {
        origin: String,
        location: String,
        problem: String,
    },
}

impl Script {
    /// Loads and validates a script from a JSON file.
    pub fn load(path: &Path) -> Result<Self, ScriptError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScriptError::Read {
            path: origin.clone(),
            source,
        })?;
        Self::parse(&text, &origin)
    }

    /// Parses and validates a script; `origin` names it in error messages.
    pub fn parse(json: &str, origin: &str) -> Result<Self, ScriptError> {
        let script: Self = serde_json::from_str(json).map_err(|source| ScriptError::Parse {
            origin: origin.to_owned(),
            source,
        })?;
        script.validate(origin)?;
        Ok(script)
    }

    /// Checks what serde cannot: error statuses and tool inputs.
    pub fn validate(&self, origin: &str) -> Result<(), ScriptError> {
        let invalid = |location: String, problem: &str| ScriptError::Invalid {
            origin: origin.to_owned(),
            location,
            problem: problem.to_owned(),
        };
        let conversation_steps = self.conversations.iter().enumerate().flat_map(|(c, conv)| {
            conv.steps
                .iter()
                .enumerate()
                .map(move |(s, step)| (format!("conversations[{c}].steps[{s}]"), step))
        });
        let fallback = self
            .fallback
            .iter()
            .map(|step| ("fallback".to_owned(), step));
        for (location, step) in conversation_steps.chain(fallback) {
            if let Some(error) = &step.error
                && !(400..=599).contains(&error.status)
            {
                return Err(invalid(
                    format!("{location}.error.status"),
                    "must be an HTTP error status (400 to 599)",
                ));
            }
            for (b, block) in step.content.iter().enumerate() {
                if let Block::ToolUse { input, .. } = block
                    && !input.is_object()
                {
                    return Err(invalid(
                        format!("{location}.content[{b}].input"),
                        "a tool input must be a JSON object",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Picks the conversation and step for a request. Pure: same request, same choice.
    pub fn select(&self, request: &RequestView) -> Selection {
        let step = request.assistant_turns;
        let conversation = request.first_user_text.as_deref().and_then(|prompt| {
            self.conversations.iter().position(|conversation| {
                (request.offers_tools || !conversation.only_with_tools)
                    && prompt.contains(&conversation.matches)
            })
        });
        let kind = match conversation {
            None => SelectionKind::Unmatched,
            Some(index) if step < self.conversations[index].steps.len() => SelectionKind::Scripted,
            Some(_) => SelectionKind::Exhausted,
        };
        Selection {
            conversation,
            step,
            kind,
        }
    }

    /// The step to play for a selection: the scripted one, else the fallback.
    pub fn step_for(&self, selection: &Selection) -> Step {
        if selection.kind == SelectionKind::Scripted
            && let Some(step) = selection
                .conversation
                .and_then(|index| self.conversations.get(index))
                .and_then(|conversation| conversation.steps.get(selection.step))
        {
            return step.clone();
        }
        if let Some(fallback) = &self.fallback {
            return fallback.clone();
        }
        let text = match (selection.kind, selection.conversation) {
            (SelectionKind::Exhausted, Some(index)) => format!(
                "paddock-model-double: the conversation matching {:?} has no step {}.",
                self.conversations
                    .get(index)
                    .map(|conversation| conversation.matches.as_str())
                    .unwrap_or_default(),
                selection.step
            ),
            _ => "paddock-model-double: no scripted conversation matches this request.".to_owned(),
        };
        Step {
            content: vec![Block::Text { text }],
            ..Step::default()
        }
    }

    /// The `match` string of a selected conversation, for the request log.
    pub fn conversation_match(&self, selection: &Selection) -> Option<&str> {
        selection
            .conversation
            .and_then(|index| self.conversations.get(index))
            .map(|conversation| conversation.matches.as_str())
    }
}

/// The parts of a Messages API request that choose its step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestView {
    /// The first user text that is not a `<system-reminder>`, blocks joined by `\n`.
    pub first_user_text: Option<String>,
    /// How many assistant messages the history holds.
    pub assistant_turns: usize,
    /// Whether the request offers any tool (the agent loop does; side requests don't).
    pub offers_tools: bool,
}

impl RequestView {
    /// Reads a request body leniently: missing or odd fields count as absent.
    pub fn from_body(body: &Value) -> Self {
        let messages = body
            .get("messages")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let role_is =
            |message: &Value, role: &str| message.get("role").and_then(Value::as_str) == Some(role);
        Self {
            first_user_text: messages
                .iter()
                .filter(|message| role_is(message, "user"))
                .find_map(|message| prompt_text(message.get("content")?)),
            assistant_turns: messages
                .iter()
                .filter(|message| role_is(message, "assistant"))
                .count(),
            offers_tools: body
                .get("tools")
                .and_then(Value::as_array)
                .is_some_and(|tools| !tools.is_empty()),
        }
    }
}

/// The user's own text in a message's content, without the CLI's reminders.
fn prompt_text(content: &Value) -> Option<String> {
    let is_prompt = |text: &&str| !text.trim_start().starts_with("<system-reminder>");
    let texts: Vec<&str> = match content {
        Value::String(text) => vec![text.as_str()],
        Value::Array(blocks) => blocks
            .iter()
            .filter(|block| block.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|block| block.get("text").and_then(Value::as_str))
            .collect(),
        _ => Vec::new(),
    };
    let prompt: Vec<&str> = texts.into_iter().filter(is_prompt).collect();
    (!prompt.is_empty()).then(|| prompt.join("\n"))
}

/// Which conversation and step a request got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Selection {
    pub conversation: Option<usize>,
    /// The number of assistant messages in the request: the step index.
    pub step: usize,
    pub kind: SelectionKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectionKind {
    /// A conversation matched and has this step.
    Scripted,
    /// A conversation matched but has no step this far: the fallback plays.
    Exhausted,
    /// No conversation matched: the fallback plays.
    Unmatched,
}

fn default_true() -> bool {
    true
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn script() -> Script {
        Script::parse(
            r#"{
              "conversations": [
                {"match": "make a file", "steps": [
                  {"content": [{"type": "tool_use", "name": "Bash", "input": {"command": "touch x"}}]},
                  {"content": [{"type": "text", "text": "done"}]}
                ]},
                {"match": "title", "only_with_tools": false, "steps": [
                  {"content": [{"type": "text", "text": "A title"}]}
                ]}
              ]
            }"#,
            "test",
        )
        .expect("the test script is valid")
    }

    fn request(messages: Value) -> RequestView {
        RequestView::from_body(&json!({"messages": messages, "tools": [{"name": "Bash"}]}))
    }

    const REMINDER: &str = "<system-reminder>\nmake a file, said no one\n</system-reminder>\n";

    #[test]
    fn first_request_plays_step_zero_of_the_matching_conversation() {
        let view = request(json!([
            {"role": "user", "content": [
                {"type": "text", "text": REMINDER},
                {"type": "text", "text": "please make a file"}
            ]},
            {"role": "system", "content": "environment"}
        ]));
        assert_eq!(view.first_user_text.as_deref(), Some("please make a file"));
        let selection = script().select(&view);
        assert_eq!(
            selection,
            Selection {
                conversation: Some(0),
                step: 0,
                kind: SelectionKind::Scripted
            }
        );
    }

    #[test]
    fn each_assistant_message_in_history_advances_one_step() {
        let view = request(json!([
            {"role": "user", "content": "make a file"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Bash", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]}
        ]));
        let script = script();
        let selection = script.select(&view);
        assert_eq!(selection.step, 1);
        assert_eq!(selection.kind, SelectionKind::Scripted);
        assert_eq!(
            script.step_for(&selection).content,
            vec![Block::Text {
                text: "done".into()
            }]
        );
    }

    #[test]
    fn a_step_past_the_end_plays_the_fallback() {
        let view = request(json!([
            {"role": "user", "content": "make a file"},
            {"role": "assistant", "content": "a"},
            {"role": "user", "content": "b"},
            {"role": "assistant", "content": "c"},
            {"role": "user", "content": "d"}
        ]));
        let script = script();
        let selection = script.select(&view);
        assert_eq!(selection.kind, SelectionKind::Exhausted);
        let step = script.step_for(&selection);
        assert!(matches!(&step.content[..], [Block::Text { text }] if text.contains("no step 2")));
    }

    #[test]
    fn a_prompt_matching_nothing_plays_the_fallback() {
        let script = script();
        let selection = script.select(&request(json!([{"role": "user", "content": "hello"}])));
        assert_eq!(selection.kind, SelectionKind::Unmatched);
        assert_eq!(selection.conversation, None);
        let custom = Script {
            fallback: Some(Step {
                content: vec![Block::Text { text: "hi".into() }],
                ..Step::default()
            }),
            ..script
        };
        assert_eq!(
            custom.step_for(&selection).content,
            vec![Block::Text { text: "hi".into() }]
        );
    }

    #[test]
    fn a_reminder_alone_is_not_the_prompt() {
        let view = request(json!([
            {"role": "user", "content": [{"type": "text", "text": REMINDER}]},
            {"role": "user", "content": "hello"}
        ]));
        assert_eq!(view.first_user_text.as_deref(), Some("hello"));
        assert_eq!(script().select(&view).kind, SelectionKind::Unmatched);
    }

    #[test]
    fn a_side_request_without_tools_does_not_replay_the_conversation() {
        let body =
            json!({"messages": [{"role": "user", "content": "Write a title for: make a file"}]});
        let view = RequestView::from_body(&body);
        assert!(!view.offers_tools);
        let selection = script().select(&view);
        assert_eq!(
            selection.conversation,
            Some(1),
            "only the tool-less conversation"
        );
    }

    #[test]
    fn a_body_without_messages_is_unmatched_not_an_error() {
        let view = RequestView::from_body(&json!({"model": "x", "messages": 3}));
        assert_eq!(view, RequestView::default());
        assert_eq!(script().select(&view).kind, SelectionKind::Unmatched);
    }

    #[test]
    fn invalid_scripts_name_the_bad_key() {
        let bad_status =
            r#"{"conversations": [{"match": "x", "steps": [{"error": {"status": 200}}]}]}"#;
        let message = Script::parse(bad_status, "s.json")
            .expect_err("200 is no error")
            .to_string();
        assert!(
            message.contains("conversations[0].steps[0].error.status"),
            "{message}"
        );

        let bad_input =
            r#"{"fallback": {"content": [{"type": "tool_use", "name": "Bash", "input": "ls"}]}}"#;
        let message = Script::parse(bad_input, "s.json")
            .expect_err("a string input")
            .to_string();
        assert!(message.contains("fallback.content[0].input"), "{message}");

        let unknown = r#"{"conversations": [{"match": "x", "stepz": []}]}"#;
        assert!(Script::parse(unknown, "s.json").is_err());
    }

    #[test]
    fn the_documented_example_parses() {
        let example = include_str!("../scripts/example.json");
        let script = Script::parse(example, "scripts/example.json").expect("example is valid");
        assert!(!script.conversations.is_empty());
    }
}
