//! Renders job events for a terminal: assistant text as it is, each tool call on one
//! line with its result condensed below it, and a summary line at the end.

use paddock_contract::{EventBody, JobEvent, RunSummary};

/// One event as terminal text, or `None` for events a person need not see.
pub fn render(event: &JobEvent) -> Option<String> {
    let text = match &event.body {
        EventBody::Queued { project, .. } => format!("● queued  job {} in {project}", event.job_id),
        EventBody::Waiting { reason } => format!("⧗ waiting: {reason}"),
        EventBody::Started { node, attempt } => {
            format!("▶ started on {node} (attempt {attempt})")
        }
        EventBody::Retrying { attempt, reason } => {
            format!("↻ retrying (attempt {attempt}): {reason}")
        }
        EventBody::SessionInit { .. }
        | EventBody::CliOutput { .. }
        | EventBody::SessionState { .. } => return None,
        EventBody::Restarting {
            restart,
            reason,
            delay_ms,
        } => format!("↻ restarting the agent (restart {restart}, in {delay_ms} ms): {reason}"),
        EventBody::UserMessage { text, by } => format!("» {by}: {text}"),
        EventBody::TurnCompleted { summary } => format!("· turn done · {}", summary_line(summary)),
        EventBody::TurnRetrying {
            retry,
            reason,
            delay_ms,
        } => format!("↻ model API failed (retry {retry} in {delay_ms} ms): {reason}"),
        EventBody::Interrupted { by } => format!("■ interrupted by {by}"),
        EventBody::SandboxNotice { notice, detail } => format!("  ⛔ sandbox {notice}: {detail}"),
        EventBody::ApprovalRequested {
            request_id,
            tool_name,
            input,
            ..
        } => format!(
            "? {tool_name} wants to run: {} [request {request_id}]",
            tool_input(input)
        ),
        EventBody::ApprovalResolved {
            allowed,
            by,
            reason,
            ..
        } => {
            let verdict = if *allowed { "allowed" } else { "denied" };
            let why = reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default();
            format!("  {verdict} by {by}{why}")
        }
        EventBody::AssistantText { text } => text.clone(),
        EventBody::ToolCall { name, input, .. } => format!("⚙ {name}: {}", tool_input(input)),
        EventBody::ToolResult {
            is_error, content, ..
        } => {
            let lines = content.lines().count();
            let first = content.lines().next().unwrap_or("").trim();
            let first = cut(first, 100);
            let mark = if *is_error { "✗" } else { "↳" };
            if lines > 1 {
                format!("  {mark} {first} (+{} lines)", lines - 1)
            } else {
                format!("  {mark} {first}")
            }
        }
        EventBody::ToolDenied { tool_name, .. } => format!("  ⊘ {tool_name} was not allowed"),
        EventBody::CliGarbage { error } => format!("  ! unreadable output from the CLI: {error}"),
        EventBody::CliStderr { line } => format!("  stderr: {line}"),
        EventBody::Completed { summary } => format!("✔ completed · {}", summary_line(summary)),
        EventBody::Failed {
            reason,
            message,
            summary,
        } => {
            let extra = summary
                .as_ref()
                .map(|s| format!(" · {}", summary_line(s)))
                .unwrap_or_default();
            format!("✘ failed ({reason}): {message}{extra}")
        }
        EventBody::Cancelled { by, summary } => {
            let extra = summary
                .as_ref()
                .map(|s| format!(" · {}", summary_line(s)))
                .unwrap_or_default();
            format!("■ cancelled by {by}{extra}")
        }
    };
    Some(text)
}

/// `2 turns · 3.1 s · $0.0123 · 1200 in / 300 out tokens`
pub fn summary_line(summary: &RunSummary) -> String {
    let mut parts = Vec::new();
    if let Some(turns) = summary.num_turns {
        parts.push(format!("{turns} turn{}", if turns == 1 { "" } else { "s" }));
    }
    if let Some(ms) = summary.duration_ms {
        parts.push(format!("{:.1} s", ms as f64 / 1000.0));
    }
    if let Some(cost) = summary.total_cost_usd {
        parts.push(format!("${cost:.4}"));
    }
    if let (Some(input), Some(output)) = (summary.input_tokens, summary.output_tokens) {
        parts.push(format!("{input} in / {output} out tokens"));
    }
    parts.join(" · ")
}

/// The input's most telling field, on one line.
fn tool_input(input: &serde_json::Value) -> String {
    let text = [
        "command",
        "file_path",
        "path",
        "pattern",
        "url",
        "description",
    ]
    .iter()
    .find_map(|key| input.get(*key).and_then(|v| v.as_str()).map(str::to_string))
    .unwrap_or_else(|| input.to_string());
    cut(&text.replace('\n', " ⏎ "), 120)
}

fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_contract::JobId;

    fn event(body: EventBody) -> JobEvent {
        JobEvent {
            version: 1,
            job_id: JobId::new(),
            seq: 1,
            at_ms: 0,
            node: None,
            attempt: 1,
            body,
            raw: None,
        }
    }

    #[test]
    fn tool_calls_fit_on_one_line() {
        let text = render(&event(EventBody::ToolCall {
            tool_use_id: "t".into(),
            name: "Bash".into(),
            input: serde_json::json!({"command": "touch a\nls"}),
        }))
        .expect("shown");
        assert_eq!(text, "⚙ Bash: touch a ⏎ ls");
        let result = render(&event(EventBody::ToolResult {
            tool_use_id: "t".into(),
            is_error: false,
            content: "one\ntwo\nthree".into(),
        }))
        .expect("shown");
        assert_eq!(result, "  ↳ one (+2 lines)");
    }

    #[test]
    fn a_waiting_job_says_why() {
        let text = render(&event(EventBody::Waiting {
            reason: "no live node matches pool=default, xcode=17".into(),
        }))
        .expect("shown");
        assert_eq!(
            text,
            "⧗ waiting: no live node matches pool=default, xcode=17"
        );
    }

    #[test]
    fn summary_names_turns_time_and_cost() {
        let line = summary_line(&RunSummary {
            num_turns: Some(2),
            duration_ms: Some(3100),
            total_cost_usd: Some(0.0123),
            ..Default::default()
        });
        assert_eq!(line, "2 turns · 3.1 s · $0.0123");
    }
}
