//! `peer_queue_req_ns`: the worker-side cost of `queue_req()` for a 10-header PURGE: taking the
//! snapshot from the request's fields and queueing it for one destination (no I/O, no sender
//! thread). Run with `cargo bench -p vmod-peer --no-default-features`; `cargo test` does not
//! run it.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmod_peer::config::{settings_from, PeerArgs};
use vmod_peer::dest::Destination;
use vmod_peer::policy::Outcome;
use vmod_peer::sender::{Control, EventLog, Peer, Transport, TransportFactory};
use vmod_peer::snapshot::{Prepared, Snapshot, Template};
use vmod_peer::stats::LocalCounters;
use vmod_peer::vcl::queue_on;

struct NoTransport;
impl Transport for NoTransport {
    fn send(
        &mut self,
        _: &Destination,
        _: &Prepared,
        _: &vmod_peer::config::Settings,
        _: &Arc<Control>,
    ) -> Outcome {
        Outcome::Status(200)
    }
}
impl TransportFactory for NoTransport {
    fn create(&self) -> Box<dyn Transport> {
        Box::new(NoTransport)
    }
}
struct NoLog;
impl EventLog for NoLog {
    fn log(&self, _: &str) {}
}

const HEADERS: [&[u8]; 10] = [
    b"Host: www.example.com",
    b"User-Agent: curl/8.5.0",
    b"Accept: */*",
    b"X-Forwarded-For: 192.0.2.1",
    b"X-Varnish: 32770",
    b"Via: 1.1 cache1 (Varnish/7.7)",
    b"X-Request-Id: 0f3c9a7e-5b1d-4a2e-9c8f-1e2d3c4b5a69",
    b"Accept-Encoding: gzip",
    b"X-Purge-Reason: deploy",
    b"Cache-Control: no-cache",
];

fn main() {
    let args = PeerArgs {
        queue_size: 1_000_000,
        ..PeerArgs::default()
    };
    let settings = settings_from("bench", &args).expect("valid settings");
    let peer = Peer::new(
        settings,
        Template::default(),
        Arc::new(LocalCounters::default()),
        Arc::new(NoLog),
        Arc::new(NoTransport),
    );
    peer.add_destination(Destination::parse("127.0.0.1", 8080).expect("destination"))
        .expect("in vcl_init");
    let batch = 100_000u32;
    let mut samples = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    for round in 0..50 {
        let started = Instant::now();
        for i in 0..batch {
            let lines = queue_on(&peer, "peer.queue_req()", || {
                Ok(Snapshot::from_fields(
                    b"PURGE",
                    b"/static/app.js",
                    b"HTTP/1.1",
                    HEADERS.iter().copied(),
                    None,
                ))
            });
            black_box((lines, i));
        }
        let ns = started.elapsed().as_nanos() as f64 / f64::from(batch);
        // Empties the queue (counted as failed) so that the next round measures queueing,
        // not drops.
        peer.stop();
        if round > 0 {
            samples.push(ns);
        }
        if Instant::now() > end && samples.len() >= 5 {
            break;
        }
    }
    samples.sort_by(f64::total_cmp);
    let median = samples[samples.len() / 2];
    println!(
        "peer_queue_req_ns: median {median:.0} ns per call (min {:.0}, max {:.0}, {} rounds of {batch})",
        samples[0],
        samples[samples.len() - 1],
        samples.len()
    );
    // The line bench/run.sh reads (bench/lib/criterion_read.py --lines).
    println!(
        "bench-figure {{\"figure\": \"peer_queue_req_ns\", \"unit\": \"ns\", \"value\": {median:.1}, \"min\": {:.1}, \"max\": {:.1}, \"spread\": \"min..max\", \"samples\": {}}}",
        samples[0],
        samples[samples.len() - 1],
        samples.len()
    );
    assert_eq!(
        peer.counters()
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}
