//! What a prompt asks the fake to do: `fake:` words anywhere in the prompt text
//! (`fake:garbage`, `fake:exit=N`, `fake:sleep=MS`, `fake:error`, `fake:stderr`,
//! `fake:bytes=N`), so one binary serves every fault and speed test. Several may be
//! combined; a prompt without any gets a plain one-turn reply.

/// The behaviours a prompt asked for.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Directives {
    /// Print non-JSON lines and a JSON line of an unknown type before the result.
    pub garbage: bool,
    /// Print `system/init`, then exit with this code without a result.
    pub exit: Option<i32>,
    /// Wait this many milliseconds before the result.
    pub sleep_ms: Option<u64>,
    /// End the turn with an error result (`is_error: true`).
    pub error: bool,
    /// Write lines to stderr.
    pub stderr: bool,
    /// Make the assistant text exactly this many bytes.
    pub bytes: Option<usize>,
    /// `fake:` words that were not understood, to report on stderr.
    pub unknown: Vec<String>,
}

const PREFIX: &str = "fake:";

impl Directives {
    pub fn parse(prompt: &str) -> Self {
        let mut directives = Self::default();
        for (start, _) in prompt.match_indices(PREFIX) {
            let word: String = prompt[start + PREFIX.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '=' | '_' | '-'))
                .collect();
            let (name, value) = match word.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (word.as_str(), None),
            };
            let understood = match (name, value) {
                ("garbage", None) => {
                    directives.garbage = true;
                    true
                }
                ("error", None) => {
                    directives.error = true;
                    true
                }
                ("stderr", None) => {
                    directives.stderr = true;
                    true
                }
                ("exit", Some(value)) => value
                    .parse()
                    .map(|code| directives.exit = Some(code))
                    .is_ok(),
                ("sleep", Some(value)) => value
                    .parse()
                    .map(|ms| directives.sleep_ms = Some(ms))
                    .is_ok(),
                ("bytes", Some(value)) => value.parse().map(|n| directives.bytes = Some(n)).is_ok(),
                _ => false,
            };
            if !understood {
                directives.unknown.push(format!("{PREFIX}{word}"));
            }
        }
        directives
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_prompt_asks_for_nothing() {
        assert_eq!(Directives::parse("say hello"), Directives::default());
    }

    #[test]
    fn each_directive_is_read() {
        let directives = Directives::parse(
            "fake:garbage then fake:exit=3, fake:sleep=250 (fake:error) fake:stderr fake:bytes=1000.",
        );
        assert_eq!(
            directives,
            Directives {
                garbage: true,
                exit: Some(3),
                sleep_ms: Some(250),
                error: true,
                stderr: true,
                bytes: Some(1000),
                unknown: Vec::new(),
            }
        );
    }

    #[test]
    fn malformed_directives_are_reported_not_fatal() {
        let directives = Directives::parse("fake:sleep=soon fake:dance fake:bytes=-1 fake:");
        assert_eq!(directives.sleep_ms, None);
        assert_eq!(directives.bytes, None);
        assert_eq!(
            directives.unknown,
            ["fake:sleep=soon", "fake:dance", "fake:bytes=-1", "fake:"]
        );
    }
}
