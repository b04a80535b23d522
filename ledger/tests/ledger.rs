//! The ledger against real databases: every behaviour below runs once on a SQLite file
//! in a temporary folder and once on a fresh PostgreSQL database (testkit), with the
//! same test body, since the ledger promises the same behaviour on both.

use anyhow::Context;
use paddock_contract::api::JobView;
use paddock_contract::{EventBody, JobEvent, JobId, JobSpec, JobStatus, RunSummary};
use paddock_ledger::{JobQuery, Ledger};

/// The ledger under test, migrated.
async fn open(url: &str) -> anyhow::Result<paddock_ledger::Ledger> {
    Ok(paddock_ledger::Ledger::connect(url).await?)
}

paddock_testkit::on_sqlite_and_postgres!(
    open = open;
    usage_counts_active_jobs_submissions_and_cost_per_user,
    a_job_moves_through_its_lifecycle,
    an_event_applied_twice_or_after_a_newer_one_changes_nothing,
    a_terminal_status_is_never_overwritten,
    an_event_for_an_unknown_job_creates_a_minimal_row,
    recording_a_submission_is_idempotent_and_keeps_progress,
    a_failed_job_keeps_its_reason_and_message,
    a_cancelled_job_names_who_cancelled_it,
    list_pages_newest_first,
    list_filters_by_status_submitter_and_project,
    list_clamps_the_page_size,
    an_unknown_job_is_none,
    concurrent_writers_never_lose_or_repeat_an_update,
    ping_answers,
);

fn spec(project: &str, submitted_by: &str) -> JobSpec {
    JobSpec {
        version: paddock_contract::CONTRACT_VERSION,
        id: JobId::new(),
        project: project.into(),
        prompt: format!("work on {project}"),
        options: Default::default(),
        pool: "default".into(),
        submitted_by: submitted_by.into(),
        submitted_at_ms: 1_000,
        resume: None,
        limits: Default::default(),
    }
}

fn event(job: JobId, seq: u64, body: EventBody) -> JobEvent {
    JobEvent {
        version: paddock_contract::CONTRACT_VERSION,
        job_id: job,
        seq,
        at_ms: 1_000 + seq as i64 * 100,
        node: None,
        attempt: 0,
        body,
        raw: None,
    }
}

fn queued(spec: &JobSpec) -> JobEvent {
    event(
        spec.id,
        1,
        EventBody::Queued {
            project: spec.project.clone(),
            prompt: spec.prompt.clone(),
            pool: spec.pool.clone(),
            submitted_by: spec.submitted_by.clone(),
            resumes: None,
            options: Default::default(),
        },
    )
}

fn started(job: JobId, seq: u64, node: &str, attempt: u32) -> JobEvent {
    event(
        job,
        seq,
        EventBody::Started {
            node: node.into(),
            attempt,
        },
    )
}

fn completed(job: JobId, seq: u64) -> JobEvent {
    event(
        job,
        seq,
        EventBody::Completed {
            summary: RunSummary {
                session_id: Some("session-final".into()),
                num_turns: Some(4),
                total_cost_usd: Some(0.125),
                input_tokens: Some(1200),
                output_tokens: Some(340),
                ..RunSummary::default()
            },
        },
    )
}

async fn view(ledger: &Ledger, job: JobId) -> anyhow::Result<JobView> {
    ledger.get(job).await?.context("the job has no row")
}

async fn a_job_moves_through_its_lifecycle(ledger: Ledger) -> anyhow::Result<()> {
    let spec = spec("site", "ada");
    ledger.record_submission(&spec).await?;
    let submitted = view(&ledger, spec.id).await?;
    assert_eq!(submitted.status, JobStatus::Queued);
    assert_eq!(submitted.last_seq, 0);
    assert_eq!(submitted.created_at_ms, 1_000);

    let job = spec.id;
    let events = [
        queued(&spec),
        started(job, 2, "mini-1", 1),
        event(
            job,
            3,
            EventBody::SessionInit {
                session_id: "session-1".into(),
                model: None,
                cwd: None,
                tools: vec![],
            },
        ),
        event(
            job,
            4,
            EventBody::Retrying {
                attempt: 2,
                reason: "node mini-1 lost".into(),
            },
        ),
        started(job, 5, "mini-2", 2),
        event(
            job,
            6,
            EventBody::AssistantText {
                text: "done".into(),
            },
        ),
        completed(job, 7),
    ];
    for e in &events {
        assert!(ledger.apply(e).await?, "event {} changed nothing", e.seq);
    }

    let done = view(&ledger, job).await?;
    assert_eq!(done.project, "site");
    assert_eq!(done.prompt, "work on site");
    assert_eq!(done.submitted_by, "ada");
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(done.node.as_deref(), Some("mini-2"));
    assert_eq!(done.attempts, 2);
    assert_eq!(done.created_at_ms, 1_000);
    assert_eq!(done.started_at_ms, Some(1_200), "the first start is kept");
    assert_eq!(done.finished_at_ms, Some(1_700));
    assert_eq!(done.exit_reason.as_deref(), Some("completed"));
    assert_eq!(done.exit_message, None);
    assert_eq!(done.session_id.as_deref(), Some("session-final"));
    assert_eq!(done.num_turns, Some(4));
    assert_eq!(done.cost_usd, Some(0.125));
    assert_eq!(done.input_tokens, Some(1200));
    assert_eq!(done.output_tokens, Some(340));
    assert_eq!(done.last_seq, 7);
    assert_eq!(
        ledger.attempt_reasons(job).await?,
        Some(vec!["node mini-1 lost".to_string()])
    );
    assert_eq!(ledger.last_seq(job).await?, Some(7));
    Ok(())
}

async fn an_event_applied_twice_or_after_a_newer_one_changes_nothing(
    ledger: Ledger,
) -> anyhow::Result<()> {
    let spec = spec("site", "ada");
    let retry = event(
        spec.id,
        3,
        EventBody::Retrying {
            attempt: 2,
            reason: "lost".into(),
        },
    );
    assert!(ledger.apply(&queued(&spec)).await?);
    assert!(ledger.apply(&started(spec.id, 2, "mini-1", 1)).await?);
    assert!(ledger.apply(&retry).await?);
    let before = view(&ledger, spec.id).await?;

    assert!(!ledger.apply(&retry).await?, "the same event again");
    assert!(
        !ledger.apply(&started(spec.id, 2, "mini-9", 9)).await?,
        "an older event"
    );
    assert!(!ledger.apply(&queued(&spec)).await?, "the first event");

    assert_eq!(view(&ledger, spec.id).await?, before);
    assert_eq!(
        ledger.attempt_reasons(spec.id).await?,
        Some(vec!["lost".to_string()]),
        "a replayed retry is not counted twice"
    );
    Ok(())
}

async fn a_terminal_status_is_never_overwritten(ledger: Ledger) -> anyhow::Result<()> {
    let spec = spec("site", "ada");
    ledger.apply(&queued(&spec)).await?;
    ledger.apply(&completed(spec.id, 2)).await?;
    assert!(ledger.apply(&started(spec.id, 3, "mini-3", 3)).await?);
    let after = view(&ledger, spec.id).await?;
    assert_eq!(after.status, JobStatus::Completed);
    assert_eq!(after.node, None);
    assert_eq!(after.attempts, 0);
    assert_eq!(after.last_seq, 3);
    Ok(())
}

async fn an_event_for_an_unknown_job_creates_a_minimal_row(ledger: Ledger) -> anyhow::Result<()> {
    let job = JobId::new();
    assert!(ledger.apply(&started(job, 4, "mini-1", 1)).await?);
    let row = view(&ledger, job).await?;
    assert_eq!(row.status, JobStatus::Running);
    assert_eq!(row.node.as_deref(), Some("mini-1"));
    assert_eq!(row.project, "");
    assert_eq!(row.created_at_ms, 1_400);
    assert_eq!(row.started_at_ms, Some(1_400));
    assert_eq!(row.last_seq, 4);
    Ok(())
}

async fn recording_a_submission_is_idempotent_and_keeps_progress(
    ledger: Ledger,
) -> anyhow::Result<()> {
    let spec = spec("site", "ada");
    ledger.record_submission(&spec).await?;
    ledger.record_submission(&spec).await?;
    ledger.apply(&queued(&spec)).await?;
    ledger.apply(&started(spec.id, 2, "mini-1", 1)).await?;
    ledger.record_submission(&spec).await?;
    let row = view(&ledger, spec.id).await?;
    assert_eq!(row.status, JobStatus::Running);
    assert_eq!(row.last_seq, 2);
    let page = ledger.list(&JobQuery::default()).await?;
    assert_eq!(page.jobs.len(), 1);
    Ok(())
}

async fn a_failed_job_keeps_its_reason_and_message(ledger: Ledger) -> anyhow::Result<()> {
    let spec = spec("site", "ada");
    ledger.apply(&queued(&spec)).await?;
    ledger.apply(&started(spec.id, 2, "mini-1", 1)).await?;
    let failed = event(
        spec.id,
        3,
        EventBody::Failed {
            reason: paddock_contract::event::failure::AGENT_EXITED.into(),
            message: "claude exited with status 1".into(),
            summary: Some(RunSummary {
                total_cost_usd: Some(0.5),
                ..RunSummary::default()
            }),
        },
    );
    ledger.apply(&failed).await?;
    let row = view(&ledger, spec.id).await?;
    assert_eq!(row.status, JobStatus::Failed);
    assert_eq!(row.exit_reason.as_deref(), Some("agent_exited"));
    assert_eq!(
        row.exit_message.as_deref(),
        Some("claude exited with status 1")
    );
    assert_eq!(row.cost_usd, Some(0.5));
    assert_eq!(row.finished_at_ms, Some(1_300));
    Ok(())
}

async fn a_cancelled_job_names_who_cancelled_it(ledger: Ledger) -> anyhow::Result<()> {
    let spec = spec("site", "ada");
    ledger.apply(&queued(&spec)).await?;
    let cancelled = event(
        spec.id,
        2,
        EventBody::Cancelled {
            by: "grace".into(),
            summary: None,
        },
    );
    ledger.apply(&cancelled).await?;
    let row = view(&ledger, spec.id).await?;
    assert_eq!(row.status, JobStatus::Cancelled);
    assert_eq!(row.exit_reason.as_deref(), Some("cancelled"));
    assert!(
        row.exit_message
            .as_deref()
            .is_some_and(|m| m.contains("grace")),
        "{:?}",
        row.exit_message
    );
    Ok(())
}

async fn list_pages_newest_first(ledger: Ledger) -> anyhow::Result<()> {
    let mut ids = Vec::new();
    for _ in 0..7 {
        let spec = spec("site", "ada");
        ledger.record_submission(&spec).await?;
        ids.push(spec.id);
    }
    ids.reverse();

    let mut seen = Vec::new();
    let mut query = JobQuery {
        limit: 3,
        ..JobQuery::default()
    };
    let mut pages = 0;
    loop {
        let page = ledger.list(&query).await?;
        pages += 1;
        assert!(page.jobs.len() <= 3);
        seen.extend(page.jobs.iter().map(|job| job.id));
        match page.next_before {
            Some(before) => {
                assert_eq!(Some(&before), seen.last());
                query.before = Some(before);
            }
            None => break,
        }
        assert!(pages < 10, "paging does not end");
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids, "every job once, newest first");

    let exact = ledger
        .list(&JobQuery {
            limit: 7,
            ..JobQuery::default()
        })
        .await?;
    assert_eq!(exact.jobs.len(), 7);
    assert_eq!(exact.next_before, None, "no further page when exactly full");
    Ok(())
}

async fn list_filters_by_status_submitter_and_project(ledger: Ledger) -> anyhow::Result<()> {
    let ada_site = spec("site", "ada");
    let ada_api = spec("api", "ada");
    let bob_site = spec("site", "bob");
    for s in [&ada_site, &ada_api, &bob_site] {
        ledger.apply(&queued(s)).await?;
    }
    ledger.apply(&started(ada_api.id, 2, "mini-1", 1)).await?;

    let ids = |page: paddock_contract::api::JobPage| -> Vec<JobId> {
        page.jobs.into_iter().map(|job| job.id).collect()
    };
    let by_ada = ledger
        .list(&JobQuery {
            submitted_by: Some("ada".into()),
            ..JobQuery::default()
        })
        .await?;
    assert_eq!(ids(by_ada), vec![ada_api.id, ada_site.id]);

    let site = ledger
        .list(&JobQuery {
            project: Some("site".into()),
            ..JobQuery::default()
        })
        .await?;
    assert_eq!(ids(site), vec![bob_site.id, ada_site.id]);

    let running = ledger
        .list(&JobQuery {
            status: Some(JobStatus::Running),
            ..JobQuery::default()
        })
        .await?;
    assert_eq!(ids(running), vec![ada_api.id]);

    let ada_queued_site = ledger
        .list(&JobQuery {
            status: Some(JobStatus::Queued),
            submitted_by: Some("ada".into()),
            project: Some("site".into()),
            before: Some(JobId::new()),
            limit: 10,
        })
        .await?;
    assert_eq!(ids(ada_queued_site), vec![ada_site.id]);

    let nobody = ledger
        .list(&JobQuery {
            submitted_by: Some("nobody".into()),
            ..JobQuery::default()
        })
        .await?;
    assert!(nobody.jobs.is_empty());
    assert_eq!(nobody.next_before, None);
    Ok(())
}

async fn list_clamps_the_page_size(ledger: Ledger) -> anyhow::Result<()> {
    for _ in 0..201 {
        ledger.record_submission(&spec("site", "ada")).await?;
    }
    let default = ledger.list(&JobQuery::default()).await?;
    assert_eq!(default.jobs.len(), 50, "0 means 50");
    assert!(default.next_before.is_some());

    let huge = ledger
        .list(&JobQuery {
            limit: 10_000,
            ..JobQuery::default()
        })
        .await?;
    assert_eq!(huge.jobs.len(), 200, "at most 200");
    assert!(huge.next_before.is_some());

    let one = ledger
        .list(&JobQuery {
            limit: 1,
            ..JobQuery::default()
        })
        .await?;
    assert_eq!(one.jobs.len(), 1);
    Ok(())
}

async fn an_unknown_job_is_none(ledger: Ledger) -> anyhow::Result<()> {
    let job = JobId::new();
    assert_eq!(ledger.get(job).await?, None);
    assert_eq!(ledger.last_seq(job).await?, None);
    assert_eq!(ledger.attempt_reasons(job).await?, None);
    Ok(())
}

async fn concurrent_writers_never_lose_or_repeat_an_update(ledger: Ledger) -> anyhow::Result<()> {
    let spec = spec("site", "ada");
    ledger.apply(&queued(&spec)).await?;
    let events: Vec<JobEvent> = (2..=31)
        .map(|seq| {
            event(
                spec.id,
                seq,
                EventBody::Retrying {
                    attempt: seq as u32,
                    reason: format!("reason {seq}"),
                },
            )
        })
        .collect();
    let mut writers = Vec::new();
    for _ in 0..3 {
        let ledger = ledger.clone();
        let events = events.clone();
        writers.push(tokio::spawn(async move {
            let mut applied = Vec::new();
            for e in &events {
                if ledger.apply(e).await? {
                    applied.push(e.seq);
                }
            }
            anyhow::Ok(applied)
        }));
    }
    let mut applied = Vec::new();
    for writer in writers {
        applied.extend(writer.await??);
    }
    applied.sort_unstable();
    let reasons = ledger
        .attempt_reasons(spec.id)
        .await?
        .context("the job has no row")?;
    let recorded: Vec<u64> = reasons
        .iter()
        .map(|r| r.trim_start_matches("reason ").parse())
        .collect::<Result<_, _>>()?;
    assert_eq!(
        recorded, applied,
        "every apply that reported a change is in the row, once"
    );
    assert_eq!(recorded.last(), Some(&31));
    let row = view(&ledger, spec.id).await?;
    assert_eq!(row.last_seq, 31);
    assert_eq!(row.attempts, 31);
    Ok(())
}

async fn ping_answers(ledger: Ledger) -> anyhow::Result<()> {
    ledger.ping().await?;
    Ok(())
}

/// SQLite only: the file and its folder are created, the file is in WAL mode, and a
/// second process (here a second handle) opening it at the same time shares it.
#[tokio::test]
async fn a_sqlite_file_is_created_in_wal_mode_and_shared() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("nested/folder/ledger.db");
    let url = format!("sqlite://{}", path.display());
    let (first, second) = tokio::join!(Ledger::connect(&url), Ledger::connect(&url));
    let (first, second) = (first?, second?);
    assert!(path.exists());

    let spec = spec("site", "ada");
    first.record_submission(&spec).await?;
    assert_eq!(view(&second, spec.id).await?.project, "site");
    assert!(
        dir.path().join("nested/folder/ledger.db-wal").exists(),
        "the file is in WAL mode"
    );

    drop((first, second));
    let reopened = Ledger::connect(&url).await?;
    assert_eq!(view(&reopened, spec.id).await?.project, "site");
    Ok(())
}

#[tokio::test]
async fn connecting_to_an_unsupported_url_names_it_without_its_password() {
    let err = Ledger::connect("mysql://paddock:hunter2@db/ledger")
        .await
        .expect_err("mysql is not supported");
    let message = err.to_string();
    assert!(
        message.contains("mysql://paddock:***@db/ledger"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");
}

#[tokio::test]
async fn a_postgres_connect_error_hides_the_password() {
    let err = Ledger::connect("postgres://paddock:hunter2@127.0.0.1:1/ledger")
        .await
        .expect_err("nothing listens on port 1");
    let message = format!("{err} / {err:?}");
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

/// Several services connecting to a new database at once migrate it exactly once.
async fn concurrent_connects_migrate_once(url: &str) -> anyhow::Result<()> {
    let (a, b, c) = tokio::join!(
        Ledger::connect(url),
        Ledger::connect(url),
        Ledger::connect(url)
    );
    let ledgers = [a?, b?, c?];
    for ledger in &ledgers {
        ledger.ping().await?;
    }
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await?;
    let versions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM ledger_schema_version")
        .fetch_one(&pool)
        .await?;
    assert_eq!(
        versions,
        paddock_ledger::SCHEMA_VERSION,
        "each migration recorded once"
    );
    pool.close().await;
    for ledger in &ledgers {
        ledger.close().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_migrate_a_sqlite_file_once() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    concurrent_connects_migrate_once(&format!("sqlite://{}/ledger.db", dir.path().display())).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_migrate_a_postgres_database_once() -> anyhow::Result<()> {
    let database = paddock_testkit::PostgresDatabase::create().await?;
    concurrent_connects_migrate_once(database.url()).await
}

async fn usage_counts_active_jobs_submissions_and_cost_per_user(
    ledger: Ledger,
) -> anyhow::Result<()> {
    let done = spec("site", "ada");
    let running = spec("site", "ada");
    let other = spec("site", "bob");
    for spec in [&done, &running, &other] {
        ledger.record_submission(spec).await?;
    }
    ledger.apply(&started(done.id, 1, "n", 1)).await?;
    ledger.apply(&completed(done.id, 2)).await?;
    ledger.apply(&started(running.id, 1, "n", 1)).await?;
    let usage = ledger.usage("ada", 0).await?;
    assert_eq!(usage.active_jobs, 1);
    assert_eq!(usage.jobs_since, 2);
    assert!((usage.cost_since_usd - 0.125).abs() < 1e-9, "{usage:?}");
    let later = ledger.usage("ada", 2_000).await?;
    assert_eq!(later.jobs_since, 0);
    assert_eq!(later.cost_since_usd, 0.0);
    assert_eq!(
        ledger.usage("nobody", 0).await?,
        paddock_ledger::Usage::default()
    );
    Ok(())
}
