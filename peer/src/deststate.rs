//! What one destination keeps besides its queue: its label (in counters and the report), its
//! counters, and its gate (pause, circuit, rate limit). It hangs off the destination's
//! [`Lane`](crate::worker::Lane), so a destination made or removed at run time brings or takes
//! all of it (its VSC segment included).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::circuit::Change;
use crate::dest::Destination;
use crate::gate::{Admission, Gate, GateSettings, GateView};
use crate::policy::{Outcome, RetryPolicy};
use crate::stats::{DestCounterStore, DestCounters};
use crate::worker::Control;

/// The longest label accepted from VCL.
pub const MAX_LABEL_LEN: usize = 64;

/// Why a destination name given in VCL is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    Invalid(String),
    Taken(String),
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameError::Invalid(name) => write!(
                f,
                "name: {} must be 1 to {MAX_LABEL_LEN} letters, digits, '.', '-' or '_'",
                crate::dest::quoted(name)
            ),
            NameError::Taken(name) => write!(
                f,
                "name: \"{name}\" is already the name of another destination of this peer"
            ),
        }
    }
}

impl std::error::Error for NameError {}

fn label_byte_ok(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')
}

/// The label of a destination: `name` when given (checked), else one made from its host and
/// port (`api.example.com_443`, `127.0.0.1_8080`, `--1_80` for `[::1]:80`; a discovered
/// address is appended, `caches.example_80_10.0.0.2`), made unique
/// among `taken` with a suffix (`_2`, `_3`...).
pub fn label_for(dest: &Destination, name: &str, taken: &[&str]) -> Result<String, NameError> {
    if !name.is_empty() {
        if name.len() > MAX_LABEL_LEN || !name.bytes().all(label_byte_ok) {
            return Err(NameError::Invalid(name.to_string()));
        }
        if taken.contains(&name) {
            return Err(NameError::Taken(name.to_string()));
        }
        return Ok(name.to_string());
    }
    let host: String = dest
        .host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .bytes()
        .map(|b| match b {
            b':' => '-',
            b if label_byte_ok(b) => char::from(b),
            _ => '_',
        })
        .collect();
    let mut base = format!("{host}_{}", dest.port);
    // One address of a discovered name: named after it too (`cache.example_80_10.0.0.2`).
    if let Some(address) = dest.address {
        base.extend(std::iter::once('_').chain(address.to_string().replace(':', "-").chars()));
    }
    let mut label = base.clone();
    let mut n = 1;
    while taken.contains(&label.as_str()) {
        n += 1;
        label = format!("{base}_{n}");
    }
    Ok(label)
}

/// What became of a wait at the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Passage {
    Go,
    /// Given up: the wait would end past `max_age`.
    Expired(String),
    /// The stop deadline came first.
    Stopped,
}

/// One destination's label, counters and gate.
pub struct DestState {
    pub label: String,
    counters: Arc<dyn DestCounterStore>,
    gate: Gate,
    circuit_interval: Duration,
}

impl DestState {
    pub fn new(
        label: String,
        counters: Arc<dyn DestCounterStore>,
        settings: &GateSettings,
        now: Instant,
    ) -> Self {
        DestState {
            label,
            counters,
            gate: Gate::new(settings, now),
            circuit_interval: settings.circuit_interval,
        }
    }

    pub fn counters(&self) -> &DestCounters {
        self.counters.counters()
    }

    fn show_circuit(&self) {
        let state = self.gate.circuit_state() as u64;
        self.counters().circuit.store(state, Ordering::Relaxed);
    }

    /// Waits until the gate lets an attempt of a request queued at `queued_at` through. A
    /// wait that would end past `max_age` gives the request up at once, as a retry does.
    pub(crate) fn pass(
        &self,
        queued_at: Instant,
        policy: &RetryPolicy,
        control: &Control,
    ) -> Passage {
        loop {
            let now = Instant::now();
            let (until, why) = match self.gate.admit(now) {
                Admission::Go => {
                    self.show_circuit();
                    return Passage::Go;
                }
                Admission::Wait { until, why } => (until, why),
            };
            if policy.is_expired(queued_at, until) {
                return Passage::Expired(format!(
                    "waiting for {why} would end past max_age {:?}",
                    policy.max_age
                ));
            }
            if !control.sleep(until.saturating_duration_since(now)) {
                return Passage::Stopped;
            }
        }
    }

    /// The attempt the gate let through was not made (see [`Gate::give_back`]).
    pub(crate) fn give_back(&self) {
        self.gate.give_back(Instant::now());
    }

    /// Tells the gate and the counters how an attempt ended; returns the line to log when
    /// the circuit opened or closed.
    pub(crate) fn record(
        &self,
        outcome: &Outcome,
        now: Instant,
        peer: &str,
        dest: &Destination,
    ) -> Option<String> {
        let recorded = self.gate.record(outcome, now);
        let c = self.counters();
        let view_status = self.gate.view(now).last_status;
        c.last_status
            .store(u64::from(view_status), Ordering::Relaxed);
        self.show_circuit();
        if recorded.paused.is_some() {
            c.paused.fetch_add(1, Ordering::Relaxed);
        }
        match recorded.circuit? {
            Change::Opened(n) => {
                c.circuit_opened.fetch_add(1, Ordering::Relaxed);
                Some(format!(
                    "peer {peer}: circuit to {dest} ({}) opened after {n} consecutive \
                     failures, the last {outcome}; one probe every {:?} until one is answered",
                    self.label, self.circuit_interval
                ))
            }
            Change::Closed => Some(format!(
                "peer {peer}: circuit to {dest} ({}) closed: answered with {outcome}",
                self.label
            )),
        }
    }

    pub fn view(&self, now: Instant) -> GateView {
        self.gate.view(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Failure;
    use crate::stats::{LocalDestCounters, Tally};

    fn dest(s: &str, port: i64) -> Destination {
        Destination::parse(s, port).unwrap()
    }

    #[test]
    fn a_discovered_address_is_in_its_label() {
        let name = Destination::parse("cache.example", 80).unwrap();
        let v4 = name.at("10.0.0.2".parse().unwrap());
        let v6 = name.at("fd00::2".parse().unwrap());
        assert_eq!(
            label_for(&v4, "", &[]).unwrap(),
            "cache.example_80_10.0.0.2"
        );
        assert_eq!(label_for(&v6, "", &[]).unwrap(), "cache.example_80_fd00--2");
    }

    #[test]
    fn labels_come_from_host_and_port_unique_or_from_a_checked_name() {
        assert_eq!(
            label_for(&dest("127.0.0.1", 8080), "", &[]).unwrap(),
            "127.0.0.1_8080"
        );
        assert_eq!(
            label_for(&dest("https://api.cdn.example/v1", 0), "", &[]).unwrap(),
            "api.cdn.example_443"
        );
        assert_eq!(label_for(&dest("::1", 80), "", &[]).unwrap(), "--1_80");
        assert_eq!(
            label_for(&dest("http://a:1/x", 0), "", &["a_1", "a_1_2"]).unwrap(),
            "a_1_3"
        );
        assert_eq!(
            label_for(&dest("a", 1), "edge-1.eu", &["a_1"]).unwrap(),
            "edge-1.eu"
        );
        assert_eq!(
            label_for(&dest("a", 1), "a_1", &["a_1"]),
            Err(NameError::Taken("a_1".into()))
        );
        for bad in ["a b", "a\"b", "x/y", &"n".repeat(65), "é"] {
            let e = label_for(&dest("a", 1), bad, &[]).unwrap_err();
            assert!(e.to_string().starts_with("name: \""), "{e}");
        }
    }

    #[test]
    fn counters_follow_a_request_and_the_gate() {
        let state = DestState::new(
            "a_1".into(),
            Arc::new(LocalDestCounters::default()),
            &GateSettings {
                circuit_failures: 1,
                ..GateSettings::default()
            },
            Instant::now(),
        );
        let c = state.counters();
        for _ in 0..2 {
            c.queue_length.fetch_add(1, Ordering::Relaxed);
            c.tally(Tally::Queued);
        }
        c.tally(Tally::Taken);
        assert_eq!(c.queue_length.load(Ordering::Relaxed), 1);
        assert_eq!(c.in_flight.load(Ordering::Relaxed), 1);
        c.tally(Tally::Retried);
        c.tally(Tally::Sent);
        c.tally(Tally::LeftOver(1));
        assert_eq!(c.queue_length.load(Ordering::Relaxed), 0);
        assert_eq!(c.in_flight.load(Ordering::Relaxed), 0);
        assert_eq!(c.failed.load(Ordering::Relaxed), 1);
        assert_eq!(c.retried.load(Ordering::Relaxed), 1);
        let d = dest("a", 1);
        let t = Instant::now();
        let line = state
            .record(
                &Outcome::Failed(Failure::Network("refused".into())),
                t,
                "p",
                &d,
            )
            .unwrap();
        assert!(
            line.starts_with("peer p: circuit to http://a:1 (a_1) opened"),
            "{line}"
        );
        assert_eq!(c.circuit.load(Ordering::Relaxed), 1);
        assert_eq!(c.circuit_opened.load(Ordering::Relaxed), 1);
        assert_eq!(c.last_status.load(Ordering::Relaxed), 0);
        let line = state.record(&Outcome::Status(404), t, "p", &d).unwrap();
        assert!(
            line.contains("closed: answered with HTTP status 404"),
            "{line}"
        );
        assert_eq!(c.circuit.load(Ordering::Relaxed), 0);
        assert_eq!(c.last_status.load(Ordering::Relaxed), 404);
    }
}
