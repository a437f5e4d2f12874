//! The retry policy: which outcomes are retried, how long to wait, when to give up. Pure
//! functions of the attempt count, the enqueue time and "now", so tests choose the clock.

use std::time::{Duration, Instant};

/// What one attempt gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The destination answered with this status.
    Status(u16),
    /// No answer, worth retrying: connection refused, DNS failure, timeout, reset.
    Transient(String),
    /// No answer and retrying would not help: TLS verification failed, bad URL, shutdown.
    Permanent(String),
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Status(s) => write!(f, "HTTP status {s}"),
            Outcome::Transient(m) | Outcome::Permanent(m) => f.write_str(m),
        }
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Sent,
    RetryAfter(Duration),
    /// Given up: counted as `failed`.
    Failed(String),
    /// Given up because of `max_age`: counted as `expired`.
    Expired(String),
}

/// Retry settings of a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_age: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempts + 1`, after `attempts` failed ones.
    pub fn backoff_after(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        self.backoff
            .saturating_mul(1u32 << doublings)
            .min(self.max_backoff)
    }

    /// True when a request queued at `queued_at` is too old to be attempted at `now`.
    pub fn is_expired(&self, queued_at: Instant, now: Instant) -> bool {
        now.saturating_duration_since(queued_at) > self.max_age
    }

    /// Decides after attempt number `attempts` (1-based) gave `outcome` at `now`.
    pub fn decide(
        &self,
        attempts: u32,
        queued_at: Instant,
        now: Instant,
        outcome: &Outcome,
    ) -> Decision {
        let retryable = match outcome {
            Outcome::Status(s) if (200..400).contains(s) => return Decision::Sent,
            Outcome::Status(s) => *s >= 500 || *s == 408 || *s == 429,
            Outcome::Transient(_) => true,
            Outcome::Permanent(_) => false,
        };
        if !retryable {
            return Decision::Failed(format!("{outcome} (not retried)"));
        }
        if attempts >= self.max_attempts {
            return Decision::Failed(format!("{outcome} after {attempts} attempts"));
        }
        let wait = self.backoff_after(attempts);
        if self.is_expired(queued_at, now + wait) {
            return Decision::Expired(format!(
                "{outcome} after {attempts} attempts, next one past max_age {:?}",
                self.max_age
            ));
        }
        Decision::RetryAfter(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(300),
            max_age: Duration::from_secs(10),
        }
    }

    #[test]
    fn success_and_client_errors() {
        let p = policy();
        let t = Instant::now();
        assert_eq!(p.decide(1, t, t, &Outcome::Status(200)), Decision::Sent);
        assert_eq!(p.decide(1, t, t, &Outcome::Status(301)), Decision::Sent);
        assert!(matches!(
            p.decide(1, t, t, &Outcome::Status(405)),
            Decision::Failed(_)
        ));
        assert!(matches!(
            p.decide(1, t, t, &Outcome::Permanent("tls".into())),
            Decision::Failed(_)
        ));
    }

    #[test]
    fn exponential_backoff_capped() {
        let p = policy();
        let t = Instant::now();
        let ms = Duration::from_millis;
        assert_eq!(
            p.decide(1, t, t, &Outcome::Status(503)),
            Decision::RetryAfter(ms(100))
        );
        assert_eq!(
            p.decide(2, t, t, &Outcome::Transient("refused".into())),
            Decision::RetryAfter(ms(200))
        );
        assert_eq!(
            p.decide(3, t, t, &Outcome::Status(429)),
            Decision::RetryAfter(ms(300))
        );
        assert!(
            matches!(p.decide(4, t, t, &Outcome::Status(500)), Decision::Failed(m) if m.contains("4 attempts"))
        );
        assert_eq!(p.backoff_after(40), ms(300));
    }

    #[test]
    fn max_age_with_an_injected_clock() {
        let p = policy();
        let queued = Instant::now();
        let later = queued + Duration::from_millis(9_950);
        assert!(matches!(
            p.decide(1, queued, later, &Outcome::Status(502)),
            Decision::Expired(_)
        ));
        assert!(!p.is_expired(queued, queued + Duration::from_secs(10)));
        assert!(p.is_expired(queued, queued + Duration::from_millis(10_001)));
    }

    #[test]
    fn one_attempt_means_no_retry() {
        let p = RetryPolicy {
            max_attempts: 1,
            ..policy()
        };
        let t = Instant::now();
        assert!(matches!(
            p.decide(1, t, t, &Outcome::Status(503)),
            Decision::Failed(_)
        ));
    }
}
