//! The two streams and the job consumers, created at start-up or checked and brought up
//! to date when they exist. Every service calls [`ensure_streams`]; it is idempotent.

use crate::BusError;
use async_nats::jetstream::{self, consumer, stream};
use paddock_contract::subjects;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Stream and consumer settings: the same in every service of one paddock.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StreamSettings {
    /// Replicas of each stream: 1 on one server, 3 on a three-server cluster.
    pub replicas: usize,
    /// How long events are kept.
    #[serde(with = "humantime_serde_compat")]
    pub events_max_age: Duration,
    /// Upper bound on the events stream's size; oldest events go first. JetStream
    /// reserves this much disk on every server that holds the stream: raise it (and
    /// `events_max_age`) to what the machines can spare.
    pub events_max_bytes: i64,
    /// A node that stops acknowledging progress loses its job after this long, and
    /// JetStream delivers it to another node.
    #[serde(with = "humantime_serde_compat")]
    pub ack_wait: Duration,
    /// Deliveries after which a job is failed as poison (`too_many_attempts`).
    pub max_attempts: u32,
    /// Largest job or event message, in bytes.
    pub max_message_bytes: i32,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            replicas: 1,
            events_max_age: Duration::from_secs(7 * 24 * 3600),
            events_max_bytes: 1024 * 1024 * 1024,
            ack_wait: Duration::from_secs(30),
            max_attempts: 3,
            max_message_bytes: 1024 * 1024,
        }
    }
}

/// Durations in config files are written as seconds (`ack_wait = 30`) or as a string
/// with a unit (`ack_wait = "30s"`).
pub(crate) mod humantime_serde_compat {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}ms", d.as_millis()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Seconds(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Seconds(s) => Ok(Duration::from_secs(s)),
            Raw::Text(t) => parse(&t).map_err(serde::de::Error::custom),
        }
    }

    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let n: u64 = number
            .parse()
            .map_err(|_| format!("{text:?} is not a duration such as 30s, 500ms or 5m"))?;
        let d = match unit.trim() {
            "ms" => Duration::from_millis(n),
            "" | "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            "d" => Duration::from_secs(n * 86400),
            other => return Err(format!("unknown duration unit {other:?} in {text:?}")),
        };
        Ok(d)
    }
}

pub use humantime_serde_compat::parse as parse_duration;

fn jobs_config(settings: &StreamSettings) -> stream::Config {
    stream::Config {
        name: subjects::JOBS_STREAM.to_string(),
        description: Some("Paddock jobs waiting for a node (work queue)".into()),
        subjects: subjects::jobs_stream_subjects(),
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        // The server stores "no limit" as -1; saying so keeps the check below quiet.
        max_bytes: -1,
        max_message_size: settings.max_message_bytes,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

fn events_config(settings: &StreamSettings) -> stream::Config {
    stream::Config {
        name: subjects::EVENTS_STREAM.to_string(),
        description: Some("Paddock job events, one subject per job".into()),
        subjects: subjects::events_stream_subjects(),
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        max_age: settings.events_max_age,
        max_bytes: settings.events_max_bytes,
        max_message_size: settings.max_message_bytes,
        duplicate_window: Duration::from_secs(120),
        allow_direct: true,
        ..Default::default()
    }
}

/// How long start-up keeps trying to create or check streams and consumers while
/// JetStream is busy (a cluster electing a leader, a server restarting).
const SETUP_PATIENCE: Duration = Duration::from_secs(45);

/// Runs `attempt` until it succeeds, gives a final error, or [`SETUP_PATIENCE`] runs
/// out; errors in between are logged and retried with a growing pause.
async fn patiently<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, BusError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BusError>>,
{
    let deadline = tokio::time::Instant::now() + SETUP_PATIENCE;
    let mut pause = Duration::from_millis(200);
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            // A stream with the wrong retention will not fix itself.
            Err(e @ BusError::Stream { .. }) if e.to_string().contains("retention") => {
                return Err(e);
            }
            Err(e) if tokio::time::Instant::now() + pause < deadline => {
                tracing::warn!(error = %e, ?pause, "{what} failed; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Creates both streams, or checks that existing ones have the retention Paddock
/// relies on and updates their other settings.
pub async fn ensure_streams(
    js: &jetstream::Context,
    settings: &StreamSettings,
) -> Result<(), BusError> {
    for config in [jobs_config(settings), events_config(settings)] {
        patiently("setting up a stream", || ensure_stream(js, config.clone())).await?;
    }
    Ok(())
}

async fn ensure_stream(js: &jetstream::Context, wanted: stream::Config) -> Result<(), BusError> {
    let name = wanted.name.clone();
    let err = |detail: String| BusError::Stream {
        stream: name.clone(),
        detail,
    };
    let mut existing = js
        .get_or_create_stream(wanted.clone())
        .await
        .map_err(|e| err(format!("cannot create or read it: {e}")))?;
    let info = existing
        .info()
        .await
        .map_err(|e| err(format!("cannot read its settings: {e}")))?;
    let have = &info.config;
    if have.retention != wanted.retention {
        return Err(err(format!(
            "exists with retention {:?}, Paddock needs {:?}; delete it (nats stream rm {}) or point Paddock at another server",
            have.retention, wanted.retention, wanted.name
        )));
    }
    let differs = have.subjects != wanted.subjects
        || have.max_age != wanted.max_age
        || have.max_bytes != wanted.max_bytes
        || have.max_message_size != wanted.max_message_size
        || have.num_replicas != wanted.num_replicas;
    if differs {
        tracing::info!(stream = %wanted.name, "updating stream settings");
        js.update_stream(wanted)
            .await
            .map_err(|e| err(format!("cannot update its settings: {e}")))?;
    }
    Ok(())
}

fn job_consumer_config(
    name: String,
    filter_subject: String,
    settings: &StreamSettings,
) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(name),
        description: Some("Paddock nodes claim jobs here".into()),
        filter_subject,
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: settings.ack_wait,
        // One more than the attempts we allow, so the node that receives the delivery
        // past the limit can record the job as failed instead of it vanishing silently.
        max_deliver: i64::from(settings.max_attempts) + 1,
        max_ack_pending: 10_000,
        // No `backoff`: it would replace `ack_wait` as the redelivery timer.
        ..Default::default()
    }
}

async fn ensure_consumer(
    js: &jetstream::Context,
    config: consumer::pull::Config,
) -> Result<consumer::PullConsumer, BusError> {
    patiently("setting up a consumer", || {
        try_ensure_consumer(js, config.clone())
    })
    .await
}

async fn try_ensure_consumer(
    js: &jetstream::Context,
    config: consumer::pull::Config,
) -> Result<consumer::PullConsumer, BusError> {
    let name = config.durable_name.clone().unwrap_or_default();
    let err = |detail: String| BusError::Consumer {
        consumer: name.clone(),
        detail,
    };
    let stream = js
        .get_stream_no_info(subjects::JOBS_STREAM)
        .await
        .map_err(|e| err(format!("jobs stream missing: {e}")))?;
    // CONSUMER.CREATE with a durable name creates the consumer or updates it in place.
    stream
        .create_consumer(config)
        .await
        .map_err(|e| err(format!("cannot create or update it: {e}")))
}

/// The consumer through which every node of `pool` claims the pool's jobs.
pub async fn ensure_pool_consumer(
    js: &jetstream::Context,
    pool: &str,
    settings: &StreamSettings,
) -> Result<consumer::PullConsumer, BusError> {
    let config = job_consumer_config(
        subjects::pool_consumer(pool),
        subjects::pool_jobs(pool),
        settings,
    );
    ensure_consumer(js, config).await
}

/// The consumer through which every node whose labels match a selector claims the
/// selector's jobs. The server deletes it once no node has pulled from it for
/// `inactive_after` (no node matches any more, or the selector was forgotten); the jobs
/// stay in the stream, and the next node that matches creates it again.
pub async fn ensure_selector_consumer(
    js: &jetstream::Context,
    selector: &str,
    settings: &StreamSettings,
    inactive_after: Duration,
) -> Result<consumer::PullConsumer, BusError> {
    let mut config = job_consumer_config(
        subjects::selector_consumer(selector),
        subjects::selector_jobs(selector),
        settings,
    );
    config.description = Some("Paddock nodes whose labels match claim jobs here".into());
    config.inactive_threshold = inactive_after;
    ensure_consumer(js, config).await
}

/// The consumer of work addressed to one node.
pub async fn ensure_node_consumer(
    js: &jetstream::Context,
    node: &str,
    settings: &StreamSettings,
) -> Result<consumer::PullConsumer, BusError> {
    let config = job_consumer_config(
        subjects::node_consumer(node),
        subjects::node_jobs(node),
        settings,
    );
    ensure_consumer(js, config).await
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("12"), Ok(Duration::from_secs(12)));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }
}
