//! Checks on a submitted job, made before anything reaches NATS or the ledger. Every
//! value here ends up on a node's command line or in its file system, so the rules are
//! strict: a sub-directory stays inside the project, a tool or model name cannot pass
//! for a flag, the prompt has a size.

use crate::config::{GatewayConfig, ProjectConfig};
use crate::error::ApiError;
use paddock_contract::api::SubmitJob;
use paddock_contract::job::POOL_LABEL;
use paddock_contract::subjects::is_valid_token;

/// Most entries `options.allowed_tools` may hold.
pub const MAX_ALLOWED_TOOLS: usize = 64;
/// Longest tool pattern (`Bash(git diff:*)`, …).
pub const MAX_TOOL_BYTES: usize = 256;
/// Longest `options.subdir`.
pub const MAX_SUBDIR_BYTES: usize = 1024;
/// Longest model name.
pub const MAX_MODEL_BYTES: usize = 128;
/// Most agent turns a job may ask for.
pub const MAX_TURNS: u32 = 10_000;
/// Most labels a job may require.
pub const MAX_REQUIREMENTS: usize = 16;
/// Longest required label value.
pub const MAX_LABEL_VALUE_BYTES: usize = 64;

/// Checks `submit` and returns the project it goes to.
pub fn check_submission<'a>(
    submit: &SubmitJob,
    config: &'a GatewayConfig,
) -> Result<&'a ProjectConfig, ApiError> {
    check_prompt(&submit.prompt, config.max_prompt_bytes)?;
    let project = config.project(&submit.project).ok_or_else(|| {
        ApiError::UnknownProject(if submit.project.len() <= 128 {
            format!("there is no project {:?}", submit.project)
        } else {
            "there is no such project".into()
        })
    })?;
    let options = &submit.options;
    if let Some(subdir) = &options.subdir {
        check_subdir(subdir)?;
    }
    check_allowed_tools(&options.allowed_tools)?;
    if let Some(model) = &options.model {
        check_model(model)?;
    }
    if let Some(turns) = options.max_turns
        && !(1..=MAX_TURNS).contains(&turns)
    {
        return Err(ApiError::BadRequest(format!(
            "options.max_turns must be between 1 and {MAX_TURNS}"
        )));
    }
    check_requirements(&options.requires)?;
    Ok(project)
}

/// Label keys are subject tokens (letters, digits, `-`, `_`); values may hold dots
/// too (`xcode = "16.2"`); `pool` names a pool, so it is a token as well.
fn check_requirements(
    requires: &std::collections::BTreeMap<String, String>,
) -> Result<(), ApiError> {
    if requires.len() > MAX_REQUIREMENTS {
        return Err(ApiError::BadRequest(format!(
            "options.requires has more than {MAX_REQUIREMENTS} labels"
        )));
    }
    for (key, value) in requires {
        if !is_valid_token(key) {
            return Err(ApiError::BadRequest(format!(
                "options.requires: a label name must be 1-64 letters, digits, '-' or '_', not {:?}",
                cut(key)
            )));
        }
        let sane = if key == POOL_LABEL {
            is_valid_token(value)
        } else {
            !value.is_empty()
                && value.len() <= MAX_LABEL_VALUE_BYTES
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        if !sane {
            return Err(ApiError::BadRequest(format!(
                "options.requires.{key} must be 1-{MAX_LABEL_VALUE_BYTES} letters, digits, '-', '_'{}, not {:?}",
                if key == POOL_LABEL { "" } else { " or '.'" },
                cut(value)
            )));
        }
    }
    Ok(())
}

/// Text from a request, short enough to quote in an error.
fn cut(text: &str) -> String {
    text.chars().take(64).collect()
}

pub(crate) fn check_prompt(prompt: &str, max_bytes: usize) -> Result<(), ApiError> {
    if prompt.trim().is_empty() {
        return Err(ApiError::BadRequest("the prompt is empty".into()));
    }
    if prompt.len() > max_bytes {
        return Err(ApiError::PayloadTooLarge(format!(
            "the prompt is {} bytes; the limit is {max_bytes}",
            prompt.len()
        )));
    }
    if prompt.contains('\0') {
        return Err(ApiError::BadRequest(
            "the prompt contains a NUL character".into(),
        ));
    }
    Ok(())
}

/// A relative path that stays inside the project: no root, no drive, no `..`, no NUL.
pub fn check_subdir(subdir: &str) -> Result<(), ApiError> {
    let bad = |why: &str| Err(ApiError::BadPath(format!("options.subdir {why}")));
    if subdir.is_empty() {
        return bad("is empty");
    }
    if subdir.len() > MAX_SUBDIR_BYTES {
        return bad("is too long");
    }
    if subdir.contains('\0') {
        return bad("contains a NUL character");
    }
    if subdir.chars().any(char::is_control) {
        return bad("contains control characters");
    }
    let bytes = subdir.as_bytes();
    let has_drive = bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':';
    if subdir.starts_with(['/', '\\', '~'])
        || has_drive
        || std::path::Path::new(subdir).is_absolute()
    {
        return bad("must be relative to the project root");
    }
    if subdir.split(['/', '\\']).any(|part| part == "..") {
        return bad("must not contain `..`");
    }
    Ok(())
}

fn check_allowed_tools(tools: &[String]) -> Result<(), ApiError> {
    if tools.len() > MAX_ALLOWED_TOOLS {
        return Err(ApiError::BadRequest(format!(
            "options.allowed_tools has more than {MAX_ALLOWED_TOOLS} entries"
        )));
    }
    for (i, tool) in tools.iter().enumerate() {
        let sane = !tool.trim().is_empty()
            && tool.len() <= MAX_TOOL_BYTES
            && !tool.starts_with('-')
            && !tool.chars().any(char::is_control);
        if !sane {
            return Err(ApiError::BadRequest(format!(
                "options.allowed_tools[{i}] must be a tool name or pattern of at most \
                 {MAX_TOOL_BYTES} bytes, not starting with '-', without control characters"
            )));
        }
    }
    Ok(())
}

fn check_model(model: &str) -> Result<(), ApiError> {
    let sane = !model.is_empty()
        && model.len() <= MAX_MODEL_BYTES
        && !model.starts_with('-')
        && model.chars().all(|c| c.is_ascii_graphic());
    if sane {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "options.model must be a model name of at most {MAX_MODEL_BYTES} printable ASCII \
             characters, not starting with '-'"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ApiToken;
    use paddock_contract::JobOptions;

    fn config() -> GatewayConfig {
        GatewayConfig {
            database_url: "sqlite:///x".into(),
            api_tokens: vec![ApiToken {
                user: "ada".into(),
                token: "t".into(),
                scopes: Vec::new(),
            }],
            projects: vec![ProjectConfig {
                name: "web".into(),
                pool: "default".into(),
                description: String::new(),
            }],
            max_prompt_bytes: 10,
            ..GatewayConfig::default()
        }
    }

    fn submit(prompt: &str, options: JobOptions) -> SubmitJob {
        SubmitJob {
            project: "web".into(),
            prompt: prompt.into(),
            options,
            job_id: None,
        }
    }

    fn code_of(submit: &SubmitJob) -> Option<&'static str> {
        check_submission(submit, &config()).err().map(|e| e.code())
    }

    #[test]
    fn a_plain_submission_passes() {
        let config = config();
        let ok = check_submission(&submit("hello", JobOptions::default()), &config);
        assert_eq!(ok.map(|p| p.name.clone()), Ok("web".to_string()));
    }

    #[test]
    fn prompts_must_have_content_and_fit() {
        assert_eq!(
            code_of(&submit("  ", JobOptions::default())),
            Some("bad_request")
        );
        assert_eq!(
            code_of(&submit("01234567890", JobOptions::default())),
            Some("payload_too_large")
        );
        assert_eq!(
            code_of(&submit("a\0b", JobOptions::default())),
            Some("bad_request")
        );
    }

    #[test]
    fn unknown_projects_are_refused() {
        let mut job = submit("hi", JobOptions::default());
        job.project = "nope".into();
        assert_eq!(code_of(&job), Some("unknown_project"));
    }

    #[test]
    fn subdirs_stay_inside_the_project() {
        for good in ["src", "a/b/c", "./x", "a..b", "dir with space"] {
            assert!(check_subdir(good).is_ok(), "{good:?}");
        }
        for bad in [
            "", "/etc", "\\share", "C:\\x", "~/x", "..", "../x", "a/../b", "a/..", "a\\..\\b",
            "a\0b", "a\nb",
        ] {
            assert_eq!(
                check_subdir(bad).map_err(|e| e.code()),
                Err("bad_path"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn tools_and_models_cannot_pass_for_flags() {
        let tools = |list: &[&str]| JobOptions {
            allowed_tools: list.iter().map(|s| s.to_string()).collect(),
            ..JobOptions::default()
        };
        assert_eq!(
            code_of(&submit("hi", tools(&["Bash(git diff:*)", "Read"]))),
            None
        );
        for bad in [&[""][..], &["--dangerously-skip-permissions"], &["a\nb"]] {
            assert_eq!(
                code_of(&submit("hi", tools(bad))),
                Some("bad_request"),
                "{bad:?}"
            );
        }
        let many: Vec<String> = (0..=MAX_ALLOWED_TOOLS).map(|i| format!("T{i}")).collect();
        let job = submit(
            "hi",
            JobOptions {
                allowed_tools: many,
                ..JobOptions::default()
            },
        );
        assert_eq!(code_of(&job), Some("bad_request"));
        let model = |m: &str| JobOptions {
            model: Some(m.into()),
            ..JobOptions::default()
        };
        assert_eq!(code_of(&submit("hi", model("claude-sonnet-4-5"))), None);
        assert_eq!(code_of(&submit("hi", model("-x"))), Some("bad_request"));
        assert_eq!(code_of(&submit("hi", model("a b"))), Some("bad_request"));
        let turns = JobOptions {
            max_turns: Some(0),
            ..JobOptions::default()
        };
        assert_eq!(code_of(&submit("hi", turns)), Some("bad_request"));
    }

    #[test]
    fn required_labels_are_tokens_with_bounded_values() {
        let requires = |pairs: &[(&str, &str)]| JobOptions {
            requires: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..JobOptions::default()
        };
        for good in [
            &[("xcode", "16.2")][..],
            &[("pool", "mac-minis"), ("arch", "arm64")],
            &[("os_version", "15_1-beta")],
        ] {
            assert_eq!(code_of(&submit("hi", requires(good))), None, "{good:?}");
        }
        let long = "x".repeat(MAX_LABEL_VALUE_BYTES + 1);
        for bad in [
            &[("", "1")][..],
            &[("a.b", "1")],
            &[("xcode", "")],
            &[("xcode", "16 2")],
            &[("xcode", "*")],
            &[("xcode", long.as_str())],
            &[("pool", "a.b")],
            &[("pool", ">")],
        ] {
            assert_eq!(
                code_of(&submit("hi", requires(bad))),
                Some("bad_request"),
                "{bad:?}"
            );
        }
        let names: Vec<String> = (0..=MAX_REQUIREMENTS).map(|i| format!("l{i}")).collect();
        let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
        assert_eq!(code_of(&submit("hi", requires(&many))), Some("bad_request"));
    }
}
