//! Unit tests of batching: the checks of `set_batch()`, the rendering of a call, and the
//! sender thread of a batch peer with a scripted transport (no network, no varnishd).
use super::*;
use crate::config::Settings;
use crate::gate::GateSettings;
use crate::policy::{Outcome, RetryPolicy};
use crate::sender::{Control, EventLog, Transport, TransportFactory};
use crate::stats::LocalCounters;
use crate::vcl::queue_on;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Instant;

fn args(body: &str) -> BatchArgs {
    BatchArgs {
        url: b"/purge".to_vec(),
        body: body.as_bytes().to_vec(),
        header: Vec::new(),
        items: "json".into(),
        method: b"POST".to_vec(),
        max_items: 100,
        window: 1.0,
    }
}

const MAX_AGE: Duration = Duration::from_secs(60);

fn refused(change: impl FnOnce(&mut BatchArgs)) -> String {
    let mut a = args(r#"{"files":[{items}]}"#);
    change(&mut a);
    BatchSpec::new(&a, MAX_AGE).unwrap_err().to_string()
}

#[test]
fn set_batch_refuses_templates_without_exactly_one_placeholder() {
    assert!(refused(|a| a.body = b"{}".to_vec()).starts_with("body: neither body nor header"));
    assert!(refused(|a| a.body = b"[{items},{items}]".to_vec()).starts_with("body: {items} must"));
    assert!(refused(|a| a.header = b"Surrogate-Key: {items}".to_vec())
        .starts_with("body: {items} must appear exactly once"));
    assert!(refused(|a| {
        a.body.clear();
        a.header = b"Surrogate-Key: all".to_vec();
    })
    .starts_with("header: has no {items}"));
    assert!(refused(|a| a.header = b"no colon {items}".to_vec()).starts_with("header: must be"));
    assert!(refused(|a| {
        a.body.clear();
        a.header = b"Content-Length: {items}".to_vec();
    })
    .starts_with("header: header \"Content-Length\" cannot be set"));
}

#[test]
fn set_batch_refuses_counts_windows_methods_and_urls_out_of_range() {
    assert_eq!(
        refused(|a| a.max_items = 0),
        "max_items: must be between 1 and 10000 (0)"
    );
    assert!(refused(|a| a.max_items = 10_001).starts_with("max_items: must be between"));
    assert!(refused(|a| a.window = -1.0).starts_with("window: must not be negative (-1)"));
    assert!(refused(|a| a.window = 61.0).starts_with("window: must be at most 60000 ms (61)"));
    let e = BatchSpec::new(&args("[{items}]"), Duration::from_millis(500)).unwrap_err();
    assert!(e
        .to_string()
        .starts_with("window: must be shorter than the peer's max_age (500 ms)"));
    assert!(refused(|a| a.method = b"PO ST".to_vec()).starts_with("method:"));
    assert!(refused(|a| a.method.clear()).starts_with("method:"));
    assert!(refused(|a| a.url = b"/a b".to_vec()).starts_with("url:"));
    assert!(refused(|a| a.url.clear()).starts_with("url:"));
    assert!(refused(|a| a.items = "xml".into()).starts_with("items:"));
    let ok = BatchSpec::new(&args("[{items}]"), MAX_AGE).unwrap();
    assert_eq!((ok.max_items, ok.window), (100, Duration::from_secs(1)));
    assert!(BatchSpec::new(
        &BatchArgs {
            window: 0.0,
            max_items: 1,
            ..args("{items}")
        },
        MAX_AGE
    )
    .is_ok());
}

fn template() -> Template {
    Template {
        marker: "cache1".into(),
        fixed: vec![
            (b"Content-Type".to_vec(), b"application/json".to_vec()),
            (b"Surrogate-Key".to_vec(), b"fixed".to_vec()),
        ],
        ..Template::default()
    }
}

fn dest() -> Destination {
    Destination::parse("http://127.0.0.1:9/api", 0).unwrap()
}

#[test]
fn json_items_are_escaped_like_json_string_and_joined_by_commas() {
    let spec = BatchSpec::new(&args(r#"{"surrogate_keys":[{items}]}"#), MAX_AGE).unwrap();
    let items: [&[u8]; 4] = [
        b"k1",
        br#"a"],"purge_everything":true,"x":[""#,
        b"b\\c\n",
        b"\xff",
    ];
    let call = spec.prepare(&template(), &items, &dest());
    let body = call.body.as_deref().unwrap();
    let mut expected =
        br#"{"surrogate_keys":["k1","a\"],\"purge_everything\":true,\"x\":[\"","b\\c\n","#.to_vec();
    expected.extend_from_slice("\"\u{fffd}\"]}".as_bytes());
    assert_eq!(
        String::from_utf8_lossy(body),
        String::from_utf8_lossy(&expected)
    );
    // The same code as peer.json_string().
    let mut joined = Vec::new();
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            joined.push(b',');
        }
        joined.extend_from_slice(&escape::json_string(item));
    }
    assert!(body.windows(joined.len()).any(|w| w == joined.as_slice()));
    assert_eq!(call.method, b"POST");
    assert_eq!(call.url, b"http://127.0.0.1:9/api/purge");
    assert!(call
        .header_lines
        .contains(&b"Content-Type: application/json".to_vec()));
    assert!(call
        .header_lines
        .contains(&b"X-Peer-Forwarded: cache1".to_vec()));
}

#[test]
fn token_items_go_space_separated_in_their_header_which_replaces_a_fixed_one() {
    let a = BatchArgs {
        header: b"Surrogate-Key: {items}".to_vec(),
        items: "tokens".into(),
        ..args("")
    };
    let spec = BatchSpec::new(&a, MAX_AGE).unwrap();
    let call = spec.prepare(&template(), &[b"k1", b"product/42"], &dest());
    assert_eq!(call.header_lines[0], b"Surrogate-Key: k1 product/42");
    let keys = call
        .header_lines
        .iter()
        .filter(|l| l.to_ascii_lowercase().starts_with(b"surrogate-key"))
        .count();
    assert_eq!(keys, 1);
    assert_eq!(call.body, None);
    assert!(call.header_lines.contains(&b"Content-Length: 0".to_vec()));
    assert_eq!(
        spec.check_item(b"a b"),
        Err(ItemError::NotToken("a b".into()))
    );
    assert_eq!(
        spec.check_item(b"a\"b"),
        Err(ItemError::NotToken(r#"a\"b"#.into()))
    );
    assert_eq!(spec.check_item(b""), Err(ItemError::Empty));
    assert_eq!(spec.check_item(b"k1"), Ok(()));
    let json = BatchSpec::new(&args("[{items}]"), MAX_AGE).unwrap();
    assert_eq!(json.check_item(b"a b\"\\"), Ok(()));
    assert_eq!(json.check_item("caf\u{e9}".as_bytes()), Ok(()));
    assert!(matches!(
        json.check_item(b"/caf\xe9"),
        Err(ItemError::NotUtf8(_))
    ));
    assert_eq!(json.check_item(b""), Err(ItemError::Empty));
}

#[test]
fn lists_split_on_spaces_tabs_and_commas_or_on_spaces_and_tabs_only() {
    let parts: Vec<&[u8]> = split_list(b" a,b\tc ,, d ", ListSplit::Xkey).collect();
    assert_eq!(parts, [&b"a"[..], b"b", b"c", b"d"]);
    assert_eq!(split_list(b"", ListSplit::Xkey).count(), 0);
    let urls: Vec<&[u8]> = split_list(b" /a,b?x=1,2\t/c ,, ", ListSplit::Spaces).collect();
    assert_eq!(urls, [&b"/a,b?x=1,2"[..], b"/c", b",,"]);
    assert_eq!(ListSplit::parse("spaces"), Some(ListSplit::Spaces));
    assert_eq!(ListSplit::parse("xkey"), Some(ListSplit::Xkey));
}

// -------------------------------------------------------------------------------------
// The sender thread of a batch peer

#[derive(Default)]
struct Script {
    outcomes: Mutex<VecDeque<Outcome>>,
    bodies: Mutex<Vec<String>>,
    /// The first header line of each call (the items header, when there is one).
    first_headers: Mutex<Vec<Vec<u8>>>,
}

struct ScriptTransport(Arc<Script>);

impl Transport for ScriptTransport {
    fn send(&mut self, _: &Destination, req: &Prepared, _: &Settings, _: &Arc<Control>) -> Outcome {
        let body = req
            .body
            .as_deref()
            .map(|b| String::from_utf8_lossy(b).into_owned());
        self.0.bodies.lock().push(body.unwrap_or_default());
        let first = req.header_lines.first().cloned().unwrap_or_default();
        self.0.first_headers.lock().push(first);
        self.0
            .outcomes
            .lock()
            .pop_front()
            .unwrap_or(Outcome::Status(200))
    }
}

impl TransportFactory for Arc<Script> {
    fn create(&self) -> Box<dyn Transport> {
        Box::new(ScriptTransport(Arc::clone(self)))
    }
}

#[derive(Default)]
struct Lines(Mutex<Vec<String>>);
impl EventLog for Lines {
    fn log(&self, line: &str) {
        self.0.lock().push(line.to_string());
    }
}

struct Rig {
    peer: Peer,
    script: Arc<Script>,
    log: Arc<Lines>,
}

fn rig(max_items: i64, window: f64, policy: RetryPolicy) -> Rig {
    rig_gate(max_items, window, policy, Settings::default().gate)
}

/// A batch peer whose destination has the gate `gate` (rate limit, circuit).
fn rig_gate(max_items: i64, window: f64, policy: RetryPolicy, gate: GateSettings) -> Rig {
    let batch = BatchArgs {
        max_items,
        window,
        ..args("[{items}]")
    };
    rig_with(&batch, policy, gate)
}

fn rig_with(batch: &BatchArgs, policy: RetryPolicy, gate: GateSettings) -> Rig {
    let script = Arc::new(Script::default());
    let log = Arc::new(Lines::default());
    let settings = Settings {
        policy,
        gate,
        ..Settings::default()
    };
    let spec = BatchSpec::new(batch, settings.policy.max_age).unwrap();
    let peer = Peer::new(
        settings,
        Template::default(),
        Arc::new(LocalCounters::default()),
        Arc::clone(&log) as Arc<dyn EventLog>,
        Arc::new(Arc::clone(&script)),
    );
    peer.add_destination(Destination::parse("a", 1).unwrap())
        .unwrap();
    peer.set_batch(spec).unwrap();
    Rig { peer, script, log }
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 3,
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(4),
        max_age: Duration::from_secs(60),
    }
}

fn wait_until(what: impl Fn() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !what() {
        assert!(Instant::now() < end, "condition not reached in 20 s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// The lines a queueing function hands its log sink.
fn logged(f: impl FnOnce(&mut dyn FnMut(&str))) -> Vec<String> {
    let mut lines = Vec::new();
    f(&mut |line| lines.push(line.to_string()));
    lines
}

fn queue(r: &Rig, items: impl IntoIterator<Item = String>) {
    for item in items {
        queue_item_on(&r.peer, "t", item.as_bytes(), |line| {
            panic!("not queued: {line}")
        });
    }
}

#[test]
fn a_backlog_goes_in_calls_of_max_items_in_order_each_item_counted() {
    let r = rig(100, 0.0, fast());
    queue(&r, (0..250).map(|i| format!("k{i}")));
    assert_eq!(r.peer.pending(), 250);
    r.peer.start().unwrap();
    wait_until(|| r.peer.pending() == 0);
    let bodies = r.script.bodies.lock().clone();
    let sizes: Vec<usize> = bodies.iter().map(|b| b.matches('"').count() / 2).collect();
    assert_eq!(sizes, [100, 100, 50]);
    let all: String = bodies.concat();
    let expected: String = [0..100, 100..200, 200..250]
        .into_iter()
        .map(|r| {
            format!(
                "[{}]",
                r.map(|i| format!("\"k{i}\"")).collect::<Vec<_>>().join(",")
            )
        })
        .collect();
    assert_eq!(all, expected);
    let c = r.peer.counters();
    assert_eq!(c.queued.load(Ordering::Relaxed), 250);
    assert_eq!(c.sent.load(Ordering::Relaxed), 250);
    assert_eq!(c.in_flight.load(Ordering::Relaxed), 0);
}

#[test]
fn a_failed_batch_is_retried_whole_and_retried_counts_items() {
    let r = rig(10, 0.0, fast());
    r.script
        .outcomes
        .lock()
        .extend([Outcome::Status(503), Outcome::Status(200)]);
    queue(&r, (0..4).map(|i| format!("k{i}")));
    r.peer.start().unwrap();
    wait_until(|| r.peer.pending() == 0);
    let bodies = r.script.bodies.lock().clone();
    assert_eq!(bodies, [r#"["k0","k1","k2","k3"]"#; 2]);
    let c = r.peer.counters();
    assert_eq!(c.sent.load(Ordering::Relaxed), 4);
    assert_eq!(c.retried.load(Ordering::Relaxed), 4);
}

#[test]
fn a_batch_given_up_counts_every_item_failed_with_one_log_line() {
    let r = rig(10, 0.0, fast());
    r.script.outcomes.lock().push_back(Outcome::Status(400));
    queue(&r, (0..3).map(|i| format!("k{i}")));
    r.peer.start().unwrap();
    wait_until(|| r.peer.pending() == 0);
    assert_eq!(r.peer.counters().failed.load(Ordering::Relaxed), 3);
    let lines = r.log.0.lock().clone();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].contains("gave up a batch of 3 items (POST /purge)"),
        "{lines:?}"
    );
}

#[test]
fn items_past_max_age_leave_the_batch_before_the_retry() {
    // Two old items and a fresh one queued 2.5 s later; the first attempt is throttled for
    // 3 s. At the retry the old ones are at least 5.5 s old, past max_age (5 s), whatever the
    // machine's speed; the fresh one is about 3 s old and the first attempt's old ones about
    // 2.5 s: 2 s of slack either way for a slow machine.
    let r = rig(
        10,
        0.0,
        RetryPolicy {
            max_age: Duration::from_secs(5),
            ..fast()
        },
    );
    r.script.outcomes.lock().push_back(Outcome::Throttled {
        status: 429,
        retry_after: Duration::from_secs(3),
    });
    queue(&r, ["old1".to_string(), "old2".to_string()]);
    std::thread::sleep(Duration::from_millis(2500));
    queue(&r, ["fresh".to_string()]);
    r.peer.start().unwrap();
    wait_until(|| r.peer.pending() == 0);
    let bodies = r.script.bodies.lock().clone();
    assert_eq!(bodies, [r#"["old1","old2","fresh"]"#, r#"["fresh"]"#]);
    let c = r.peer.counters();
    assert_eq!(c.expired.load(Ordering::Relaxed), 2);
    assert_eq!(c.sent.load(Ordering::Relaxed), 1);
    assert_eq!(c.retried.load(Ordering::Relaxed), 1);
    assert!(r
        .log
        .0
        .lock()
        .iter()
        .any(|l| l.contains("expired 2 items of a batch")));
}

#[test]
fn items_past_max_age_after_a_wait_at_the_gate_leave_the_batch() {
    // A token every 5 s, max_age 4 s. "old" joins a batch that waits for the token (the
    // first call took it): when the token comes, "old" is about 5 s old and leaves the batch
    // as expired; "fresh", queued 2 s after it (inside the 3 s window), is about 3 s old.
    let policy = RetryPolicy {
        max_age: Duration::from_secs(4),
        ..fast()
    };
    let gate = GateSettings {
        rate: 0.2,
        burst: 1,
        ..Settings::default().gate
    };
    let r = rig_gate(10, 3.0, policy, gate);
    r.peer.start().unwrap();
    queue(&r, ["first".to_string()]);
    wait_until(|| r.peer.counters().sent.load(Ordering::Relaxed) == 1);
    queue(&r, ["old".to_string()]);
    std::thread::sleep(Duration::from_secs(2));
    queue(&r, ["fresh".to_string()]);
    wait_until(|| r.peer.pending() == 0);
    let bodies = r.script.bodies.lock().clone();
    assert_eq!(bodies, [r#"["first"]"#, r#"["fresh"]"#]);
    let c = r.peer.counters();
    assert_eq!(c.sent.load(Ordering::Relaxed), 2);
    assert_eq!(c.expired.load(Ordering::Relaxed), 1);
    let dest = &r.peer.destinations()[0].counts;
    assert!(dest.contains(&("expired", 1)), "{dest:?}");
}

#[test]
fn items_queued_while_a_batch_waits_for_its_token_join_it() {
    // A token every 2 s. "a" is taken alone (window 0) and waits for the token the first
    // call took; "b" and "c", queued meanwhile, go in the same call.
    let gate = GateSettings {
        rate: 0.5,
        burst: 1,
        ..Settings::default().gate
    };
    let r = rig_gate(10, 0.0, fast(), gate);
    r.peer.start().unwrap();
    queue(&r, ["first".to_string()]);
    wait_until(|| r.peer.counters().sent.load(Ordering::Relaxed) == 1);
    queue(&r, ["a".to_string()]);
    wait_until(|| r.peer.counters().in_flight.load(Ordering::Relaxed) == 1);
    std::thread::sleep(Duration::from_millis(200));
    queue(&r, ["b".to_string(), "c".to_string()]);
    wait_until(|| r.peer.pending() == 0);
    let bodies = r.script.bodies.lock().clone();
    assert_eq!(bodies, [r#"["first"]"#, r#"["a","b","c"]"#]);
    assert_eq!(r.peer.counters().sent.load(Ordering::Relaxed), 4);
}

#[test]
fn a_batch_whose_items_header_would_pass_8_kb_leaves_with_the_items_that_fit() {
    // 300 keys of 50 bytes in "Surrogate-Key: {items}": 15 KB in one header, which servers
    // refuse (431). Each call carries what fits in 8192 bytes, in order, none lost.
    let batch = BatchArgs {
        header: b"Surrogate-Key: {items}".to_vec(),
        items: "tokens".into(),
        max_items: 10_000,
        window: 0.0,
        ..args("")
    };
    let r = rig_with(&batch, fast(), Settings::default().gate);
    let keys: Vec<String> = (0..300).map(|i| format!("{i:050}")).collect();
    queue(&r, keys.clone());
    r.peer.start().unwrap();
    wait_until(|| r.peer.pending() == 0);
    let headers = r.script.first_headers.lock().clone();
    assert!(headers.iter().all(|h| h.len() <= MAX_ITEMS_HEADER));
    // (8192 - 15 + 1) / 51 = 160 keys a call.
    let sizes: Vec<usize> = headers
        .iter()
        .map(|h| h.split(|b| *b == b' ').count() - 1)
        .collect();
    assert_eq!(sizes, [160, 140]);
    let sent: Vec<String> = headers
        .iter()
        .flat_map(|h| {
            String::from_utf8_lossy(&h[15..])
                .split(' ')
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(sent, keys);
    assert_eq!(r.peer.counters().sent.load(Ordering::Relaxed), 300);
    // An item that alone would not fit is refused; a template that leaves no room too.
    let spec = r.peer.batch().unwrap();
    assert_eq!(spec.check_item(&[b'k'; 8177]), Ok(()));
    assert_eq!(
        spec.check_item(&[b'k'; 8178]),
        Err(ItemError::TooLong {
            len: 8178,
            max: 8177
        })
    );
    let json = BatchSpec::new(
        &BatchArgs {
            items: "json".into(),
            ..batch.clone()
        },
        MAX_AGE,
    )
    .unwrap();
    // Quotes count: 8175 bytes and its two quotes fill the header.
    assert_eq!(json.check_item(&[b'k'; 8175]), Ok(()));
    assert!(json.check_item(&[b'k'; 8176]).is_err());
    let long = format!("X-Keys: {}{{items}}", "a".repeat(8190));
    let e = BatchSpec::new(
        &BatchArgs {
            header: long.into_bytes(),
            ..batch
        },
        MAX_AGE,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .starts_with("header: 8198 bytes without the items"),
        "{e}"
    );
}

#[test]
fn a_drain_sends_a_waiting_batch_without_waiting_for_its_window() {
    let r = rig(10, 30.0, fast());
    r.peer.start().unwrap();
    queue(&r, (0..3).map(|i| format!("k{i}")));
    wait_until(|| r.peer.counters().in_flight.load(Ordering::Relaxed) == 3);
    let t = Instant::now();
    r.peer.stop();
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(r.script.bodies.lock().clone(), [r#"["k0","k1","k2"]"#]);
    assert_eq!(r.peer.counters().sent.load(Ordering::Relaxed), 3);
}

#[test]
fn a_batch_peer_takes_items_only_and_other_peers_no_items() {
    let r = rig(10, 0.0, fast());
    let lines =
        logged(|log| queue_on(&r.peer, "peer.queue_req()", || Ok(Snapshot::default()), log));
    assert!(lines[0].contains("sends batches of items"), "{lines:?}");
    let lines = logged(|log| queue_item_on(&r.peer, "peer.queue_item()", b"", log));
    assert!(lines[0].contains("the item is empty"), "{lines:?}");
    assert_eq!(r.peer.counters().refused.load(Ordering::Relaxed), 2);

    let plain = Peer::new(
        Settings::default(),
        Template::default(),
        Arc::new(LocalCounters::default()),
        Arc::new(Lines::default()),
        Arc::new(Arc::new(Script::default())),
    );
    plain
        .add_destination(Destination::parse("a", 1).unwrap())
        .unwrap();
    let lines = logged(|log| queue_item_on(&plain, "peer.queue_item()", b"k", log));
    assert!(lines[0].contains("has no batch call"), "{lines:?}");
    assert_eq!(plain.counters().refused.load(Ordering::Relaxed), 1);
}
