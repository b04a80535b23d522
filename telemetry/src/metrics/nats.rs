//! The NATS connection of a service: whether it is up, how often it came back, and
//! the messages and bytes it moved. Read from the client's own statistics when
//! Prometheus scrapes, so nothing has to be recorded along the way: one line at start,
//! `NatsMetrics::register(&registry, client.clone())`.

use super::{MetricGroup, counter, gauge};
use crate::TelemetryError;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntCounter, IntGauge, Opts, Registry};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Debug)]
struct Series {
    connected: IntGauge,
    reconnects: IntCounter,
    messages_received: IntCounter,
    messages_sent: IntCounter,
    bytes_received: IntCounter,
    bytes_sent: IntCounter,
}

/// A service's NATS connection metrics. Register once per client.
#[derive(Clone)]
pub struct NatsMetrics {
    client: Option<async_nats::Client>,
    series: Arc<Series>,
    /// Serialises the catch-up of the counters with the client's statistics.
    sync: Arc<Mutex<()>>,
}

impl std::fmt::Debug for NatsMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsMetrics")
            .field("watching", &self.client.is_some())
            .finish()
    }
}

impl NatsMetrics {
    /// Watches `client` and registers its metrics in `registry`.
    pub fn register(
        registry: &Registry,
        client: async_nats::Client,
    ) -> Result<Self, TelemetryError> {
        let mut metrics = Self::detached()?;
        metrics.client = Some(client);
        metrics.register_in(registry)?;
        Ok(metrics)
    }

    /// The metrics without a client (all zero), for the catalogue.
    pub(crate) fn detached() -> Result<Self, TelemetryError> {
        let series = Series {
            connected: gauge(Opts::new(
                "paddock_nats_connected",
                "1 while the service is connected to NATS, 0 otherwise.",
            ))?,
            reconnects: counter(Opts::new(
                "paddock_nats_reconnects_total",
                "Times the service connected to NATS again after losing its connection.",
            ))?,
            messages_received: counter(Opts::new(
                "paddock_nats_messages_received_total",
                "NATS messages received by the service.",
            ))?,
            messages_sent: counter(Opts::new(
                "paddock_nats_messages_sent_total",
                "NATS messages sent by the service.",
            ))?,
            bytes_received: counter(Opts::new(
                "paddock_nats_received_bytes_total",
                "Payload bytes received from NATS (protocol overhead excluded).",
            ))?,
            bytes_sent: counter(Opts::new(
                "paddock_nats_sent_bytes_total",
                "Payload bytes sent to NATS (protocol overhead excluded).",
            ))?,
        };
        Ok(NatsMetrics {
            client: None,
            series: Arc::new(series),
            sync: Arc::new(Mutex::new(())),
        })
    }

    /// Brings the series up to the client's statistics.
    fn refresh(&self) {
        let Some(client) = &self.client else {
            return;
        };
        let _serialised = self.sync.lock().unwrap_or_else(PoisonError::into_inner);
        let stats = client.statistics();
        let series = &self.series;
        let connected = client.connection_state() == async_nats::connection::State::Connected;
        series.connected.set(i64::from(connected));
        // The first connection counts as a connect too.
        let reconnects = stats.connects.load(Ordering::Relaxed).saturating_sub(1);
        catch_up(&series.reconnects, reconnects);
        catch_up(
            &series.messages_received,
            stats.in_messages.load(Ordering::Relaxed),
        );
        catch_up(
            &series.messages_sent,
            stats.out_messages.load(Ordering::Relaxed),
        );
        catch_up(
            &series.bytes_received,
            stats.in_bytes.load(Ordering::Relaxed),
        );
        catch_up(&series.bytes_sent, stats.out_bytes.load(Ordering::Relaxed));
    }

    fn parts(&self) -> [&dyn Collector; 6] {
        let series = &self.series;
        [
            &series.connected,
            &series.reconnects,
            &series.messages_received,
            &series.messages_sent,
            &series.bytes_received,
            &series.bytes_sent,
        ]
    }
}

/// Raises a counter to `target` (counters only go up; the client's never go down).
fn catch_up(counter: &IntCounter, target: u64) {
    let current = counter.get();
    if target > current {
        counter.inc_by(target - current);
    }
}

impl Collector for NatsMetrics {
    fn desc(&self) -> Vec<&Desc> {
        self.parts()
            .into_iter()
            .flat_map(|part| part.desc())
            .collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.refresh();
        self.parts()
            .into_iter()
            .flat_map(|part| part.collect())
            .collect()
    }
}

impl MetricGroup for NatsMetrics {
    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![Box::new(self.clone())]
    }
}
