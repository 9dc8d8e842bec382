//! Circuit breaker policy: when an endpoint's failures open its circuit and for how long.
//! The store applies it in the attempt-record transaction (`store/common.rs`), so every
//! instance sharing a database sees one breaker per subscription.

use chrono::TimeDelta;

use super::CircuitState;

/// Consecutive failed attempts that open the circuit.
pub const THRESHOLD: u32 = 10;
/// First cool-off; doubles with each consecutive opening.
pub const BASE_COOLOFF: TimeDelta = TimeDelta::seconds(30);
pub const MAX_COOLOFF: TimeDelta = TimeDelta::minutes(10);

/// Whether a failed attempt opens the circuit: a failed probe (half-open) re-opens it, and a
/// closed circuit opens at [`THRESHOLD`] consecutive failures.
pub fn opens(state: CircuitState, consecutive_failures: u32) -> bool {
    match state {
        CircuitState::HalfOpen => true,
        CircuitState::Closed => consecutive_failures >= THRESHOLD,
        CircuitState::Open => false,
    }
}

/// Cool-off after the `trips`-th consecutive opening (1-based).
pub fn cooloff(trips: u32) -> TimeDelta {
    let factor = 1i32 << trips.saturating_sub(1).min(10);
    (BASE_COOLOFF * factor).min(MAX_COOLOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cooloff_doubles_up_to_its_cap() {
        assert_eq!(cooloff(1), TimeDelta::seconds(30));
        assert_eq!(cooloff(2), TimeDelta::seconds(60));
        assert_eq!(cooloff(5), TimeDelta::seconds(480));
        assert_eq!(cooloff(6), MAX_COOLOFF);
        assert_eq!(cooloff(40), MAX_COOLOFF);
    }

    #[test]
    fn a_failed_probe_reopens_and_a_closed_circuit_opens_at_the_threshold() {
        assert!(opens(CircuitState::HalfOpen, 1));
        assert!(!opens(CircuitState::Closed, THRESHOLD - 1));
        assert!(opens(CircuitState::Closed, THRESHOLD));
        assert!(!opens(CircuitState::Open, THRESHOLD + 5));
    }
}
