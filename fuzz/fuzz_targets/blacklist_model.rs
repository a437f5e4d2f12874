//! saintmode's denylist against a model (a HashMap scanned linearly): any sequence of add,
//! check, live_count with a non-decreasing clock gives the same answers, and the counters
//! balance: every Added entry is either still held or counted as expired exactly once.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use vmods_fuzz::blacklist::{Blacklist, Crossing, Listed, Verdict};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let threshold = (data[0] % 6) as usize;
    let mut bl = Blacklist::new(threshold);
    let mut model: HashMap<u8, f64> = HashMap::new();
    let mut now = 0.0f64;
    let (mut added, mut expired) = (0u64, 0u64);
    let mut over = false;
    let digest = |k: u8| {
        let mut d = [0u8; 32];
        d[0] = k;
        d
    };
    for op in data[1..].chunks(3) {
        let (kind, key, arg) = (op[0] % 4, op.get(1).copied().unwrap_or(0) % 8, op.get(2).copied().unwrap_or(1));
        let live = |m: &HashMap<u8, f64>, now: f64| m.values().filter(|e| **e > now).count();
        let mut changes = None;
        match kind {
            0 => {
                let ttl = f64::from(arg % 16 + 1) / 4.0;
                let (listed, ch) = bl.add(&digest(key), now, ttl);
                changes = Some(ch);
                let want = if threshold == 0 {
                    Listed::Disabled
                } else if model.get(&key).is_some_and(|e| *e > now) {
                    Listed::Refreshed
                } else {
                    Listed::Added
                };
                assert_eq!(listed, want, "add({key}) at {now}");
                if threshold > 0 {
                    let e = model.entry(key).or_insert(0.0);
                    *e = e.max(now + ttl);
                }
                if listed == Listed::Added {
                    added += 1;
                }
            }
            1 => {
                let (verdict, ch) = bl.check(Some(&digest(key)), now);
                changes = Some(ch);
                let want = if threshold == 0 {
                    Verdict::Healthy
                } else if model.get(&key).is_some_and(|e| *e > now) {
                    Verdict::Listed
                } else if live(&model, now) >= threshold {
                    Verdict::OverThreshold
                } else {
                    Verdict::Healthy
                };
                assert_eq!(verdict, want, "check({key}) at {now}");
            }
            2 => {
                let (n, ch) = bl.live_count(now);
                changes = Some(ch);
                let want = if threshold == 0 { 0 } else { live(&model, now) };
                assert_eq!(n, want, "live_count at {now}");
                // An exact count reclaims every expired entry: what is held is live, and every
                // entry ever added is held or was counted expired once.
                assert_eq!(bl.held(), n);
            }
            _ => now += f64::from(arg % 8) / 8.0,
        }
        if let Some(ch) = changes {
            expired += ch.expired;
            match ch.crossing {
                Some(Crossing::Reached) => {
                    assert!(!over);
                    over = true
                }
                Some(Crossing::Cleared) => {
                    assert!(over);
                    over = false
                }
                None => {}
            }
            if kind == 2 {
                assert_eq!(added, expired + bl.held() as u64, "added {added} != expired {expired} + held {}", bl.held());
            }
        }
        model.retain(|_, e| *e > now - 1000.0);
    }
});
