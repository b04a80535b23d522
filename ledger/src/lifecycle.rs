//! How one event changes a job's ledger row: the lifecycle rules, as a pure function
//! on a [`JobRow`] in memory, so every rule is tested without a database. The SQL side
//! (`lib.rs`) only reads the row, calls [`apply_event`] and writes the row back if it
//! changed.
//!
//! What must stay true:
//! - an event is applied only if its sequence is above the row's `last_seq`, so a
//!   replayed or older event changes nothing;
//! - a terminal status (completed, failed, cancelled) is final: later events only move
//!   `last_seq` on;
//! - `started_at_ms` is the first start, and every retry's reason is kept.

use crate::job_row::JobRow;
use paddock_contract::{EventBody, JobEvent, JobStatus, RunSummary};

/// Applies `event` to `row`. Returns false, leaving the row untouched, when the event
/// is not newer than what the row already has.
pub(crate) fn apply_event(row: &mut JobRow, event: &JobEvent) -> bool {
    if event.seq <= row.last_seq {
        return false;
    }
    row.last_seq = event.seq;
    row.updated_at_ms = row.updated_at_ms.max(event.at_ms);
    if row.status.is_terminal() {
        return true;
    }
    if event.is_terminal() {
        row.session_state = None;
    }
    if row.node.is_none() {
        row.node.clone_from(&event.node);
    }
    match &event.body {
        EventBody::Queued {
            project,
            prompt,
            pool,
            submitted_by,
            ..
        } => {
            row.project.clone_from(project);
            row.prompt.clone_from(prompt);
            row.pool = Some(pool.clone());
            row.submitted_by.clone_from(submitted_by);
            // A row recorded at submission keeps its (earlier) submission time; a row
            // made from a later event learns the real one.
            row.created_at_ms = row.created_at_ms.min(event.at_ms);
        }
        EventBody::Started { node, attempt } => {
            row.status = JobStatus::Running;
            row.node = Some(node.clone());
            row.attempts = *attempt;
            row.started_at_ms.get_or_insert(event.at_ms);
        }
        EventBody::Retrying { attempt, reason } => {
            row.status = JobStatus::Running;
            row.attempts = *attempt;
            row.attempt_reasons.push(reason.clone());
        }
        EventBody::SessionInit { session_id, .. } => {
            row.session_id = Some(session_id.clone());
        }
        EventBody::Restarting { reason, .. } => {
            row.attempt_reasons.push(reason.clone());
        }
        EventBody::SessionState { state } => {
            row.session_state = Some(state.as_str().to_string());
        }
        EventBody::TurnCompleted { summary } => {
            take_summary(row, summary);
        }
        EventBody::Completed { summary } => {
            finish(row, event, JobStatus::Completed, "completed".into(), None);
            take_summary(row, summary);
        }
        EventBody::Failed {
            reason,
            message,
            summary,
        } => {
            finish(
                row,
                event,
                JobStatus::Failed,
                reason.clone(),
                Some(message.clone()),
            );
            if let Some(summary) = summary {
                take_summary(row, summary);
            }
        }
        EventBody::Cancelled { by, summary } => {
            finish(
                row,
                event,
                JobStatus::Cancelled,
                "cancelled".into(),
                Some(format!("cancelled by {by}")),
            );
            if let Some(summary) = summary {
                take_summary(row, summary);
            }
        }
        // The reason a queued job waits is in its event log; the row stays queued.
        EventBody::Waiting { .. }
        | EventBody::AssistantText { .. }
        | EventBody::ToolCall { .. }
        | EventBody::ToolResult { .. }
        | EventBody::ToolDenied { .. }
        | EventBody::CliOutput { .. }
        | EventBody::CliGarbage { .. }
        | EventBody::CliStderr { .. }
        | EventBody::UserMessage { .. }
        | EventBody::TurnRetrying { .. }
        | EventBody::Interrupted { .. }
        | EventBody::ApprovalRequested { .. }
        | EventBody::ApprovalResolved { .. }
        | EventBody::SandboxNotice { .. } => {}
    }
    true
}

fn finish(
    row: &mut JobRow,
    event: &JobEvent,
    status: JobStatus,
    exit_reason: String,
    exit_message: Option<String>,
) {
    row.status = status;
    row.finished_at_ms = Some(event.at_ms);
    row.exit_reason = Some(exit_reason);
    row.exit_message = exit_message;
}

/// What the CLI reported wins over what the ledger had, field by field; a field the
/// summary leaves out keeps its value (the session id from `session.init`, say).
fn take_summary(row: &mut JobRow, summary: &RunSummary) {
    if summary.session_id.is_some() {
        row.session_id.clone_from(&summary.session_id);
    }
    if summary.num_turns.is_some() {
        row.num_turns = summary.num_turns;
    }
    if summary.total_cost_usd.is_some() {
        row.cost_usd = summary.total_cost_usd;
    }
    if summary.input_tokens.is_some() {
        row.input_tokens = summary.input_tokens;
    }
    if summary.output_tokens.is_some() {
        row.output_tokens = summary.output_tokens;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use paddock_contract::JobId;
    use paddock_contract::event::failure;

    fn event(job: JobId, seq: u64, at_ms: i64, body: EventBody) -> JobEvent {
        JobEvent {
            version: paddock_contract::CONTRACT_VERSION,
            job_id: job,
            seq,
            at_ms,
            node: None,
            attempt: 0,
            body,
            raw: None,
        }
    }

    fn queued(job: JobId) -> JobEvent {
        event(
            job,
            1,
            100,
            EventBody::Queued {
                project: "site".into(),
                prompt: "fix the build".into(),
                pool: "default".into(),
                submitted_by: "ada".into(),
                resumes: None,
                options: Default::default(),
            },
        )
    }

    fn fresh() -> JobRow {
        JobRow::minimal(JobId::new(), 100)
    }

    #[test]
    fn queued_fills_a_minimal_row() {
        let mut row = JobRow::minimal(JobId::new(), 150);
        let job = row.id;
        assert!(apply_event(&mut row, &queued(job)));
        assert_eq!(row.project, "site");
        assert_eq!(row.prompt, "fix the build");
        assert_eq!(row.submitted_by, "ada");
        assert_eq!(row.pool.as_deref(), Some("default"));
        assert_eq!(row.status, JobStatus::Queued);
        assert_eq!(row.created_at_ms, 100);
        assert_eq!(row.last_seq, 1);
    }

    #[test]
    fn a_waiting_job_stays_queued_until_it_starts() {
        let mut row = fresh();
        let job = row.id;
        apply_event(&mut row, &queued(job));
        let waiting = event(
            job,
            2,
            150,
            EventBody::Waiting {
                reason: "no live node matches pool=default, xcode=17".into(),
            },
        );
        assert!(apply_event(&mut row, &waiting));
        assert_eq!(row.status, JobStatus::Queued);
        assert_eq!(row.node, None);
        assert_eq!(row.last_seq, 2);
        let started = event(
            job,
            3,
            900,
            EventBody::Started {
                node: "mac-17".into(),
                attempt: 1,
            },
        );
        assert!(apply_event(&mut row, &started));
        assert_eq!(row.status, JobStatus::Running);
        assert_eq!(row.node.as_deref(), Some("mac-17"));
    }

    #[test]
    fn an_event_not_newer_than_the_row_changes_nothing() {
        let mut row = fresh();
        let job = row.id;
        apply_event(&mut row, &queued(job));
        let started = event(
            job,
            2,
            200,
            EventBody::Started {
                node: "mini-1".into(),
                attempt: 1,
            },
        );
        assert!(apply_event(&mut row, &started));
        let before = row.clone();
        assert!(!apply_event(&mut row, &started));
        assert!(!apply_event(&mut row, &queued(job)));
        assert_eq!(row, before);
    }

    #[test]
    fn started_keeps_the_first_start_time_and_counts_attempts() {
        let mut row = fresh();
        let job = row.id;
        let first = event(
            job,
            2,
            200,
            EventBody::Started {
                node: "mini-1".into(),
                attempt: 1,
            },
        );
        let retry = event(
            job,
            3,
            300,
            EventBody::Retrying {
                attempt: 2,
                reason: "node lost".into(),
            },
        );
        let second = event(
            job,
            4,
            400,
            EventBody::Started {
                node: "mini-2".into(),
                attempt: 2,
            },
        );
        for e in [&first, &retry, &second] {
            assert!(apply_event(&mut row, e));
        }
        assert_eq!(row.status, JobStatus::Running);
        assert_eq!(row.started_at_ms, Some(200));
        assert_eq!(row.attempts, 2);
        assert_eq!(row.node.as_deref(), Some("mini-2"));
        assert_eq!(row.attempt_reasons, vec!["node lost".to_string()]);
    }

    #[test]
    fn every_retry_reason_is_kept_in_order() {
        let mut row = fresh();
        let job = row.id;
        for (seq, reason) in [(2, "a"), (3, "b"), (4, "c")] {
            let e = event(
                job,
                seq,
                0,
                EventBody::Retrying {
                    attempt: seq as u32,
                    reason: reason.into(),
                },
            );
            apply_event(&mut row, &e);
        }
        assert_eq!(row.attempt_reasons, ["a", "b", "c"]);
        assert_eq!(row.attempts, 4);
    }

    #[test]
    fn completed_takes_the_summary_and_keeps_the_session_it_already_had() {
        let mut row = fresh();
        let job = row.id;
        let init = event(
            job,
            2,
            200,
            EventBody::SessionInit {
                session_id: "sess-1".into(),
                model: None,
                cwd: None,
                tools: vec![],
            },
        );
        apply_event(&mut row, &init);
        let summary = RunSummary {
            num_turns: Some(3),
            total_cost_usd: Some(0.25),
            input_tokens: Some(1000),
            output_tokens: Some(200),
            ..RunSummary::default()
        };
        apply_event(
            &mut row,
            &event(job, 3, 900, EventBody::Completed { summary }),
        );
        assert_eq!(row.status, JobStatus::Completed);
        assert_eq!(row.finished_at_ms, Some(900));
        assert_eq!(row.exit_reason.as_deref(), Some("completed"));
        assert_eq!(row.session_id.as_deref(), Some("sess-1"));
        assert_eq!(row.num_turns, Some(3));
        assert_eq!(row.cost_usd, Some(0.25));
        assert_eq!(row.input_tokens, Some(1000));
        assert_eq!(row.output_tokens, Some(200));
    }

    #[test]
    fn failed_and_cancelled_record_why() {
        let mut failed = fresh();
        let e = event(
            failed.id,
            2,
            500,
            EventBody::Failed {
                reason: failure::TIMEOUT.into(),
                message: "ran for 30m".into(),
                summary: None,
            },
        );
        apply_event(&mut failed, &e);
        assert_eq!(failed.status, JobStatus::Failed);
        assert_eq!(failed.exit_reason.as_deref(), Some(failure::TIMEOUT));
        assert_eq!(failed.exit_message.as_deref(), Some("ran for 30m"));

        let mut cancelled = fresh();
        let e = event(
            cancelled.id,
            2,
            500,
            EventBody::Cancelled {
                by: "grace".into(),
                summary: Some(RunSummary {
                    session_id: Some("s".into()),
                    ..RunSummary::default()
                }),
            },
        );
        apply_event(&mut cancelled, &e);
        assert_eq!(cancelled.status, JobStatus::Cancelled);
        assert_eq!(cancelled.exit_reason.as_deref(), Some("cancelled"));
        assert!(
            cancelled
                .exit_message
                .as_deref()
                .is_some_and(|m| m.contains("grace"))
        );
        assert_eq!(cancelled.session_id.as_deref(), Some("s"));
    }

    #[test]
    fn a_terminal_status_is_final() {
        let mut row = fresh();
        let job = row.id;
        apply_event(
            &mut row,
            &event(
                job,
                2,
                500,
                EventBody::Completed {
                    summary: RunSummary::default(),
                },
            ),
        );
        let late = event(
            job,
            3,
            600,
            EventBody::Started {
                node: "mini-9".into(),
                attempt: 5,
            },
        );
        assert!(apply_event(&mut row, &late));
        assert_eq!(row.status, JobStatus::Completed);
        assert_eq!(row.attempts, 0);
        assert_eq!(row.node, None);
        assert_eq!(row.last_seq, 3);
    }

    #[test]
    fn other_kinds_only_move_the_sequence_on() {
        let mut row = fresh();
        let job = row.id;
        let before = row.clone();
        let text = event(job, 5, 100, EventBody::AssistantText { text: "hi".into() });
        assert!(apply_event(&mut row, &text));
        assert_eq!(
            JobRow {
                last_seq: before.last_seq,
                ..row.clone()
            },
            before
        );
        assert_eq!(row.last_seq, 5);
    }
}
