//! saintmode's denylist against a model (a HashMap scanned linearly): any sequence of add,
//! verdict, live_count, reclaim with a non-decreasing monotonic clock gives the same answers,
//! the structure stays consistent, and the counters balance: every Added entry is either
//! still held or counted as expired exactly once.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use vmods_fuzz::blacklist::{Blacklist, Listed, Verdict};
use vmods_fuzz::clock::Tick;

/// A quarter of a second in ticks (nanoseconds).
const QUARTER: Tick = 250_000_000;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let threshold = (data[0] % 6) as usize;
    let mut bl = Blacklist::new(threshold);
    let mut model: HashMap<u8, Tick> = HashMap::new();
    let mut now: Tick = 1;
    let (mut added, mut expired) = (0u64, 0u64);
    let digest = |k: u8| {
        let mut d = [0u8; 32];
        d[0] = k;
        d
    };
    let live = |m: &HashMap<u8, Tick>, now: Tick| m.values().filter(|e| **e > now).count();
    for op in data[1..].chunks(3) {
        let (kind, key, arg) = (op[0] % 5, op.get(1).copied().unwrap_or(0) % 8, op.get(2).copied().unwrap_or(1));
        match kind {
            0 => {
                let ttl = Tick::from(arg % 16 + 1) * QUARTER;
                let (listed, gone) = bl.add(&digest(key), now, ttl);
                expired += gone;
                let want = if threshold == 0 {
                    Listed::Disabled
                } else if model.get(&key).is_some_and(|e| *e > now) {
                    Listed::Refreshed
                } else {
                    Listed::Added
                };
                assert_eq!(listed, want, "add({key}) at {now}");
                if threshold > 0 {
                    let e = model.entry(key).or_insert(0);
                    *e = (*e).max(now + ttl);
                }
                if listed == Listed::Added {
                    added += 1;
                }
            }
            1 => {
                let want = if threshold == 0 {
                    Verdict::Healthy
                } else if model.get(&key).is_some_and(|e| *e > now) {
                    Verdict::Listed
                } else if live(&model, now) >= threshold {
                    Verdict::OverThreshold
                } else {
                    Verdict::Healthy
                };
                assert_eq!(bl.verdict(Some(&digest(key)), now), want, "verdict({key}) at {now}");
                assert_eq!(bl.over(now), threshold > 0 && live(&model, now) >= threshold, "over at {now}");
            }
            2 => {
                let want = if threshold == 0 { 0 } else { live(&model, now) };
                // Exact, or (after more expiries than one bounded search counts) an upper
                // bound that stays under the threshold when the model is under it.
                let count = bl.live_count(now);
                if count.exact {
                    assert_eq!(count.live, want, "live_count at {now}");
                } else {
                    assert!(count.live >= want, "live_count {count:?} < {want} at {now}");
                    assert!(want >= threshold || count.live < threshold, "live_count {count:?} at {now}");
                }
            }
            3 => {
                // A bounded reclaim frees at most its budget, earliest deadline first.
                let held = bl.held();
                let gone = bl.reclaim(now, usize::from(arg % 4));
                assert!(gone <= u64::from(arg % 4));
                assert_eq!(bl.held() as u64, held as u64 - gone);
                expired += gone;
            }
            _ => now += Tick::from(arg % 8) * QUARTER / 2,
        }
        bl.assert_consistent();
        assert_eq!(added, expired + bl.held() as u64, "added {added} != expired {expired} + held {}", bl.held());
        model.retain(|_, e| *e + 1000 * QUARTER > now);
    }
});
