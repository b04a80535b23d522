//! The fake's stream-json session: reads user lines, answers each with the lines the
//! real CLI writes for a one-round-trip turn (`system/init`, one `assistant` text line,
//! a `result`), bent by the prompt's `fake:` directives.
//!
//! It mirrors the real CLI where Paddock depends on it: one `system/init` per turn,
//! `session_id` on every line, `total_cost_usd` cumulative over the process, API
//! failures as `subtype: "success"` with `is_error: true`, a `control_response` to every
//! `control_request`, exit 1 on a stdin line that is not JSON or a `user` line without
//! `message`, and at end of input exit 0 unless the last result was an error (then 1).

use std::io::{self, BufRead, Write};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::args::Args;
use crate::directives::Directives;

/// What each successful turn costs, in dollars.
pub const COST_PER_TURN_USD: f64 = 0.0001;

const DEFAULT_MODEL: &str = "paddock-fake-model";

/// Runs the whole session; returns the process exit code.
pub fn run(args: &Args, input: impl BufRead, out: impl Write, err: impl Write) -> i32 {
    let mut session = Session {
        session_id: args.fixed_session_id().map_or_else(fresh_id, str::to_owned),
        model: args
            .model
            .clone()
            .unwrap_or_else(|| DEFAULT_MODEL.to_owned()),
        permission_mode: args
            .permission_mode
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
        out,
        err,
        results: 0,
        cost_usd: 0.0,
        last_is_error: false,
    };
    let outcome = if args.reads_stdin_lines() {
        session.read_lines(input)
    } else {
        let prompt = args.prompt.clone().unwrap_or_default();
        session.turn(&prompt)
    };
    match outcome {
        Ok(Flow::Continue) => i32::from(session.last_is_error),
        Ok(Flow::Exit(code)) => code,
        // stdout or stderr is gone (the reader died): nothing more to say to anyone.
        Err(_) => 1,
    }
}

enum Flow {
    Continue,
    Exit(i32),
}

struct Session<O, E> {
    session_id: String,
    model: String,
    permission_mode: String,
    out: O,
    err: E,
    results: u32,
    cost_usd: f64,
    last_is_error: bool,
}

impl<O: Write, E: Write> Session<O, E> {
    fn read_lines(&mut self, input: impl BufRead) -> io::Result<Flow> {
        for line in input.lines() {
            let line = line?;
            if line.trim().is_empty() {
                continue;
            }
            let Ok(message) = serde_json::from_str::<Value>(&line) else {
                writeln!(self.err, "Error parsing streaming input line: {line}")?;
                return Ok(Flow::Exit(1));
            };
            match message.get("type").and_then(Value::as_str) {
                Some("user") => {
                    let Some(prompt) = message.get("message").map(prompt_text) else {
                        writeln!(self.err, "Error: a user line needs a message: {line}")?;
                        return Ok(Flow::Exit(1));
                    };
                    if let Flow::Exit(code) = self.turn(&prompt)? {
                        return Ok(Flow::Exit(code));
                    }
                }
                Some("control_request") => {
                    let request_id = message.get("request_id").cloned().unwrap_or(Value::Null);
                    self.emit(&json!({
                        "type": "control_response",
                        "response": {"subtype": "success", "request_id": request_id, "response": {}},
                    }))?;
                }
                // control_response, keep_alive and whatever comes next: nothing to do.
                _ => {}
            }
        }
        Ok(Flow::Continue)
    }

    fn turn(&mut self, prompt: &str) -> io::Result<Flow> {
        let started = Instant::now();
        let directives = Directives::parse(prompt);
        for unknown in &directives.unknown {
            writeln!(self.err, "paddock-fake-agent: ignoring {unknown:?}")?;
        }
        self.emit(&json!({
            "type": "system",
            "subtype": "init",
            "cwd": std::env::current_dir().map(|dir| dir.display().to_string()).unwrap_or_default(),
            "session_id": self.session_id,
            "tools": ["Bash", "Edit", "Read", "Write"],
            "mcp_servers": [],
            "model": self.model,
            "permissionMode": self.permission_mode,
            "apiKeySource": "none",
            "claude_code_version": "0.0.0-paddock-fake",
            "output_style": "default",
            "uuid": fresh_id(),
        }))?;
        if let Some(code) = directives.exit {
            return Ok(Flow::Exit(code));
        }
        if directives.stderr {
            for n in 1..=3 {
                writeln!(self.err, "paddock-fake-agent: stderr line {n} of 3")?;
            }
            self.err.flush()?;
        }

        let text = match directives.bytes {
            Some(bytes) => "0123456789abcdef".chars().cycle().take(bytes).collect(),
            None => format!("Fake reply to: {prompt}"),
        };
        let input_tokens = tokens_for(prompt.len());
        let output_tokens = tokens_for(text.len());
        self.emit(&json!({
            "type": "assistant",
            "message": {
                "id": format!("msg_fake_{}", uuid::Uuid::new_v4().simple()),
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [{"type": "text", "text": text}],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": input_tokens, "output_tokens": output_tokens},
            },
            "parent_tool_use_id": null,
            "session_id": self.session_id,
            "uuid": fresh_id(),
        }))?;
        if directives.garbage {
            writeln!(self.out, "this line is not JSON")?;
            writeln!(self.out, "{{\"type\": \"assistant\", \"truncated")?;
            self.emit(&json!({
                "type": "paddock_fake_unknown",
                "session_id": self.session_id,
                "payload": {"anything": [1, 2, 3]},
            }))?;
        }
        if let Some(ms) = directives.sleep_ms {
            // Default SIGTERM disposition: the process dies at once, mid-sleep.
            std::thread::sleep(Duration::from_millis(ms));
        }

        if !directives.error {
            self.cost_usd += COST_PER_TURN_USD;
        }
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let usage = json!({
            "input_tokens": input_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        });
        let mut result = json!({
            "type": "result",
            "subtype": "success",
            "is_error": directives.error,
            "duration_ms": duration_ms,
            "duration_api_ms": duration_ms,
            "num_turns": 1,
            "result": text,
            "stop_reason": "end_turn",
            "session_id": self.session_id,
            "total_cost_usd": self.cost_usd,
            "usage": usage,
            "modelUsage": {self.model.clone(): {
                "inputTokens": input_tokens,
                "outputTokens": output_tokens,
                "costUSD": self.cost_usd,
            }},
            "permission_denials": [],
            "terminal_reason": "completed",
            "result_index": self.results,
            "uuid": fresh_id(),
        });
        if directives.error {
            result["result"] = json!("API Error: 500 paddock-fake-agent was asked for fake:error");
            result["stop_reason"] = Value::Null;
            result["terminal_reason"] = json!("api_error");
            result["api_error_status"] = json!(500);
        }
        self.emit(&result)?;
        self.results += 1;
        self.last_is_error = directives.error;
        Ok(Flow::Continue)
    }

    /// Writes one JSON line and flushes, so a reader sees it at once.
    fn emit(&mut self, line: &Value) -> io::Result<()> {
        writeln!(self.out, "{line}")?;
        self.out.flush()
    }
}

/// The text of a user message: its string content, or its text blocks joined.
fn prompt_text(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter_map(|block| block.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

fn tokens_for(bytes: usize) -> u64 {
    u64::try_from(bytes.div_ceil(4)).unwrap_or(u64::MAX).max(1)
}

fn fresh_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ran {
        code: i32,
        lines: Vec<Value>,
        raw: String,
        stderr: String,
    }

    fn run_with(args: &[&str], stdin: &str) -> Ran {
        let args = Args::parse(args.iter().map(|arg| (*arg).to_owned()));
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = run(&args, stdin.as_bytes(), &mut out, &mut err);
        let raw = String::from_utf8_lossy(&out).into_owned();
        Ran {
            code,
            lines: raw
                .lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect(),
            raw,
            stderr: String::from_utf8_lossy(&err).into_owned(),
        }
    }

    fn user(text: &str) -> String {
        format!(
            "{}\n",
            json!({"type": "user", "message": {"role": "user", "content": text}})
        )
    }

    fn types(lines: &[Value]) -> Vec<String> {
        lines
            .iter()
            .map(|line| {
                let subtype = line["subtype"]
                    .as_str()
                    .map(|s| format!("/{s}"))
                    .unwrap_or_default();
                format!("{}{subtype}", line["type"].as_str().unwrap_or("?"))
            })
            .collect()
    }

    #[test]
    fn each_user_line_gets_init_assistant_and_result_with_one_session_id() {
        let ran = run_with(
            &["-p", "--input-format", "stream-json", "--session-id", "s-1"],
            &(user("one") + &user("two")),
        );
        assert_eq!(ran.code, 0);
        assert_eq!(
            types(&ran.lines),
            [
                "system/init",
                "assistant",
                "result/success",
                "system/init",
                "assistant",
                "result/success"
            ]
        );
        assert!(ran.lines.iter().all(|line| line["session_id"] == "s-1"));
        let first = &ran.lines[2];
        assert_eq!(first["is_error"], false);
        assert_eq!(first["num_turns"], 1);
        assert_eq!(first["total_cost_usd"], COST_PER_TURN_USD);
        assert_eq!(
            ran.lines[5]["total_cost_usd"],
            2.0 * COST_PER_TURN_USD,
            "cumulative"
        );
        assert_eq!(
            ran.lines[4]["message"]["content"][0]["text"],
            "Fake reply to: two"
        );
    }

    #[test]
    fn a_fresh_session_id_is_a_uuid() {
        let ran = run_with(&[], &user("hi"));
        let id = ran.lines[0]["session_id"].as_str().unwrap_or_default();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{id:?}");
    }

    #[test]
    fn exit_prints_init_then_stops_with_the_code() {
        let ran = run_with(&[], &(user("fake:exit=7") + &user("never read")));
        assert_eq!(ran.code, 7);
        assert_eq!(types(&ran.lines), ["system/init"]);
    }

    #[test]
    fn error_ends_in_an_error_result_and_exit_one() {
        let ran = run_with(&[], &user("fake:error"));
        let result = ran.lines.last().cloned().unwrap_or_default();
        assert_eq!(result["subtype"], "success");
        assert_eq!(result["is_error"], true);
        assert_eq!(result["terminal_reason"], "api_error");
        assert_eq!(ran.code, 1);
        let recovered = run_with(&[], &(user("fake:error") + &user("fine")));
        assert_eq!(recovered.code, 0, "only the last result decides");
    }

    #[test]
    fn garbage_adds_non_json_and_unknown_lines_before_the_result() {
        let ran = run_with(&[], &user("fake:garbage"));
        let raw: Vec<&str> = ran.raw.lines().collect();
        assert_eq!(raw.len(), 6, "{raw:#?}");
        assert!(serde_json::from_str::<Value>(raw[2]).is_err());
        assert!(serde_json::from_str::<Value>(raw[3]).is_err());
        assert_eq!(
            types(&ran.lines),
            [
                "system/init",
                "assistant",
                "paddock_fake_unknown",
                "result/success"
            ]
        );
    }

    #[test]
    fn bytes_sets_the_assistant_text_size() {
        let ran = run_with(&[], &user("fake:bytes=100000"));
        let text = ran.lines[1]["message"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default();
        assert_eq!(text.len(), 100_000);
    }

    #[test]
    fn stderr_and_sleep_are_honoured() {
        let started = Instant::now();
        let ran = run_with(&[], &user("fake:stderr fake:sleep=50"));
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert!(ran.stderr.contains("stderr line 1 of 3"), "{}", ran.stderr);
        assert_eq!(ran.code, 0);
    }

    #[test]
    fn a_line_that_is_not_json_fails_like_the_real_cli() {
        let ran = run_with(&[], &(user("one") + "not json\n" + &user("two")));
        assert_eq!(ran.code, 1);
        assert_eq!(
            types(&ran.lines),
            ["system/init", "assistant", "result/success"]
        );
        assert!(ran.stderr.contains("not json"));
        let no_message = run_with(&[], "{\"type\": \"user\"}\n");
        assert_eq!(no_message.code, 1);
        assert!(no_message.lines.is_empty());
    }

    #[test]
    fn control_requests_are_acknowledged_and_other_lines_ignored() {
        let stdin = "{\"type\":\"control_request\",\"request_id\":\"r1\",\"request\":{\"subtype\":\"interrupt\"}}\n\
                     {\"type\":\"keep_alive\"}\n\n";
        let ran = run_with(&[], stdin);
        assert_eq!(ran.code, 0);
        assert_eq!(ran.lines.len(), 1);
        assert_eq!(ran.lines[0]["type"], "control_response");
        assert_eq!(ran.lines[0]["response"]["request_id"], "r1");
    }

    #[test]
    fn a_positional_prompt_runs_one_turn() {
        let ran = run_with(&["-p", "hello", "--output-format", "stream-json"], "");
        assert_eq!(
            types(&ran.lines),
            ["system/init", "assistant", "result/success"]
        );
    }

    #[test]
    fn block_content_is_read_as_text() {
        let line = json!({"type": "user", "message": {"role": "user",
            "content": [{"type": "text", "text": "fake:exit=4"}]}});
        let ran = run_with(&[], &format!("{line}\n"));
        assert_eq!(ran.code, 4);
    }
}
