//! The ledger writer end to end: a real nats-server (testkit), the coordinator's
//! `run` in a task, events appended through the bus's event log as a node would, and
//! the ledger read back through `paddock_ledger` on a SQLite file or PostgreSQL.

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer};
use paddock_bus::{EventLog, JobEventWriter, NatsSettings};
use paddock_contract::api::JobView;
use paddock_contract::{EventBody, JobEvent, JobId, JobStatus, RunSummary, subjects};
use paddock_coordinator::{CoordinatorConfig, LedgerWriterSettings};
use paddock_ledger::Ledger;
use paddock_testkit::metrics::sample;
use paddock_testkit::{NatsServer, PostgresDatabase, eventually};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

/// A metrics address on a port the system picks: tests run side by side.
fn any_port() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A coordinator running in a task, stopped on drop if the test did not stop it.
struct Coordinator {
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Coordinator {
    fn start(config: CoordinatorConfig) -> Coordinator {
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            let outcome = paddock_coordinator::run(config, token).await;
            if let Err(error) = &outcome {
                // Shown with the failing test's output: a test waiting for the
                // ledger would otherwise only report its timeout.
                eprintln!("coordinator stopped with an error: {error:#}");
            }
            outcome
        });
        Coordinator {
            shutdown,
            task: Some(task),
        }
    }

    /// Cancels and waits; fails unless `run` returns `Ok` within a second.
    async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        let task = self.task.take().context("already stopped")?;
        tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .context("the coordinator did not stop within a second")??
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A nats-server, a client of it, and a database for the ledger.
struct Setup {
    nats: NatsServer,
    js: jetstream::Context,
    log: EventLog,
    database_url: String,
    _sqlite_dir: Option<tempfile::TempDir>,
    _postgres: Option<PostgresDatabase>,
}

impl Setup {
    async fn sqlite() -> anyhow::Result<Setup> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}/ledger.db", dir.path().display());
        Setup::new(url, Some(dir), None).await
    }

    async fn postgres() -> anyhow::Result<Setup> {
        let database = PostgresDatabase::create().await?;
        Setup::new(database.url().to_string(), None, Some(database)).await
    }

    async fn new(
        database_url: String,
        sqlite_dir: Option<tempfile::TempDir>,
        postgres: Option<PostgresDatabase>,
    ) -> anyhow::Result<Setup> {
        paddock_testkit::init_logs();
        let nats = NatsServer::start().await;
        let settings = NatsSettings {
            url: nats.url(),
            ..NatsSettings::default()
        };
        let client = paddock_bus::connect(&settings, "ledger-writer-test").await?;
        let js = jetstream::new(client);
        paddock_bus::ensure_streams(&js, &Default::default()).await?;
        let log = EventLog::open(js.clone()).await?;
        Ok(Setup {
            nats,
            js,
            log,
            database_url,
            _sqlite_dir: sqlite_dir,
            _postgres: postgres,
        })
    }

    fn config(&self) -> CoordinatorConfig {
        CoordinatorConfig {
            nats: NatsSettings {
                url: self.nats.url(),
                ..NatsSettings::default()
            },
            database_url: self.database_url.clone(),
            metrics_listen: any_port(),
            ..CoordinatorConfig::default()
        }
    }

    async fn ledger(&self) -> anyhow::Result<Ledger> {
        Ok(Ledger::connect(&self.database_url).await?)
    }

    async fn writer(&self, job: JobId) -> anyhow::Result<JobEventWriter> {
        Ok(self.log.writer(job, "test").await?)
    }

    async fn consumer_info(&self) -> anyhow::Result<consumer::Info> {
        let mut consumer: consumer::PullConsumer = self
            .js
            .get_stream(subjects::EVENTS_STREAM)
            .await?
            .get_consumer(subjects::LEDGER_CONSUMER)
            .await
            .map_err(|e| anyhow::anyhow!("ledger consumer: {e}"))?;
        Ok(consumer.info().await?.clone())
    }

    /// Publishes raw bytes on a job's subject, as a writer outside the bus could.
    async fn publish_raw(&self, job: JobId, payload: Vec<u8>) -> anyhow::Result<()> {
        self.js
            .publish(subjects::job_events(&job), payload.into())
            .await?
            .await?;
        Ok(())
    }
}

fn queued() -> EventBody {
    EventBody::Queued {
        project: "site".into(),
        prompt: "fix the build".into(),
        pool: "default".into(),
        submitted_by: "ada".into(),
        resumes: None,
        options: Default::default(),
    }
}

fn started(node: &str, attempt: u32) -> EventBody {
    EventBody::Started {
        node: node.into(),
        attempt,
    }
}

fn completed() -> EventBody {
    EventBody::Completed {
        summary: RunSummary {
            session_id: Some("session-1".into()),
            num_turns: Some(2),
            total_cost_usd: Some(0.05),
            ..RunSummary::default()
        },
    }
}

fn raw_event(job: JobId, seq: u64, body: EventBody) -> anyhow::Result<Vec<u8>> {
    Ok(serde_json::to_vec(&JobEvent {
        version: paddock_contract::CONTRACT_VERSION,
        job_id: job,
        seq,
        at_ms: 1_000 * seq as i64,
        node: None,
        attempt: 1,
        body,
        raw: None,
    })?)
}

/// Waits until the ledger's row of `job` satisfies `done`.
async fn wait_for_row(
    ledger: &Ledger,
    job: JobId,
    what: &str,
    done: impl Fn(&JobView) -> bool,
) -> JobView {
    eventually(WAIT, what, || async {
        match ledger.get(job).await {
            Ok(Some(view)) if done(&view) => Some(view),
            _ => None,
        }
    })
    .await
}

async fn events_reach_the_ledger(setup: Setup) -> anyhow::Result<()> {
    let coordinator = Coordinator::start(setup.config());
    let ledger = setup.ledger().await?;
    let job = JobId::new();
    let mut writer = setup.writer(job).await?;
    writer.append(None, 0, queued(), None).await?;
    writer
        .append(Some("mini-1"), 1, started("mini-1", 1), None)
        .await?;
    writer
        .append(
            Some("mini-1"),
            1,
            EventBody::AssistantText {
                text: "on it".into(),
            },
            None,
        )
        .await?;
    writer.append(Some("mini-1"), 1, completed(), None).await?;

    let view = wait_for_row(&ledger, job, "the job to be completed in the ledger", |v| {
        v.status == JobStatus::Completed
    })
    .await;
    assert_eq!(view.project, "site");
    assert_eq!(view.submitted_by, "ada");
    assert_eq!(view.node.as_deref(), Some("mini-1"));
    assert_eq!(view.session_id.as_deref(), Some("session-1"));
    assert_eq!(view.cost_usd, Some(0.05));
    assert_eq!(view.last_seq, 4);

    coordinator.stop().await?;
    let info = setup.consumer_info().await?;
    assert_eq!(info.num_ack_pending, 0, "every event acknowledged");
    assert_eq!(info.num_pending, 0);
    Ok(())
}

#[tokio::test]
async fn events_appended_to_the_log_reach_a_sqlite_ledger() -> anyhow::Result<()> {
    events_reach_the_ledger(Setup::sqlite().await?).await
}

#[tokio::test]
async fn events_appended_to_the_log_reach_a_postgres_ledger() -> anyhow::Result<()> {
    events_reach_the_ledger(Setup::postgres().await?).await
}

#[tokio::test]
async fn the_ledger_keeps_up_after_nats_restarts() -> anyhow::Result<()> {
    let mut setup = Setup::sqlite().await?;
    let coordinator = Coordinator::start(setup.config());
    let ledger = setup.ledger().await?;
    let job = JobId::new();
    let mut writer = setup.writer(job).await?;
    writer.append(None, 0, queued(), None).await?;
    writer
        .append(Some("mini-1"), 1, started("mini-1", 1), None)
        .await?;
    wait_for_row(&ledger, job, "the job to run", |v| v.last_seq == 2).await;

    setup.nats.stop();
    setup.nats.start_again().await;

    writer.append(Some("mini-1"), 1, completed(), None).await?;
    let view = wait_for_row(&ledger, job, "the event after the restart", |v| {
        v.status == JobStatus::Completed
    })
    .await;
    assert_eq!(view.last_seq, 3);

    // And a job that starts after the restart too.
    let second = JobId::new();
    setup
        .writer(second)
        .await?
        .append(None, 0, queued(), None)
        .await?;
    wait_for_row(&ledger, second, "a new job after the restart", |v| {
        v.last_seq == 1
    })
    .await;
    coordinator.stop().await
}

#[tokio::test]
async fn a_restarted_coordinator_applies_nothing_twice() -> anyhow::Result<()> {
    let setup = Setup::sqlite().await?;
    let ledger = setup.ledger().await?;
    let job = JobId::new();
    let mut writer = setup.writer(job).await?;

    let first = Coordinator::start(setup.config());
    writer.append(None, 0, queued(), None).await?;
    writer
        .append(Some("mini-1"), 1, started("mini-1", 1), None)
        .await?;
    writer
        .append(
            None,
            2,
            EventBody::Retrying {
                attempt: 2,
                reason: "node mini-1 lost".into(),
            },
            None,
        )
        .await?;
    wait_for_row(&ledger, job, "the retry", |v| v.last_seq == 3).await;
    first.stop().await?;

    writer
        .append(Some("mini-2"), 2, started("mini-2", 2), None)
        .await?;
    writer.append(Some("mini-2"), 2, completed(), None).await?;
    let second = Coordinator::start(setup.config());
    let view = wait_for_row(&ledger, job, "the job to complete", |v| {
        v.status == JobStatus::Completed
    })
    .await;
    second.stop().await?;

    assert_eq!(view.attempts, 2);
    assert_eq!(view.node.as_deref(), Some("mini-2"));
    assert_eq!(
        ledger.attempt_reasons(job).await?,
        Some(vec!["node mini-1 lost".to_string()])
    );
    let info = setup.consumer_info().await?;
    assert_eq!(
        info.delivered.consumer_sequence, 5,
        "each of the 5 events was delivered to the ledger once"
    );
    assert_eq!(info.num_redelivered, 0);
    assert_eq!(info.num_ack_pending, 0);
    Ok(())
}

#[tokio::test]
async fn a_message_that_is_not_a_job_event_is_skipped() -> anyhow::Result<()> {
    let setup = Setup::sqlite().await?;
    let coordinator = Coordinator::start(setup.config());
    let ledger = setup.ledger().await?;

    setup
        .publish_raw(JobId::new(), b"this is not json".to_vec())
        .await?;
    setup
        .publish_raw(JobId::new(), br#"{"kind":"job.unknown","seq":1}"#.to_vec())
        .await?;
    // A job event on another job's subject is not that job's event either.
    let elsewhere = JobId::new();
    setup
        .publish_raw(JobId::new(), raw_event(elsewhere, 1, queued())?)
        .await?;
    let job = JobId::new();
    setup
        .writer(job)
        .await?
        .append(None, 0, queued(), None)
        .await?;

    wait_for_row(&ledger, job, "the event after the garbage", |v| {
        v.last_seq == 1
    })
    .await;
    assert_eq!(ledger.get(elsewhere).await?, None);
    eventually(WAIT, "every message acknowledged", || async {
        let info = setup.consumer_info().await.ok()?;
        (info.num_ack_pending == 0 && info.num_pending == 0).then_some(info)
    })
    .await;
    let info = setup.consumer_info().await?;
    assert_eq!(info.num_redelivered, 0, "garbage is not retried");
    coordinator.stop().await
}

#[tokio::test]
async fn an_event_that_arrives_before_its_predecessor_waits_for_it() -> anyhow::Result<()> {
    let setup = Setup::sqlite().await?;
    let coordinator = Coordinator::start(setup.config());
    let ledger = setup.ledger().await?;
    let job = JobId::new();

    setup.publish_raw(job, raw_event(job, 1, queued())?).await?;
    wait_for_row(&ledger, job, "the queued event", |v| v.last_seq == 1).await;
    // The stream holds 1, 3, 2: as after a delivery of 2 was lost in flight.
    setup
        .publish_raw(job, raw_event(job, 3, completed())?)
        .await?;
    setup
        .publish_raw(job, raw_event(job, 2, started("mini-1", 1))?)
        .await?;

    let view = wait_for_row(&ledger, job, "the job to complete", |v| {
        v.status == JobStatus::Completed
    })
    .await;
    assert_eq!(view.started_at_ms, Some(2_000), "the start was not lost");
    assert_eq!(view.node.as_deref(), Some("mini-1"));
    assert_eq!(view.last_seq, 3);
    coordinator.stop().await
}

#[tokio::test]
async fn an_event_whose_predecessor_never_comes_is_applied_after_the_gap_wait() -> anyhow::Result<()>
{
    let setup = Setup::sqlite().await?;
    let config = CoordinatorConfig {
        ledger_writer: LedgerWriterSettings {
            ack_wait: Duration::from_secs(1),
            gap_wait: Duration::from_secs(2),
            ..LedgerWriterSettings::default()
        },
        ..setup.config()
    };
    let coordinator = Coordinator::start(config);
    let ledger = setup.ledger().await?;
    let job = JobId::new();
    setup
        .publish_raw(job, raw_event(job, 4, started("mini-1", 1))?)
        .await?;
    let view = wait_for_row(&ledger, job, "the lone event to be applied", |v| {
        v.last_seq == 4
    })
    .await;
    assert_eq!(view.status, JobStatus::Running);
    coordinator.stop().await
}

#[tokio::test(flavor = "current_thread")]
async fn a_database_error_is_retried_and_the_event_is_not_lost() -> anyhow::Result<()> {
    let (logs, _capturing) = CapturedLogs::install();
    let setup = Setup::sqlite().await?;
    let coordinator = Coordinator::start(setup.config());
    let ledger = setup.ledger().await?;
    let first = JobId::new();
    setup
        .writer(first)
        .await?
        .append(None, 0, queued(), None)
        .await?;
    wait_for_row(&ledger, first, "the first job", |v| v.last_seq == 1).await;

    // Take the table away from under the coordinator, as a broken database would.
    let sqlite = sqlite_connection(&setup.database_url).await?;
    sqlx::raw_sql("ALTER TABLE jobs RENAME TO jobs_away")
        .execute(&sqlite)
        .await?;
    let job = JobId::new();
    setup
        .writer(job)
        .await?
        .append(None, 0, queued(), None)
        .await?;
    eventually(WAIT, "the writer to fail and retry", || async {
        logs.contains("ledger write failed; retrying").then_some(())
    })
    .await;
    let info = setup.consumer_info().await?;
    assert_eq!(
        info.num_ack_pending, 1,
        "the failed event is not acknowledged"
    );

    sqlx::raw_sql("ALTER TABLE jobs_away RENAME TO jobs")
        .execute(&sqlite)
        .await?;
    wait_for_row(&ledger, job, "the event once the database is back", |v| {
        v.last_seq == 1
    })
    .await;
    coordinator.stop().await
}

#[tokio::test]
async fn shutdown_returns_ok_within_a_second() -> anyhow::Result<()> {
    let setup = Setup::sqlite().await?;
    let coordinator = Coordinator::start(setup.config());
    eventually(WAIT, "the ledger consumer to exist", || async {
        setup.consumer_info().await.ok()
    })
    .await;
    coordinator.stop().await
}

#[tokio::test]
async fn shutdown_before_nats_answers_returns_ok() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = CoordinatorConfig {
        nats: NatsSettings {
            url: format!("nats://127.0.0.1:{}", paddock_testkit::free_port()),
            ..NatsSettings::default()
        },
        database_url: format!("sqlite://{}/ledger.db", dir.path().display()),
        metrics_listen: any_port(),
        ..CoordinatorConfig::default()
    };
    let coordinator = Coordinator::start(config);
    coordinator.stop().await
}

async fn sqlite_connection(url: &str) -> anyhow::Result<sqlx::SqlitePool> {
    let path = url.trim_start_matches("sqlite://");
    let options = sqlx::sqlite::SqliteConnectOptions::new().filename(path);
    Ok(sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?)
}

/// Warnings and errors logged on this thread (a current-thread runtime runs every
/// task of the test on it), for tests that wait for a log line.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    /// Captures until the guard is dropped.
    fn install() -> (CapturedLogs, tracing::subscriber::DefaultGuard) {
        let logs = CapturedLogs::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        (logs, guard)
    }

    fn contains(&self, needle: &str) -> bool {
        self.0
            .lock()
            .map(|bytes| String::from_utf8_lossy(&bytes).contains(needle))
            .unwrap_or(false)
    }
}

impl std::io::Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut bytes) = self.0.lock() {
            bytes.extend_from_slice(buf);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// `GET path` on 127.0.0.1:`port`: the status and the body.
async fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await?;
    let text = String::from_utf8(response)?;
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .context("no status")?
        .parse()?;
    Ok((status, body.to_string()))
}

#[tokio::test]
async fn each_job_is_counted_once_and_readiness_checks_nats_and_the_database() -> anyhow::Result<()>
{
    let setup = Setup::sqlite().await?;
    let port = paddock_testkit::free_port();
    let coordinator = Coordinator::start(CoordinatorConfig {
        metrics_listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        ..setup.config()
    });
    let ledger = setup.ledger().await?;

    let done = JobId::new();
    let mut writer = setup.writer(done).await?;
    writer.append(None, 0, queued(), None).await?;
    writer
        .append(Some("mini-1"), 1, started("mini-1", 1), None)
        .await?;
    writer.append(Some("mini-1"), 1, completed(), None).await?;
    let failed = JobId::new();
    let mut writer = setup.writer(failed).await?;
    writer.append(None, 0, queued(), None).await?;
    writer
        .append(Some("mini-1"), 1, started("mini-1", 1), None)
        .await?;
    writer
        .append(
            Some("mini-1"),
            1,
            EventBody::Failed {
                reason: "agent_error".into(),
                message: "the agent reported an error".into(),
                summary: None,
            },
            None,
        )
        .await?;
    wait_for_row(&ledger, failed, "the failure in the ledger", |v| {
        v.status == JobStatus::Failed
    })
    .await;
    // The same ending once more, as a replay would bring it: the ledger has it.
    setup
        .publish_raw(done, raw_event(done, 3, completed())?)
        .await?;

    let metrics = eventually(WAIT, "the endings on /metrics", || async {
        let (status, body) = http_get(port, "/metrics").await.ok()?;
        let ended =
            |labels: &str| sample(&body, &format!("paddock_jobs_finished_total{{{labels}}}"));
        (status == 200
            && ended(r#"project="site",status="completed",reason="none""#) == Some(1.0)
            && ended(r#"project="site",status="failed",reason="agent_error""#) == Some(1.0))
        .then_some(body)
    })
    .await;
    assert_eq!(
        sample(&metrics, r#"paddock_jobs_started_total{project="site"}"#),
        Some(2.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"paddock_ledger_events_applied_total{kind="job.completed"}"#
        ),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"paddock_model_cost_usd_total{project="site",user="ada"}"#
        ),
        Some(0.05),
        "{metrics}"
    );
    assert_eq!(
        sample(&metrics, "paddock_nats_connected"),
        Some(1.0),
        "{metrics}"
    );

    let (status, body) = http_get(port, "/readyz").await?;
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(report["checks"]["nats"], "ok", "{body}");
    assert_eq!(report["checks"]["database"], "ok", "{body}");
    assert_eq!(http_get(port, "/healthz").await?.0, 200);

    // Whatever is replayed later, each ending stays counted once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_, body) = http_get(port, "/metrics").await?;
    assert_eq!(
        sample(
            &body,
            r#"paddock_jobs_finished_total{project="site",status="completed",reason="none"}"#
        ),
        Some(1.0),
        "{body}"
    );
    coordinator.stop().await
}

#[tokio::test]
async fn the_fleet_on_metrics_follows_the_node_registry() -> anyhow::Result<()> {
    let setup = Setup::sqlite().await?;
    let port = paddock_testkit::free_port();
    let coordinator = Coordinator::start(CoordinatorConfig {
        metrics_listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        ..setup.config()
    });
    let registry = paddock_bus::NodeRegistry::open(&setup.js, 1, Duration::from_secs(20)).await?;
    registry.ensure_known("mini-1").await?;
    registry
        .beat(&paddock_contract::node::NodeHeartbeat {
            node: "mini-1".into(),
            pool: "default".into(),
            labels: Default::default(),
            state: paddock_contract::node::NodeState::Ready,
            slots: 3,
            free: 1,
            running: vec![
                paddock_contract::JobId::new(),
                paddock_contract::JobId::new(),
            ],
            version: "test".into(),
            at_ms: paddock_contract::now_unix_ms(),
        })
        .await?;
    let metrics = eventually(WAIT, "the node on the coordinator's /metrics", || async {
        let (_, body) = http_get(port, "/metrics").await.ok()?;
        (sample(
            &body,
            r#"paddock_fleet_node_state{node="mini-1",state="ready"}"#,
        ) == Some(1.0))
        .then_some(body)
    })
    .await;
    assert_eq!(
        sample(&metrics, r#"paddock_fleet_node_slots{node="mini-1"}"#),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        sample(
            &metrics,
            r#"paddock_fleet_node_jobs_running{node="mini-1"}"#
        ),
        Some(2.0),
        "{metrics}"
    );
    let age = sample(
        &metrics,
        r#"paddock_fleet_node_heartbeat_age_seconds{node="mini-1"}"#,
    )
    .unwrap_or(-1.0);
    assert!((0.0..30.0).contains(&age), "{metrics}");
    coordinator.stop().await
}
