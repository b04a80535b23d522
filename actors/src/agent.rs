//! Starting the Claude Code CLI (or any program speaking its stream-json protocol) as
//! a child process in its own process group, so that a cancel reaches the tools it
//! started too; with a sandbox, inside it (`paddock-sandbox`: bubblewrap or Seatbelt),
//! with the job's own egress proxy as its only way out. This is where the node
//! touches the OS to run the agent.

use paddock_contract::JobOptions;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
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
    /// Where the agent runs contained; `None` only when the operator turned the
    /// sandbox off.
    pub sandbox: Option<Arc<SandboxContext>>,
}

/// The node's working sandbox and the settings each job's policy is made from.
#[derive(Debug)]
pub struct SandboxContext {
    pub sandbox: paddock_sandbox::Sandbox,
    pub settings: paddock_sandbox::SandboxSettings,
    /// The egress proxy's base rules; a project may allow more hosts.
    pub proxy: paddock_sandbox::proxy::ProxyConfig,
    /// Read-only paths every policy adds (the agent's install folder).
    pub read_only: Vec<PathBuf>,
}

/// A job's egress proxy, stopped when dropped.
pub struct RunningProxy {
    pub proxy: paddock_sandbox::proxy::EgressProxy,
    stop: tokio_util::sync::CancellationToken,
    run_dir: PathBuf,
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
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
    /// Start a new session with this id (`--session-id`): a session that died before
    /// the CLI wrote its transcript keeps its id this way.
    pub session_id: Option<String>,
    /// Ask for tool permissions on stdio (`--permission-prompt-tool stdio`) instead of
    /// refusing what the allow list does not cover.
    pub ask_permissions: bool,
    /// Names the run's private folder (temp, proxy socket).
    pub run_name: String,
    /// Hosts the project may reach beyond the proxy's base allowlist.
    pub project_hosts: Vec<String>,
}

/// A started agent: its pipes, its process-group id, and, when sandboxed, what must
/// be cleaned up after it.
pub struct StartedAgent {
    pub child: Child,
    pub stdin: ChildStdin,
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
    pub pid: u32,
    pub sandbox: Option<paddock_sandbox::SandboxGuard>,
    pub proxy: Option<RunningProxy>,
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
    if let Some(session) = run.session_id.as_ref().filter(|_| run.resume.is_none()) {
        args.push("--session-id".into());
        args.push(session.clone());
    }
    if run.ask_permissions {
        args.push("--permission-prompt-tool".into());
        args.push("stdio".into());
    }
    args
}

/// Where the CLI keeps a session's transcript: `$HOME/.claude/projects/<slug>/<id>.jsonl`,
/// the slug being the working directory with every non-alphanumeric character as `-`.
pub fn transcript_path(home: &Path, workdir: &Path, session_id: &str) -> PathBuf {
    let slug: String = workdir
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    home.join(".claude/projects")
        .join(slug)
        .join(format!("{session_id}.jsonl"))
}

/// Allows a tool call the CLI asked about, with its input unchanged.
pub fn allow_tool(request_id: &str, input: &serde_json::Value) -> String {
    control_response(
        request_id,
        serde_json::json!({"behavior": "allow", "updatedInput": input}),
    )
}

/// Refuses a tool call the CLI asked about; the model is told `reason`.
pub fn deny_tool(request_id: &str, reason: &str) -> String {
    control_response(
        request_id,
        serde_json::json!({"behavior": "deny", "message": reason}),
    )
}

fn control_response(request_id: &str, response: serde_json::Value) -> String {
    let line = serde_json::json!({
        "type": "control_response",
        "response": {"subtype": "success", "request_id": request_id, "response": response},
    });
    format!("{line}\n")
}

/// Answers a control request this node does not handle, so the CLI does not wait.
pub fn refuse_request(request_id: &str, error: &str) -> String {
    let line = serde_json::json!({
        "type": "control_response",
        "response": {"subtype": "error", "request_id": request_id, "error": error},
    });
    format!("{line}\n")
}

/// Interrupts the running turn; the process stays up.
pub fn interrupt(request_id: &str) -> String {
    let line = serde_json::json!({
        "type": "control_request",
        "request_id": request_id,
        "request": {"subtype": "interrupt"},
    });
    format!("{line}\n")
}

/// Starts the agent: inside the sandbox when there is one, else with a scrubbed
/// environment in its own process group.
pub async fn start_agent(launch: &AgentLaunch, run: &AgentRun) -> std::io::Result<StartedAgent> {
    match &launch.sandbox {
        Some(context) => start_sandboxed(launch, run, context).await,
        None => start_plain(launch, run),
    }
}

fn start_plain(launch: &AgentLaunch, run: &AgentRun) -> std::io::Result<StartedAgent> {
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
    let (stdin, stdout, stderr) = take_pipes(&mut child)?;
    Ok(StartedAgent {
        child,
        stdin,
        stdout,
        stderr,
        pid,
        sandbox: None,
        proxy: None,
    })
}

async fn start_sandboxed(
    launch: &AgentLaunch,
    run: &AgentRun,
    context: &SandboxContext,
) -> std::io::Result<StartedAgent> {
    let run_dir = context.settings.runtime_dir.join(&run.run_name);
    let temp = run_dir.join("tmp");
    std::fs::create_dir_all(&temp)?;
    let proxy =
        paddock_sandbox::proxy::EgressProxy::new(context.proxy.with_allowed(&run.project_hosts))
            .map_err(|e| std::io::Error::other(format!("egress proxy: {e}")))?;
    let stop = tokio_util::sync::CancellationToken::new();
    let access = if cfg!(target_os = "macos") {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        tokio::spawn({
            let proxy = proxy.clone();
            let stop = stop.clone();
            async move { proxy.serve(listener, stop).await }
        });
        paddock_sandbox::ProxyAccess { port, socket: None }
    } else {
        let socket = run_dir.join("proxy.sock");
        let listener = paddock_sandbox::proxy::bind_unix(&socket)?;
        tokio::spawn({
            let proxy = proxy.clone();
            let stop = stop.clone();
            async move { proxy.serve(listener, stop).await }
        });
        context.settings.proxy_access(Some(socket))
    };
    let running = RunningProxy {
        proxy,
        stop,
        run_dir,
    };
    let mut policy = context
        .settings
        .policy(
            &run.workdir,
            &temp,
            &launch.home,
            Some(access),
            launch.env.clone(),
        )
        .map_err(|e| std::io::Error::other(format!("sandbox policy: {e}")))?;
    policy.read_only.extend(context.read_only.iter().cloned());
    let args = agent_args(launch, run);
    let program = launch.program.clone();
    let sandbox = context.sandbox.clone();
    // Building the command and starting bubblewrap block briefly (mounts, cgroup).
    let started = tokio::task::spawn_blocking(move || {
        sandbox
            .command(&policy, &program, &args)
            .and_then(|command| {
                command.spawn(|command| {
                    command
                        .stdin(Stdio::piped())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped())
                        .kill_on_drop(true);
                })
            })
    })
    .await
    .map_err(std::io::Error::other)?
    .map_err(|e| std::io::Error::other(format!("sandbox: {e}")))?;
    let paddock_sandbox::SandboxedChild { mut child, guard } = started;
    let pid = guard
        .pid()
        .ok_or_else(|| std::io::Error::other("the sandbox did not report its process"))?;
    let (stdin, stdout, stderr) = take_pipes(&mut child)?;
    Ok(StartedAgent {
        child,
        stdin,
        stdout,
        stderr,
        pid,
        sandbox: Some(guard),
        proxy: Some(running),
    })
}

fn take_pipes(child: &mut Child) -> std::io::Result<(ChildStdin, ChildStdout, ChildStderr)> {
    match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
        (Some(stdin), Some(stdout), Some(stderr)) => Ok((stdin, stdout, stderr)),
        _ => Err(std::io::Error::other("the agent's pipes were not set up")),
    }
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
            sandbox: None,
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
                ..Default::default()
            },
            project_tools: vec!["Grep".into()],
            resume: Some("s-1".into()),
            session_id: None,
            ask_permissions: true,
            run_name: "job-1".into(),
            project_hosts: vec![],
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
        assert!(joined.ends_with("--permission-prompt-tool stdio"));
    }

    #[test]
    fn approval_answers_follow_the_control_protocol() {
        let allow: serde_json::Value =
            serde_json::from_str(allow_tool("r1", &serde_json::json!({"command": "ls"})).trim())
                .expect("json");
        assert_eq!(allow["response"]["request_id"], "r1");
        assert_eq!(allow["response"]["response"]["behavior"], "allow");
        assert_eq!(
            allow["response"]["response"]["updatedInput"]["command"],
            "ls"
        );
        let deny: serde_json::Value =
            serde_json::from_str(deny_tool("r2", "no").trim()).expect("json");
        assert_eq!(deny["response"]["response"]["behavior"], "deny");
        assert_eq!(deny["response"]["response"]["message"], "no");
        let stop: serde_json::Value = serde_json::from_str(interrupt("r3").trim()).expect("json");
        assert_eq!(stop["request"]["subtype"], "interrupt");
    }

    #[test]
    fn transcripts_live_under_the_slug_of_the_workdir() {
        let path = transcript_path(Path::new("/h"), Path::new("/tmp/p3/ws_1"), "abc");
        assert_eq!(
            path,
            PathBuf::from("/h/.claude/projects/-tmp-p3-ws-1/abc.jsonl")
        );
    }

    #[test]
    fn user_turn_is_one_json_line() {
        let line = user_turn("say \"hi\"\nplease");
        assert_eq!(line.matches('\n').count(), 1);
        let value: serde_json::Value = serde_json::from_str(line.trim()).expect("json");
        assert_eq!(value["message"]["content"], "say \"hi\"\nplease");
    }
}
