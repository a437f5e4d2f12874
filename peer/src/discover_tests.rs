//! Unit tests of discovery: the decisions with an injected resolver and clock, and the lanes
//! they add and retire on a peer with a gated transport (no network, no varnishd).
use super::*;
use crate::config::{settings_from, PeerArgs, Settings};
use crate::policy::{Failure, Outcome};
use crate::sender::tests::{fast, peer, snap, wait_until, Lines, Script};
use crate::sender::RESTART_JOIN;
use crate::sender::{Control, EventLog, Transport, TransportFactory};
use crate::snapshot::{Prepared, Template};
use crate::stats::{CounterStore, DestCounterStore, DestCounters, LocalCounters, PeerCounters};
use parking_lot::Mutex;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicUsize};

/// A resolver that gives the answer set last.
struct Fixed(Mutex<Result<Vec<IpAddr>, String>>);

impl Fixed {
    fn new(addrs: &[&str]) -> Arc<Self> {
        Arc::new(Fixed(Mutex::new(Ok(ips(addrs)))))
    }
    fn set(&self, answer: Result<Vec<IpAddr>, String>) {
        *self.0.lock() = answer;
    }
}

impl Resolver for Fixed {
    fn resolve(&self, host: &str, _: u16, _: Family) -> Result<Vec<IpAddr>, String> {
        assert_eq!(host, "n", "the name is resolved, never an address");
        self.0.lock().clone()
    }
}

fn ips(addrs: &[&str]) -> Vec<IpAddr> {
    addrs.iter().map(|a| a.parse().unwrap()).collect()
}

fn name() -> Destination {
    Destination::parse("n", 80).unwrap()
}

fn shown(dests: &[Destination]) -> Vec<String> {
    dests.iter().map(ToString::to_string).collect()
}

const T: Duration = Duration::from_secs(30);

fn named(refresh: Duration, family: Family) -> Name {
    Name {
        dest: name(),
        refresh,
        family,
    }
}

fn discovery(addrs: &[&str], now: Instant) -> Discovery {
    Discovery::new("p", named(T, Family::Any), Ok(ips(addrs)), now).unwrap()
}

/// The answer of a refresh, given again until a missing address is retired.
fn update_until_retired(d: &mut Discovery, addrs: &[&str], now: Instant) -> Update {
    let mut u = d.update(Ok(ips(addrs)), now);
    for _ in 1..RETIRE_AFTER {
        let next = d.update(Ok(ips(addrs)), now);
        assert!(next.add.is_empty(), "{next:?}");
        u.retire.extend(next.retire);
        u.lines.extend(next.lines);
    }
    u
}

#[test]
fn a_name_stands_for_each_of_its_addresses_once() {
    let d = discovery(
        &["127.0.0.3", "::1", "127.0.0.2", "127.0.0.3"],
        Instant::now(),
    );
    assert_eq!(
        shown(&d.destinations()),
        [
            "http://n:80 (127.0.0.2)",
            "http://n:80 (127.0.0.3)",
            "http://n:80 ([::1])"
        ]
    );
}

#[test]
fn at_most_64_addresses_are_used_the_lowest() {
    let many: Vec<String> = (1..=100).map(|i| format!("10.0.0.{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let d = discovery(&many, Instant::now());
    let dests = d.destinations();
    assert_eq!(dests.len(), MAX_ADDRESSES);
    assert_eq!(dests[0].to_string(), "http://n:80 (10.0.0.1)");
    assert_eq!(dests[63].to_string(), "http://n:80 (10.0.0.64)");
}

#[test]
fn a_name_that_does_not_resolve_or_has_no_address_is_refused() {
    let now = Instant::now();
    let e = Discovery::new("p", named(T, Family::Any), Ok(vec![]), now).unwrap_err();
    assert_eq!(e.to_string(), "destination: \"n\" resolves to no address");
    let unknown = Err("Name or service not known".into());
    let e = Discovery::new("p", named(T, Family::Any), unknown, now).unwrap_err();
    assert_eq!(
        e.to_string(),
        "destination: \"n\" does not resolve (Name or service not known)"
    );
    let v6 = Ok(ips(&["::1"]));
    let e = Discovery::new("p", named(T, Family::Ipv4), v6, now).unwrap_err();
    assert_eq!(
        e.to_string(),
        "destination: \"n\" resolves to no IPv4 address (family = ipv6 uses its IPv6 addresses)"
    );
}

#[test]
fn a_dual_stack_name_is_one_destination_per_host_by_default() {
    let answer = || Ok(ips(&["127.0.0.2", "::2", "127.0.0.3", "::3"]));
    let now = Instant::now();
    let v4 = Discovery::new("p", named(T, Family::Ipv4), answer(), now).unwrap();
    assert_eq!(
        shown(&v4.destinations()),
        ["http://n:80 (127.0.0.2)", "http://n:80 (127.0.0.3)"]
    );
    let v6 = Discovery::new("p", named(T, Family::Ipv6), answer(), now).unwrap();
    assert_eq!(
        shown(&v6.destinations()),
        ["http://n:80 ([::2])", "http://n:80 ([::3])"]
    );
    assert_eq!(
        Discovery::new("p", named(T, Family::Any), answer(), now)
            .unwrap()
            .destinations()
            .len(),
        4
    );
    // An answer with no IPv4 address left is trouble, not a reason to retire them all.
    let mut v4 = v4;
    let u = v4.update(Ok(ips(&["::2"])), now + T);
    assert!(u.add.is_empty() && u.retire.is_empty(), "{u:?}");
    assert!(u.lines[0].contains("resolves to no IPv4 address"), "{u:?}");
    assert_eq!(Family::from_vcl("ipv6"), Some(Family::Ipv6));
    assert_eq!(Family::from_vcl("both"), None);
}

#[test]
fn more_than_64_addresses_are_logged_once_per_change_and_reported() {
    let addrs = |n: usize| (1..=n).map(|i| format!("10.0.{}.{}", i / 200, i % 200 + 1));
    let answer = |n: usize| {
        Ok(addrs(n)
            .map(|a| a.parse().unwrap())
            .collect::<Vec<IpAddr>>())
    };
    let t0 = Instant::now();
    let mut d = Discovery::new("p", named(T, Family::Ipv4), answer(100), t0).unwrap();
    assert_eq!(
        d.cut_line().as_deref(),
        Some("peer p: http://n:80 has 100 IPv4 addresses, 64 used (the lowest)")
    );
    let r = d.report();
    assert_eq!(
        (r.name.as_str(), r.family, r.found, r.used),
        ("http://n:80", "ipv4", 100, 64)
    );
    assert_eq!(
        d.update(answer(100), t0 + T),
        Update::default(),
        "no change: no line"
    );
    let u = d.update(answer(120), t0 + 2 * T);
    assert_eq!(
        u.lines,
        ["peer p: http://n:80 has 120 IPv4 addresses, 64 used (the lowest)"]
    );
    let u = d.update(answer(10), t0 + 3 * T);
    assert_eq!(
        u.lines,
        ["peer p: http://n:80 has 10 IPv4 addresses, all used"]
    );
    assert_eq!(d.update(answer(12), t0 + 4 * T).lines, Vec::<String>::new());
    assert_eq!(d.cut_line(), None);
}

#[test]
fn an_address_missing_from_one_answer_is_kept_and_retired_after_two_in_a_row() {
    let t0 = Instant::now();
    let mut d = discovery(&["127.0.0.2", "127.0.0.3"], t0);
    let u = d.update(Ok(ips(&["127.0.0.3"])), t0 + T);
    assert_eq!(u, Update::default(), "missing once: kept");
    let u = d.update(Ok(ips(&["127.0.0.2", "127.0.0.3"])), t0 + 2 * T);
    assert_eq!(u, Update::default(), "back: nothing to do");
    let u = d.update(Ok(ips(&["127.0.0.3"])), t0 + 3 * T);
    assert_eq!(u, Update::default(), "the count starts again");
    let u = d.update(Ok(ips(&["127.0.0.3"])), t0 + 4 * T);
    assert_eq!(shown(&u.retire), ["http://n:80 (127.0.0.2)"]);
    assert_eq!(shown(&d.destinations()), ["http://n:80 (127.0.0.3)"]);
}

#[test]
fn refresh_outside_one_second_to_a_day_is_refused() {
    for bad in [0.0, -1.0, 0.5, f64::NAN, 86_401.0, f64::INFINITY] {
        let e = refresh(bad).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("refresh must be between 1 s and 86400 s"),
            "{e}"
        );
    }
    assert_eq!(refresh(1.0), Ok(Duration::from_secs(1)));
    assert_eq!(refresh(86_400.0), Ok(MAX_REFRESH));
}

#[test]
fn an_update_adds_new_addresses_retires_gone_ones_and_schedules_the_next() {
    let t0 = Instant::now();
    let mut d = discovery(&["127.0.0.2", "127.0.0.3"], t0);
    assert_eq!(d.next(), t0 + T);
    let t1 = t0 + T;
    let u = update_until_retired(&mut d, &["127.0.0.4", "127.0.0.3"], t1);
    assert_eq!(shown(&u.add), ["http://n:80 (127.0.0.4)"]);
    assert_eq!(shown(&u.retire), ["http://n:80 (127.0.0.2)"]);
    assert!(u.lines.is_empty(), "logged once applied: {:?}", u.lines);
    assert_eq!(d.next(), t1 + T);
    let u = d.update(Ok(ips(&["127.0.0.3", "127.0.0.4"])), t1 + T);
    assert_eq!(u, Update::default(), "the same answer changes nothing");
}

#[test]
fn a_failure_or_an_empty_answer_keeps_the_addresses_and_is_logged_once_per_change() {
    let t0 = Instant::now();
    let mut d = discovery(&["127.0.0.2", "127.0.0.3"], t0);
    let kept = shown(&d.destinations());
    let u = d.update(Err("timed out".into()), t0 + T);
    assert!(u.add.is_empty() && u.retire.is_empty());
    assert_eq!(
        u.lines,
        [
            "peer p: http://n:80 does not resolve (timed out); its 2 addresses are kept until it \
          resolves again"
        ]
    );
    assert_eq!(d.next(), t0 + 2 * T, "tried again at the next refresh");
    let u = d.update(Err("timed out".into()), t0 + 2 * T);
    assert_eq!(u, Update::default(), "not logged at every refresh");
    let u = d.update(Ok(Vec::new()), t0 + 3 * T);
    assert!(u.add.is_empty() && u.retire.is_empty());
    assert_eq!(u.lines.len(), 1);
    assert!(
        u.lines[0].contains("resolves to no address"),
        "{:?}",
        u.lines
    );
    assert_eq!(d.update(Ok(Vec::new()), t0 + 4 * T), Update::default());
    assert_eq!(shown(&d.destinations()), kept);
    let u = update_until_retired(&mut d, &["127.0.0.3"], t0 + 5 * T);
    assert_eq!(u.lines[0], "peer p: http://n:80 resolves again");
    assert_eq!(shown(&u.retire), ["http://n:80 (127.0.0.2)"]);
}

#[test]
fn a_proxy_a_second_discovery_of_the_same_name_and_a_peer_in_use_are_refused() {
    let script = Arc::new(Script::default());
    let log = Arc::new(Lines::default());
    let resolver: Arc<dyn Resolver> = Fixed::new(&["127.0.0.2"]);
    let add = |p: &Peer, dest: &[u8], port: i64, refresh: f64| {
        add_dns_destinations(p, dest, port, refresh, Family::Ipv4, &resolver, T)
    };
    let p = peer(fast(), &script, &log);
    let e = add(&p, b"n", 80, 0.0).unwrap_err();
    assert!(e.to_string().starts_with("refresh must be"), "{e}");
    let e = add(&p, b"n", 0, 30.0).unwrap_err();
    assert!(e.to_string().starts_with("destination: port 0"), "{e}");
    add(&p, b"n", 80, 30.0).unwrap();
    let e = add(&p, b"n", 80, 30.0).unwrap_err();
    assert_eq!(e, DiscoverError::Duplicate("http://n:80".into()));
    add(&p, b"n", 81, 30.0).unwrap();
    assert_eq!(p.lane_destinations().len(), 2);
    assert!(matches!(
        add(&p, b"http://n:82", 0, 30.0),
        Err(DiscoverError::Setup(_))
    ));

    let args = PeerArgs {
        proxy: "http://proxy:3128".into(),
        ..PeerArgs::default()
    };
    let proxied = settings_from("p", &args).unwrap();
    let p = peer(proxied, &script, &log);
    assert_eq!(add(&p, b"n", 80, 30.0).unwrap_err(), DiscoverError::Proxy);
}

/// Transfers to the destinations listed in `closed` wait until they are opened (or the
/// deadline); the others are sent at once and recorded.
#[derive(Default)]
struct Gate {
    closed: Mutex<Vec<String>>,
    sent: Mutex<Vec<String>>,
}

impl Gate {
    fn sent_to(&self, address: &str) -> Vec<String> {
        let prefix = format!("({address}) ");
        let sent = self.sent.lock();
        sent.iter()
            .filter_map(|s| s.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }
}

struct GateTransport(Arc<Gate>);

impl Transport for GateTransport {
    fn send(
        &mut self,
        dest: &Destination,
        req: &Prepared,
        _: &Settings,
        control: &Arc<Control>,
    ) -> Outcome {
        let key = dest.to_string();
        while self.0.closed.lock().contains(&key) {
            if control.aborted() {
                return Outcome::Failed(Failure::Shutdown);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let address = dest.address.map_or(String::new(), |a| a.to_string());
        let url = String::from_utf8_lossy(&req.url).replace("http://n:80", "");
        self.0.sent.lock().push(format!("({address}) {url}"));
        Outcome::Status(200)
    }
}

impl TransportFactory for Arc<Gate> {
    fn create(&self) -> Box<dyn Transport> {
        Box::new(GateTransport(Arc::clone(self)))
    }
}

/// A peer `p` discovering `n`, whose first answer is `addrs`; its refresh is due at once.
fn discovering(
    settings: Settings,
    addrs: &[&str],
) -> (Arc<Peer>, Arc<Fixed>, Arc<Gate>, Arc<Lines>) {
    discovering_with(settings, addrs, Arc::new(LocalCounters::default()))
}

fn discovering_with(
    settings: Settings,
    addrs: &[&str],
    counters: Arc<dyn CounterStore>,
) -> (Arc<Peer>, Arc<Fixed>, Arc<Gate>, Arc<Lines>) {
    let gate = Arc::new(Gate::default());
    let log = Arc::new(Lines::default());
    let p = Arc::new(Peer::new(
        Settings {
            name: "p".into(),
            ..settings
        },
        Template::default(),
        counters,
        Arc::clone(&log) as Arc<dyn EventLog>,
        Arc::new(Arc::clone(&gate)),
    ));
    let resolver = Fixed::new(addrs);
    let refresh = Duration::from_secs(1);
    let past = Instant::now().checked_sub(refresh).unwrap();
    let d = Discovery::new("p", named(refresh, Family::Any), Ok(ips(addrs)), past).unwrap();
    p.add_discovery(d).unwrap();
    (p, resolver, gate, log)
}

/// Refreshes with `answer`, as many times as it takes to retire a missing address.
fn refresh_now(p: &Arc<Peer>, resolver: &Fixed, answer: &[&str]) {
    resolver.set(Ok(ips(answer)));
    for _ in 0..RETIRE_AFTER {
        refresh_once(p, resolver);
    }
}

fn refresh_once(p: &Arc<Peer>, resolver: &Fixed) {
    for d in p.discoveries().lock().iter_mut() {
        d.next = Instant::now();
    }
    refresh_due(&Arc::downgrade(p), resolver, &Mutex::new(false));
}

#[test]
fn a_retired_address_gets_nothing_new_sends_what_was_queued_then_is_removed() {
    let (p, resolver, gate, log) = discovering(fast(), &["127.0.0.2", "127.0.0.3"]);
    *gate.closed.lock() = vec!["http://n:80 (127.0.0.2)".into()];
    p.start().unwrap();
    p.enqueue(snap("/1")).unwrap();
    p.enqueue(snap("/2")).unwrap();
    refresh_now(&p, &resolver, &["127.0.0.3", "127.0.0.4"]);
    assert_eq!(
        shown(&p.lane_destinations()),
        ["http://n:80 (127.0.0.3)", "http://n:80 (127.0.0.4)"]
    );
    p.enqueue(snap("/3")).unwrap();
    wait_until(|| gate.sent_to("127.0.0.4").len() == 1);
    assert_eq!(gate.sent_to("127.0.0.4"), ["/3"], "a new address at once");
    assert_eq!(p.reap_retired(), 1, "still draining");
    gate.closed.lock().clear();
    wait_until(|| p.reap_retired() == 0);
    assert_eq!(
        gate.sent_to("127.0.0.2"),
        ["/1", "/2"],
        "queued before: sent"
    );
    assert_eq!(gate.sent_to("127.0.0.3"), ["/1", "/2", "/3"]);
    let c = p.counters();
    assert_eq!(c.sent.load(Relaxed), 6);
    assert_eq!(c.failed.load(Relaxed), 0);
    assert_eq!(p.pending(), 0);
    let lines = log.0.lock().join("\n");
    assert!(lines.contains("(127.0.0.4) added"), "{lines}");
    assert!(lines.contains("(127.0.0.2) retired"), "{lines}");
    drop(lines);
    p.stop();
}

#[test]
fn a_retired_address_that_cannot_drain_gives_up_its_queue_in_bulk_at_the_deadline() {
    let settings = Settings {
        drain_timeout: Duration::from_millis(100),
        ..fast()
    };
    let (p, resolver, gate, log) = discovering(settings, &["127.0.0.2", "127.0.0.3"]);
    *gate.closed.lock() = vec!["http://n:80 (127.0.0.2)".into()];
    p.start().unwrap();
    for i in 0..5 {
        p.enqueue(snap(&format!("/{i}"))).unwrap();
    }
    refresh_now(&p, &resolver, &["127.0.0.3"]);
    wait_until(|| p.reap_retired() == 0);
    let c = p.counters();
    assert_eq!(c.failed.load(Relaxed), 5);
    assert_eq!(c.sent.load(Relaxed), 5);
    assert_eq!(p.pending(), 0);
    let lines = log.0.lock().join("\n");
    assert!(
        lines.contains(
            "gave up 4 requests to http://n:80 (127.0.0.2): the destination was retired (its \
             address left DNS) before they were sent"
        ),
        "{lines}"
    );
    drop(lines);
    p.stop();
}

#[test]
fn a_failed_refresh_keeps_every_address_and_a_retirement_while_stopped_ends_at_once() {
    let (p, resolver, gate, _log) = discovering(fast(), &["127.0.0.2", "127.0.0.3"]);
    resolver.set(Err("timed out".into()));
    refresh_once(&p, resolver.as_ref());
    assert_eq!(p.lane_destinations().len(), 2);
    // Not started: the queue of a retired address has no thread to drain it.
    p.enqueue(snap("/1")).unwrap();
    refresh_now(&p, &resolver, &["127.0.0.3"]);
    assert_eq!(p.reap_retired(), 0);
    assert_eq!(p.counters().failed.load(Relaxed), 1);
    p.start().unwrap();
    wait_until(|| p.counters().sent.load(Relaxed) == 1);
    assert_eq!(gate.sent_to("127.0.0.3"), ["/1"]);
    p.stop();
}

#[test]
fn a_signalled_discovery_changes_nothing() {
    let (p, resolver, _gate, _log) = discovering(fast(), &["127.0.0.2"]);
    resolver.set(Ok(ips(&["127.0.0.5"])));
    refresh_due(&Arc::downgrade(&p), resolver.as_ref(), &Mutex::new(true));
    assert_eq!(shown(&p.lane_destinations()), ["http://n:80 (127.0.0.2)"]);
}

#[test]
fn the_discovery_thread_applies_answers_until_it_is_signalled() {
    let (p, resolver, gate, log) = discovering(fast(), &["127.0.0.2"]);
    p.start().unwrap();
    resolver.set(Ok(ips(&["127.0.0.3"])));
    let d = Discoverer::start(&p, Arc::clone(&resolver) as Arc<dyn Resolver>)
        .unwrap()
        .unwrap();
    // Due at once, then every second: the retired lane is reaped by the thread.
    wait_until(|| shown(&p.lane_destinations()) == ["http://n:80 (127.0.0.3)"]);
    wait_until(|| p.reap_retired() == 0);
    p.enqueue(snap("/x")).unwrap();
    wait_until(|| gate.sent_to("127.0.0.3") == ["/x"]);
    d.join(Instant::now() + Duration::from_secs(60));
    let lines = log.0.lock().join("\n");
    assert!(!lines.contains("left to finish"), "joined: {lines}");
    drop(lines);
    p.stop();
}

/// Per-destination counters that say when they are made and dropped (a VSC segment created
/// and destroyed, in varnishd).
#[derive(Default)]
struct Segments {
    peer: LocalCounters,
    events: Arc<Mutex<Vec<String>>>,
}

struct Segment {
    label: String,
    counters: DestCounters,
    events: Arc<Mutex<Vec<String>>>,
}

impl DestCounterStore for Segment {
    fn counters(&self) -> &DestCounters {
        &self.counters
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        self.events.lock().push(format!("-{}", self.label));
    }
}

impl CounterStore for Segments {
    fn counters(&self) -> &PeerCounters {
        &self.peer.0
    }
    fn destination(&self, label: &str) -> Arc<dyn DestCounterStore> {
        self.events.lock().push(format!("+{label}"));
        Arc::new(Segment {
            label: label.to_string(),
            counters: DestCounters::default(),
            events: Arc::clone(&self.events),
        })
    }
}

#[test]
fn each_address_has_its_own_counters_made_when_it_appears_and_removed_when_it_ends() {
    let segments = Arc::new(Segments::default());
    let events = Arc::clone(&segments.events);
    let (p, resolver, gate, _log) = discovering_with(
        fast(),
        &["127.0.0.2", "127.0.0.3"],
        segments as Arc<dyn CounterStore>,
    );
    assert_eq!(*events.lock(), ["+n_80_127.0.0.2", "+n_80_127.0.0.3"]);
    p.start().unwrap();
    refresh_now(&p, &resolver, &["127.0.0.3", "127.0.0.4"]);
    p.enqueue(snap("/1")).unwrap();
    wait_until(|| gate.sent_to("127.0.0.4").len() == 1);
    wait_until(|| p.reap_retired() == 0);
    assert_eq!(
        *events.lock(),
        [
            "+n_80_127.0.0.2",
            "+n_80_127.0.0.3",
            "+n_80_127.0.0.4",
            "-n_80_127.0.0.2"
        ]
    );
    let report = p.destinations();
    let names: Vec<&str> = report.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["n_80_127.0.0.3", "n_80_127.0.0.4"]);
    assert_eq!(report[1].count("sent"), Some(1));
    p.stop();
    drop(p);
    assert_eq!(events.lock().len(), 6, "{:?}", events.lock());
}

#[test]
fn an_address_back_before_its_old_lane_has_drained_gets_a_label_of_its_own() {
    let (p, resolver, gate, _log) = discovering(fast(), &["127.0.0.2"]);
    *gate.closed.lock() = vec!["http://n:80 (127.0.0.2)".into()];
    p.start().unwrap();
    p.enqueue(snap("/1")).unwrap();
    refresh_now(&p, &resolver, &["127.0.0.3"]);
    refresh_now(&p, &resolver, &["127.0.0.2", "127.0.0.3"]);
    let names: Vec<String> = p.destinations().into_iter().map(|d| d.name).collect();
    assert_eq!(names, ["n_80_127.0.0.3", "n_80_127.0.0.2_2"]);
    gate.closed.lock().clear();
    wait_until(|| p.reap_retired() == 0);
    assert_eq!(p.counters().failed.load(Relaxed), 0);
    p.stop();
}

/// A peer `p` discovering `n` (first answer `127.0.0.2`), started, whose threads are made by
/// `spawn`.
fn discovering_spawned_by(spawn: crate::sender::Spawn) -> (Arc<Peer>, Arc<Fixed>, Arc<Lines>) {
    let log = Arc::new(Lines::default());
    let p = Peer::new(
        Settings {
            name: "p".into(),
            concurrency: 2,
            ..fast()
        },
        Template::default(),
        Arc::new(LocalCounters::default()),
        Arc::clone(&log) as Arc<dyn EventLog>,
        Arc::new(Arc::new(Gate::default())),
    );
    let p = Arc::new(p.with_spawn(spawn));
    let resolver = Fixed::new(&["127.0.0.2"]);
    let answer = Ok(ips(&["127.0.0.2"]));
    let d = Discovery::new("p", named(T, Family::Any), answer, Instant::now()).unwrap();
    p.add_discovery(d).unwrap();
    (p, resolver, log)
}

/// Starts threads while `ALLOWED` says so (one per call), counting the attempts refused.
macro_rules! limited_spawn {
    ($allowed:ident, $refused:ident, $spawn:ident) => {
        static $allowed: AtomicUsize = AtomicUsize::new(2);
        static $refused: AtomicUsize = AtomicUsize::new(0);
        fn $spawn(
            name: String,
            f: Box<dyn FnOnce() + Send>,
        ) -> std::io::Result<std::thread::JoinHandle<()>> {
            if $allowed
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_err()
            {
                $refused.fetch_add(1, SeqCst);
                return Err(std::io::Error::from(std::io::ErrorKind::WouldBlock));
            }
            std::thread::Builder::new().name(name).spawn(f)
        }
    };
}

#[test]
fn a_refresh_whose_new_address_cannot_get_threads_retires_nothing_and_tries_again() {
    limited_spawn!(ALLOWED, REFUSED, spawn);
    let (p, resolver, log) = discovering_spawned_by(spawn);
    p.start().unwrap();
    // The address changes (a pod rescheduled) while no thread can be created.
    refresh_now(&p, &resolver, &["127.0.0.3"]);
    assert_eq!(shown(&p.lane_destinations()), ["http://n:80 (127.0.0.2)"]);
    assert_eq!(
        p.enqueue(snap("/x")).unwrap().queued,
        1,
        "still a destination"
    );
    let lines = log.0.lock().join("\n");
    assert!(!lines.contains("added"), "{lines}");
    assert!(!lines.contains("retired"), "{lines}");
    assert!(
        lines.contains("cannot start a sender thread for http://n:80 (127.0.0.3)"),
        "{lines}"
    );
    drop(lines);
    // Threads can be created again: the next refresh adds, and retires the old address.
    ALLOWED.store(100, SeqCst);
    refresh_once(&p, &resolver);
    assert_eq!(shown(&p.lane_destinations()), ["http://n:80 (127.0.0.3)"]);
    let lines = log.0.lock().join("\n");
    assert!(lines.contains("(127.0.0.3) added"), "{lines}");
    assert!(lines.contains("(127.0.0.2) retired"), "{lines}");
    drop(lines);
    p.stop();
}

#[test]
fn a_refresh_stops_adding_at_the_first_thread_that_cannot_start_and_waits_for_nothing() {
    limited_spawn!(ALLOWED, REFUSED, spawn);
    let (p, resolver, log) = discovering_spawned_by(spawn);
    p.start().unwrap();
    // Room for one thread of the first new address: its crew (2 threads) fails half-made.
    ALLOWED.store(1, SeqCst);
    let more = [
        "127.0.0.2",
        "127.0.0.3",
        "127.0.0.4",
        "127.0.0.5",
        "127.0.0.6",
    ];
    let started = Instant::now();
    resolver.set(Ok(ips(&more)));
    refresh_once(&p, &resolver);
    // Before: each failed crew waited for its own sender (RESTART_JOIN, 2 s), 4 times.
    assert!(started.elapsed() < RESTART_JOIN, "{:?}", started.elapsed());
    assert_eq!(
        REFUSED.load(SeqCst),
        1,
        "one refusal, then no more attempts"
    );
    assert_eq!(p.lane_destinations().len(), 1);
    assert!(log
        .0
        .lock()
        .join("\n")
        .contains("4 new addresses and 0 retirements wait"));
    p.stop();
}

#[test]
fn signalling_discovery_waits_for_no_lock_a_refresh_holds() {
    let (p, _resolver, _gate, _log) = discovering(fast(), &["127.0.0.2"]);
    let resolver: Arc<dyn Resolver> = Fixed::new(&["127.0.0.2"]);
    let mut d = Discoverer::start(&p, resolver).unwrap().unwrap();
    let signalled = Arc::new(AtomicBool::new(false));
    // Held here as a refresh holds it (and, before, across starting threads).
    let held = p.discoveries().lock();
    let signaller = {
        let signalled = Arc::clone(&signalled);
        std::thread::spawn(move || {
            d.signal();
            signalled.store(true, SeqCst);
            d
        })
    };
    wait_until(|| signalled.load(SeqCst));
    drop(held);
    signaller
        .join()
        .unwrap()
        .join(Instant::now() + Duration::from_secs(60));
}

/// A resolver that answers once `open` is set, then `addrs`.
struct Slow {
    open: AtomicBool,
    asked: AtomicUsize,
}

impl Resolver for Slow {
    fn resolve(&self, _: &str, _: u16, _: Family) -> Result<Vec<IpAddr>, String> {
        self.asked.fetch_add(1, SeqCst);
        while !self.open.load(SeqCst) {
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok(ips(&["127.0.0.9"]))
    }
}

#[test]
fn a_resolver_that_does_not_answer_in_vcl_init_fails_it_in_time() {
    let (script, log) = (Arc::new(Script::default()), Arc::new(Lines::default()));
    let slow = Arc::new(Slow {
        open: AtomicBool::new(false),
        asked: AtomicUsize::new(0),
    });
    let resolver: Arc<dyn Resolver> = Arc::clone(&slow) as Arc<dyn Resolver>;
    let p = peer(fast(), &script, &log);
    let limit = Duration::from_millis(50);
    let e = add_dns_destinations(&p, b"n", 80, 30.0, Family::Ipv4, &resolver, limit);
    assert_eq!(
        e.unwrap_err().to_string(),
        "destination: \"n\" did not resolve within 0 s (the resolver does not answer)"
    );
    assert!(p.lane_destinations().is_empty() && p.discoveries().lock().is_empty());
    slow.open.store(true, SeqCst);
}

#[test]
fn a_discovery_thread_stuck_in_the_resolver_holds_no_reference_to_the_peer() {
    let (p, _resolver, _gate, log) = discovering(fast(), &["127.0.0.2"]);
    let slow = Arc::new(Slow {
        open: AtomicBool::new(false),
        asked: AtomicUsize::new(0),
    });
    let d = Discoverer::start(&p, Arc::clone(&slow) as Arc<dyn Resolver>)
        .unwrap()
        .unwrap();
    wait_until(|| slow.asked.load(SeqCst) == 1);
    d.join(Instant::now());
    assert!(log.0.lock().join("\n").contains("left to finish"));
    assert_eq!(
        Arc::strong_count(&p),
        1,
        "the peer can be dropped at the discard"
    );
    slow.open.store(true, SeqCst);
    drop(p);
}

#[test]
fn lanes_retired_before_a_cold_event_are_ended_without_waiting_for_the_next_warm_one() {
    let settings = Settings {
        drain_timeout: Duration::from_millis(100),
        ..fast()
    };
    let (p, resolver, gate, _log) = discovering(settings, &["127.0.0.2", "127.0.0.3"]);
    *gate.closed.lock() = vec!["http://n:80 (127.0.0.2)".into()];
    p.start().unwrap();
    p.enqueue(snap("/1")).unwrap();
    p.enqueue(snap("/2")).unwrap();
    resolver.set(Ok(ips(&["127.0.0.3"])));
    let mut d = Discoverer::start(&p, Arc::clone(&resolver) as Arc<dyn Resolver>)
        .unwrap()
        .unwrap();
    wait_until(|| p.retiring() == 1);
    // Cold: discovery stops, the peer drains; the retired lane cannot send its queue.
    d.signal();
    p.begin_drain();
    wait_until(|| p.retiring() == 0);
    assert_eq!(p.pending(), 0, "its leftovers counted as failed");
    assert_eq!(
        p.counters().failed.load(Relaxed),
        2,
        "/1 and /2 to 127.0.0.2"
    );
    d.join(Instant::now() + Duration::from_secs(60));
    p.stop();
}

/// A resolver that panics.
struct Panicking;

impl Resolver for Panicking {
    fn resolve(&self, _: &str, _: u16, _: Family) -> Result<Vec<IpAddr>, String> {
        panic!("resolver bug (test)")
    }
}

#[test]
fn a_panic_in_discovery_is_logged_and_keeps_the_destinations() {
    let (p, _resolver, _gate, log) = discovering(fast(), &["127.0.0.2"]);
    let d = Discoverer::start(&p, Arc::new(Panicking)).unwrap().unwrap();
    wait_until(|| d.finished());
    let lines = log.0.lock().join("\n");
    assert!(
        lines.contains(
            "peer p: DNS discovery stopped by an internal error (resolver bug (test)); the \
             current destinations are kept"
        ),
        "{lines}"
    );
    drop(lines);
    assert_eq!(shown(&p.lane_destinations()), ["http://n:80 (127.0.0.2)"]);
    d.join(Instant::now());
}

#[test]
fn a_retired_address_with_several_threads_sends_its_queue_and_all_its_threads_end() {
    let settings = Settings {
        concurrency: 3,
        ..fast()
    };
    let (p, resolver, gate, _log) = discovering(settings, &["127.0.0.2", "127.0.0.3"]);
    *gate.closed.lock() = vec!["http://n:80 (127.0.0.2)".into()];
    p.start().unwrap();
    for i in 0..10 {
        p.enqueue(snap(&format!("/{i}"))).unwrap();
    }
    refresh_now(&p, &resolver, &["127.0.0.3"]);
    // Three threads of the retired lane hold a request each: still draining.
    assert_eq!(p.reap_retired(), 1);
    gate.closed.lock().clear();
    wait_until(|| p.reap_retired() == 0);
    let mut sent = gate.sent_to("127.0.0.2");
    sent.sort();
    let mut all: Vec<String> = (0..10).map(|i| format!("/{i}")).collect();
    all.sort();
    assert_eq!(sent, all, "each queued request sent once");
    assert_eq!(p.counters().failed.load(Relaxed), 0);
    assert_eq!(p.pending(), 0);
    p.stop();
}
