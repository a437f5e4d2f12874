//! The retry policy: which outcomes are retried, how long to wait, when to give up. Pure
//! functions of the attempt count, the enqueue time and "now", so tests choose the clock.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What one attempt gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The destination answered with this status.
    Status(u16),
    /// The destination answered 429 or 503 with a `Retry-After` of this much from now.
    Throttled { status: u16, retry_after: Duration },
    /// No answer.
    Failed(Failure),
}

/// Why an attempt got no answer. The text is libcurl's description, for the log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Connection refused or reset, timeout, a network error: worth retrying.
    Network(String),
    /// The name did not resolve (it may, later): worth retrying.
    Dns(String),
    /// The certificate or host name did not verify: retrying would fail again.
    Tls(String),
    /// libcurl refused the request itself (bad URL, unsupported option): would fail again.
    BadRequest(String),
    /// The transfer was abandoned at the stop deadline.
    Shutdown,
}

impl Failure {
    pub fn retryable(&self) -> bool {
        matches!(self, Failure::Network(_) | Failure::Dns(_))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Network(m) => f.write_str(m),
            Failure::Dns(m) => write!(f, "DNS: {m}"),
            Failure::Tls(m) => write!(f, "TLS: {m}"),
            Failure::BadRequest(m) => write!(f, "bad request: {m}"),
            Failure::Shutdown => f.write_str("transfer aborted: shutdown"),
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Status(s) if (300..400).contains(s) => {
                write!(f, "HTTP status {s} (redirects are not followed)")
            }
            Outcome::Status(s) => write!(f, "HTTP status {s}"),
            Outcome::Throttled {
                status,
                retry_after,
            } => write!(f, "HTTP status {status} with Retry-After {retry_after:?}"),
            Outcome::Failed(failure) => failure.fmt(f),
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
        // Only 2xx is success: a 3xx is not followed (an API that redirects http to https
        // would otherwise lose every purge silently), and retrying it would not help.
        let retryable = match outcome {
            Outcome::Status(s) if (200..300).contains(s) => return Decision::Sent,
            Outcome::Status(s) => *s >= 500 || *s == 408 || *s == 429,
            Outcome::Throttled { .. } => true,
            Outcome::Failed(failure) => failure.retryable(),
        };
        if !retryable {
            return Decision::Failed(format!("{outcome} (not retried)"));
        }
        if attempts >= self.max_attempts {
            return Decision::Failed(format!("{outcome} after {attempts} attempts"));
        }
        // The destination's own Retry-After, when it gave one, instead of our backoff, and
        // in full: an API that throttles may punish a retry that comes early (longer bans,
        // a revoked token). max_backoff caps our own guesses, not its answer; max_age bounds
        // both (below: a wait past it gives the request up now).
        let wait = match outcome {
            Outcome::Throttled { retry_after, .. } => *retry_after,
            _ => self.backoff_after(attempts),
        };
        if now
            .checked_add(wait)
            .is_none_or(|then| self.is_expired(queued_at, then))
        {
            return Decision::Expired(format!(
                "{outcome} after {attempts} attempts, next one past max_age {:?}",
                self.max_age
            ));
        }
        Decision::RetryAfter(wait)
    }
}

/// Parses a `Retry-After` value received at `now`: delay-seconds or an HTTP-date (RFC 9110
/// 10.2.3; the IMF-fixdate form, which is the one senders must generate). A date in the past
/// is no wait. `None` for anything else.
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let value = std::str::from_utf8(value).ok()?.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Clamp absurd values; max_age bounds the wait anyway.
        return Some(Duration::from_secs(
            value.parse::<u64>().unwrap_or(u64::MAX).min(1 << 32),
        ));
    }
    let at = UNIX_EPOCH + Duration::from_secs(parse_imf_fixdate(value)?);
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// Seconds since the epoch of `Sun, 06 Nov 1994 08:49:37 GMT`.
fn parse_imf_fixdate(s: &str) -> Option<u64> {
    let mut parts = s.split(' ');
    let (_weekday, day, month, year, time, zone) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    );
    if parts.next().is_some() || zone != "GMT" || day.len() != 2 || year.len() != 4 {
        return None;
    }
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = u64::try_from(MONTHS.iter().position(|m| *m == month)?).ok()? + 1;
    let day: u64 = day.parse().ok()?;
    let year: u64 = year.parse().ok()?;
    let mut hms = time.split(':').map(|p| {
        if p.len() == 2 {
            p.parse::<u64>().ok()
        } else {
            None
        }
    });
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some()
        || !(1..=31).contains(&day)
        || year < 1970
        || h > 23
        || m > 59
        || sec > 60
    {
        return None;
    }
    // Days from the civil date (H. Hinnant's algorithm), years from March.
    let (y, mp) = if month > 2 {
        (year, month - 3)
    } else {
        (year - 1, month + 9)
    };
    let era = y / 400;
    let yoe = y % 400;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = (era * 146_097 + doe).checked_sub(719_468)?;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
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
        assert_eq!(p.decide(1, t, t, &Outcome::Status(204)), Decision::Sent);
        assert!(matches!(
            p.decide(1, t, t, &Outcome::Status(405)),
            Decision::Failed(_)
        ));
        assert!(matches!(
            p.decide(1, t, t, &Outcome::Failed(Failure::Tls("bad cert".into()))),
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
            p.decide(
                2,
                t,
                t,
                &Outcome::Failed(Failure::Network("refused".into()))
            ),
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

    #[test]
    fn redirects_are_failures_with_the_status_in_the_reason() {
        let p = policy();
        let t = Instant::now();
        for status in [301, 302, 307, 308, 304] {
            match p.decide(1, t, t, &Outcome::Status(status)) {
                Decision::Failed(reason) => {
                    assert!(
                        reason.contains(&format!("HTTP status {status}")),
                        "{reason}"
                    );
                    assert!(reason.contains("not followed"), "{reason}");
                }
                other => panic!("{status}: {other:?}"),
            }
        }
    }

    #[test]
    fn retry_after_replaces_the_backoff_in_full_bounded_only_by_max_age() {
        let p = policy();
        let t = Instant::now();
        let throttled = |secs: f64| Outcome::Throttled {
            status: 429,
            retry_after: Duration::from_secs_f64(secs),
        };
        assert_eq!(
            p.decide(1, t, t, &throttled(0.0)),
            Decision::RetryAfter(Duration::ZERO)
        );
        assert_eq!(
            p.decide(1, t, t, &throttled(0.25)),
            Decision::RetryAfter(Duration::from_millis(250))
        );
        // Not capped by max_backoff (300 ms here): the destination's wait, in full...
        assert_eq!(
            p.decide(3, t, t, &throttled(2.0)),
            Decision::RetryAfter(Duration::from_secs(2))
        );
        // ...unless it ends past max_age (10 s here): then given up now, as expired.
        assert!(matches!(
            p.decide(3, t, t, &throttled(3600.0)),
            Decision::Expired(_)
        ));
        assert!(matches!(
            p.decide(3, t, t, &throttled(f64::from(u32::MAX))),
            Decision::Expired(_)
        ));
        // Past max_age: given up now rather than retried after it.
        let late = t + Duration::from_millis(9_900);
        assert!(matches!(
            p.decide(1, t, late, &throttled(1.0)),
            Decision::Expired(_)
        ));
    }

    #[test]
    fn retry_after_seconds_and_http_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after(b"120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(b" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after(b"Sun, 06 Nov 1994 08:50:07 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after(b"Tue, 01 Mar 2000 00:00:00 GMT", UNIX_EPOCH),
            Some(Duration::from_secs(951_868_800))
        );
        // In the past: retry now.
        assert_eq!(
            parse_retry_after(b"Sat, 05 Nov 1994 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in [
            &b""[..],
            b"-1",
            b"1.5",
            b"soon",
            b"Sun, 06 Nov 1994 08:49:37 CET",
            b"\xff",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }
}
