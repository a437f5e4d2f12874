//! The rate limit of one destination: a token bucket of `burst` tokens refilled at `rate`
//! tokens a second, one token per attempt. Pure: every call is given "now", so tests choose
//! the clock.

use std::time::{Duration, Instant};

/// Below this a token count is taken as whole: float arithmetic on elapsed time may leave a
/// waiter woken at the computed instant one rounding error short of a token.
const EPSILON: f64 = 1e-9;

/// At most `rate` attempts a second on average, `burst` at once.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    /// A full bucket at `now`. `rate` is tokens per second (more than 0), `burst` at least 1.
    pub fn new(rate: f64, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Tokens available at `now` (fractions included), without taking any.
    pub fn available(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        (self.tokens + elapsed * self.rate).min(self.burst)
    }

    /// Takes a token at `now`, or says when the next one will be there.
    pub fn take(&mut self, now: Instant) -> Result<(), Instant> {
        let available = self.available(now);
        if available + EPSILON >= 1.0 {
            self.tokens = (available - 1.0).max(0.0);
            self.at = now.max(self.at);
            return Ok(());
        }
        Err(self.next_token_at(now))
    }

    /// Puts back the token taken at or before `now` for an attempt that was not made (at
    /// most `burst` tokens in all).
    pub fn give_back(&mut self, now: Instant) {
        self.tokens = (self.available(now) + 1.0).min(self.burst);
        self.at = now.max(self.at);
    }

    /// When a whole token will be available, if none is taken meanwhile.
    pub fn next_token_at(&self, now: Instant) -> Instant {
        let missing = (1.0 - self.available(now)).max(0.0);
        // rate is at least the configured minimum: the wait is finite and fits a Duration.
        let wait = Duration::try_from_secs_f64(missing / self.rate).unwrap_or(Duration::MAX);
        now.checked_add(wait)
            .unwrap_or(now + Duration::from_secs(86_400))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// `got` is `Err(want)` within a microsecond (float arithmetic on seconds).
    fn waits_until(got: Result<(), Instant>, want: Instant) -> bool {
        got.is_err_and(|at| at.max(want) - at.min(want) < Duration::from_micros(1))
    }

    #[test]
    fn a_full_bucket_lets_a_burst_through_then_spaces_calls_at_the_rate() {
        let t = Instant::now();
        let mut b = TokenBucket::new(4.0, 2, t);
        assert_eq!(b.take(t), Ok(()));
        assert_eq!(b.take(t), Ok(()));
        // Empty: the next token comes after 1/4 s.
        assert!(waits_until(b.take(t), t + ms(250)));
        assert!(waits_until(b.take(t + ms(249)), t + ms(250)));
        assert_eq!(b.take(t + ms(250)), Ok(()));
        assert!(waits_until(b.take(t + ms(250)), t + ms(500)));
        assert_eq!(b.take(t + ms(500)), Ok(()));
    }

    #[test]
    fn a_token_given_back_is_there_again_up_to_the_burst() {
        let t = Instant::now();
        let mut b = TokenBucket::new(1.0, 1, t);
        assert_eq!(b.take(t), Ok(()));
        b.give_back(t);
        assert_eq!(b.take(t), Ok(()));
        assert!(b.take(t).is_err());
        // Full: nothing above the burst.
        let later = t + Duration::from_secs(10);
        b.give_back(later);
        assert!((b.available(later) - 1.0).abs() < 1e-9);
    }

    #[test]
    fn an_idle_bucket_fills_up_to_the_burst_and_no_more() {
        let t = Instant::now();
        let mut b = TokenBucket::new(10.0, 3, t);
        for _ in 0..3 {
            assert_eq!(b.take(t), Ok(()));
        }
        assert!(b.available(t) < 1.0);
        let later = t + Duration::from_secs(3600);
        assert!((b.available(later) - 3.0).abs() < 1e-9);
        for _ in 0..3 {
            assert_eq!(b.take(later), Ok(()));
        }
        assert!(b.take(later).is_err());
    }

    #[test]
    fn slow_rates_wait_long_and_a_clock_going_back_takes_nothing() {
        let t = Instant::now();
        // Three calls a minute.
        let mut b = TokenBucket::new(0.05, 1, t);
        assert_eq!(b.take(t), Ok(()));
        assert!(waits_until(b.take(t + ms(1)), t + Duration::from_secs(20)));
        // An earlier `now` (another thread's reading) neither adds nor removes tokens.
        assert!(waits_until(b.take(t), t + Duration::from_secs(20)));
        assert_eq!(b.take(t + Duration::from_secs(20)), Ok(()));
    }

    #[test]
    fn over_any_window_at_most_burst_plus_rate_times_window_pass() {
        let t = Instant::now();
        let mut b = TokenBucket::new(5.0, 2, t);
        let mut passed = Vec::new();
        let mut now = t;
        while now < t + Duration::from_secs(3) {
            if b.take(now).is_ok() {
                passed.push(now);
            }
            now += ms(7);
        }
        for (i, a) in passed.iter().enumerate() {
            for (j, z) in passed.iter().enumerate().skip(i) {
                let window = z.duration_since(*a).as_secs_f64();
                assert!((j - i + 1) as f64 <= 2.0 + 5.0 * window + 1e-6, "{i}..{j}");
            }
        }
        // 2 at once, then 5 a second for 3 s.
        assert!((16..=17).contains(&passed.len()), "{}", passed.len());
    }
}
