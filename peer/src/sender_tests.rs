//! Unit tests of the sender with a scripted transport (no network, no varnishd).
use super::*;
use crate::policy::{Failure, RetryPolicy};
use crate::snapshot::Parts;
use crate::stats::LocalCounters;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;

/// A transport that plays scripted outcomes per destination and records what it sent.
#[derive(Default)]
pub(crate) struct Script {
    pub(crate) outcomes: Mutex<std::collections::HashMap<String, VecDeque<Outcome>>>,
    pub(crate) sent: Mutex<Vec<(String, Vec<u8>)>>,
    /// Destinations whose transfers block until the deadline (a dead peer).
    pub(crate) hang: Mutex<Vec<String>>,
}

struct ScriptTransport(Arc<Script>);

impl Transport for ScriptTransport {
    fn send(
        &mut self,
        dest: &Destination,
        req: &Prepared,
        _: &Settings,
        control: &Arc<Control>,
    ) -> Outcome {
        let key = dest.to_string();
        if self.0.hang.lock().contains(&key) {
            while !control.aborted() {
                std::thread::sleep(Duration::from_millis(5));
            }
            return Outcome::Failed(Failure::Shutdown);
        }
        let outcome = self
            .0
            .outcomes
            .lock()
            .get_mut(&key)
            .and_then(VecDeque::pop_front)
            .unwrap_or(Outcome::Status(200));
        self.0.sent.lock().push((key, req.url.clone()));
        outcome
    }
}

impl TransportFactory for Arc<Script> {
    fn create(&self) -> Box<dyn Transport> {
        Box::new(ScriptTransport(Arc::clone(self)))
    }
}

#[derive(Default)]
pub(crate) struct Lines(pub(crate) Mutex<Vec<String>>);
impl EventLog for Lines {
    fn log(&self, line: &str) {
        self.0.lock().push(line.to_string());
    }
}

pub(crate) fn peer(settings: Settings, script: &Arc<Script>, log: &Arc<Lines>) -> Peer {
    let template = Template {
        copy_headers: true,
        marker: "t".into(),
        ..Template::default()
    };
    Peer::new(
        settings,
        template,
        Arc::new(LocalCounters::default()),
        Arc::clone(log) as Arc<dyn EventLog>,
        Arc::new(Arc::clone(script)),
    )
}

pub(crate) fn fast() -> Settings {
    Settings {
        policy: RetryPolicy {
            max_attempts: 3,
            backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            max_age: Duration::from_secs(30),
        },
        drain_timeout: Duration::from_secs(5),
        ..Settings::default()
    }
}

pub(crate) fn parts(url: &str) -> Parts {
    Parts {
        method: b"PURGE".to_vec(),
        url: url.as_bytes().to_vec(),
        headers: [("Host", "h")].into_iter().collect(),
        ..Parts::default()
    }
}

pub(crate) fn snap(url: &str) -> Snapshot {
    parts(url).into()
}

pub(crate) fn wait_until(what: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(10);
    while !what() {
        assert!(Instant::now() < end, "condition not reached in 10 s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn fifo_per_destination_and_pending_drains() {
    let script = Arc::new(Script::default());
    let log = Arc::new(Lines::default());
    let p = peer(fast(), &script, &log);
    p.add_destination(Destination::parse("a", 1).unwrap())
        .unwrap();
    for i in 0..50 {
        p.enqueue(snap(&format!("/{i}"))).unwrap();
    }
    assert_eq!(p.pending(), 50);
    p.start().unwrap();
    wait_until(|| p.pending() == 0);
    let urls: Vec<String> = script
        .sent
        .lock()
        .iter()
        .map(|(_, u)| String::from_utf8_lossy(u).into_owned())
        .collect();
    let expect: Vec<String> = (0..50).map(|i| format!("http://a:1/{i}")).collect();
    assert_eq!(urls, expect);
    assert_eq!(p.counters().sent.load(Ordering::Relaxed), 50);
    assert_eq!(p.counters().queued.load(Ordering::Relaxed), 50);
}

#[test]
fn retries_keep_order_then_fail() {
    let script = Arc::new(Script::default());
    script.outcomes.lock().insert(
        "http://a:1".into(),
        VecDeque::from([
            Outcome::Failed(Failure::Network("refused".into())),
            Outcome::Status(503),
        ]),
    );
    script.outcomes.lock().insert(
        "http://b:1".into(),
        VecDeque::from(vec![Outcome::Status(500); 3]),
    );
    let log = Arc::new(Lines::default());
    let p = peer(fast(), &script, &log);
    p.add_destination(Destination::parse("a", 1).unwrap())
        .unwrap();
    p.add_destination(Destination::parse("b", 1).unwrap())
        .unwrap();
    p.enqueue(snap("/1")).unwrap();
    p.enqueue(snap("/2")).unwrap();
    p.start().unwrap();
    wait_until(|| p.pending() == 0);
    let c = p.counters();
    assert_eq!(c.retried.load(Ordering::Relaxed), 4);
    assert_eq!(c.sent.load(Ordering::Relaxed), 3);
    assert_eq!(c.failed.load(Ordering::Relaxed), 1);
    let to_a: Vec<Vec<u8>> = script
        .sent
        .lock()
        .iter()
        .filter(|(d, _)| d == "http://a:1")
        .map(|(_, u)| u.clone())
        .collect();
    assert_eq!(
        to_a,
        vec![
            b"http://a:1/1".to_vec(),
            b"http://a:1/1".to_vec(),
            b"http://a:1/1".to_vec(),
            b"http://a:1/2".to_vec()
        ]
    );
    let lines = log.0.lock();
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].contains("gave up PURGE /1 to http://b:1"),
        "{lines:?}"
    );
}

#[test]
fn full_queue_drops_without_waiting() {
    let script = Arc::new(Script::default());
    let log = Arc::new(Lines::default());
    let p = peer(
        Settings {
            queue_size: 2,
            ..fast()
        },
        &script,
        &log,
    );
    p.add_destination(Destination::parse("a", 1).unwrap())
        .unwrap();
    let mut dropped = 0;
    for i in 0..5 {
        dropped += p.enqueue(snap(&format!("/{i}"))).unwrap().dropped.len();
    }
    assert_eq!(dropped, 3);
    assert_eq!(p.counters().dropped.load(Ordering::Relaxed), 3);
    assert_eq!(p.pending(), 2);
}

#[test]
fn refused_and_no_destination() {
    let script = Arc::new(Script::default());
    let log = Arc::new(Lines::default());
    let p = peer(fast(), &script, &log);
    assert_eq!(p.enqueue(snap("/")), Err(EnqueueError::NoDestination));
    let mut bad = parts("/");
    bad.headers.push(b"X", b"a\nb");
    assert!(matches!(
        p.enqueue(bad.into()),
        Err(EnqueueError::Refused(_))
    ));
    assert_eq!(p.counters().refused.load(Ordering::Relaxed), 1);
    assert!(p
        .add_destination(Destination::parse("a", 1).unwrap())
        .is_err());
}

#[test]
fn dead_destination_does_not_delay_the_others_and_stop_is_bounded() {
    let script = Arc::new(Script::default());
    script.hang.lock().push("http://dead:1".into());
    let log = Arc::new(Lines::default());
    let p = peer(
        Settings {
            drain_timeout: Duration::from_millis(200),
            ..fast()
        },
        &script,
        &log,
    );
    p.add_destination(Destination::parse("dead", 1).unwrap())
        .unwrap();
    p.add_destination(Destination::parse("live", 1).unwrap())
        .unwrap();
    p.start().unwrap();
    for i in 0..10 {
        p.enqueue(snap(&format!("/{i}"))).unwrap();
    }
    wait_until(|| p.counters().sent.load(Ordering::Relaxed) == 10);
    assert_eq!(p.pending(), 10);
    let started = Instant::now();
    p.stop();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(p.pending(), 0);
    assert_eq!(p.counters().failed.load(Ordering::Relaxed), 10);
}

#[test]
fn cold_drains_then_warm_restarts() {
    let script = Arc::new(Script::default());
    let log = Arc::new(Lines::default());
    let p = peer(fast(), &script, &log);
    p.add_destination(Destination::parse("a", 1).unwrap())
        .unwrap();
    p.start().unwrap();
    p.enqueue(snap("/1")).unwrap();
    p.begin_drain();
    wait_until(|| p.pending() == 0);
    p.start().unwrap();
    p.enqueue(snap("/2")).unwrap();
    wait_until(|| p.counters().sent.load(Ordering::Relaxed) == 2);
    p.stop();
}

/// Each send waits on a 4-party barrier: only 4 requests in flight at once get through.
struct Together(Arc<std::sync::Barrier>);
impl Transport for Together {
    fn send(&mut self, _: &Destination, _: &Prepared, _: &Settings, _: &Arc<Control>) -> Outcome {
        self.0.wait();
        Outcome::Status(204)
    }
}
impl TransportFactory for Arc<std::sync::Barrier> {
    fn create(&self) -> Box<dyn Transport> {
        Box::new(Together(Arc::clone(self)))
    }
}

#[test]
fn concurrency_puts_several_requests_in_flight() {
    let barrier = Arc::new(std::sync::Barrier::new(4));
    let p = Peer::new(
        Settings {
            concurrency: 4,
            ..fast()
        },
        Template::default(),
        Arc::new(LocalCounters::default()),
        Arc::new(Lines::default()),
        Arc::new(barrier),
    );
    p.add_destination(Destination::parse("a", 1).unwrap())
        .unwrap();
    p.start().unwrap();
    for i in 0..8 {
        p.enqueue(snap(&format!("/{i}"))).unwrap();
    }
    wait_until(|| p.counters().sent.load(Ordering::Relaxed) == 8);
    p.stop();
}

#[test]
fn control_sleep_stops_at_the_deadline() {
    let c = Control::default();
    c.set_deadline(Instant::now() + Duration::from_millis(20));
    let started = Instant::now();
    // An hour's sleep against a 20 ms deadline: the bound cannot be reached by a slow
    // machine, only by a sleep that ignores the deadline.
    assert!(!c.sleep(Duration::from_secs(3600)));
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(c.aborted());
}

#[test]
fn only_2xx_is_sent_and_a_redirect_is_logged_with_its_status() {
    let script = Arc::new(Script::default());
    script
        .outcomes
        .lock()
        .insert("http://a:1".into(), VecDeque::from([Outcome::Status(301)]));
    let log = Arc::new(Lines::default());
    let p = peer(fast(), &script, &log);
    p.add_destination(Destination::parse("a", 1).unwrap())
        .unwrap();
    p.enqueue(snap("/r")).unwrap();
    p.start().unwrap();
    wait_until(|| p.pending() == 0);
    assert_eq!(p.counters().sent.load(Ordering::Relaxed), 0);
    assert_eq!(p.counters().failed.load(Ordering::Relaxed), 1);
    assert_eq!(p.counters().retried.load(Ordering::Relaxed), 0);
    let lines = log.0.lock();
    assert!(lines[0].contains("HTTP status 301"), "{lines:?}");
}

#[test]
fn retry_after_is_honoured_instead_of_the_backoff() {
    let script = Arc::new(Script::default());
    script.outcomes.lock().insert(
        "http://a:1".into(),
        VecDeque::from([Outcome::Throttled {
            status: 503,
            retry_after: Duration::ZERO,
        }]),
    );
    let log = Arc::new(Lines::default());
    // A backoff far longer than the test may take: only Retry-After: 0 lets it finish.
    let settings = Settings {
        policy: RetryPolicy {
            max_attempts: 3,
            backoff: Duration::from_secs(3600),
            max_backoff: Duration::from_secs(3600),
            max_age: Duration::from_secs(7200),
        },
        ..fast()
    };
    let p = peer(settings, &script, &log);
    p.add_destination(Destination::parse("a", 1).unwrap())
        .unwrap();
    p.enqueue(snap("/t")).unwrap();
    p.start().unwrap();
    wait_until(|| p.pending() == 0);
    assert_eq!(p.counters().sent.load(Ordering::Relaxed), 1);
    assert_eq!(p.counters().retried.load(Ordering::Relaxed), 1);
}

#[test]
fn a_retry_cut_short_by_shutdown_is_not_counted_as_retried() {
    let script = Arc::new(Script::default());
    script
        .outcomes
        .lock()
        .insert("http://a:1".into(), VecDeque::from([Outcome::Status(503)]));
    let log = Arc::new(Lines::default());
    let settings = Settings {
        policy: RetryPolicy {
            max_attempts: 3,
            backoff: Duration::from_secs(3600),
            max_backoff: Duration::from_secs(3600),
            max_age: Duration::from_secs(7200),
        },
        drain_timeout: Duration::ZERO,
        ..fast()
    };
    let p = peer(settings, &script, &log);
    p.add_destination(Destination::parse("a", 1).unwrap())
        .unwrap();
    p.enqueue(snap("/s")).unwrap();
    p.start().unwrap();
    // The first attempt happened; the thread now waits for its retry.
    wait_until(|| script.sent.lock().len() == 1);
    p.stop();
    let c = p.counters();
    assert_eq!(c.retried.load(Ordering::Relaxed), 0);
    assert_eq!(c.failed.load(Ordering::Relaxed), 1);
    assert!(log.0.lock()[0].contains("shutdown before the retry"));
}

#[test]
fn the_queue_is_bounded_in_bytes_too_and_a_byte_drop_counts_as_a_drop() {
    let script = Arc::new(Script::default());
    let log = Arc::new(Lines::default());
    let p = peer(
        Settings {
            queue_bytes: 2500,
            ..fast()
        },
        &script,
        &log,
    );
    p.add_destination(Destination::parse("a", 1).unwrap())
        .unwrap();
    let big = |i: usize| -> Snapshot {
        Parts {
            body: Some(Arc::new(vec![b'x'; 1000])),
            ..parts(&format!("/{i}"))
        }
        .into()
    };
    let reports: Vec<_> = (0..3).map(|i| p.enqueue(big(i)).unwrap()).collect();
    assert_eq!(reports[0].queued + reports[1].queued, 2);
    assert_eq!(reports[2].queued, 0);
    assert!(
        reports[2].dropped[0].contains("queue_bytes 2500"),
        "{:?}",
        reports[2]
    );
    assert_eq!(p.counters().dropped.load(Ordering::Relaxed), 1);
    assert!(!p.has_room() || p.enqueue(snap("/small")).unwrap().queued == 1);
    // Sending frees the bytes.
    p.start().unwrap();
    wait_until(|| p.pending() == 0);
    assert_eq!(p.enqueue(big(9)).unwrap().queued, 1);
    p.stop();
}

#[test]
fn a_full_peer_takes_no_snapshot_and_counts_the_drop_per_destination() {
    let script = Arc::new(Script::default());
    let log = Arc::new(Lines::default());
    let p = peer(
        Settings {
            queue_size: 1,
            ..fast()
        },
        &script,
        &log,
    );
    p.add_destination(Destination::parse("a", 1).unwrap())
        .unwrap();
    p.add_destination(Destination::parse("b", 1).unwrap())
        .unwrap();
    assert!(p.has_room());
    p.enqueue(snap("/1")).unwrap();
    assert!(!p.has_room());
    let mut lines = Vec::new();
    p.drop_all(|line| lines.push(line.to_string()));
    assert_eq!(
        lines,
        [
            "peer default: dropped for http://a:1 (queue full, capacity 1)",
            "peer default: dropped for http://b:1 (queue full, capacity 1)",
        ]
    );
    assert_eq!(p.counters().dropped.load(Ordering::Relaxed), 2);
}

fn failing_spawn(_: String, _: Box<dyn FnOnce() + Send>) -> std::io::Result<JoinHandle<()>> {
    Err(std::io::Error::other("no more threads"))
}

#[test]
fn a_thread_that_cannot_start_fails_the_start() {
    let script = Arc::new(Script::default());
    let log = Arc::new(Lines::default());
    let p = peer(fast(), &script, &log).with_spawn(failing_spawn);
    p.add_destination(Destination::parse("a", 1).unwrap())
        .unwrap();
    let e = p.start().unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot start a sender thread for http://a:1: no more threads"),
        "{e}"
    );
}

/// Counters that say when they are freed.
struct Watched(LocalCounters, Arc<std::sync::atomic::AtomicBool>);
impl CounterStore for Watched {
    fn counters(&self) -> &PeerCounters {
        &self.0 .0
    }
}
impl Drop for Watched {
    fn drop(&mut self) {
        self.1.store(true, Ordering::SeqCst);
    }
}

/// A transfer that ignores the abort until released (a stuck thread).
struct Stuck(Arc<std::sync::Barrier>);
impl Transport for Stuck {
    fn send(&mut self, _: &Destination, _: &Prepared, _: &Settings, _: &Arc<Control>) -> Outcome {
        self.0.wait();
        self.0.wait();
        Outcome::Status(200)
    }
}
impl TransportFactory for Stuck {
    fn create(&self) -> Box<dyn Transport> {
        Box::new(Stuck(Arc::clone(&self.0)))
    }
}

/// Records which lines came through `thread_left_running`.
#[derive(Default)]
struct LeftLines(Mutex<Vec<String>>);
impl EventLog for LeftLines {
    fn log(&self, line: &str) {
        self.0.lock().push(line.to_string());
    }
    fn thread_left_running(&self, line: &str) {
        self.0.lock().push(format!("left running: {line}"));
    }
}

#[test]
fn a_stuck_thread_is_left_behind_but_its_counters_are_freed_when_it_ends() {
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let freed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let log = Arc::new(LeftLines::default());
    let p = Peer::new(
        Settings {
            drain_timeout: Duration::ZERO,
            ..fast()
        },
        Template::default(),
        Arc::new(Watched(LocalCounters::default(), Arc::clone(&freed))),
        Arc::clone(&log) as Arc<dyn EventLog>,
        Arc::new(Stuck(Arc::clone(&barrier))),
    );
    p.add_destination(Destination::parse("a", 1).unwrap())
        .unwrap();
    p.start().unwrap();
    p.enqueue(snap("/1")).unwrap();
    barrier.wait(); // the thread is in the transfer
    let stopping = p.begin_stop();
    // A limit already past: the join gives up at once.
    p.finish_stop(stopping, Some(Instant::now()));
    drop(p);
    assert!(
        !freed.load(Ordering::SeqCst),
        "still used by the stuck thread"
    );
    barrier.wait(); // release it
    wait_until(|| freed.load(Ordering::SeqCst));
}

#[test]
fn start_does_not_hold_the_lock_while_joining_the_previous_threads() {
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let p = Arc::new(Peer::new(
        Settings {
            // Far: the join waits for the thread, not for a deadline.
            drain_timeout: Duration::from_secs(60),
            ..fast()
        },
        Template::default(),
        Arc::new(LocalCounters::default()),
        Arc::new(Lines::default()),
        Arc::new(Stuck(Arc::clone(&barrier))),
    ));
    p.add_destination(Destination::parse("a", 1).unwrap())
        .unwrap();
    p.start().unwrap();
    p.enqueue(snap("/1")).unwrap();
    barrier.wait(); // the thread is in its transfer
    p.begin_drain();
    let restarter = {
        let p = Arc::clone(&p);
        std::thread::spawn(move || p.start())
    };
    // The restart took the old generation and waits for its thread: the lock is free
    // meanwhile (it used to be held for the whole join).
    wait_until(|| p.running.try_lock().is_some_and(|g| g.is_none()));
    barrier.wait(); // release the stuck transfer
    restarter.join().unwrap().unwrap();
    wait_until(|| p.counters().sent.load(Ordering::Relaxed) == 1);
    p.stop();
}

#[test]
fn warm_again_while_draining_answers_at_once_and_keeps_the_backlog_in_order() {
    let script = Arc::new(Script::default());
    script.hang.lock().push("http://dead:1".into());
    let log = Arc::new(Lines::default());
    let p = peer(
        Settings {
            drain_timeout: Duration::from_secs(30),
            ..fast()
        },
        &script,
        &log,
    );
    p.add_destination(Destination::parse("dead", 1).unwrap())
        .unwrap();
    p.start().unwrap();
    for i in 0..10 {
        p.enqueue(snap(&format!("/{i}"))).unwrap();
    }
    wait_until(|| p.counters().in_flight.load(Ordering::Relaxed) == 1);
    p.begin_drain();
    let started = Instant::now();
    p.start().unwrap();
    // Well before the drain deadline (30 s), which the old code joined to; the margin on
    // both sides is wide enough for a slow machine.
    assert!(started.elapsed() < RESTART_JOIN + Duration::from_secs(10));
    let c = p.counters();
    assert_eq!(c.failed.load(Ordering::Relaxed), 0);
    assert_eq!(c.queued.load(Ordering::Relaxed), 10);
    assert_eq!(p.pending(), 10);
    script.hang.lock().clear();
    wait_until(|| c.sent.load(Ordering::Relaxed) == 10);
    let urls: Vec<String> = script
        .sent
        .lock()
        .iter()
        .map(|(_, u)| String::from_utf8_lossy(u).into_owned())
        .collect();
    let expect: Vec<String> = (0..10).map(|i| format!("http://dead:1/{i}")).collect();
    assert_eq!(urls, expect, "the request in flight keeps its place");
    assert_eq!(p.pending(), 0);
    assert_eq!(c.failed.load(Ordering::Relaxed), 0);
    p.stop();
}

#[test]
fn discard_after_a_restart_gives_up_what_is_left_exactly_once() {
    let script = Arc::new(Script::default());
    script.hang.lock().push("http://dead:1".into());
    let log = Arc::new(Lines::default());
    let p = peer(
        Settings {
            drain_timeout: Duration::from_millis(300),
            ..fast()
        },
        &script,
        &log,
    );
    p.add_destination(Destination::parse("dead", 1).unwrap())
        .unwrap();
    p.start().unwrap();
    for i in 0..5 {
        p.enqueue(snap(&format!("/{i}"))).unwrap();
    }
    wait_until(|| p.counters().in_flight.load(Ordering::Relaxed) == 1);
    p.begin_drain();
    p.start().unwrap();
    wait_until(|| p.counters().in_flight.load(Ordering::Relaxed) == 1);
    p.stop();
    let c = p.counters();
    assert_eq!(c.failed.load(Ordering::Relaxed), 5);
    assert_eq!(p.pending(), 0);
    assert_eq!(c.sent.load(Ordering::Relaxed), 0);
}

thread_local! {
    static SPAWNED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Starts the first thread asked for on this test thread, fails the next ones.
fn second_spawn_fails(
    name: String,
    f: Box<dyn FnOnce() + Send>,
) -> std::io::Result<JoinHandle<()>> {
    let n = SPAWNED.with(|c| {
        c.set(c.get() + 1);
        c.get()
    });
    if n == 1 {
        std::thread::Builder::new().name(name).spawn(f)
    } else {
        Err(std::io::Error::other("no more threads"))
    }
}

#[test]
fn a_start_that_fails_halfway_gives_up_nothing() {
    let script = Arc::new(Script::default());
    script.hang.lock().push("http://a:1".into());
    let log = Arc::new(Lines::default());
    let p = peer(
        Settings {
            concurrency: 2,
            ..fast()
        },
        &script,
        &log,
    )
    .with_spawn(second_spawn_fails);
    p.add_destination(Destination::parse("a", 1).unwrap())
        .unwrap();
    for i in 0..5 {
        p.enqueue(snap(&format!("/{i}"))).unwrap();
    }
    assert!(p.start().is_err());
    let c = p.counters();
    assert_eq!(c.failed.load(Ordering::Relaxed), 0, "{:?}", log.0.lock());
    assert_eq!(p.pending(), 5);
    p.stop();
    assert_eq!(c.failed.load(Ordering::Relaxed), 5);
    assert_eq!(p.pending(), 0);
}
