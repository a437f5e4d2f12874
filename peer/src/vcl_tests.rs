//! Unit tests of a VCL's peers: the default peer's one path, and the temperature events.
use super::*;
use crate::config::PeerArgs;
use crate::policy::{Failure, Outcome};
use crate::sender::{Control, Transport};
use crate::snapshot::{Parts, Prepared, Snapshot};
use crate::stats::LocalCounters;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Every transfer hangs until the drain deadline (a dead destination).
struct Hang;
impl Transport for Hang {
    fn send(
        &mut self,
        _: &Destination,
        _: &Prepared,
        _: &crate::config::Settings,
        control: &Arc<Control>,
    ) -> Outcome {
        while !control.aborted() {
            std::thread::sleep(Duration::from_millis(2));
        }
        Outcome::Failed(Failure::Shutdown)
    }
}
impl TransportFactory for Hang {
    fn create(&self) -> Box<dyn Transport> {
        Box::new(Hang)
    }
}

#[derive(Default)]
struct Lines(Mutex<Vec<String>>);
impl EventLog for Lines {
    fn log(&self, line: &str) {
        self.0.lock().push(line.to_string());
    }
}

struct TestServices {
    log: Arc<Lines>,
}
impl Services for TestServices {
    fn counters(&self, _: &str, _: &str) -> Arc<dyn CounterStore> {
        Arc::new(LocalCounters::default())
    }
    fn log(&self) -> Arc<dyn EventLog> {
        Arc::clone(&self.log) as Arc<dyn EventLog>
    }
    fn transport(&self) -> Arc<dyn TransportFactory> {
        Arc::new(Hang)
    }
}

fn vcl() -> (VclPeers, Arc<Lines>) {
    let log = Arc::new(Lines::default());
    let services = Arc::new(TestServices {
        log: Arc::clone(&log),
    });
    (VclPeers::new("boot", "me", services), log)
}

/// The lines `queue_on` logs.
fn logged(
    peer: &Peer,
    fname: &str,
    take: impl FnOnce() -> Result<Snapshot, SnapshotError>,
) -> Vec<String> {
    let mut lines = Vec::new();
    queue_on(peer, fname, take, |line| lines.push(line.to_string()));
    lines
}

fn purge(i: usize) -> Snapshot {
    Parts {
        method: b"PURGE".to_vec(),
        url: format!("/{i}").into_bytes(),
        ..Parts::default()
    }
    .into()
}

#[test]
fn the_default_peer_is_an_ordinary_peer_made_with_the_documented_defaults() {
    let (vcl, _) = vcl();
    assert!(vcl.default_peer().is_none());
    vcl.set_default_destination(Destination::parse("127.0.0.1", 8080).unwrap());
    vcl.set_default_timeout(DefaultTimeout::Total, 2000)
        .unwrap();
    vcl.warm().unwrap();
    let peer = vcl.default_peer().unwrap();
    let s = peer.settings();
    assert_eq!(s.name, "default");
    assert_eq!(s.timeout, Duration::from_secs(2));
    let documented = settings_from("default", &PeerArgs::default()).unwrap();
    assert_eq!(s.connect_timeout, documented.connect_timeout);
    assert_eq!(s.queue_size, documented.queue_size);
    assert_eq!(s.policy, documented.policy);
    vcl.discard();
}

#[test]
fn default_timeouts_in_ms_are_checked_with_the_bounds_of_the_durations() {
    let (vcl, _) = vcl();
    let err = |which, ms| vcl.set_default_timeout(which, ms).unwrap_err().to_string();
    assert_eq!(
        err(DefaultTimeout::Connect, 0),
        "ms must be at least 1 ms (0 would mean no timeout) (0)"
    );
    assert_eq!(
        err(DefaultTimeout::Total, -1),
        "ms must not be negative (-1)"
    );
    assert!(err(DefaultTimeout::Drain, 30_001).contains("cli_timeout"));
    assert!(err(DefaultTimeout::Total, i64::MAX).starts_with("ms must be at most 3600000 ms"));
    assert!(vcl.set_default_timeout(DefaultTimeout::Drain, 0).is_ok());
}

#[test]
fn several_backlogged_peers_are_stopped_together_and_their_rest_counted_in_bulk() {
    let (vcl, log) = vcl();
    let args = PeerArgs {
        queue_size: 100_000,
        drain_timeout: 0.2,
        ..PeerArgs::default()
    };
    let peers: Vec<_> = (0..4)
        .map(|i| {
            let p = vcl.new_peer(&format!("p{i}"), &args).unwrap();
            p.add_destination(Destination::parse("dead", 1).unwrap())
                .unwrap();
            p.add_destination(Destination::parse("dead2", 1).unwrap())
                .unwrap();
            p
        })
        .collect();
    vcl.warm().unwrap();
    for p in &peers {
        for i in 0..50_000 {
            p.enqueue(purge(i)).unwrap();
        }
    }
    vcl.cold();
    let started = Instant::now();
    let limit = vcl.discard().unwrap();
    // One deadline for all: the drain (0.2 s) plus the grace, not one per peer.
    assert!(limit <= started + Duration::from_millis(200) + JOIN_GRACE);
    for p in &peers {
        let c = p.counters();
        assert_eq!(p.pending(), 0);
        assert_eq!(c.queued.load(Ordering::Relaxed), 100_000);
        assert_eq!(
            c.failed.load(Ordering::Relaxed) + c.sent.load(Ordering::Relaxed),
            100_000
        );
    }
    // One bulk line per destination, plus at most one line per request in flight.
    let lines = log.0.lock();
    let bulk = lines.iter().filter(|l| l.contains("requests to")).count();
    assert_eq!(bulk, 8, "{lines:?}");
    assert!(lines.len() <= 8 + 8, "{}", lines.len());
}

#[test]
fn warm_cold_warm_restarts_and_a_cold_vcl_keeps_its_queue() {
    let (vcl, _) = vcl();
    let args = PeerArgs {
        drain_timeout: 0.05,
        ..PeerArgs::default()
    };
    let p = vcl.new_peer("p", &args).unwrap();
    p.add_destination(Destination::parse("dead", 1).unwrap())
        .unwrap();
    p.enqueue(purge(1)).unwrap();
    assert_eq!(vcl.pending(), 1);
    vcl.warm().unwrap();
    vcl.cold();
    vcl.warm().unwrap();
    vcl.discard();
    assert_eq!(vcl.pending(), 0);
}

#[test]
fn a_peer_without_destination_takes_no_snapshot_and_counts_the_call_as_refused() {
    let (vcl, _) = vcl();
    let p = vcl.new_peer("nodest", &PeerArgs::default()).unwrap();
    vcl.warm().unwrap();
    let lines = logged(&p, "nodest.queue_req()", || {
        panic!("no snapshot may be taken for a peer without destination")
    });
    assert_eq!(
        lines,
        vec![
            "nodest.queue_req(): peer nodest has no destination (add one with \
             nodest.add_destination() in vcl_init); nothing queued"
                .to_string()
        ]
    );
    assert_eq!(p.counters().refused.load(Ordering::Relaxed), 1);
    assert_eq!(p.counters().queued.load(Ordering::Relaxed), 0);
    vcl.discard();
}

#[test]
fn a_snapshot_that_cannot_be_taken_is_counted_as_refused() {
    let (vcl, _) = vcl();
    let p = vcl.new_peer("p", &PeerArgs::default()).unwrap();
    p.add_destination(Destination::parse("dead", 1).unwrap())
        .unwrap();
    for e in [
        SnapshotError::NoRequest,
        SnapshotError::BodyUnreadable,
        SnapshotError::BodyNotCached,
    ] {
        let lines = logged(&p, "p.queue_req()", || Err(e));
        assert_eq!(lines.len(), 1, "{lines:?}");
    }
    assert_eq!(p.counters().refused.load(Ordering::Relaxed), 3);
    assert_eq!(p.pending(), 0);
    vcl.discard();
}

#[test]
fn a_full_queue_logs_one_line_per_destination_with_its_reason_and_takes_no_snapshot() {
    let (vcl, _) = vcl();
    let args = PeerArgs {
        queue_size: 1,
        ..PeerArgs::default()
    };
    let p = vcl.new_peer("p", &args).unwrap();
    for (dest, port) in [("dead", 1), ("https://api.example/v1", 0)] {
        p.add_destination(Destination::parse(dest, port).unwrap())
            .unwrap();
    }
    assert!(logged(&p, "p.queue_req()", || Ok(purge(1))).is_empty());
    for _ in 0..2 {
        let lines = logged(&p, "p.queue_req()", || {
            panic!("no snapshot may be taken when every queue is full")
        });
        assert_eq!(
            lines,
            [
                "peer p: dropped for http://dead:1 (queue full, capacity 1)",
                "peer p: dropped for https://api.example:443/v1 (queue full, capacity 1)",
            ]
        );
    }
    assert_eq!(p.counters().dropped.load(Ordering::Relaxed), 4);
    vcl.discard();
}
