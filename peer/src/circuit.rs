//! The circuit of one destination: after `failures` consecutive failed attempts it opens;
//! while open, one probe attempt is let through per `interval`; an answer closes it again.
//! Pure: every call is given "now", so tests choose the clock.

use std::time::{Duration, Instant};

use crate::policy::{Failure, Outcome};

/// What the circuit says of an attempt at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Closed: go.
    Allow,
    /// Open and a probe is due: this attempt may be it ([`Circuit::start_probe`]).
    Probe,
    /// Open (or a probe is out): not before this moment.
    WaitUntil(Instant),
}

/// The state users see (report, `circuit` gauge: 0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CircuitState {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl CircuitState {
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half-open",
        }
    }
}

/// What an outcome says about the destination itself (not about the request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// It answered, whatever the status below 500 (a 404 or a 429 come from a live server).
    Alive,
    /// No answer (connection refused or reset, DNS, timeout) or a 5xx without Retry-After.
    Failing,
    /// Says nothing about the destination: a TLS or libcurl setup error (every attempt would
    /// fail the same way, and is not retried), or a transfer cut short at shutdown.
    Unknown,
}

impl Health {
    pub fn of(outcome: &Outcome) -> Health {
        match outcome {
            Outcome::Status(s) if *s >= 500 => Health::Failing,
            Outcome::Status(_) | Outcome::Throttled { .. } => Health::Alive,
            Outcome::Failed(Failure::Network(_) | Failure::Dns(_)) => Health::Failing,
            Outcome::Failed(Failure::Tls(_) | Failure::BadRequest(_) | Failure::Shutdown) => {
                Health::Unknown
            }
        }
    }
}

/// A change worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Opened after this many consecutive failures.
    Opened(u32),
    /// A probe got an answer: closed.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        next_probe: Instant,
    },
    /// A probe is out; another one is let through after `stale_at` (in case it never
    /// reports back, e.g. its thread was left running at a discard).
    HalfOpen {
        stale_at: Instant,
    },
}

/// Waiters behind a probe in flight look again this often (it may close the circuit at
/// any moment).
pub const PROBE_POLL: Duration = Duration::from_millis(100);

/// One destination's circuit. `threshold` 0: never opens.
#[derive(Debug, Clone)]
pub struct Circuit {
    threshold: u32,
    interval: Duration,
    /// The longest one attempt may take (connect plus total timeout).
    attempt_bound: Duration,
    consecutive: u32,
    state: State,
}

impl Circuit {
    pub fn new(threshold: u32, interval: Duration, attempt_bound: Duration) -> Self {
        Circuit {
            threshold,
            interval,
            attempt_bound,
            consecutive: 0,
            state: State::Closed,
        }
    }

    pub fn state(&self) -> CircuitState {
        match self.state {
            State::Closed => CircuitState::Closed,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// Consecutive failures counted so far.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }

    /// When the next probe may go (open only).
    pub fn next_probe(&self) -> Option<Instant> {
        match self.state {
            State::Open { next_probe } => Some(next_probe),
            _ => None,
        }
    }

    /// May an attempt go at `now`? Changes nothing.
    pub fn check(&self, now: Instant) -> Verdict {
        match self.state {
            State::Closed => Verdict::Allow,
            State::Open { next_probe } if now >= next_probe => Verdict::Probe,
            State::Open { next_probe } => Verdict::WaitUntil(next_probe),
            State::HalfOpen { stale_at } if now >= stale_at => Verdict::Probe,
            State::HalfOpen { stale_at } => Verdict::WaitUntil(stale_at.min(now + PROBE_POLL)),
        }
    }

    /// The attempt let through by [`Verdict::Probe`] is going now.
    pub fn start_probe(&mut self, now: Instant) {
        self.state = State::HalfOpen {
            stale_at: now + self.interval.max(self.attempt_bound),
        };
    }

    /// Counts the outcome of an attempt made at `now`.
    pub fn record(&mut self, health: Health, now: Instant) -> Option<Change> {
        match health {
            Health::Alive => {
                self.consecutive = 0;
                let was_closed = self.state == State::Closed;
                self.state = State::Closed;
                (!was_closed).then_some(Change::Closed)
            }
            Health::Failing => {
                self.consecutive = self.consecutive.saturating_add(1);
                match self.state {
                    State::Closed if self.threshold > 0 && self.consecutive >= self.threshold => {
                        self.open(now);
                        Some(Change::Opened(self.consecutive))
                    }
                    State::Closed => None,
                    // A probe failed (or a transfer that began before the opening did).
                    State::Open { .. } | State::HalfOpen { .. } => {
                        self.open(now);
                        None
                    }
                }
            }
            Health::Unknown => {
                // A probe that says nothing lets the next attempt probe at once.
                if let State::HalfOpen { .. } = self.state {
                    self.state = State::Open { next_probe: now };
                }
                None
            }
        }
    }

    fn open(&mut self, now: Instant) {
        self.state = State::Open {
            next_probe: now + self.interval,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(5);
    const BOUND: Duration = Duration::from_secs(6);

    fn refused() -> Health {
        Health::of(&Outcome::Failed(Failure::Network("refused".into())))
    }

    #[test]
    fn what_counts_as_a_failure() {
        assert_eq!(Health::of(&Outcome::Status(200)), Health::Alive);
        assert_eq!(Health::of(&Outcome::Status(404)), Health::Alive);
        assert_eq!(Health::of(&Outcome::Status(429)), Health::Alive);
        assert_eq!(
            Health::of(&Outcome::Throttled {
                status: 503,
                retry_after: Duration::from_secs(2)
            }),
            Health::Alive
        );
        assert_eq!(Health::of(&Outcome::Status(503)), Health::Failing);
        assert_eq!(Health::of(&Outcome::Status(500)), Health::Failing);
        assert_eq!(refused(), Health::Failing);
        assert_eq!(
            Health::of(&Outcome::Failed(Failure::Dns("no such host".into()))),
            Health::Failing
        );
        assert_eq!(
            Health::of(&Outcome::Failed(Failure::Tls("bad cert".into()))),
            Health::Unknown
        );
        assert_eq!(
            Health::of(&Outcome::Failed(Failure::Shutdown)),
            Health::Unknown
        );
    }

    #[test]
    fn opens_after_k_consecutive_failures_and_an_answer_resets_the_count() {
        let t = Instant::now();
        let mut c = Circuit::new(3, INTERVAL, BOUND);
        assert_eq!(c.record(refused(), t), None);
        assert_eq!(c.record(refused(), t), None);
        assert_eq!(c.record(Health::Alive, t), None);
        assert_eq!(c.consecutive_failures(), 0);
        assert_eq!(c.record(refused(), t), None);
        assert_eq!(c.record(refused(), t), None);
        assert_eq!(c.check(t), Verdict::Allow);
        assert_eq!(c.record(refused(), t), Some(Change::Opened(3)));
        assert_eq!(c.state(), CircuitState::Open);
        assert_eq!(c.check(t), Verdict::WaitUntil(t + INTERVAL));
        assert_eq!(c.next_probe(), Some(t + INTERVAL));
    }

    #[test]
    fn one_probe_per_interval_while_open_and_an_answer_closes_it() {
        let t = Instant::now();
        let mut c = Circuit::new(1, INTERVAL, BOUND);
        assert_eq!(c.record(refused(), t), Some(Change::Opened(1)));
        let due = t + INTERVAL;
        assert_eq!(c.check(due), Verdict::Probe);
        c.start_probe(due);
        assert_eq!(c.state(), CircuitState::HalfOpen);
        // Others wait behind the probe, looking again soon.
        assert_eq!(c.check(due), Verdict::WaitUntil(due + PROBE_POLL));
        // The probe fails: open for another interval, no new log line.
        assert_eq!(c.record(refused(), due), None);
        assert_eq!(c.check(due), Verdict::WaitUntil(due + INTERVAL));
        let due2 = due + INTERVAL;
        assert_eq!(c.check(due2), Verdict::Probe);
        c.start_probe(due2);
        assert_eq!(c.record(Health::Alive, due2), Some(Change::Closed));
        assert_eq!(c.state(), CircuitState::Closed);
        assert_eq!(c.check(due2), Verdict::Allow);
    }

    #[test]
    fn a_probe_that_never_reports_back_is_replaced() {
        let t = Instant::now();
        let mut c = Circuit::new(1, INTERVAL, BOUND);
        c.record(refused(), t);
        c.start_probe(t + INTERVAL);
        // Stale after the longer of the interval and one attempt's bound.
        let stale = t + INTERVAL + BOUND;
        assert_eq!(
            c.check(stale - Duration::from_millis(1)),
            Verdict::WaitUntil(stale)
        );
        assert_eq!(c.check(stale), Verdict::Probe);
    }

    #[test]
    fn a_probe_that_says_nothing_lets_the_next_attempt_probe_at_once() {
        let t = Instant::now();
        let mut c = Circuit::new(2, INTERVAL, BOUND);
        c.record(refused(), t);
        c.record(refused(), t);
        c.start_probe(t + INTERVAL);
        assert_eq!(c.record(Health::Unknown, t + INTERVAL), None);
        assert_eq!(c.check(t + INTERVAL), Verdict::Probe);
    }

    #[test]
    fn threshold_zero_never_opens() {
        let t = Instant::now();
        let mut c = Circuit::new(0, INTERVAL, BOUND);
        for _ in 0..10_000 {
            assert_eq!(c.record(refused(), t), None);
        }
        assert_eq!(c.check(t), Verdict::Allow);
        assert_eq!(c.state(), CircuitState::Closed);
    }
}
