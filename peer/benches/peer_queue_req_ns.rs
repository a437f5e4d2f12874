//! The worker-side cost of `queue_req()`, without varnishd:
//! - `peer_queue_req_ns`: a 10-header PURGE, snapshot taken and queued for one destination
//!   (no I/O, no sender thread), in ns per call;
//! - `peer_drop_ns`: a call while the only destination's queue is full (its destination is
//!   down): the drop is counted and its `VCL_Error` line handed to the log sink, in ns per call;
//! - `peer_alloc_bytes_per_queued_request`: heap bytes held per queued copy of the 1 KB request
//!   of `bench/run.sh`'s memory figure, each allocation rounded up to its jemalloc size class
//!   (varnishd's allocator), so that it predicts `peer_bytes_per_queued_request`.
//!
//! Times are the calling thread's CPU time (the wall clock on these shared cores counts the
//! waits for a core too). Run with `cargo bench -p vmod-peer --no-default-features`;
//! `cargo test` does not run it.
//! For a profile (valgrind --tool=callgrind on the bench binary), `PEER_BENCH_ONLY=drop` (or
//! `queue`, `bytes`) runs one figure and `PEER_BENCH_CALLS=N` makes each round N calls.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmod_peer::config::{settings_from, PeerArgs};
use vmod_peer::dest::Destination;
use vmod_peer::policy::Outcome;
use vmod_peer::sender::{Control, EventLog, Peer, Transport, TransportFactory};
use vmod_peer::snapshot::{Prepared, Snapshot, Template};
use vmod_peer::stats::LocalCounters;
use vmod_peer::vcl::queue_on;

/// The system allocator, counting what is live: bytes as requested, bytes rounded to the
/// jemalloc size class, and allocations.
struct Counting;
static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_CLASS_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_ALLOCS: AtomicIsize = AtomicIsize::new(0);

/// jemalloc's size class for `n` bytes (small and large classes: 8, 16..128 by 16, then four
/// classes per doubling).
fn jemalloc_class(n: usize) -> usize {
    if n <= 8 {
        return 8;
    }
    if n <= 128 {
        return n.div_ceil(16) * 16;
    }
    let step = (n - 1).next_power_of_two() / 8;
    n.div_ceil(step) * step
}

fn account(size: usize, sign: isize) {
    let (bytes, class) = (size as isize, jemalloc_class(size) as isize);
    LIVE_BYTES.fetch_add(sign * bytes, Ordering::Relaxed);
    LIVE_CLASS_BYTES.fetch_add(sign * class, Ordering::Relaxed);
    LIVE_ALLOCS.fetch_add(sign, Ordering::Relaxed);
}

// SAFETY: delegates every call to `System` unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        account(layout.size(), 1);
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        account(layout.size(), -1);
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        account(layout.size(), -1);
        account(new_size, 1);
        // SAFETY: per the caller.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

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

fn peer(queue_size: i64) -> Peer {
    let args = PeerArgs {
        queue_size,
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
    peer
}

fn purge() -> Snapshot {
    Snapshot::from_fields(
        b"PURGE",
        b"/static/app.js",
        b"HTTP/1.1",
        HEADERS.iter().copied(),
        None,
    )
}

/// One call of `queue_on` as the FFI layer makes it: every line goes to the log sink.
fn call(peer: &Peer) -> usize {
    let mut logged = 0;
    queue_on(
        peer,
        "peer.queue_req()",
        || Ok(purge()),
        |line| logged += black_box(line).len(),
    );
    logged
}

/// CPU time used by this thread: unlike the wall clock, it does not count the time the
/// thread waits for a core that other processes hold (this machine's cores are shared).
fn thread_cpu() -> Duration {
    #[repr(C)]
    struct Timespec {
        sec: i64,
        nsec: i64,
    }
    extern "C" {
        fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
    }
    const CLOCK_THREAD_CPUTIME_ID: i32 = 3;
    let mut ts = Timespec { sec: 0, nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec (64-bit Linux layout).
    let ok = unsafe { clock_gettime(CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0;
    assert!(ok, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(ts.sec as u64, ts.nsec as u32)
}

/// Median, min, max of rounds of `batch` calls of `f` in this thread's CPU time (the first
/// round is a warm-up); `between` runs after each round, untimed.
fn rounds(
    mut batch: u32,
    mut f: impl FnMut(),
    mut between: impl FnMut(),
) -> (f64, f64, f64, usize) {
    let mut samples = Vec::new();
    let mut max_rounds = 50;
    if let Some(calls) = std::env::var("PEER_BENCH_CALLS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        (batch, max_rounds) = (calls, 3);
    }
    let end = Instant::now() + Duration::from_secs(5);
    for round in 0..max_rounds {
        let started = thread_cpu();
        for _ in 0..batch {
            f();
        }
        let ns = (thread_cpu() - started).as_nanos() as f64 / f64::from(batch);
        between();
        if round > 0 {
            samples.push(ns);
        }
        if Instant::now() > end && samples.len() >= 5.min(max_rounds - 1) {
            break;
        }
    }
    samples.sort_by(f64::total_cmp);
    (
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
        samples.len(),
    )
}

/// The line bench/run.sh reads (bench/lib/criterion_read.py --lines), and a readable one.
fn report(figure: &str, unit: &str, (median, min, max, n): (f64, f64, f64, usize), what: &str) {
    println!(
        "{figure}: median {median:.0} {unit} of CPU time {what} (min {min:.0}, max {max:.0}, {n} rounds)"
    );
    println!(
        "bench-figure {{\"figure\": \"{figure}\", \"unit\": \"{unit}\", \"value\": {median:.1}, \"min\": {min:.1}, \"max\": {max:.1}, \"spread\": \"min..max\", \"samples\": {n}}}"
    );
}

fn queue_req_ns() {
    let peer = peer(1_000_000);
    let figure = rounds(
        100_000,
        || {
            black_box(call(&peer));
        },
        // Empties the queue (counted as failed) so that the next round measures queueing,
        // not drops.
        || peer.stop(),
    );
    report("peer_queue_req_ns", "ns", figure, "per call");
    assert_eq!(peer.counters().dropped.load(Ordering::Relaxed), 0);
}

fn drop_ns() {
    let peer = peer(1);
    assert!(call(&peer) == 0, "the first request is queued");
    let figure = rounds(
        100_000,
        || {
            black_box(call(&peer));
        },
        || {},
    );
    report("peer_drop_ns", "ns", figure, "per call with the queue full");
    assert!(peer.counters().dropped.load(Ordering::Relaxed) > 0);
}

/// The 1 KB request of bench/run.sh's memory figure (bench/lib/hammer.py --size 1024), as
/// Varnish hands it to `vcl_recv` (it adds X-Forwarded-For and Via).
fn one_kb_request(i: usize) -> Snapshot {
    let url = format!("/q/1-{i}");
    let request_line = format!("GET {url} HTTP/1.1\r\n");
    let host = "Host: 127.0.0.1:45845";
    let pad = 1024 - request_line.len() - host.len() - 2 - "X-Pad: \r\n".len() - 2;
    let lines = [
        host.to_string(),
        format!("X-Pad: {}", "p".repeat(pad)),
        "X-Forwarded-For: 127.0.0.1".to_string(),
        "Via: 1.1 vm (Varnish/7.7)".to_string(),
    ];
    Snapshot::from_fields(
        b"GET",
        url.as_bytes(),
        b"HTTP/1.1",
        lines.iter().map(String::as_bytes),
        None,
    )
}

fn bytes_per_queued_request() {
    const N: usize = 30_000;
    let peer = peer(1_000_000);
    let requests: Vec<Snapshot> = (0..N).map(one_kb_request).collect();
    drop(requests);
    let (b0, c0, a0) = (
        LIVE_BYTES.load(Ordering::Relaxed),
        LIVE_CLASS_BYTES.load(Ordering::Relaxed),
        LIVE_ALLOCS.load(Ordering::Relaxed),
    );
    for i in 0..N {
        queue_on(
            &peer,
            "pr.queue_req()",
            || Ok(one_kb_request(i)),
            |line| panic!("not queued: {line}"),
        );
    }
    let per =
        |now: &AtomicIsize, before: isize| (now.load(Ordering::Relaxed) - before) as f64 / N as f64;
    let (bytes, class, allocs) = (
        per(&LIVE_BYTES, b0),
        per(&LIVE_CLASS_BYTES, c0),
        per(&LIVE_ALLOCS, a0),
    );
    println!(
        "peer_alloc_bytes_per_queued_request: {class:.0} bytes in jemalloc classes per queued 1 KB \
         request ({bytes:.0} requested, {allocs:.2} allocations)"
    );
    println!(
        "bench-figure {{\"figure\": \"peer_alloc_bytes_per_queued_request\", \"unit\": \"bytes\", \"value\": {class:.1}, \"min\": {class:.1}, \"max\": {class:.1}, \"spread\": \"exact (allocator count)\", \"samples\": {N}, \"requested\": {bytes:.1}, \"allocations\": {allocs:.2}}}"
    );
    peer.stop();
}

fn main() {
    let only = std::env::var("PEER_BENCH_ONLY").unwrap_or_default();
    let want = |name: &str| only.is_empty() || only == name;
    if want("bytes") {
        bytes_per_queued_request();
    }
    if want("queue") {
        queue_req_ns();
    }
    if want("drop") {
        drop_ns();
    }
}
