//! The JSON report of `x.report()` and `peer.report()`: every destination's counters and
//! gate state at one moment. Plain string building, always valid JSON (strings escaped by
//! [`crate::escape::json_string`]).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::dest::Destination;
use crate::deststate::DestState;
use crate::gate::GateView;

/// One destination at one moment.
#[derive(Debug, Clone, PartialEq)]
pub struct DestReport {
    pub name: String,
    pub url: String,
    /// Counters and gauges, in the order they are reported.
    pub counts: Vec<(&'static str, u64)>,
    pub gate: GateView,
}

impl DestReport {
    /// A counter or gauge by its name (`"sent"`, `"queue_length"`...).
    pub fn count(&self, name: &str) -> Option<u64> {
        self.counts
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
    }

    pub fn of(state: &DestState, dest: &Destination, now: Instant) -> Self {
        let c = state.counters();
        let counts = [
            ("queue_length", &c.queue_length),
            ("in_flight", &c.in_flight),
            ("queued", &c.queued),
            ("sent", &c.sent),
            ("failed", &c.failed),
            ("expired", &c.expired),
            ("retried", &c.retried),
            ("dropped", &c.dropped),
            ("circuit_opened", &c.circuit_opened),
            ("paused", &c.paused),
        ]
        .into_iter()
        .map(|(name, v)| (name, v.load(Ordering::Relaxed)))
        .collect();
        DestReport {
            name: state.label.clone(),
            url: dest.to_string(),
            counts,
            gate: state.view(now),
        }
    }
}

fn push_str(out: &mut String, s: &str) {
    out.push_str(&String::from_utf8_lossy(&crate::escape::json_string(
        s.as_bytes(),
    )));
}

fn push_secs(out: &mut String, d: Option<Duration>) {
    match d {
        Some(d) => {
            let _ = write!(out, "{:.3}", d.as_secs_f64());
        }
        None => out.push_str("null"),
    }
}

/// A name discovered in DNS (`x.add_dns_destinations()`): how many addresses of its family
/// the last answer had, and how many have a destination (at most 64).
#[derive(Debug, Clone, PartialEq)]
pub struct NameReport {
    pub name: String,
    pub family: &'static str,
    pub found: usize,
    pub used: usize,
}

/// `{"peer":<name>,"destinations":[...]}`, then `"names":[...]` when names are discovered.
pub fn peer_json(out: &mut String, peer: &str, dests: &[DestReport], names: &[NameReport]) {
    out.push_str("{\"peer\":");
    push_str(out, peer);
    out.push_str(",\"destinations\":[");
    for (i, d) in dests.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        push_str(out, &d.name);
        out.push_str(",\"url\":");
        push_str(out, &d.url);
        for (name, v) in &d.counts {
            let _ = write!(out, ",\"{name}\":{v}");
        }
        let g = &d.gate;
        let _ = write!(
            out,
            ",\"last_status\":{},\"circuit\":\"{}\",\"consecutive_failures\":{}",
            g.last_status,
            g.circuit.as_str(),
            g.consecutive_failures
        );
        out.push_str(",\"next_probe_in\":");
        push_secs(out, g.next_probe_in);
        out.push_str(",\"paused_for\":");
        push_secs(out, g.paused_for);
        out.push_str(",\"tokens\":");
        match g.tokens {
            Some(t) if t.is_finite() => {
                let _ = write!(out, "{t:.3}");
            }
            _ => out.push_str("null"),
        }
        out.push('}');
    }
    out.push(']');
    if !names.is_empty() {
        out.push_str(",\"names\":[");
        for (i, n) in names.iter().enumerate() {
            out.push_str(if i > 0 { ",{\"name\":" } else { "{\"name\":" });
            push_str(out, &n.name);
            let (family, found, used) = (n.family, n.found, n.used);
            let _ = write!(
                out,
                ",\"family\":\"{family}\",\"addresses\":{found},\"used\":{used}}}"
            );
        }
        out.push(']');
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuit::CircuitState;

    fn report(name: &str, url: &str) -> DestReport {
        DestReport {
            name: name.into(),
            url: url.into(),
            counts: vec![("queue_length", 2), ("sent", 7)],
            gate: GateView {
                circuit: CircuitState::Open,
                consecutive_failures: 5,
                next_probe_in: Some(Duration::from_millis(1500)),
                paused_for: None,
                tokens: Some(0.25),
                last_status: 0,
            },
        }
    }

    #[test]
    fn a_peer_without_destinations_is_valid_json() {
        let mut out = String::new();
        peer_json(&mut out, "p", &[], &[]);
        assert_eq!(out, r#"{"peer":"p","destinations":[]}"#);
    }

    #[test]
    fn destinations_are_reported_with_every_field_and_strings_escaped() {
        let mut json = String::new();
        peer_json(
            &mut json,
            "cdn\"x",
            &[report("a_1", "http://a:1/p\"q\\")],
            &[],
        );
        assert_eq!(
            json,
            concat!(
                r#"{"peer":"cdn\"x","destinations":[{"name":"a_1","#,
                r#""url":"http://a:1/p\"q\\","queue_length":2,"sent":7,"last_status":0,"#,
                r#""circuit":"open","consecutive_failures":5,"next_probe_in":1.500,"#,
                r#""paused_for":null,"tokens":0.250}]}"#
            )
        );
    }

    #[test]
    fn discovered_names_show_how_many_addresses_they_have_and_use() {
        let mut json = String::new();
        let name = NameReport {
            name: "http://n:80".into(),
            family: "ipv4",
            found: 100,
            used: 64,
        };
        peer_json(&mut json, "p", &[], &[name.clone(), name]);
        let one = r#"{"name":"http://n:80","family":"ipv4","addresses":100,"used":64}"#;
        assert_eq!(
            json,
            format!(r#"{{"peer":"p","destinations":[],"names":[{one},{one}]}}"#)
        );
    }
}
