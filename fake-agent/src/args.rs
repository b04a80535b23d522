//! The command line of the real CLI, read leniently: the fake keeps the few flags that
//! change what it prints (session id, model, permission mode, input format, a one-shot
//! prompt) and skips every other flag, known or not, without failing.

/// What the fake takes from its command line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Args {
    pub session_id: Option<String>,
    pub resume: Option<String>,
    pub model: Option<String>,
    pub permission_mode: Option<String>,
    pub input_format: Option<String>,
    /// A positional prompt: one turn, then exit (`claude -p "PROMPT"`).
    pub prompt: Option<String>,
}

/// Flags of the real CLI that take one value.
const VALUE_FLAGS: &[&str] = &[
    "--input-format",
    "--output-format",
    "--permission-mode",
    "--model",
    "--max-turns",
    "--session-id",
    "--resume",
    "-r",
    "--permission-prompt-tool",
    "--append-system-prompt",
    "--system-prompt",
    "--fallback-model",
    "--settings",
    "--setting-sources",
    "--max-budget-usd",
    "--json-schema",
    "--agents",
    "--agent",
    "--tools",
    "--effort",
    "--debug-file",
];

/// Flags of the real CLI that take values until the next flag, as the real one does.
const LIST_FLAGS: &[&str] = &[
    "--allowedTools",
    "--allowed-tools",
    "--disallowedTools",
    "--disallowed-tools",
    "--add-dir",
    "--mcp-config",
    "--betas",
];

impl Args {
    /// Reads the arguments after the program name. Unknown flags are skipped as
    /// switches; nothing here fails.
    pub fn parse(arguments: impl IntoIterator<Item = String>) -> Self {
        let mut parsed = Self::default();
        let mut arguments = arguments.into_iter().peekable();
        while let Some(argument) = arguments.next() {
            if argument == "--" {
                parsed.prompt = arguments.next().or(parsed.prompt);
                continue;
            }
            if !argument.starts_with('-') || argument == "-" {
                parsed.prompt = Some(argument);
                continue;
            }
            let (flag, inline_value) = match argument.split_once('=') {
                Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
                None => (argument, None),
            };
            if LIST_FLAGS.contains(&flag.as_str()) {
                if inline_value.is_none() {
                    while arguments.next_if(|next| !next.starts_with('-')).is_some() {}
                }
                continue;
            }
            if !VALUE_FLAGS.contains(&flag.as_str()) {
                continue;
            }
            let value = inline_value.or_else(|| arguments.next());
            match flag.as_str() {
                "--session-id" => parsed.session_id = value,
                "--resume" | "-r" => parsed.resume = value,
                "--model" => parsed.model = value,
                "--permission-mode" => parsed.permission_mode = value,
                "--input-format" => parsed.input_format = value,
                _ => {}
            }
        }
        parsed
    }

    /// The session id every line carries: the resumed one, else the one given.
    pub fn fixed_session_id(&self) -> Option<&str> {
        self.resume.as_deref().or(self.session_id.as_deref())
    }

    /// Whether turns come as stream-json lines on stdin (else one positional prompt).
    pub fn reads_stdin_lines(&self) -> bool {
        self.input_format.as_deref() == Some("stream-json") || self.prompt.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Args {
        Args::parse(line.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn the_flags_paddock_passes_are_read_or_skipped() {
        let args = parse(
            "-p --input-format stream-json --output-format stream-json --verbose \
             --permission-mode acceptEdits --allowedTools Bash Edit --model claude-x \
             --max-turns 5 --session-id abc --permission-prompt-tool stdio",
        );
        assert_eq!(
            args,
            Args {
                session_id: Some("abc".into()),
                resume: None,
                model: Some("claude-x".into()),
                permission_mode: Some("acceptEdits".into()),
                input_format: Some("stream-json".into()),
                prompt: None,
            }
        );
        assert!(args.reads_stdin_lines());
    }

    #[test]
    fn resume_wins_over_session_id() {
        let args = parse("--session-id a --resume b");
        assert_eq!(args.fixed_session_id(), Some("b"));
        assert_eq!(parse("-r=c").fixed_session_id(), Some("c"));
        assert_eq!(parse("-p").fixed_session_id(), None);
    }

    #[test]
    fn unknown_flags_are_ignored_and_a_positional_is_the_prompt() {
        let args = parse("--bogus -x --also=1 -p hello --verbose");
        assert_eq!(args.prompt.as_deref(), Some("hello"));
        assert!(!args.reads_stdin_lines());
        assert_eq!(
            parse("-p -- -dash-prompt").prompt.as_deref(),
            Some("-dash-prompt")
        );
    }

    #[test]
    fn a_value_flag_at_the_end_does_not_panic() {
        assert_eq!(parse("--model").model, None);
        assert_eq!(parse("--allowedTools").prompt, None);
    }
}
