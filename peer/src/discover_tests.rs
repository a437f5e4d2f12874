//! Unit tests of discovery: the decisions with an injected resolver and clock, and the lanes
//! they add and retire on a peer with a gated transport (no network, no varnishd).
use super::*;
use crate::config::{settings_from, PeerArgs, Settings};
use crate::policy::{Failure, Outcome};
use crate::sender::tests::{fast, peer, snap, wait_until, Lines, Script};
use crate::sender::{Control, EventLog, Transport, TransportFactory};
use crate::snapshot::{Prepared, Template};
use crate::stats::{CounterStore, DestCounterStore, DestCounters, LocalCounters, PeerCounters};
use parking_lot::Mutex;
use std::sync::atomic::Ordering::Relaxed;

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
    fn resolve(&self, host: &str, _: u16) -> Result<Vec<IpAddr>, String> {
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

fn discovery(addrs: &[&str], now: Instant) -> Discovery {
    Discovery::resolve("p", name(), T, Fixed::new(addrs).as_ref(), now).unwrap()
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
    let resolver = Fixed::new(&[]);
    let e = Discovery::resolve("p", name(), T, resolver.as_ref(), Instant::now()).unwrap_err();
    assert_eq!(e.to_string(), "destination: \"n\" resolves to no address");
    resolver.set(Err("Name or service not known".into()));
    let e = Discovery::resolve("p", name(), T, resolver.as_ref(), Instant::now()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "destination: \"n\" does not resolve (Name or service not known)"
    );
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
    let u = d.update(Ok(ips(&["127.0.0.4", "127.0.0.3"])), t1);
    assert_eq!(shown(&u.add), ["http://n:80 (127.0.0.4)"]);
    assert_eq!(shown(&u.retire), ["http://n:80 (127.0.0.2)"]);
    assert_eq!(u.lines.len(), 2, "{:?}", u.lines);
    assert!(u.lines[0].contains("(127.0.0.4) added"), "{:?}", u.lines);
    assert!(u.lines[1].contains("(127.0.0.2) retired"), "{:?}", u.lines);
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
    let u = d.update(Ok(ips(&["127.0.0.3"])), t0 + 5 * T);
    assert_eq!(u.lines[0], "peer p: http://n:80 resolves again");
    assert_eq!(shown(&u.retire), ["http://n:80 (127.0.0.2)"]);
}

#[test]
fn a_proxy_a_second_discovery_of_the_same_name_and_a_peer_in_use_are_refused() {
    let script = Arc::new(Script::default());
    let log = Arc::new(Lines::default());
    let resolver = Fixed::new(&["127.0.0.2"]);
    let p = peer(fast(), &script, &log);
    let e = add_dns_destinations(&p, b"n", 80, 0.0, resolver.as_ref()).unwrap_err();
    assert!(e.to_string().starts_with("refresh must be"), "{e}");
    let e = add_dns_destinations(&p, b"n", 0, 30.0, resolver.as_ref()).unwrap_err();
    assert!(e.to_string().starts_with("destination: port 0"), "{e}");
    add_dns_destinations(&p, b"n", 80, 30.0, resolver.as_ref()).unwrap();
    let e = add_dns_destinations(&p, b"n", 80, 30.0, resolver.as_ref()).unwrap_err();
    assert_eq!(e, DiscoverError::Duplicate("http://n:80".into()));
    add_dns_destinations(&p, b"n", 81, 30.0, resolver.as_ref()).unwrap();
    assert_eq!(p.lane_destinations().len(), 2);
    assert!(matches!(
        add_dns_destinations(&p, b"http://n:82", 0, 30.0, resolver.as_ref()),
        Err(DiscoverError::Setup(_))
    ));

    let args = PeerArgs {
        proxy: "http://proxy:3128".into(),
        ..PeerArgs::default()
    };
    let proxied = settings_from("p", &args).unwrap();
    let p = peer(proxied, &script, &log);
    let e = add_dns_destinations(&p, b"n", 80, 30.0, resolver.as_ref()).unwrap_err();
    assert_eq!(e, DiscoverError::Proxy);
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
    let d = Discovery::resolve("p", name(), refresh, resolver.as_ref(), past).unwrap();
    p.add_discovery(d).unwrap();
    (p, resolver, gate, log)
}

fn refresh_now(p: &Peer, resolver: &Fixed, answer: &[&str]) {
    resolver.set(Ok(ips(answer)));
    for d in p.discoveries().lock().iter_mut() {
        d.next = Instant::now();
    }
    refresh_due(p, resolver, &AtomicBool::new(false));
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
    refresh_due(&p, resolver.as_ref(), &AtomicBool::new(false));
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
    refresh_due(&p, resolver.as_ref(), &AtomicBool::new(true));
    assert_eq!(shown(&p.lane_destinations()), ["http://n:80 (127.0.0.2)"]);
}

#[test]
fn the_discovery_thread_applies_answers_until_it_is_signalled() {
    let (p, resolver, gate, _log) = discovering(fast(), &["127.0.0.2"]);
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
    let started = Instant::now();
    d.join(Instant::now() + Duration::from_secs(5));
    assert!(started.elapsed() < Duration::from_secs(2));
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
