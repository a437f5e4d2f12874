//! Unit tests of the sender with each destination's gate (pause, circuit, rate limit) and
//! counters, through a transport that answers per destination and notes when it was called.
//! Times are only checked from below (a slow machine only makes them longer).
use super::*;
use crate::circuit::CircuitState;
use crate::gate::GateSettings;
use crate::policy::{Failure, RetryPolicy};
use crate::snapshot::Parts;
use crate::stats::LocalCounters;
use std::sync::atomic::{AtomicBool, Ordering};

/// Answers with `answer(destination, call number)`, noting every call with its time.
struct Timed {
    answer: fn(&str, usize) -> Outcome,
    calls: Mutex<Vec<(String, String, Instant)>>,
    /// While set, destination "down" refuses connections.
    down: AtomicBool,
}

struct TimedTransport(Arc<Timed>);

impl Transport for TimedTransport {
    fn send(
        &mut self,
        dest: &Destination,
        req: &Prepared,
        _: &Settings,
        _: &Arc<Control>,
    ) -> Outcome {
        let key = dest.host.clone();
        if key == "down" && self.0.down.load(Ordering::SeqCst) {
            self.0
                .calls
                .lock()
                .push((key, String::new(), Instant::now()));
            return Outcome::Failed(Failure::Network("refused".into()));
        }
        let mut calls = self.0.calls.lock();
        let n = calls.iter().filter(|(d, _, _)| *d == key).count();
        calls.push((
            key.clone(),
            String::from_utf8_lossy(&req.url).into_owned(),
            Instant::now(),
        ));
        drop(calls);
        (self.0.answer)(&key, n)
    }
}

impl TransportFactory for Arc<Timed> {
    fn create(&self) -> Box<dyn Transport> {
        Box::new(TimedTransport(Arc::clone(self)))
    }
}

#[derive(Default)]
struct Lines(Mutex<Vec<String>>);
impl EventLog for Lines {
    fn log(&self, line: &str) {
        self.0.lock().push(line.to_string());
    }
}

fn timed(answer: fn(&str, usize) -> Outcome) -> Arc<Timed> {
    Arc::new(Timed {
        answer,
        calls: Mutex::new(Vec::new()),
        down: AtomicBool::new(false),
    })
}

fn settings(gate: GateSettings, concurrency: usize) -> Settings {
    Settings {
        concurrency,
        policy: RetryPolicy {
            max_attempts: 100,
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            max_age: Duration::from_secs(30),
        },
        gate,
        ..Settings::default()
    }
}

fn peer(settings: Settings, t: &Arc<Timed>, log: &Arc<Lines>, dests: &[&str]) -> Peer {
    let p = Peer::new(
        settings,
        Template::default(),
        Arc::new(LocalCounters::default()),
        Arc::clone(log) as Arc<dyn EventLog>,
        Arc::new(Arc::clone(t)),
    );
    for d in dests {
        p.add_destination(Destination::parse(d, 1).unwrap())
            .unwrap();
    }
    p
}

fn snap(url: &str) -> Snapshot {
    Parts {
        method: b"PURGE".to_vec(),
        url: url.as_bytes().to_vec(),
        ..Parts::default()
    }
    .into()
}

fn wait_until(what: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !what() {
        assert!(Instant::now() < end, "condition not reached in 10 s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn calls_to(t: &Timed, dest: &str) -> Vec<(String, Instant)> {
    (t.calls.lock().iter())
        .filter(|(d, _, _)| d == dest)
        .map(|(_, u, at)| (u.clone(), *at))
        .collect()
}

fn dest_count(p: &Peer, label: &str, name: &str) -> u64 {
    let dests = p.destinations();
    let d = dests.iter().find(|d| d.name == label).expect(label);
    d.count(name).expect(name)
}

#[test]
fn retry_after_pauses_every_thread_of_that_destination_and_no_other() {
    // "api" answers its first call 429 with Retry-After 0.3 s, then 200.
    let t = timed(|dest, n| match (dest, n) {
        ("api", 0) => Outcome::Throttled {
            status: 429,
            retry_after: Duration::from_millis(300),
        },
        _ => Outcome::Status(200),
    });
    let log = Arc::new(Lines::default());
    let gate = GateSettings {
        max_pause: Duration::from_secs(10),
        ..GateSettings::default()
    };
    let mut s = settings(gate, 2);
    s.policy.max_backoff = Duration::from_secs(10);
    let p = peer(s, &t, &log, &["api", "other"]);
    p.start().unwrap();
    p.enqueue(snap("/1")).unwrap();
    wait_until(|| dest_count(&p, "api_1", "paused") == 1);
    // Queued after the pause began: the second thread waits too; "other" does not.
    for i in 2..=4 {
        p.enqueue(snap(&format!("/{i}"))).unwrap();
    }
    wait_until(|| dest_count(&p, "other_1", "sent") == 4);
    wait_until(|| p.pending() == 0);
    let api = calls_to(&t, "api");
    assert_eq!(api.len(), 5, "{api:?}");
    for (url, at) in &api[1..] {
        assert!(
            at.duration_since(api[0].1) >= Duration::from_millis(300),
            "{url} came {:?} after the 429",
            at.duration_since(api[0].1)
        );
    }
    assert_eq!(dest_count(&p, "api_1", "sent"), 4);
    assert_eq!(dest_count(&p, "api_1", "retried"), 1);
    assert_eq!(p.counters().sent.load(Ordering::Relaxed), 8);
    p.stop();
}

#[test]
fn the_rate_limit_spaces_calls_over_all_threads_of_a_destination() {
    let t = timed(|_, _| Outcome::Status(204));
    let log = Arc::new(Lines::default());
    let gate = GateSettings {
        rate: 20.0,
        burst: 2,
        ..GateSettings::default()
    };
    let p = peer(settings(gate, 3), &t, &log, &["a", "b"]);
    for i in 0..8 {
        p.enqueue(snap(&format!("/{i}"))).unwrap();
    }
    p.start().unwrap();
    wait_until(|| p.pending() == 0);
    for dest in ["a", "b"] {
        let calls = calls_to(&t, dest);
        assert_eq!(calls.len(), 8);
        // 2 at once, then one per 50 ms: the 8th at least 6 * 50 ms after the first
        // (each destination has its own bucket).
        let spread = calls[7].1.duration_since(calls[0].1);
        assert!(spread >= Duration::from_millis(295), "{dest}: {spread:?}");
    }
    p.stop();
}

#[test]
fn an_open_circuit_holds_requests_in_order_probes_and_closes_when_the_destination_returns() {
    let t = timed(|_, _| Outcome::Status(200));
    t.down.store(true, Ordering::SeqCst);
    let log = Arc::new(Lines::default());
    let gate = GateSettings {
        circuit_failures: 3,
        circuit_interval: Duration::from_millis(100),
        ..GateSettings::default()
    };
    let p = peer(settings(gate, 1), &t, &log, &["down", "up"]);
    p.start().unwrap();
    for i in 0..5 {
        p.enqueue(snap(&format!("/{i}"))).unwrap();
    }
    wait_until(|| dest_count(&p, "up_1", "sent") == 5);
    wait_until(|| dest_count(&p, "down_1", "circuit_opened") == 1);
    let opened = Instant::now();
    std::thread::sleep(Duration::from_millis(500));
    // Open for 0.5 s at one probe per 0.1 s: a handful of attempts, not hundreds (the
    // backoff alone would allow one every 4 ms).
    let attempts = calls_to(&t, "down").len();
    let bound = 3 + 2 + opened.elapsed().as_millis() / 100;
    assert!(
        attempts as u128 <= bound,
        "{attempts} attempts, bound {bound}"
    );
    let d = p.destinations();
    let down = d.iter().find(|d| d.name == "down_1").unwrap();
    assert_ne!(down.gate.circuit, CircuitState::Closed);
    assert_eq!(down.count("queue_length"), Some(4));
    assert_eq!(down.count("in_flight"), Some(1));
    assert!(log
        .0
        .lock()
        .iter()
        .any(|l| l.contains("circuit to http://down:1 (down_1) opened after 3")));
    // It comes back: the next probe closes the circuit and the queue goes out in order.
    t.down.store(false, Ordering::SeqCst);
    wait_until(|| p.pending() == 0);
    let urls: Vec<String> = (calls_to(&t, "down").into_iter())
        .map(|(u, _)| u)
        .filter(|u| !u.is_empty())
        .collect();
    assert_eq!(
        urls,
        ["/0", "/1", "/2", "/3", "/4"].map(|u| format!("http://down:1{u}"))
    );
    assert_eq!(dest_count(&p, "down_1", "sent"), 5);
    let down = p.destinations().into_iter().find(|d| d.name == "down_1");
    assert_eq!(down.map(|d| d.gate.circuit), Some(CircuitState::Closed));
    assert!(log.0.lock().iter().any(|l| l.contains("(down_1) closed")));
    p.stop();
}

/// A destination that is down, and a circuit that opens at its first failure and probes
/// once an hour: whatever waits for the probe waits past any max_age of a test.
fn down_with_an_hourly_probe() -> (Arc<Timed>, Arc<Lines>, GateSettings) {
    let t = timed(|_, _| Outcome::Status(200));
    t.down.store(true, Ordering::SeqCst);
    let gate = GateSettings {
        circuit_failures: 1,
        circuit_interval: Duration::from_secs(3600),
        ..GateSettings::default()
    };
    (t, Arc::new(Lines::default()), gate)
}

#[test]
fn requests_an_open_circuit_holds_past_max_age_are_given_up_as_expired_not_dropped() {
    let (t, log, gate) = down_with_an_hourly_probe();
    let mut s = settings(gate, 1);
    s.policy.max_age = Duration::from_millis(200);
    let p = peer(s, &t, &log, &["down"]);
    p.start().unwrap();
    for i in 0..3 {
        p.enqueue(snap(&format!("/{i}"))).unwrap();
    }
    wait_until(|| p.pending() == 0);
    // One attempt opened the circuit; nothing else was attempted, nothing dropped.
    assert_eq!(calls_to(&t, "down").len(), 1);
    assert_eq!(p.counters().expired.load(Ordering::Relaxed), 3);
    assert_eq!(dest_count(&p, "down_1", "expired"), 3);
    assert_eq!(dest_count(&p, "down_1", "dropped"), 0);
    assert!(log.0.lock().iter().any(|l| l.contains("the open circuit")));
    p.stop();
}

#[test]
fn a_retry_the_gate_gives_up_before_it_is_made_is_not_counted_retried() {
    // The first attempt opens the circuit; its retry would wait an hour for the probe, past
    // max_age: given up as expired at the gate, so no retry happened.
    let (t, log, gate) = down_with_an_hourly_probe();
    let p = peer(settings(gate, 1), &t, &log, &["down"]);
    p.start().unwrap();
    p.enqueue(snap("/1")).unwrap();
    wait_until(|| p.pending() == 0);
    assert_eq!(calls_to(&t, "down").len(), 1);
    assert_eq!(p.counters().expired.load(Ordering::Relaxed), 1);
    assert_eq!(p.counters().retried.load(Ordering::Relaxed), 0);
    assert_eq!(dest_count(&p, "down_1", "retried"), 0);
    p.stop();
}

#[test]
fn per_destination_counters_add_up_to_the_peer_counters_and_names_are_unique() {
    let t = timed(|dest, _| Outcome::Status(if dest == "b" { 404 } else { 200 }));
    let log = Arc::new(Lines::default());
    let p = peer(settings(GateSettings::default(), 1), &t, &log, &["a"]);
    p.add_named_destination(Destination::parse("b", 1).unwrap(), "bee")
        .unwrap();
    assert_eq!(
        p.add_named_destination(Destination::parse("c", 1).unwrap(), "bee"),
        Err(SetupError::Name(crate::deststate::NameError::Taken(
            "bee".into()
        )))
    );
    p.add_destination(Destination::parse("http://a:1/other", 0).unwrap())
        .unwrap();
    for i in 0..3 {
        p.enqueue(snap(&format!("/{i}"))).unwrap();
    }
    p.start().unwrap();
    wait_until(|| p.pending() == 0);
    let names: Vec<String> = p.destinations().into_iter().map(|d| d.name).collect();
    assert_eq!(names, ["a_1", "bee", "a_1_2"]);
    assert_eq!(dest_count(&p, "a_1", "sent"), 3);
    assert_eq!(dest_count(&p, "a_1_2", "sent"), 3);
    assert_eq!(dest_count(&p, "bee", "failed"), 3);
    let bee = p
        .destinations()
        .into_iter()
        .find(|d| d.name == "bee")
        .unwrap();
    assert_eq!(bee.gate.last_status, 404);
    let c = p.counters();
    assert_eq!(c.sent.load(Ordering::Relaxed), 6);
    assert_eq!(c.failed.load(Ordering::Relaxed), 3);
    let mut json = String::new();
    p.report_json(&mut json);
    assert!(
        json.starts_with(r#"{"peer":"default","destinations":[{"name":"a_1","url":"http://a:1","#),
        "{json}"
    );
    p.stop();
}
