//! Reconnect backoff: exponential with jitter, capped, reset after a stable
//! period, and never zero (no tight retry loop).
//!
//! Defaults follow the project's reconnection strategy: 1 s initial delay,
//! ×2 per attempt, 60 s cap, FAILED after 10 consecutive attempts (retries
//! then continue at the slow `failed_delay`).

use std::time::Duration;

/// Backoff parameters.
#[derive(Debug, Clone)]
pub struct BackoffPolicy {
    /// First delay.
    pub initial: Duration,
    /// Largest delay before FAILED.
    pub max: Duration,
    /// Attempts before the connection is reported FAILED.
    pub max_attempts_before_failed: u32,
    /// Delay between attempts once FAILED.
    pub failed_delay: Duration,
    /// A connection that stayed up this long resets the attempt counter.
    pub stable_after: Duration,
}

impl Default for BackoffPolicy {
    fn default() -> Self {
        Self {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            max_attempts_before_failed: 10,
            failed_delay: Duration::from_secs(120),
            stable_after: Duration::from_secs(60),
        }
    }
}

impl BackoffPolicy {
    /// Returns the delay before attempt `attempt` (1-based), with ±20 % jitter.
    pub fn delay(&self, attempt: u32) -> Duration {
        let base = if attempt > self.max_attempts_before_failed {
            self.failed_delay
        } else {
            let exponent = attempt.saturating_sub(1).min(20);
            self.initial.saturating_mul(1u32 << exponent).min(self.max)
        };
        let jitter = 0.8 + fastrand::f64() * 0.4;
        base.mul_f64(jitter).max(Duration::from_millis(50))
    }

    /// Returns whether `attempt` failures mean the connection is FAILED.
    pub fn is_failed(&self, attempt: u32) -> bool {
        attempt >= self.max_attempts_before_failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_one_second_up_to_the_cap_with_bounded_jitter() {
        let policy = BackoffPolicy::default();
        for (attempt, expected_secs) in [(1u32, 1.0f64), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (10, 60.0)] {
            for _ in 0..50 {
                let delay = policy.delay(attempt).as_secs_f64();
                assert!(
                    delay >= expected_secs * 0.8 - 1e-9 && delay <= expected_secs * 1.2 + 1e-9,
                    "attempt {attempt}: {delay}"
                );
            }
        }
        assert!(policy.delay(11).as_secs_f64() >= 96.0);
        assert!(!policy.is_failed(9));
        assert!(policy.is_failed(10));
    }

    #[test]
    fn never_zero() {
        let policy = BackoffPolicy { initial: Duration::ZERO, ..BackoffPolicy::default() };
        assert!(policy.delay(1) >= Duration::from_millis(50));
    }
}
