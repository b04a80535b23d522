//! Live sessions under supervision, end to end with real processes and (where the
//! model matters) the real CLI against the Messages API double: follow-ups, approvals,
//! interrupts, the CLI killed mid-turn, an actor panic, resuming an ended session.

use paddock_contract::{ApprovalMode, EventBody, JobEvent, JobOptions, JobStatus};
use paddock_tests::{Agent, Cluster, ClusterOptions, Follower, child_processes, kinds};
use serde_json::json;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn real_cli(script: serde_json::Value) -> ClusterOptions {
    ClusterOptions {
        agent: Agent::RealCli { script },
        ..Default::default()
    }
}

fn is(kind: &'static str) -> impl Fn(&JobEvent) -> bool {
    move |e| e.kind() == kind
}

fn session_ids(events: &[JobEvent]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::SessionInit { session_id, .. } => Some(session_id.clone()),
            _ => None,
        })
        .collect()
}

fn assert_contiguous(events: &[JobEvent]) {
    for (i, event) in events.iter().enumerate() {
        assert_eq!(
            event.seq,
            i as u64 + 1,
            "lost or repeated events: {:?}",
            kinds(events)
        );
    }
}

#[tokio::test]
async fn a_three_turn_conversation_stays_in_one_session() {
    let cluster = Cluster::start(real_cli(json!({"conversations": [{
        "match": "count with me",
        "steps": [
            {"content": [{"type": "text", "text": "one"}]},
            {"content": [{"type": "text", "text": "two"}]},
            {"content": [{"type": "text", "text": "three"}]}
        ]
    }]})))
    .await;
    let job = cluster
        .submit(
            "count with me",
            JobOptions {
                idle_timeout_secs: Some(3),
                ..Default::default()
            },
        )
        .await;
    let mut follower = Follower::start(&cluster.client, job).await;
    for (turn, word) in ["one", "two"].iter().enumerate() {
        follower
            .until(&format!("turn {turn}"), LONG, is("turn.completed"))
            .await;
        assert!(
            follower
                .seen
                .iter()
                .any(|e| matches!(&e.body, EventBody::AssistantText { text } if text == word))
        );
        let accepted = cluster.client.say(job, "and the next?").await.expect("say");
        assert_eq!(accepted.job_id, job);
        assert!(!accepted.resumed);
    }
    // The third turn, then the idle timeout ends the session.
    let end = follower.to_end(LONG).await;
    assert!(
        matches!(end.body, EventBody::Completed { .. }),
        "{:?}",
        kinds(&follower.seen)
    );
    assert!(
        follower
            .seen
            .iter()
            .any(|e| matches!(&e.body, EventBody::AssistantText { text } if text == "three"))
    );
    let ids = session_ids(&follower.seen);
    assert!(!ids.is_empty());
    assert!(ids.iter().all(|id| id == &ids[0]), "one session: {ids:?}");
    assert_eq!(
        follower
            .seen
            .iter()
            .filter(|e| e.kind() == "user.message")
            .count(),
        2
    );
    assert_contiguous(&follower.seen);
    let view = cluster.ledger_final(job).await;
    assert_eq!(view.status, JobStatus::Completed);
    assert_eq!(view.session_id.as_deref(), Some(ids[0].as_str()));
}

#[tokio::test]
async fn approvals_from_a_person_decide_what_runs_in_the_workspace() {
    let cluster = Cluster::start(real_cli(json!({"conversations": [{
        "match": "two commands",
        "steps": [
            {"content": [{"type": "tool_use", "name": "Bash", "input": {"command": "echo yes > allowed.txt", "description": "first"}}]},
            {"content": [{"type": "tool_use", "name": "Bash", "input": {"command": "echo no > denied.txt", "description": "second"}}]},
            {"content": [{"type": "text", "text": "done"}]}
        ]
    }]})))
    .await;
    let job = cluster
        .submit(
            "run two commands",
            JobOptions {
                approval: ApprovalMode::Ask,
                ..Default::default()
            },
        )
        .await;
    let mut follower = Follower::start(&cluster.client, job).await;
    let first = follower
        .until("the first approval request", LONG, is("approval.requested"))
        .await;
    let EventBody::ApprovalRequested {
        request_id,
        tool_name,
        input,
        deadline_ms,
    } = first.body
    else {
        unreachable!()
    };
    assert_eq!(tool_name, "Bash");
    assert_eq!(input["command"], "echo yes > allowed.txt");
    assert!(deadline_ms > paddock_contract::now_unix_ms());
    follower.until("the waiting state", LONG, |e| {
        matches!(&e.body, EventBody::SessionState { state } if state.as_str() == "waiting_approval")
    }).await;
    paddock_testkit::eventually(
        Duration::from_secs(10),
        "the ledger to show the wait",
        || async {
            let view = cluster.client.job(job).await.ok()?;
            (view.session_state.as_deref() == Some("waiting_approval")).then_some(())
        },
    )
    .await;
    cluster
        .client
        .approve(job, &request_id, true, None)
        .await
        .expect("allow");

    let second = follower
        .until(
            "the second approval request",
            LONG,
            is("approval.requested"),
        )
        .await;
    let EventBody::ApprovalRequested { request_id, .. } = second.body else {
        unreachable!()
    };
    cluster
        .client
        .approve(job, &request_id, false, Some("not that one".into()))
        .await
        .expect("deny");
    let end = follower.to_end(LONG).await;
    assert!(
        matches!(end.body, EventBody::Completed { .. }),
        "{:?}",
        kinds(&follower.seen)
    );
    let resolved: Vec<(bool, String)> = follower
        .seen
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::ApprovalResolved { allowed, by, .. } => Some((*allowed, by.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        resolved,
        vec![(true, "alice".into()), (false, "alice".into())]
    );
    assert!(
        cluster.project_dir.join("allowed.txt").exists(),
        "the allowed command ran"
    );
    assert!(
        !cluster.project_dir.join("denied.txt").exists(),
        "the denied command did not"
    );
    // Bob cannot answer Alice's approvals.
    let bob =
        paddock_cli::client::Client::new(&cluster.url, "bob-token-0123456789").expect("client");
    assert!(bob.approve(job, "x", true, None).await.is_err());
}

#[tokio::test]
async fn an_unanswered_approval_is_denied_at_its_deadline_and_the_session_goes_on() {
    let cluster = Cluster::start(real_cli(json!({"conversations": [{
        "match": "nobody answers",
        "steps": [
            {"content": [{"type": "tool_use", "name": "Bash", "input": {"command": "echo late > late.txt", "description": "late"}}]},
            {"content": [{"type": "text", "text": "fine, I will not"}]}
        ]
    }]})))
    .await;
    let job = cluster
        .submit(
            "nobody answers",
            JobOptions {
                approval: ApprovalMode::Ask,
                approval_timeout_secs: Some(1),
                ..Default::default()
            },
        )
        .await;
    let mut follower = Follower::start(&cluster.client, job).await;
    let resolved = follower
        .until("the timeout", LONG, is("approval.resolved"))
        .await;
    assert!(
        matches!(&resolved.body, EventBody::ApprovalResolved { allowed: false, by, .. } if by == "timeout"),
        "{resolved:?}"
    );
    let end = follower.to_end(LONG).await;
    assert!(
        matches!(end.body, EventBody::Completed { .. }),
        "{:?}",
        kinds(&follower.seen)
    );
    assert!(!cluster.project_dir.join("late.txt").exists());
}

#[tokio::test]
async fn an_interrupted_turn_leaves_the_session_open_for_a_new_message() {
    let slow_text = "word ".repeat(200);
    let cluster = Cluster::start(real_cli(json!({"conversations": [{
        "match": "talk slowly",
        "steps": [
            {"chunk_delay_ms": 50, "chunk_bytes": 8, "content": [{"type": "text", "text": slow_text}]},
            {"content": [{"type": "text", "text": "after the interrupt"}]},
            {"content": [{"type": "text", "text": "after the interrupt"}]}
        ]
    }], "fallback": {"content": [{"type": "text", "text": "after the interrupt"}]}})))
    .await;
    let job = cluster.submit("talk slowly", JobOptions::default()).await;
    let mut follower = Follower::start(&cluster.client, job).await;
    follower
        .until("the turn to run", LONG, is("session.init"))
        .await;
    cluster.client.interrupt(job).await.expect("interrupt");
    follower
        .until("the interrupt", LONG, is("turn.interrupted"))
        .await;
    follower
        .until("the interrupted turn to end", LONG, is("turn.completed"))
        .await;
    let accepted = cluster
        .client
        .say(job, "say something else")
        .await
        .expect("say");
    assert_eq!(accepted.job_id, job, "the same session takes the message");
    follower.until("the new message's answer", LONG, |e| {
        matches!(&e.body, EventBody::AssistantText { text } if text.contains("after the interrupt") || text.contains("word"))
    }).await;
    follower
        .until("the new turn to end", LONG, is("turn.completed"))
        .await;
    cluster.client.cancel(job).await.expect("cancel");
    follower.to_end(LONG).await;
    let ids = session_ids(&follower.seen);
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
}

#[tokio::test]
async fn a_cli_killed_mid_turn_is_resumed_with_the_same_session() {
    let slow_text = "step ".repeat(100);
    let cluster = Cluster::start(real_cli(json!({"conversations": [{
        "match": "survive a crash",
        "steps": [
            {"chunk_delay_ms": 30, "chunk_bytes": 8, "content": [{"type": "text", "text": slow_text}]}
        ]
    }]})))
    .await;
    let job = cluster
        .submit("survive a crash", JobOptions::default())
        .await;
    let mut follower = Follower::start(&cluster.client, job).await;
    follower
        .until("the session to start", LONG, is("session.init"))
        .await;
    let node_pid = cluster.node.pid().expect("node pid");
    let cli = paddock_testkit::eventually(Duration::from_secs(10), "the CLI process", || async {
        child_processes(node_pid, "claude").into_iter().next()
    })
    .await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(cli as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the CLI");
    let restarting = follower
        .until("the restart", LONG, is("job.restarting"))
        .await;
    assert!(
        matches!(&restarting.body, EventBody::Restarting { restart: 1, reason, .. } if reason.contains("signal 9")),
        "{restarting:?}"
    );
    let end = follower.to_end(LONG).await;
    assert!(
        matches!(end.body, EventBody::Completed { .. }),
        "{:#?}",
        follower.seen
    );
    let ids = session_ids(&follower.seen);
    assert!(
        ids.len() >= 2,
        "a session.init before and after the restart: {ids:?}"
    );
    assert!(
        ids.iter().all(|id| id == &ids[0]),
        "the same session id: {ids:?}"
    );
    assert_contiguous(&follower.seen);
    // The client's view and the stored log agree: nothing lost, nothing repeated.
    let stored = cluster.client.events(job).await.expect("events");
    assert_eq!(stored, follower.seen);
    let view = cluster.ledger_final(job).await;
    assert_eq!(view.attempt_reasons.len(), 1, "{view:?}");
}

#[tokio::test]
async fn a_panicking_session_actor_is_restarted_and_other_jobs_are_untouched() {
    let cluster = Cluster::start(ClusterOptions::default()).await;
    let steady = cluster
        .submit("steady fake:sleep=2000", JobOptions::default())
        .await;
    let job = cluster
        .submit(
            "hello",
            JobOptions {
                idle_timeout_secs: Some(30),
                ..Default::default()
            },
        )
        .await;
    let mut follower = Follower::start(&cluster.client, job).await;
    follower
        .until("the first turn", LONG, is("turn.completed"))
        .await;
    // The node has fault injection on: this message makes the session actor panic.
    let _ = cluster.client.say(job, "paddock-fault:panic").await;
    let restarting = follower
        .until("the supervisor's restart", LONG, is("job.restarting"))
        .await;
    assert!(
        matches!(&restarting.body, EventBody::Restarting { reason, .. } if reason.contains("panic") || reason.contains("crashed")),
        "{restarting:?}"
    );
    follower
        .until(
            "the restarted session to wait",
            LONG,
            |e| matches!(&e.body, EventBody::SessionState { state } if state.as_str() == "idle"),
        )
        .await;
    cluster
        .client
        .say(job, "still there?")
        .await
        .expect("say after restart");
    follower
        .until("the next turn", LONG, is("turn.completed"))
        .await;
    cluster.client.cancel(job).await.expect("cancel");
    follower.to_end(LONG).await;
    // The other job ran to its end unharmed.
    let other = cluster.follow_to_end(steady, 0, LONG).await;
    assert!(matches!(
        other.last().map(|e| &e.body),
        Some(EventBody::Completed { .. })
    ));
    assert!(cluster.node.output().contains("session crashed"));
}

#[tokio::test]
async fn a_follow_up_after_the_end_resumes_the_session_in_a_new_job_on_its_node() {
    let mut cluster = Cluster::start(ClusterOptions::default()).await;
    let first = cluster.submit("hello", JobOptions::default()).await;
    let events = cluster.follow_to_end(first, 0, LONG).await;
    let original = session_ids(&events);
    cluster.ledger_final(first).await;

    let accepted = cluster
        .client
        .say(first, "one more thing")
        .await
        .expect("say");
    assert!(accepted.resumed);
    assert_ne!(accepted.job_id, first);
    let resumed = cluster.follow_to_end(accepted.job_id, 0, LONG).await;
    assert!(matches!(
        &resumed[0].body,
        EventBody::Queued { resumes: Some(parent), prompt, .. } if *parent == first && prompt == "one more thing"
    ));
    assert!(matches!(
        resumed.last().map(|e| &e.body),
        Some(EventBody::Completed { .. })
    ));
    assert_eq!(
        session_ids(&resumed),
        original,
        "the same session continues"
    );
    assert!(
        resumed
            .iter()
            .all(|e| e.node.as_deref().is_none_or(|n| n == "node-a"))
    );

    // With the node gone, the session cannot be resumed: a clear error.
    cluster.ledger_final(accepted.job_id).await;
    cluster.node.kill();
    let error = cluster
        .client
        .say(accepted.job_id, "anyone?")
        .await
        .expect_err("node gone");
    assert!(format!("{error:#}").contains("node_gone"), "{error:#}");
}

#[tokio::test]
async fn a_model_overload_is_retried_by_policy_and_the_turn_completes() {
    // The CLI retries once itself (CLAUDE_CODE_MAX_RETRIES=1 in the harness), so the
    // first two requests fail and the CLI reports an API error; the node then sends
    // the turn again and the third request succeeds.
    let cluster = Cluster::start(real_cli(json!({"conversations": [{
        "match": "busy model",
        "steps": [
            {"error": {"status": 529, "fail_times": 2, "retry_after_seconds": 0},
             "content": [{"type": "text", "text": "finally"}]}
        ]
    }]})))
    .await;
    let job = cluster.submit("busy model", JobOptions::default()).await;
    let events = cluster.follow_to_end(job, 0, LONG).await;
    let seen = kinds(&events);
    assert!(seen.contains(&"turn.retrying"), "{seen:?}");
    assert!(
        matches!(events[events.len() - 1].body, EventBody::Completed { .. }),
        "{seen:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(&e.body, EventBody::AssistantText { text } if text == "finally"))
    );
}
