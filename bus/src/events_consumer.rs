//! Durable pull consumers on the events stream that several processes share: each
//! event goes to one of the processes pulling from the consumer, and it is handed to
//! another one if the first does not acknowledge it within the ack wait. Side effects
//! that must happen once per event for a whole paddock (a Web Push notification sent by
//! one of several gateways) hang off such a consumer.
//!
//! Unlike the ledger's consumer, a shared consumer made with [`EventsConsumer::new`]
//! starts with the events appended after it is first created, not with the whole
//! stream: a new feature must not act on a week of old events. Once it exists, it
//! resumes where it was, however long its processes were away. Creating it again with
//! the same settings changes nothing; its deliver policy can never change.

use crate::BusError;
use async_nats::jetstream::{self, consumer};
use paddock_contract::subjects;
use std::time::Duration;

/// The settings of a shared events consumer.
#[derive(Clone, Debug)]
pub struct EventsConsumer {
    /// The durable name (from `paddock_contract::subjects`).
    pub name: String,
    pub description: String,
    /// How long a process may hold an event before it is handed to another.
    pub ack_wait: Duration,
    /// Deliveries of one event before the server gives up on it.
    pub max_deliver: i64,
    /// Events handed out and not yet acknowledged, at most.
    pub max_ack_pending: i64,
}

impl EventsConsumer {
    pub fn new(name: impl Into<String>, description: impl Into<String>) -> Self {
        EventsConsumer {
            name: name.into(),
            description: description.into(),
            ack_wait: Duration::from_secs(60),
            max_deliver: 5,
            max_ack_pending: 1_000,
        }
    }

    /// The consumer's configuration: every job's events, from the first one appended
    /// after the consumer was created.
    pub fn config(&self) -> consumer::pull::Config {
        consumer::pull::Config {
            durable_name: Some(self.name.clone()),
            description: Some(self.description.clone()),
            deliver_policy: consumer::DeliverPolicy::New,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.ack_wait,
            max_deliver: self.max_deliver,
            max_ack_pending: self.max_ack_pending,
            filter_subjects: subjects::events_stream_subjects(),
            ..Default::default()
        }
    }

    /// Creates the consumer, or brings an existing one's settings up to date.
    pub async fn ensure(
        &self,
        js: &jetstream::Context,
    ) -> Result<consumer::PullConsumer, BusError> {
        let err = |detail: String| BusError::Consumer {
            consumer: self.name.clone(),
            detail,
        };
        let stream = js
            .get_stream_no_info(subjects::EVENTS_STREAM)
            .await
            .map_err(|e| err(format!("events stream missing: {e}")))?;
        stream
            .create_consumer(self.config())
            .await
            .map_err(|e| err(format!("cannot create or update it: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_consumer_takes_every_job_from_its_creation_on() {
        let config = EventsConsumer::new("paddock-test", "a test").config();
        assert_eq!(config.durable_name.as_deref(), Some("paddock-test"));
        assert_eq!(config.deliver_policy, consumer::DeliverPolicy::New);
        assert_eq!(config.ack_policy, consumer::AckPolicy::Explicit);
        assert_eq!(config.filter_subjects, subjects::events_stream_subjects());
    }
}
