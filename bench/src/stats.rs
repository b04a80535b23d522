//! Latency samples in an HDR histogram (microseconds, 3 significant digits), read back
//! as p50 / p99 in milliseconds.

use hdrhistogram::Histogram;
use std::time::Duration;

/// Largest latency recorded: a minute; anything slower is clamped to it.
const MAX_MICROS: u64 = 60_000_000;

pub struct Samples {
    histogram: Histogram<u64>,
}

/// The figures of one set of samples, in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Samples {
    pub fn new() -> anyhow::Result<Samples> {
        let histogram = Histogram::new_with_bounds(1, MAX_MICROS, 3)
            .map_err(|e| anyhow::anyhow!("histogram: {e}"))?;
        Ok(Samples { histogram })
    }

    pub fn record(&mut self, value: Duration) {
        let micros = u64::try_from(value.as_micros()).unwrap_or(MAX_MICROS);
        self.histogram
            .saturating_record(micros.clamp(1, MAX_MICROS));
    }

    /// Records a difference of two millisecond timestamps (negative counts as 0).
    pub fn record_ms(&mut self, millis: i64) {
        let millis = u64::try_from(millis.max(0)).unwrap_or(0);
        self.record(Duration::from_millis(millis));
    }

    pub fn summary(&self) -> Summary {
        if self.histogram.is_empty() {
            return Summary::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        Summary {
            count: self.histogram.len(),
            p50_ms: ms(self.histogram.value_at_quantile(0.50)),
            p99_ms: ms(self.histogram.value_at_quantile(0.99)),
            max_ms: ms(self.histogram.max()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_back_in_milliseconds() -> anyhow::Result<()> {
        let mut samples = Samples::new()?;
        for i in 1..=100u64 {
            samples.record(Duration::from_millis(i));
        }
        let summary = samples.summary();
        assert_eq!(summary.count, 100);
        assert!((summary.p50_ms - 50.0).abs() < 0.1, "{summary:?}");
        assert!((summary.p99_ms - 99.0).abs() < 0.1, "{summary:?}");
        samples.record_ms(-5);
        assert_eq!(samples.summary().count, 101);
        Ok(())
    }
}
