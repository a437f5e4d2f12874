//! Micro-benchmarks of the saintmode hot path and memory, for issue 16's figures:
//! - `saintmode_check_ns_0`, `saintmode_check_ns_100000`: one health check (the director's
//!   path: `object::Saintmode::check`, lock included) with 0 and 100 000 live entries;
//! - `saintmode_bytes_per_entry`: heap bytes per entry at 100 000 entries (a counting
//!   allocator: what the list allocates, without the allocator's own overhead).
//!
//! Run with `cargo bench -p vmod-saintmode --bench check`. Each figure is the median of 31
//! samples, with the 10th-90th percentile spread; `cargo test` does not run it.
//!
//! The pure modules are compiled in from their sources (`#[path]`): the library's FFI
//! layer refers to varnishd's symbols, which exist only inside varnishd.

#[path = "../src/blacklist.rs"]
#[allow(dead_code, unused_imports)]
mod blacklist;
#[path = "../src/clock.rs"]
#[allow(dead_code, unused_imports)]
mod clock;
#[path = "../src/object.rs"]
#[allow(dead_code, unused_imports)]
mod object;
#[path = "../src/stats.rs"]
#[allow(dead_code, unused_imports)]
mod stats;

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::Instant;

use blacklist::Digest;
use clock::Tick;
use object::Saintmode;

/// The system allocator, counting live bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const SECOND: Tick = 1_000_000_000;
const SAMPLES: usize = 31;
const CHECKS_PER_SAMPLE: usize = 200_000;

/// A SHA-256-like (uniform) digest for `n`.
fn digest(n: u64) -> Digest {
    let mut d = [0u8; 32];
    let mut x = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    for chunk in d.chunks_mut(8) {
        x ^= x >> 30;
        x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        chunk.copy_from_slice(&x.to_le_bytes());
    }
    d
}

fn filled(entries: u64) -> Saintmode {
    let sm = Saintmode::new("sm".into(), "s1".into(), 1_000_000);
    for n in 0..entries {
        sm.add(&digest(n), 0, 3600 * SECOND, 0.0);
    }
    sm
}

struct Figure {
    median: f64,
    p10: f64,
    p90: f64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn summarize(mut samples: Vec<f64>) -> Figure {
    samples.sort_by(f64::total_cmp);
    Figure {
        median: percentile(&samples, 0.5),
        p10: percentile(&samples, 0.1),
        p90: percentile(&samples, 0.9),
    }
}

/// ns per `check` of digests from `queries`, cycling.
fn time_checks(sm: &Saintmode, queries: &[Digest]) -> Figure {
    let now = SECOND;
    let mut samples = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let start = Instant::now();
        for i in 0..CHECKS_PER_SAMPLE {
            let q = &queries[i % queries.len()];
            black_box(sm.check(Some(black_box(q)), now, 1.0));
        }
        samples.push(start.elapsed().as_nanos() as f64 / CHECKS_PER_SAMPLE as f64);
    }
    summarize(samples)
}

fn report(name: &str, f: &Figure, unit: &str) {
    println!(
        "{name:<40} median {:>8.1} {unit}  (p10 {:.1}, p90 {:.1}, {SAMPLES} samples)",
        f.median, f.p10, f.p90
    );
    // The line bench/run.sh reads (bench/lib/criterion_read.py --lines): the figure's key is
    // the name without its parenthesised variant, spaces as underscores
    // ("saintmode_check_ns_100000 (object listed)" -> "saintmode_check_ns_100000_object_listed").
    let key: String = name
        .chars()
        .filter(|c| !matches!(c, '(' | ')'))
        .map(|c| if c == ' ' { '_' } else { c })
        .collect();
    println!(
        "bench-figure {{\"figure\": \"{key}\", \"unit\": \"{unit}\", \"value\": {:.3}, \"min\": {:.3}, \"max\": {:.3}, \"spread\": \"p10..p90\", \"samples\": {SAMPLES}}}",
        f.median, f.p10, f.p90
    );
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter we do not need.
    let unlisted: Vec<Digest> = (0..4096).map(|n| digest(1_000_000_000 + n)).collect();

    let empty = filled(0);
    report(
        "saintmode_check_ns_0",
        &time_checks(&empty, &unlisted),
        "ns",
    );

    let full = filled(100_000);
    report(
        "saintmode_check_ns_100000 (object not listed)",
        &time_checks(&full, &unlisted),
        "ns",
    );
    // Listed objects, spread over the whole table (cache misses included).
    let listed: Vec<Digest> = (0..4096).map(|n| digest(n * 24 % 100_000)).collect();
    report(
        "saintmode_check_ns_100000 (object listed)",
        &time_checks(&full, &listed),
        "ns",
    );
    // Every listed object in turn: the whole table is touched (L2 misses included). The
    // figure of issue 16: the worst of the three, what a busy director sees.
    let all: Vec<Digest> = (0..100_000).map(digest).collect();
    report("saintmode_check_ns_100000", &time_checks(&full, &all), "ns");
    drop(full);

    // Memory: live heap bytes per entry, total and per 25 000-entry step (the slope is what
    // the RSS-based figure of `make bench` measures).
    let mut per_entry = Vec::new();
    let mut slopes = Vec::new();
    for _ in 0..5 {
        let base = LIVE.load(Ordering::Relaxed);
        let sm = Saintmode::new("sm".into(), "s1".into(), 1_000_000);
        let mut last = base;
        for step in 1..=4u64 {
            for n in (step - 1) * 25_000..step * 25_000 {
                sm.add(&digest(n), 0, 3600 * SECOND, 0.0);
            }
            let now = LIVE.load(Ordering::Relaxed);
            slopes.push((now - last) as f64 / 25_000.0);
            last = now;
        }
        per_entry.push((last - base) as f64 / 100_000.0);
        black_box(&sm);
    }
    let f = summarize(per_entry);
    report("saintmode_bytes_per_entry", &f, "B");
    slopes.sort_by(f64::total_cmp);
    println!(
        "{:<40} min {:.1} B, max {:.1} B per entry over 25 000-entry steps",
        "  growth per step",
        slopes.first().copied().unwrap_or(0.0),
        slopes.last().copied().unwrap_or(0.0)
    );
}
