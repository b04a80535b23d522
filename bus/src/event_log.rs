//! The per-job event log. Each job's events live on their own subject of the events
//! stream with a contiguous sequence (1, 2, 3, …). Several processes write to one log
//! over a job's life (the gateway, then a node, then maybe another node), so every
//! append is conditional on the last stream sequence of the job's subject: a writer
//! that lost a race re-reads the log and either carries on with the next number or,
//! when the job has ended meanwhile, stops. A retried append reuses its message id, so
//! a publish that timed out and is sent again is stored once. Every append carries the
//! W3C trace context of the span it is made in (`traceparent`), so readers of the log
//! can join the writer's trace.

use async_nats::jetstream::{
    self, consumer::pull::OrderedConfig, context::PublishErrorKind, message::PublishMessage,
    stream::LastRawMessageErrorKind,
};
use futures::{Stream, StreamExt};
use paddock_contract::{EventBody, JobEvent, JobId, subjects};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum EventLogError {
    #[error("events stream unavailable: {0}")]
    Unavailable(String),
    #[error("could not publish event {seq} of job {job}: {detail}")]
    Publish {
        job: JobId,
        seq: u64,
        detail: String,
    },
    /// The job ended (another writer recorded its last event) before this append.
    #[error("job {job} has already ended ({kind})")]
    Ended { job: JobId, kind: &'static str },
    #[error("could not read the events of job {job}: {detail}")]
    Read { job: JobId, detail: String },
}

/// An event as the log holds it, with the NATS headers it was appended with
/// (`traceparent` among them when the writer was in a traced span).
#[derive(Debug)]
pub struct LoggedEvent {
    pub event: JobEvent,
    pub headers: Option<async_nats::HeaderMap>,
}

/// Handle on the events stream.
#[derive(Clone)]
pub struct EventLog {
    js: jetstream::Context,
    stream: jetstream::stream::Stream<()>,
}

impl EventLog {
    pub async fn open(js: jetstream::Context) -> Result<Self, EventLogError> {
        let stream = js
            .get_stream_no_info(subjects::EVENTS_STREAM)
            .await
            .map_err(|e| EventLogError::Unavailable(e.to_string()))?;
        Ok(EventLog { js, stream })
    }

    /// The job's last event and its stream sequence, or `None` for a job with no events.
    pub async fn last(&self, job: &JobId) -> Result<Option<(JobEvent, u64)>, EventLogError> {
        let subject = subjects::job_events(job);
        match self.stream.get_last_raw_message_by_subject(&subject).await {
            Ok(message) => {
                let event: JobEvent =
                    serde_json::from_slice(&message.payload).map_err(|e| EventLogError::Read {
                        job: *job,
                        detail: format!("last event is not a job event: {e}"),
                    })?;
                Ok(Some((event, message.sequence)))
            }
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(EventLogError::Read {
                job: *job,
                detail: e.to_string(),
            }),
        }
    }

    /// A writer positioned after the job's current last event. `writer_id` must be
    /// unique to this writer (it goes into message ids).
    pub async fn writer(
        &self,
        job: JobId,
        writer_id: impl Into<String>,
    ) -> Result<JobEventWriter, EventLogError> {
        let mut writer = JobEventWriter {
            log: self.clone(),
            job,
            writer_id: writer_id.into(),
            next_seq: 1,
            last_stream_seq: 0,
            last: None,
        };
        writer.refresh().await?;
        Ok(writer)
    }

    /// Every event of the job with a sequence above `after_seq`, then live ones as they
    /// are appended. Each sequence is yielded once and in order; lines on the subject
    /// that are not job events are skipped with a warning.
    pub async fn follow(
        &self,
        job: JobId,
        after_seq: u64,
    ) -> Result<impl Stream<Item = Result<JobEvent, EventLogError>> + Send + 'static, EventLogError>
    {
        let logged = self.follow_logged(job, after_seq).await?;
        Ok(logged.map(|item| item.map(|logged| logged.event)))
    }

    /// As [`EventLog::follow`], with the headers each event was appended with: their
    /// `traceparent` names the span that appended it, so a reader can make its own
    /// work on the event (delivering it to a client) part of that trace.
    pub async fn follow_logged(
        &self,
        job: JobId,
        after_seq: u64,
    ) -> Result<
        impl Stream<Item = Result<LoggedEvent, EventLogError>> + Send + 'static,
        EventLogError,
    > {
        let consumer = self
            .stream
            .create_consumer(OrderedConfig {
                filter_subject: subjects::job_events(&job),
                ..Default::default()
            })
            .await
            .map_err(|e| EventLogError::Read {
                job,
                detail: e.to_string(),
            })?;
        let messages = consumer.messages().await.map_err(|e| EventLogError::Read {
            job,
            detail: e.to_string(),
        })?;
        let mut last_seen = after_seq;
        Ok(messages.filter_map(move |message| {
            let result = match message {
                Err(e) => Some(Err(EventLogError::Read {
                    job,
                    detail: e.to_string(),
                })),
                Ok(message) => match serde_json::from_slice::<JobEvent>(&message.payload) {
                    Ok(event) if event.seq > last_seen => {
                        last_seen = event.seq;
                        Some(Ok(LoggedEvent {
                            event,
                            headers: message.message.headers,
                        }))
                    }
                    Ok(_) => None,
                    Err(e) => {
                        tracing::warn!(%job, error = %e, "skipping a message that is not a job event");
                        None
                    }
                },
            };
            futures::future::ready(result)
        }))
    }

    /// Every event the job has now, in order.
    pub async fn read_all(&self, job: JobId) -> Result<Vec<JobEvent>, EventLogError> {
        let Some((last, _)) = self.last(&job).await? else {
            return Ok(Vec::new());
        };
        let mut events = Vec::with_capacity(last.seq as usize);
        let stream = self.follow(job, 0).await?;
        futures::pin_mut!(stream);
        while let Some(event) = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .map_err(|_| EventLogError::Read {
                job,
                detail: "timed out reading events".into(),
            })?
        {
            let event = event?;
            let done = event.seq >= last.seq;
            events.push(event);
            if done {
                break;
            }
        }
        Ok(events)
    }
}

/// The message of one append: the current span's trace context (so the event joins
/// the trace of whatever appended it), then the idempotency and conditional-append
/// headers. The trace headers come first because `headers` replaces the whole map.
fn event_message(payload: Vec<u8>, message_id: &str, last_stream_seq: u64) -> PublishMessage {
    PublishMessage::build()
        .headers(paddock_telemetry::propagation::headers())
        .payload(payload.into())
        .message_id(message_id)
        .expected_last_subject_sequence(last_stream_seq)
}

/// Appends one job's events with contiguous sequence numbers.
pub struct JobEventWriter {
    log: EventLog,
    job: JobId,
    writer_id: String,
    next_seq: u64,
    last_stream_seq: u64,
    last: Option<JobEvent>,
}

/// How long one append keeps retrying through a NATS outage before it gives up.
const APPEND_DEADLINE: Duration = Duration::from_secs(90);

impl JobEventWriter {
    pub fn job(&self) -> JobId {
        self.job
    }

    /// The last event in the log as this writer knows it.
    pub fn last_event(&self) -> Option<&JobEvent> {
        self.last.as_ref()
    }

    /// Re-reads the log's last event.
    pub async fn refresh(&mut self) -> Result<(), EventLogError> {
        match self.log.last(&self.job).await? {
            Some((event, stream_seq)) => {
                self.next_seq = event.seq + 1;
                self.last_stream_seq = stream_seq;
                self.last = Some(event);
            }
            None => {
                self.next_seq = 1;
                self.last_stream_seq = 0;
                self.last = None;
            }
        }
        Ok(())
    }

    /// Appends an event and returns it as stored. Fails with [`EventLogError::Ended`]
    /// when the job has ended, and never appends after a terminal event.
    pub async fn append(
        &mut self,
        node: Option<&str>,
        attempt: u32,
        body: EventBody,
        raw: Option<String>,
    ) -> Result<JobEvent, EventLogError> {
        let started = tokio::time::Instant::now();
        let mut conflicts = 0;
        loop {
            if let Some(last) = &self.last
                && last.is_terminal()
            {
                return Err(EventLogError::Ended {
                    job: self.job,
                    kind: last.kind(),
                });
            }
            let event = JobEvent {
                version: paddock_contract::CONTRACT_VERSION,
                job_id: self.job,
                seq: self.next_seq,
                at_ms: paddock_contract::now_unix_ms(),
                node: node.map(str::to_string),
                attempt,
                body: body.clone(),
                raw: raw.clone(),
            };
            let payload = serde_json::to_vec(&event).map_err(|e| EventLogError::Publish {
                job: self.job,
                seq: event.seq,
                detail: e.to_string(),
            })?;
            let message_id = format!("{}.{}.{}", self.job, event.seq, self.writer_id);
            let publish = event_message(payload, &message_id, self.last_stream_seq);
            let outcome = match self
                .log
                .js
                .send_publish(subjects::job_events(&self.job), publish)
                .await
            {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(ack) => {
                    self.last_stream_seq = ack.sequence;
                    self.next_seq = event.seq + 1;
                    self.last = Some(event.clone());
                    return Ok(event);
                }
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    conflicts += 1;
                    if conflicts > 50 {
                        return Err(EventLogError::Publish {
                            job: self.job,
                            seq: event.seq,
                            detail: "too many concurrent writers".into(),
                        });
                    }
                    self.refresh().await?;
                }
                Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    return Err(EventLogError::Publish {
                        job: self.job,
                        seq: event.seq,
                        detail: e.to_string(),
                    });
                }
                Err(e) => {
                    if started.elapsed() > APPEND_DEADLINE {
                        return Err(EventLogError::Publish {
                            job: self.job,
                            seq: event.seq,
                            detail: e.to_string(),
                        });
                    }
                    tracing::warn!(job = %self.job, seq = event.seq, error = %e, "event publish failed; retrying");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::header::{NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_MESSAGE_ID};
    use paddock_telemetry::propagation::TRACEPARENT;

    #[test]
    fn an_event_carries_its_trace_context_beside_its_append_headers() {
        let (dispatch, _guard) = paddock_telemetry::TracingSetup::new("bus-test")
            .filter("info")
            .dispatch(std::io::sink)
            .expect("a tracing setup without an exporter");
        let message = tracing::dispatcher::with_default(&dispatch, || {
            let span = tracing::info_span!("job.run");
            let _entered = span.enter();
            event_message(b"{}".to_vec(), "job.2.writer", 7)
                .outbound_message(subjects::job_events(&JobId::new()))
        });
        let headers = message.headers.expect("headers");
        assert_eq!(
            headers.get(NATS_MESSAGE_ID).map(|v| v.as_str()),
            Some("job.2.writer")
        );
        assert_eq!(
            headers
                .get(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE)
                .map(|v| v.as_str()),
            Some("7")
        );
        let traceparent = headers
            .get(TRACEPARENT)
            .map(|v| v.as_str().to_string())
            .expect("a traceparent header");
        assert!(traceparent.starts_with("00-"), "{traceparent}");
    }

    #[test]
    fn without_a_span_an_event_still_has_its_append_headers() {
        let message = event_message(Vec::new(), "id", 0).outbound_message("s");
        let headers = message.headers.expect("headers");
        assert!(headers.get(NATS_MESSAGE_ID).is_some());
        assert!(headers.get(TRACEPARENT).is_none());
    }
}
