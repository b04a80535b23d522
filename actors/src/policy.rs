//! Restart policies as in OTP: a supervisor restarts a failed child unless it has
//! restarted more than `max_restarts` times within `period`, in which case it gives up
//! and escalates (fails itself). Also the exponential back-off used between restarts.

use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;

/// Bounded restart intensity.
#[derive(Clone, Debug)]
pub struct RestartIntensity {
    pub max_restarts: usize,
    pub period: Duration,
    recent: VecDeque<Instant>,
}

impl RestartIntensity {
    pub fn new(max_restarts: usize, period: Duration) -> Self {
        RestartIntensity {
            max_restarts,
            period,
            recent: VecDeque::new(),
        }
    }

    /// Records a failure now; true when a restart is still allowed.
    pub fn allow_restart(&mut self) -> bool {
        let now = Instant::now();
        while let Some(first) = self.recent.front() {
            if now.duration_since(*first) > self.period {
                self.recent.pop_front();
            } else {
                break;
            }
        }
        self.recent.push_back(now);
        self.recent.len() <= self.max_restarts
    }
}

/// Exponential back-off: `base * 2^attempt`, capped at `max`.
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempt.min(20));
    base.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn restarts_within_the_period_are_bounded() {
        let mut intensity = RestartIntensity::new(3, Duration::from_secs(10));
        assert!(intensity.allow_restart());
        assert!(intensity.allow_restart());
        assert!(intensity.allow_restart());
        assert!(
            !intensity.allow_restart(),
            "the fourth restart in 10 s escalates"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn old_restarts_age_out_of_the_period() {
        let mut intensity = RestartIntensity::new(2, Duration::from_secs(10));
        assert!(intensity.allow_restart());
        assert!(intensity.allow_restart());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(
            intensity.allow_restart(),
            "earlier failures no longer count"
        );
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        assert_eq!(backoff(base, max, 0), Duration::from_millis(100));
        assert_eq!(backoff(base, max, 2), Duration::from_millis(400));
        assert_eq!(backoff(base, max, 10), max);
        assert_eq!(backoff(base, max, u32::MAX), max);
    }
}
