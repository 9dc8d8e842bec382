//! Rate limits per subscription: at most `per_second` deliveries a second, plus a `burst`,
//! whatever the number of instances — the schedule lives in the subscription row and claims
//! advance it under its lock (the generic cell rate algorithm, GCRA).
//!
//! With `T = 1 / per_second` and tolerance `τ = burst · T`, the next delivery may go at
//! `allow_at`; taking one at `t ≥ allow_at` moves it to `max(allow_at, t − τ) + T`. From an idle
//! start that admits `burst + 1` at once, then one per `T`: in any one-second window at most
//! `per_second + burst`.

use chrono::{DateTime, TimeDelta, Utc};

/// Most deliveries per second a subscription may be limited to.
pub const MAX_PER_SECOND: u32 = 10_000;
/// Largest burst.
pub const MAX_BURST: u32 = 10_000;

/// A subscription's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl RateLimit {
    fn interval(self) -> TimeDelta {
        TimeDelta::microseconds(1_000_000 / i64::from(self.per_second.max(1)))
    }

    fn tolerance(self) -> TimeDelta {
        self.interval() * self.burst as i32
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

    /// Takes one delivery whenever allowed, asking every millisecond for `seconds`; the most
    /// taken in any one-second window.
    fn busiest_second(limit: RateLimit, seconds: i64) -> usize {
        let start = DateTime::UNIX_EPOCH;
        let mut allow_at = None;
        let mut sent = Vec::new();
        for ms in 0..seconds * 1000 {
            let now = start + TimeDelta::milliseconds(ms);
            let (n, next) = limit.take(allow_at, now, 1000);
            allow_at = next;
            sent.extend(std::iter::repeat_n(now, n as usize));
        }
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
            assert!(most >= per_second as usize, "{limit:?} is reached: {most}");
        }
    }

    #[test]
    fn an_idle_start_admits_the_burst_and_one() {
        let limit = RateLimit {
            per_second: 10,
            burst: 4,
        };
        let now = DateTime::UNIX_EPOCH;
        let (n, next) = limit.take(None, now, 100);
        assert_eq!(n, 5);
        let (none, same) = limit.take(next, now, 100);
        assert_eq!((none, same), (0, next));
        let (one, _) = limit.take(next, now + TimeDelta::milliseconds(100), 100);
        assert_eq!(one, 1);
    }
}
