//! The built `paddock-fake-agent` binary driven as the node agent drives the real CLI:
//! flags on the command line, user lines on stdin, JSON lines read from stdout, through
//! every `fake:` mode, including death by SIGTERM in the middle of a sleep.

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

const BINARY: &str = env!("CARGO_BIN_EXE_paddock-fake-agent");
const TIMEOUT: Duration = Duration::from_secs(10);

/// The flags the node agent passes to the real CLI, and some it may pass one day.
const CLI_FLAGS: &[&str] = &[
    "-p",
    "--input-format",
    "stream-json",
    "--output-format",
    "stream-json",
    "--verbose",
    "--permission-mode",
    "acceptEdits",
    "--allowedTools",
    "Bash,Edit",
    "--model",
    "claude-test",
    "--max-turns",
    "3",
    "--permission-prompt-tool",
    "stdio",
    "--include-partial-messages",
    "--some-future-flag",
];

struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    fn types(&self) -> Vec<String> {
        self.json_lines()
            .iter()
            .map(|line| line["type"].as_str().unwrap_or("?").to_owned())
            .collect()
    }
}

fn user_line(text: &str) -> String {
    format!(
        "{}\n",
        json!({"type": "user", "message": {"role": "user", "content": text}})
    )
}

fn spawn(args: &[&str]) -> Child {
    Command::new(BINARY)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the fake agent binary starts")
}

fn sigkill(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Runs with the node agent's flags plus `extra_args`.
fn run(extra_args: &[&str], stdin: &str) -> Finished {
    run_with_args(&[CLI_FLAGS, extra_args].concat(), stdin)
}

/// Writes `stdin`, closes it, and waits for the exit, failing loudly after TIMEOUT.
fn run_with_args(args: &[&str], stdin: &str) -> Finished {
    let mut child = spawn(args);
    let pid = child.id();
    let mut input = child.stdin.take().expect("a stdin pipe");
    let stdin = stdin.to_owned();
    // The fake may exit before reading everything (fake:exit): a broken pipe is fine.
    let writer = thread::spawn(move || {
        let _ = input.write_all(stdin.as_bytes());
    });
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    let output = match finished.recv_timeout(TIMEOUT) {
        Ok(output) => output.expect("waiting for the fake agent"),
        Err(_) => {
            sigkill(pid);
            panic!("the fake agent did not exit within {TIMEOUT:?}");
        }
    };
    let _ = writer.join();
    Finished {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[test]
fn plain_turns_get_init_assistant_result_and_exit_zero() {
    let started = Instant::now();
    let finished = run(
        &["--session-id", "11111111-2222-4333-8444-555555555555"],
        &(user_line("hi") + &user_line("again")),
    );
    assert!(
        finished.status.success(),
        "{:?} {}",
        finished.status,
        finished.stderr
    );
    assert_eq!(
        finished.types(),
        [
            "system",
            "assistant",
            "result",
            "system",
            "assistant",
            "result"
        ]
    );
    let lines = finished.json_lines();
    assert!(
        lines
            .iter()
            .all(|line| line["session_id"] == "11111111-2222-4333-8444-555555555555")
    );
    let result = &lines[2];
    assert_eq!(result["subtype"], "success");
    assert_eq!(result["is_error"], false);
    assert_eq!(result["num_turns"], 1);
    assert_eq!(result["total_cost_usd"], 0.0001);
    assert!(result["duration_ms"].is_u64());
    assert!(result["usage"]["output_tokens"].as_u64() > Some(0));
    assert_eq!(lines[0]["model"], "claude-test");
    assert_eq!(lines[0]["permissionMode"], "acceptEdits");
    assert!(started.elapsed() < TIMEOUT);
}

#[test]
fn resume_keeps_the_session_id() {
    let finished = run(&["--resume", "resumed-id"], &user_line("continue"));
    assert!(
        finished
            .json_lines()
            .iter()
            .all(|line| line["session_id"] == "resumed-id")
    );
}

#[test]
fn garbage_mixes_non_json_and_unknown_lines_into_stdout() {
    let finished = run(&[], &user_line("fake:garbage"));
    assert!(finished.status.success());
    let non_json = finished
        .stdout
        .lines()
        .filter(|line| serde_json::from_str::<Value>(line).is_err())
        .count();
    assert_eq!(non_json, 2, "{}", finished.stdout);
    assert_eq!(
        finished.types(),
        ["system", "assistant", "paddock_fake_unknown", "result"]
    );
}

#[test]
fn exit_stops_after_init_with_the_code_and_no_result() {
    let finished = run(&[], &(user_line("fake:exit=42") + &user_line("unread")));
    assert_eq!(finished.status.code(), Some(42));
    assert_eq!(finished.types(), ["system"]);
}

#[test]
fn error_gives_an_error_result_and_exit_one() {
    let finished = run(&[], &user_line("fake:error"));
    assert_eq!(finished.status.code(), Some(1));
    let result = finished.json_lines().pop().unwrap_or_default();
    assert_eq!(result["type"], "result");
    assert_eq!(result["is_error"], true);
}

#[test]
fn stderr_writes_lines_to_stderr_only() {
    let finished = run(&[], &user_line("fake:stderr"));
    assert!(finished.status.success());
    assert_eq!(finished.stderr.lines().count(), 3, "{}", finished.stderr);
    assert_eq!(finished.types(), ["system", "assistant", "result"]);
}

#[test]
fn bytes_makes_a_long_assistant_text() {
    let finished = run(&[], &user_line("fake:bytes=2000000"));
    assert!(finished.status.success());
    let lines = finished.json_lines();
    let text = lines[1]["message"]["content"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(text.len(), 2_000_000);
}

#[test]
fn sleep_waits_before_the_result_and_dies_at_once_on_sigterm() {
    let mut child = spawn(CLI_FLAGS);
    let pid = child.id();
    let mut stdin = child.stdin.take().expect("a stdin pipe");
    stdin
        .write_all(user_line("fake:sleep=60000").as_bytes())
        .expect("writing the prompt");
    let stdout = child.stdout.take().expect("a stdout pipe");
    let (line_sender, lines) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line_sender.send(line).is_err() {
                break;
            }
        }
    });
    // The assistant line comes before the sleep: once it is here, the fake is asleep.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains("\"type\":\"assistant\"") => break,
            Ok(line) => assert!(
                !line.contains("\"type\":\"result\""),
                "a result before the sleep"
            ),
            Err(_) => {
                sigkill(pid);
                panic!("no assistant line within {TIMEOUT:?}");
            }
        }
    }
    let signalled = Instant::now();
    kill(
        Pid::from_raw(i32::try_from(pid).expect("a pid fits i32")),
        Signal::SIGTERM,
    )
    .expect("sending SIGTERM");
    let (done, exited) = mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(child.wait());
    });
    let status = match exited.recv_timeout(Duration::from_secs(2)) {
        Ok(status) => status.expect("waiting for the fake agent"),
        Err(_) => {
            sigkill(pid);
            panic!("the fake agent outlived SIGTERM by 2 s");
        }
    };
    assert!(signalled.elapsed() < Duration::from_secs(2));
    assert!(!status.success());
    let rest: Vec<String> = lines.try_iter().collect();
    assert!(
        rest.iter()
            .all(|line| !line.contains("\"type\":\"result\"")),
        "{rest:?}"
    );
    drop(stdin);
}

#[test]
fn a_one_shot_prompt_argument_runs_one_turn() {
    let finished = run_with_args(
        &[
            "-p",
            "say hi",
            "--output-format",
            "stream-json",
            "--verbose",
        ],
        "",
    );
    assert!(finished.status.success());
    assert_eq!(finished.types(), ["system", "assistant", "result"]);
}
