//! Rate limits on login, refresh and submission, with `governor` (GCRA, keyed): one
//! limiter per endpoint, keyed by who asks — an address, a user, a device — so each
//! has its own allowance and one noisy client does not use up another's. A request is
//! counted against every key it has; any one that is exhausted refuses it with 429
//! and `Retry-After`.
//!
//! The limiters live in the gateway's memory: each gateway of several counts alone
//! (a client spread over N gateways gets up to N times the allowance). Keys of clients
//! that have gone quiet are dropped every minute by [`RateLimits::forget_idle`].

use crate::config::{RateLimit, RateLimitSettings};
use crate::error::ApiError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::num::NonZeroU32;
use std::time::Duration;

/// Which endpoint a request is limited as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    Login,
    Refresh,
    Submit,
}

/// One key of a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum LimitKey {
    Address(String),
    User(String),
    Device(String),
}

impl LimitKey {
    fn as_key(&self) -> String {
        match self {
            LimitKey::Address(a) => format!("address:{a}"),
            LimitKey::User(u) => format!("user:{u}"),
            LimitKey::Device(d) => format!("device:{d}"),
        }
    }
}

pub struct RateLimits {
    login: DefaultKeyedRateLimiter<String>,
    refresh: DefaultKeyedRateLimiter<String>,
    submit: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

fn quota(limit: RateLimit) -> Quota {
    let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
    let every = if limit.every.is_zero() {
        Duration::from_millis(1)
    } else {
        limit.every
    };
    Quota::with_period(every)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

impl RateLimits {
    pub fn new(settings: &RateLimitSettings) -> RateLimits {
        RateLimits {
            login: DefaultKeyedRateLimiter::keyed(quota(settings.login)),
            refresh: DefaultKeyedRateLimiter::keyed(quota(settings.refresh)),
            submit: DefaultKeyedRateLimiter::keyed(quota(settings.submit)),
            clock: DefaultClock::default(),
        }
    }

    fn limiter(&self, kind: LimitKind) -> &DefaultKeyedRateLimiter<String> {
        match kind {
            LimitKind::Login => &self.login,
            LimitKind::Refresh => &self.refresh,
            LimitKind::Submit => &self.submit,
        }
    }

    /// Counts one request against each key; refuses it (429 with the longest wait)
    /// when any key has no allowance left.
    pub fn check(&self, kind: LimitKind, keys: &[LimitKey]) -> Result<(), ApiError> {
        let limiter = self.limiter(kind);
        let mut wait: Option<Duration> = None;
        for key in keys {
            if let Err(not_until) = limiter.check_key(&key.as_key()) {
                let this = not_until.wait_time_from(self.clock.now());
                wait = Some(wait.map_or(this, |w| w.max(this)));
            }
        }
        match wait {
            None => Ok(()),
            Some(wait) => Err(ApiError::RateLimited {
                retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }),
        }
    }

    /// Drops the state of keys whose allowance is full again.
    pub fn forget_idle(&self) {
        for limiter in [&self.login, &self.refresh, &self.submit] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_key_has_its_own_allowance_and_a_refusal_says_how_long_to_wait() {
        let limits = RateLimits::new(&RateLimitSettings {
            login: RateLimit {
                burst: 2,
                every: Duration::from_secs(60),
            },
            ..RateLimitSettings::default()
        });
        let ada = [
            LimitKey::Address("10.0.0.1".into()),
            LimitKey::User("ada".into()),
        ];
        assert!(limits.check(LimitKind::Login, &ada).is_ok());
        assert!(limits.check(LimitKind::Login, &ada).is_ok());
        match limits.check(LimitKind::Login, &ada) {
            Err(ApiError::RateLimited { retry_after_secs }) => {
                assert!((1..=60).contains(&retry_after_secs), "{retry_after_secs}");
            }
            other => panic!("not limited: {other:?}"),
        }
        // Another user from another address is not affected; the same user from
        // another address is.
        let bob = [
            LimitKey::Address("10.0.0.2".into()),
            LimitKey::User("bob".into()),
        ];
        assert!(limits.check(LimitKind::Login, &bob).is_ok());
        let ada_elsewhere = [
            LimitKey::Address("10.0.0.3".into()),
            LimitKey::User("ada".into()),
        ];
        assert!(limits.check(LimitKind::Login, &ada_elsewhere).is_err());
        // Other endpoints count apart.
        assert!(limits.check(LimitKind::Submit, &ada).is_ok());
        limits.forget_idle();
    }
}
