//! NATS JetStream plumbing shared by the gateway, the coordinator and the node agent:
//! connecting (with a check that the server is current and has JetStream), creating or
//! checking the streams and consumers idempotently, and the per-job event log whose
//! contiguous sequence numbers every client resumes from.
//!
//! Names come from `paddock_contract::subjects`; nothing here spells a subject.

mod connect;
mod event_log;
mod events_consumer;
mod registry;
pub mod selectors;
mod streams;

pub use connect::{NatsSettings, check_nkey, connect};
pub use event_log::{EventLog, EventLogError, JobEventWriter, LoggedEvent};
pub use events_consumer::EventsConsumer;
pub use registry::NodeRegistry;
pub use selectors::SelectorStore;
pub use streams::{
    StreamSettings, ensure_node_consumer, ensure_pool_consumer, ensure_selector_consumer,
    ensure_streams, parse_duration,
};

/// Errors of the bus, with what a person needs to act on them.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error(
        "nats-server {found} at {url} is too old: Paddock needs 2.10 or newer (ops/install-deps.sh installs a current one)"
    )]
    ServerTooOld { url: String, found: String },
    #[error(
        "JetStream is not enabled on the NATS server at {url}: start nats-server with -js (and a store dir with -sd): {detail}"
    )]
    JetStreamOff { url: String, detail: String },
    #[error("stream {stream}: {detail}")]
    Stream { stream: String, detail: String },
    #[error("consumer {consumer}: {detail}")]
    Consumer { consumer: String, detail: String },
}

/// Parses `major.minor.patch` (ignoring any suffix) for the server version check.
pub(crate) fn parse_version(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor_part = parts.next()?;
    let minor = minor_part
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn versions_parse_with_suffixes() {
        assert_eq!(parse_version("2.9.10"), Some((2, 9)));
        assert_eq!(parse_version("2.15.1"), Some((2, 15)));
        assert_eq!(parse_version("v2.11.0-RC.1"), Some((2, 11)));
        assert_eq!(parse_version("garbage"), None);
    }
}
