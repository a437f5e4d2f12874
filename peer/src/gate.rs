//! The gate of one destination, asked by its sender threads before every attempt and told
//! every outcome: a pause asked for by the destination (`Retry-After`), its circuit, and its
//! rate limit, in that order. Pure: every call is given "now", so tests choose the clock.
//! Also the bounds of `peer.peer()`'s arguments that make a gate.

use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::bucket::TokenBucket;
use crate::circuit::{Change, Circuit, CircuitState, Health, Verdict};
use crate::config::{count, duration, ConfigError, PeerArgs};
use crate::policy::{Failure, Outcome};

/// Bounds of the rate limit (calls a second; 0 is no limit) and of its burst.
pub const MIN_RATE: f64 = 0.001;
pub const MAX_RATE: f64 = 1_000_000.0;
pub const MAX_BURST: i64 = 1_000_000;
/// Bounds of the circuit: consecutive failures (0: no circuit), and the probe interval.
pub const MAX_CIRCUIT_FAILURES: i64 = 1000;
pub const MAX_CIRCUIT_INTERVAL: Duration = Duration::from_secs(3600);

/// A refused `rate`, for [`ConfigError::Rate`].
pub struct RateError(pub f64);

impl std::fmt::Display for RateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "must be 0 (no limit) or between {MIN_RATE} and {MAX_RATE} calls a second ({})",
            self.0
        )
    }
}

/// What a gate is made from (arguments of `peer.peer()`).
#[derive(Debug, Clone, PartialEq)]
pub struct GateSettings {
    /// Attempts a second; 0: no limit.
    pub rate: f64,
    /// Attempts at once when tokens have piled up (at least 1).
    pub burst: u32,
    /// Consecutive failures that open the circuit; 0: no circuit.
    pub circuit_failures: u32,
    /// While open, one probe per this interval.
    pub circuit_interval: Duration,
    /// The longest a `Retry-After` pauses the whole destination (`max_backoff`).
    pub max_pause: Duration,
    /// The longest one attempt may take (connect plus total timeout).
    pub attempt_bound: Duration,
}

impl Default for GateSettings {
    fn default() -> Self {
        GateSettings {
            rate: 0.0,
            burst: 1,
            circuit_failures: 0,
            circuit_interval: Duration::from_secs(5),
            max_pause: Duration::from_secs(30),
            attempt_bound: Duration::from_secs(6),
        }
    }
}

impl GateSettings {
    /// Checks the gate's arguments of `peer.peer()`; a `Retry-After` pauses the destination
    /// at most `max_pause` (`max_backoff`), a probe is given `attempt_bound` to report back.
    pub fn from_args(
        a: &PeerArgs,
        max_pause: Duration,
        attempt_bound: Duration,
    ) -> Result<Self, ConfigError> {
        if !(a.rate == 0.0 || (MIN_RATE..=MAX_RATE).contains(&a.rate)) {
            return Err(ConfigError::Rate(a.rate));
        }
        let burst = count("burst", a.burst, 1, MAX_BURST)?;
        let failures = count(
            "circuit_failures",
            a.circuit_failures,
            0,
            MAX_CIRCUIT_FAILURES,
        )?;
        Ok(GateSettings {
            rate: a.rate,
            burst: u32::try_from(burst).unwrap_or(u32::MAX),
            circuit_failures: u32::try_from(failures).unwrap_or(u32::MAX),
            circuit_interval: duration(
                "circuit_interval",
                a.circuit_interval,
                MAX_CIRCUIT_INTERVAL,
                Some("probe without a pause"),
                "",
            )?,
            max_pause,
            attempt_bound,
        })
    }
}

/// Why an attempt must wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitReason {
    /// The destination asked for a pause (429 or 503 with `Retry-After`).
    Paused,
    /// The circuit is open (or its probe is out).
    CircuitOpen,
    /// No token left.
    RateLimit,
}

impl std::fmt::Display for WaitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WaitReason::Paused => "the destination's pause (Retry-After)",
            WaitReason::CircuitOpen => "the open circuit",
            WaitReason::RateLimit => "the rate limit",
        })
    }
}

/// The gate's answer before an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go now (a token, and the probe if one was due, are taken).
    Go,
    /// Not before `until`: ask again then. `until` is the earliest the gate could open.
    Wait { until: Instant, why: WaitReason },
}

/// What an outcome changed, for the log and the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    pub circuit: Option<Change>,
    /// The destination is paused this long from now.
    pub paused: Option<Duration>,
}

/// A gate's state at one moment (the report).
#[derive(Debug, Clone, PartialEq)]
pub struct GateView {
    pub circuit: CircuitState,
    pub consecutive_failures: u32,
    /// Open: time until the next probe may go.
    pub next_probe_in: Option<Duration>,
    /// Paused: time left.
    pub paused_for: Option<Duration>,
    /// Tokens available; None without a rate limit.
    pub tokens: Option<f64>,
    /// The status of the last answer; 0 when the last attempt got none (or none was made).
    pub last_status: u16,
}

#[derive(Debug)]
struct State {
    bucket: Option<TokenBucket>,
    circuit: Circuit,
    paused_until: Option<Instant>,
    last_status: u16,
}

/// One destination's gate, shared by its sender threads.
#[derive(Debug)]
pub struct Gate {
    max_pause: Duration,
    state: Mutex<State>,
}

impl Gate {
    pub fn new(settings: &GateSettings, now: Instant) -> Self {
        Gate {
            max_pause: settings.max_pause,
            state: Mutex::new(State {
                bucket: (settings.rate > 0.0)
                    .then(|| TokenBucket::new(settings.rate, settings.burst, now)),
                circuit: Circuit::new(
                    settings.circuit_failures,
                    settings.circuit_interval,
                    settings.attempt_bound,
                ),
                paused_until: None,
                last_status: 0,
            }),
        }
    }

    /// May an attempt go at `now`? When it may, its token (and the probe, if the circuit
    /// was open) are taken.
    pub fn admit(&self, now: Instant) -> Admission {
        let mut s = self.state.lock();
        if let Some(until) = s.paused_until.filter(|u| *u > now) {
            return Admission::Wait {
                until,
                why: WaitReason::Paused,
            };
        }
        let verdict = s.circuit.check(now);
        if let Verdict::WaitUntil(until) = verdict {
            return Admission::Wait {
                until,
                why: WaitReason::CircuitOpen,
            };
        }
        if let Some(bucket) = s.bucket.as_mut() {
            if let Err(until) = bucket.take(now) {
                return Admission::Wait {
                    until,
                    why: WaitReason::RateLimit,
                };
            }
        }
        if verdict == Verdict::Probe {
            s.circuit.start_probe(now);
        }
        Admission::Go
    }

    /// The attempt let through by the last [`Admission::Go`] was not made after all (every
    /// item of its batch expired while it waited): its token goes back, and a probe it took
    /// is released so that the next attempt probes at once.
    pub fn give_back(&self, now: Instant) {
        let mut s = self.state.lock();
        if let Some(bucket) = s.bucket.as_mut() {
            bucket.give_back(now);
        }
        s.circuit.record(Health::Unknown, now);
    }

    /// Tells the gate how an attempt ended at `now`.
    pub fn record(&self, outcome: &Outcome, now: Instant) -> Recorded {
        let mut s = self.state.lock();
        let mut recorded = Recorded::default();
        match outcome {
            Outcome::Status(status) => s.last_status = *status,
            Outcome::Throttled {
                status,
                retry_after,
            } => {
                s.last_status = *status;
                // The whole destination waits, at most max_backoff; the throttled request
                // itself waits its full Retry-After (see policy.rs).
                let pause = (*retry_after).min(self.max_pause);
                if !pause.is_zero() {
                    let until = now + pause;
                    s.paused_until = Some(s.paused_until.map_or(until, |u| u.max(until)));
                    recorded.paused = Some(pause);
                }
            }
            Outcome::Failed(Failure::Shutdown) => {}
            Outcome::Failed(_) => s.last_status = 0,
        }
        recorded.circuit = s.circuit.record(Health::of(outcome), now);
        recorded
    }

    pub fn circuit_state(&self) -> CircuitState {
        self.state.lock().circuit.state()
    }

    pub fn view(&self, now: Instant) -> GateView {
        let s = self.state.lock();
        GateView {
            circuit: s.circuit.state(),
            consecutive_failures: s.circuit.consecutive_failures(),
            next_probe_in: s
                .circuit
                .next_probe()
                .map(|at| at.saturating_duration_since(now)),
            paused_for: s
                .paused_until
                .filter(|u| *u > now)
                .map(|u| u.duration_since(now)),
            tokens: s.bucket.as_ref().map(|b| b.available(now)),
            last_status: s.last_status,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn throttled(secs: u64) -> Outcome {
        Outcome::Throttled {
            status: 429,
            retry_after: Duration::from_secs(secs),
        }
    }

    fn refused() -> Outcome {
        Outcome::Failed(Failure::Network("refused".into()))
    }

    fn refused_args(change: impl FnOnce(&mut PeerArgs)) -> String {
        let mut a = PeerArgs::default();
        change(&mut a);
        crate::config::settings_from("x", &a)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn gate_arguments_are_checked_naming_the_argument() {
        let s = crate::config::settings_from("x", &PeerArgs::default()).unwrap();
        assert_eq!(
            s.gate,
            GateSettings {
                max_pause: secs(30),
                ..GateSettings::default()
            }
        );
        for (rate, ok) in [(0.0, true), (0.001, true), (1e6, true), (0.0005, false)] {
            let a = PeerArgs {
                rate,
                ..PeerArgs::default()
            };
            assert_eq!(crate::config::settings_from("x", &a).is_ok(), ok, "{rate}");
        }
        for bad in [-1.0, 2e6, f64::NAN, f64::INFINITY] {
            let e = refused_args(|a| a.rate = bad);
            assert!(
                e.starts_with("rate must be 0 (no limit) or between 0.001 and 1000000 calls"),
                "{e}"
            );
        }
        assert_eq!(
            refused_args(|a| a.burst = 0),
            "burst must be between 1 and 1000000 (0)"
        );
        assert_eq!(
            refused_args(|a| a.circuit_failures = -1),
            "circuit_failures must be between 0 and 1000 (-1)"
        );
        assert_eq!(
            refused_args(|a| a.circuit_interval = 0.0),
            "circuit_interval must be at least 1 ms (0 would probe without a pause) (0)"
        );
        assert!(refused_args(|a| a.circuit_interval = 3601.0)
            .starts_with("circuit_interval must be at most 3600000 ms"));
    }

    #[test]
    fn without_limits_every_attempt_goes() {
        let t = Instant::now();
        let g = Gate::new(&GateSettings::default(), t);
        for _ in 0..1000 {
            assert_eq!(g.admit(t), Admission::Go);
            g.record(&refused(), t);
        }
        let v = g.view(t);
        assert_eq!(v.circuit, CircuitState::Closed);
        assert_eq!(v.tokens, None);
        assert_eq!(v.paused_for, None);
    }

    #[test]
    fn retry_after_pauses_the_destination_bounded_by_max_backoff() {
        let t = Instant::now();
        let g = Gate::new(
            &GateSettings {
                max_pause: secs(10),
                ..GateSettings::default()
            },
            t,
        );
        let r = g.record(&throttled(2), t);
        assert_eq!(r.paused, Some(secs(2)));
        assert_eq!(
            g.admit(t + Duration::from_millis(1999)),
            Admission::Wait {
                until: t + secs(2),
                why: WaitReason::Paused
            }
        );
        assert_eq!(g.admit(t + secs(2)), Admission::Go);
        // An hour asked: paused for max_backoff only.
        let t2 = t + secs(3);
        assert_eq!(g.record(&throttled(3600), t2).paused, Some(secs(10)));
        assert_eq!(g.view(t2).paused_for, Some(secs(10)));
        assert_eq!(g.view(t2).last_status, 429);
        // A shorter pause asked meanwhile does not shorten the longer one.
        g.record(&throttled(1), t2);
        assert_eq!(g.view(t2).paused_for, Some(secs(10)));
        assert_eq!(g.admit(t2 + secs(10)), Admission::Go);
    }

    #[test]
    fn max_backoff_zero_never_pauses() {
        let t = Instant::now();
        let g = Gate::new(
            &GateSettings {
                max_pause: Duration::ZERO,
                ..GateSettings::default()
            },
            t,
        );
        assert_eq!(g.record(&throttled(5), t).paused, None);
        assert_eq!(g.admit(t), Admission::Go);
    }

    #[test]
    fn the_rate_limit_spaces_attempts_and_a_waiting_one_takes_no_token() {
        let t = Instant::now();
        let g = Gate::new(
            &GateSettings {
                rate: 2.0,
                burst: 1,
                ..GateSettings::default()
            },
            t,
        );
        assert_eq!(g.admit(t), Admission::Go);
        assert!(matches!(
            g.admit(t),
            Admission::Wait {
                why: WaitReason::RateLimit,
                ..
            }
        ));
        // Paused: the bucket is not even asked, so the token is still there after.
        g.record(&throttled(1), t + Duration::from_millis(500));
        assert!(matches!(
            g.admit(t + Duration::from_millis(600)),
            Admission::Wait {
                why: WaitReason::Paused,
                ..
            }
        ));
        assert_eq!(g.admit(t + Duration::from_millis(1500)), Admission::Go);
        assert!(g.view(t + Duration::from_millis(1500)).tokens.unwrap() < 1.0);
    }

    #[test]
    fn an_open_circuit_lets_one_probe_through_per_interval_and_closes_on_an_answer() {
        let t = Instant::now();
        let g = Gate::new(
            &GateSettings {
                circuit_failures: 2,
                circuit_interval: secs(1),
                ..GateSettings::default()
            },
            t,
        );
        assert_eq!(g.record(&refused(), t).circuit, None);
        assert_eq!(
            g.record(&Outcome::Status(502), t).circuit,
            Some(Change::Opened(2))
        );
        assert_eq!(g.view(t).last_status, 502);
        assert_eq!(
            g.admit(t),
            Admission::Wait {
                until: t + secs(1),
                why: WaitReason::CircuitOpen
            }
        );
        assert_eq!(g.view(t).next_probe_in, Some(secs(1)));
        let due = t + secs(1);
        assert_eq!(g.admit(due), Admission::Go);
        assert_eq!(g.circuit_state(), CircuitState::HalfOpen);
        // A second sender thread waits behind the probe.
        assert!(matches!(
            g.admit(due),
            Admission::Wait {
                why: WaitReason::CircuitOpen,
                ..
            }
        ));
        assert_eq!(g.record(&refused(), due).circuit, None);
        assert_eq!(g.view(due).last_status, 0);
        assert_eq!(g.circuit_state(), CircuitState::Open);
        let due2 = due + secs(1);
        assert_eq!(g.admit(due2), Admission::Go);
        assert_eq!(
            g.record(&Outcome::Status(204), due2).circuit,
            Some(Change::Closed)
        );
        assert_eq!(g.admit(due2), Admission::Go);
    }

    #[test]
    fn a_due_probe_without_a_token_is_not_taken() {
        let t = Instant::now();
        let g = Gate::new(
            &GateSettings {
                rate: 1.0,
                burst: 1,
                circuit_failures: 1,
                circuit_interval: Duration::from_millis(100),
                ..GateSettings::default()
            },
            t,
        );
        assert_eq!(g.admit(t), Admission::Go);
        g.record(&refused(), t);
        let due = t + Duration::from_millis(100);
        assert!(matches!(
            g.admit(due),
            Admission::Wait {
                why: WaitReason::RateLimit,
                ..
            }
        ));
        // Still open (not half-open): the probe goes with the next token.
        assert_eq!(g.circuit_state(), CircuitState::Open);
        assert_eq!(g.admit(t + secs(1)), Admission::Go);
        assert_eq!(g.circuit_state(), CircuitState::HalfOpen);
    }

    #[test]
    fn an_attempt_not_made_gives_back_its_token_and_its_probe() {
        let t = Instant::now();
        let g = Gate::new(
            &GateSettings {
                rate: 0.1,
                burst: 1,
                circuit_failures: 1,
                circuit_interval: secs(1),
                ..GateSettings::default()
            },
            t,
        );
        assert_eq!(g.admit(t), Admission::Go);
        g.give_back(t);
        assert_eq!(g.admit(t), Admission::Go);
        g.record(&refused(), t);
        let due = t + secs(10);
        assert_eq!(g.admit(due), Admission::Go);
        assert_eq!(g.circuit_state(), CircuitState::HalfOpen);
        g.give_back(due);
        // Open again with the probe due at once, and the token back for it.
        assert_eq!(g.circuit_state(), CircuitState::Open);
        assert_eq!(g.admit(due), Admission::Go);
        assert_eq!(g.circuit_state(), CircuitState::HalfOpen);
    }
}
