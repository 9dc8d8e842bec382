//! The retry policy: what an attempt's answer leads to — delivered, retry at a time, or dead —
//! with exponential backoff, jitter and the destination's `Retry-After`. This is the one place
//! that decides; the engine (`worker.rs`) asks [`RetryPolicy::next`] after every attempt.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::Rng;

use crate::config::DeliveryConfig;
use crate::model::AttemptResult;

/// What a destination answered, as the retry policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Delivered,
    /// Failed; worth another try, no sooner than `retry_after` if the destination asked.
    Failed {
        retry_after: Option<Duration>,
    },
    /// `410 Gone`: the endpoint asks never to be called again (its subscription is disabled).
    Gone,
    /// The destination says retrying cannot help (a connector's `permanent`).
    Permanent,
}

/// What follows an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Delivered,
    /// Try again after this wait.
    RetryIn(Duration),
    /// Failed for good: a dead letter is written.
    Dead,
}

impl Next {
    /// The attempt's result as recorded at `now`.
    pub fn result(self, now: DateTime<Utc>) -> AttemptResult {
        match self {
            Next::Delivered => AttemptResult::Succeeded,
            Next::RetryIn(wait) => AttemptResult::Retry(
                now + chrono::TimeDelta::from_std(wait).unwrap_or(chrono::TimeDelta::MAX),
            ),
            Next::Dead => AttemptResult::Dead,
        }
    }
}

/// The engine's retry policy, built from the configuration (`IH_DELIVERY_MAX_ATTEMPTS`,
/// `IH_DELIVERY_BACKOFF_BASE_SECONDS`, `IH_DELIVERY_BACKOFF_MAX_SECONDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl RetryPolicy {
    pub fn new(config: &DeliveryConfig) -> Self {
        Self {
            max_attempts: config.max_attempts,
            backoff_base: config.backoff_base,
            backoff_max: config.backoff_max,
        }
    }

    /// What follows attempt number `attempt` (1-based, within the delivery's budget) that was
    /// answered `answer`: a failure is retried after the backoff (or the destination's longer
    /// `Retry-After`) until the budget is spent; `410 Gone` and permanent failures are dead at
    /// once.
    pub fn next(&self, answer: Answer, attempt: u32) -> Next {
        match answer {
            Answer::Delivered => Next::Delivered,
            Answer::Gone | Answer::Permanent => Next::Dead,
            Answer::Failed { .. } if attempt >= self.max_attempts => Next::Dead,
            Answer::Failed { retry_after } => {
                let backoff = backoff(self.backoff_base, self.backoff_max, attempt);
                Next::RetryIn(next_delay(backoff, retry_after))
            }
        }
    }
}

/// Longest wait a `Retry-After` may ask for.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Wait after failed attempt `n` (1-based): `base × 2^(n−1)`, ±20 % jitter, capped at `max`.
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let nominal = base.as_secs_f64() * f64::from(1u32 << exponent);
    let jitter = rand::thread_rng().gen_range(0.8..=1.2);
    Duration::from_secs_f64((nominal * jitter).min(max.as_secs_f64()))
}

/// Parses `Retry-After` (delta seconds or an HTTP date) relative to `now`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when: DateTime<Utc> = httpdate::parse_http_date(value).ok()?.into();
    Some((when - now).to_std().unwrap_or(Duration::ZERO))
}

/// The wait before the next attempt: the backoff, or the endpoint's `Retry-After` clamped to
/// `[backoff, 1 h]` (an endpoint may slow us down, never hurry us).
pub fn next_delay(backoff: Duration, retry_after: Option<Duration>) -> Duration {
    match retry_after {
        Some(asked) => asked.clamp(backoff, MAX_RETRY_AFTER.max(backoff)),
        None => backoff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(3600),
        }
    }

    #[test]
    fn failures_retry_until_the_budget_is_spent() {
        let failed = Answer::Failed { retry_after: None };
        let Next::RetryIn(first) = policy().next(failed, 1) else {
            panic!("the first failure is retried");
        };
        assert!(first >= Duration::from_millis(1600) && first <= Duration::from_millis(2400));
        assert!(matches!(policy().next(failed, 2), Next::RetryIn(_)));
        assert_eq!(policy().next(failed, 3), Next::Dead);
        assert_eq!(policy().next(Answer::Delivered, 3), Next::Delivered);
    }

    #[test]
    fn gone_and_permanent_are_dead_at_once_and_retry_after_lengthens_the_wait() {
        assert_eq!(policy().next(Answer::Gone, 1), Next::Dead);
        assert_eq!(policy().next(Answer::Permanent, 1), Next::Dead);
        let asked = Answer::Failed {
            retry_after: Some(Duration::from_secs(60)),
        };
        assert_eq!(
            policy().next(asked, 1),
            Next::RetryIn(Duration::from_secs(60))
        );
        let now = Utc::now();
        assert_eq!(
            Next::RetryIn(Duration::from_secs(60)).result(now),
            AttemptResult::Retry(now + chrono::TimeDelta::seconds(60))
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_cap() {
        let base = Duration::from_secs(2);
        let max = Duration::from_secs(3600);
        for (attempt, nominal) in [(1, 2.0), (2, 4.0), (3, 8.0), (5, 32.0)] {
            for _ in 0..50 {
                let d = backoff(base, max, attempt).as_secs_f64();
                assert!(
                    d >= nominal * 0.8 - 1e-9 && d <= nominal * 1.2 + 1e-9,
                    "attempt {attempt}: {d}"
                );
            }
        }
        assert_eq!(backoff(base, max, 40), max);
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .expect("date")
            .with_timezone(&Utc);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Thu, 01 Jan 2026 00:01:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            parse_retry_after("Wed, 31 Dec 2025 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn retry_after_is_clamped() {
        let backoff = Duration::from_secs(4);
        assert_eq!(
            next_delay(backoff, Some(Duration::from_secs(1))),
            backoff,
            "never sooner than backoff"
        );
        assert_eq!(
            next_delay(backoff, Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
        assert_eq!(
            next_delay(backoff, Some(Duration::from_secs(86_400))),
            MAX_RETRY_AFTER
        );
        assert_eq!(next_delay(backoff, None), backoff);
    }
}

/// Property tests: whatever an endpoint sends as `Retry-After`, parsing never panics and the
/// wait stays within `[backoff, 1 h]`; backoff never exceeds its cap.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_retry_after_header_gives_a_bounded_wait(
            header in prop_oneof![
                ".{0,40}",
                any::<u64>().prop_map(|n| n.to_string()),
                "(Mon|Sun), [0-9]{1,2} (Jan|Nov) [0-9]{1,5} [0-9]{2}:[0-9]{2}:[0-9]{2} GMT",
            ],
            backoff_ms in 0u64..7_200_000,
        ) {
            let now = Utc::now();
            let asked = parse_retry_after(&header, now);
            if let Ok(seconds) = header.trim().parse::<u64>() {
                prop_assert_eq!(asked, Some(Duration::from_secs(seconds)));
            }
            let backoff = Duration::from_millis(backoff_ms);
            let wait = next_delay(backoff, asked);
            prop_assert!(wait >= backoff);
            prop_assert!(wait <= MAX_RETRY_AFTER.max(backoff));
        }

        #[test]
        fn backoff_stays_under_its_cap(
            base_ms in 1u64..600_000,
            max_ms in 1u64..86_400_000,
            attempt in any::<u32>(),
        ) {
            let wait = backoff(Duration::from_millis(base_ms), Duration::from_millis(max_ms), attempt);
            prop_assert!(wait <= Duration::from_millis(max_ms));
        }
    }
}
