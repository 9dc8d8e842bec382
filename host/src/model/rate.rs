//! Rate limits per subscription: at most `per_second` deliveries a second, plus a `burst`,
//! whatever the number of instances — the schedule lives in the subscription row and claims
//! advance it under its lock (the generic cell rate algorithm, GCRA).
//!
//! With interval `T` and tolerance `τ`, the next delivery may go at `allow_at`; taking one at
//! `t ≥ allow_at` moves it to `max(allow_at, t − τ) + T`. From an idle start that admits
//! `τ / T + 1` at once, then one per `T`.
//!
//! Claims are counted, requests are what a receiver sees, and between the two lie a few
//! milliseconds of scheduling (more on a busy host). So the schedule keeps a margin: `T` is 5 %
//! longer than `1 / per_second`, and [`RESERVE`] of the burst's time is kept back. With sends
//! at most [`RESERVE`] after their claims, no one-second window at the receiver holds more than
//! `per_second + burst`.

use chrono::{DateTime, TimeDelta, Utc};

/// Most deliveries per second a subscription may be limited to.
pub const MAX_PER_SECOND: u32 = 10_000;
/// Largest burst.
pub const MAX_BURST: u32 = 10_000;

/// Time between a claim and its request that the schedule leaves room for.
pub const RESERVE: TimeDelta = TimeDelta::milliseconds(50);

/// A subscription's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl RateLimit {
    fn interval(self) -> TimeDelta {
        TimeDelta::microseconds(1_050_000 / i64::from(self.per_second.max(1)))
    }

    fn tolerance(self) -> TimeDelta {
        let burst = TimeDelta::microseconds(1_000_000 / i64::from(self.per_second.max(1)));
        (burst * self.burst as i32 - RESERVE).max(TimeDelta::zero())
    }

    /// How many of `wanted` deliveries may go at `now` when the next may go at `allow_at`
    /// (`None`: idle), and when the next may go after them.
    pub fn take(
        self,
        allow_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        wanted: u32,
    ) -> (u32, Option<DateTime<Utc>>) {
        let (interval, tolerance) = (self.interval(), self.tolerance());
        let mut next = allow_at.unwrap_or(now - tolerance).max(now - tolerance);
        let mut taken = 0;
        while taken < wanted && next <= now {
            next += interval;
            taken += 1;
        }
        (taken, if taken == 0 { allow_at } else { Some(next) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes what is allowed, asking every millisecond for `seconds`, each sent up to
    /// [`RESERVE`] later (a different delay each: the worst bunching); the most sent in any
    /// one-second window.
    fn busiest_second(limit: RateLimit, seconds: i64) -> usize {
        let start = DateTime::UNIX_EPOCH;
        let mut allow_at = None;
        let mut sent = Vec::new();
        for ms in 0..seconds * 1000 {
            let now = start + TimeDelta::milliseconds(ms);
            let (n, next) = limit.take(allow_at, now, 1000);
            allow_at = next;
            // Early in the run late, late in the run early: the most into one window.
            let delay = if ms < 500 { RESERVE } else { TimeDelta::zero() };
            sent.extend(std::iter::repeat_n(now + delay, n as usize));
        }
        sent.sort();
        (0..sent.len())
            .map(|i| {
                let end = sent[i] + TimeDelta::seconds(1);
                sent[i..].iter().take_while(|t| **t < end).count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn no_second_exceeds_the_rate_plus_the_burst() {
        for (per_second, burst) in [(1, 0), (10, 0), (10, 5), (50, 20), (1000, 100)] {
            let limit = RateLimit { per_second, burst };
            let most = busiest_second(limit, 5);
            assert!(most <= (per_second + burst) as usize, "{limit:?}: {most}");
            let floor = per_second as usize * 9 / 10;
            assert!(most >= floor, "{limit:?} is nearly reached: {most}");
        }
    }

    #[test]
    fn an_idle_start_admits_most_of_the_burst_then_waits() {
        let limit = RateLimit {
            per_second: 10,
            burst: 4,
        };
        let now = DateTime::UNIX_EPOCH;
        // τ = 400 ms − 50 ms, T = 105 ms: four at once.
        let (n, next) = limit.take(None, now, 100);
        assert_eq!(n, 4);
        let (none, same) = limit.take(next, now, 100);
        assert_eq!((none, same), (0, next));
        let (one, _) = limit.take(next, now + TimeDelta::milliseconds(105), 100);
        assert_eq!(one, 1);
    }
}
