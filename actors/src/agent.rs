//! Starting the Claude Code CLI (or any program speaking its stream-json protocol) as
//! a child process in its own process group, so that a cancel reaches the tools it
//! started too. This is where the node touches the OS to run the agent.

use paddock_contract::JobOptions;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

/// How to start the agent: the program and what every run of it gets.
#[derive(Clone, Debug)]
pub struct AgentLaunch {
    /// The `claude` executable (or a stand-in).
    pub program: PathBuf,
    /// The agent's HOME: its sessions and settings are written below it.
    pub home: PathBuf,
    /// Environment of the agent; nothing else is inherited.
    pub env: BTreeMap<String, String>,
    /// Tools every job may use without approval.
    pub allowed_tools: Vec<String>,
}

/// One run of the agent for one job.
#[derive(Clone, Debug)]
pub struct AgentRun {
    pub workdir: PathBuf,
    pub options: JobOptions,
    /// Tools the job's project allows without approval.
    pub project_tools: Vec<String>,
    /// Session to resume, when continuing an earlier run.
    pub resume: Option<String>,
}

/// A started agent: its pipes and its process-group id.
pub struct StartedAgent {
    pub child: Child,
    pub stdin: ChildStdin,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
    pub pid: u32,
}

/// The command-line arguments for a run, stream-json in and out.
pub fn agent_args(launch: &AgentLaunch, run: &AgentRun) -> Vec<String> {
    let mut args: Vec<String> = [
        "-p",
        "--input-format",
        "stream-json",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        run.options.permission_mode.as_cli_flag(),
    ]
    .into_iter()
    .map(str::to_string)
    .collect();
    let mut tools: Vec<&str> = launch
        .allowed_tools
        .iter()
        .chain(&run.project_tools)
        .chain(&run.options.allowed_tools)
        .map(String::as_str)
        .collect();
    tools.sort_unstable();
    tools.dedup();
    if !tools.is_empty() {
        args.push("--allowedTools".into());
        args.push(tools.join(","));
    }
    if let Some(model) = &run.options.model {
        args.push("--model".into());
        args.push(model.clone());
    }
    if let Some(turns) = run.options.max_turns {
        args.push("--max-turns".into());
        args.push(turns.to_string());
    }
    if let Some(session) = &run.resume {
        args.push("--resume".into());
        args.push(session.clone());
    }
    args
}

/// Starts the agent with a scrubbed environment in its own process group.
pub fn start_agent(launch: &AgentLaunch, run: &AgentRun) -> std::io::Result<StartedAgent> {
    let mut command = Command::new(&launch.program);
    command
        .args(agent_args(launch, run))
        .current_dir(&run.workdir)
        .env_clear()
        .envs(&launch.env)
        .env("HOME", &launch.home)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn()?;
    let pid = child
        .id()
        .ok_or_else(|| std::io::Error::other("the agent exited at once"))?;
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(std::io::Error::other("the agent's pipes were not set up"));
    };
    Ok(StartedAgent {
        child,
        stdin,
        stdout,
        stderr,
        pid,
    })
}

/// Sends `signal` to the agent's whole process group (the CLI and the tools it runs).
pub fn signal_group(pid: u32, signal: nix::sys::signal::Signal) {
    let Ok(raw) = i32::try_from(pid) else {
        return;
    };
    if let Err(e) = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(raw), signal) {
        tracing::debug!(pid, ?signal, error = %e, "signal to agent process group failed");
    }
}

/// The stdin line that gives the agent one user turn.
pub fn user_turn(text: &str) -> String {
    let line = serde_json::json!({
        "type": "user",
        "message": {"role": "user", "content": text},
    });
    format!("{line}\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_contract::job::PermissionMode;

    fn launch() -> AgentLaunch {
        AgentLaunch {
            program: "claude".into(),
            home: "/tmp/h".into(),
            env: BTreeMap::new(),
            allowed_tools: vec!["Read".into()],
        }
    }

    #[test]
    fn args_merge_tool_lists_and_options() {
        let run = AgentRun {
            workdir: "/tmp".into(),
            options: JobOptions {
                model: Some("m".into()),
                max_turns: Some(3),
                permission_mode: PermissionMode::AcceptEdits,
                allowed_tools: vec!["Bash".into(), "Read".into()],
                subdir: None,
            },
            project_tools: vec!["Grep".into()],
            resume: Some("s-1".into()),
        };
        let args = agent_args(&launch(), &run);
        let joined = args.join(" ");
        assert!(
            joined
                .starts_with("-p --input-format stream-json --output-format stream-json --verbose")
        );
        assert!(joined.contains("--permission-mode acceptEdits"));
        assert!(joined.contains("--allowedTools Bash,Grep,Read"));
        assert!(joined.contains("--model m --max-turns 3 --resume s-1"));
    }

    #[test]
    fn user_turn_is_one_json_line() {
        let line = user_turn("say \"hi\"\nplease");
        assert_eq!(line.matches('\n').count(), 1);
        let value: serde_json::Value = serde_json::from_str(line.trim()).expect("json");
        assert_eq!(value["message"]["content"], "say \"hi\"\nplease");
    }
}
