//! The denylist of one saintmode object, in plain Rust: which objects (hash digests) are
//! listed until when, and whether the live count has reached the threshold. Time is passed in
//! by the caller (Varnish's `ctx->now`, or a test clock), so the type needs no varnishd.
//!
//! Cost model: a lookup is one hash probe; expiries sit in a min-heap with lazy deletion, so
//! reclaiming an expired entry pops it from the heap instead of scanning the list. Every entry
//! is popped at most once, so reclamation costs O(log n) amortized per `add`.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};

/// An object's hash digest (`req.hash`), as Varnish computes it (SHA-256).
pub type Digest = [u8; 32];

/// Heap pops allowed per call on the hot paths (`add`, `check`) to reclaim memory of
/// expired entries when no exact count is needed. Exact counts pop whatever has expired.
const RECLAIM_STEP: usize = 8;

/// Stale heap entries (left by refreshes) allowed beyond the live entries before the heap is
/// rebuilt from the table; the rebuild is O(n) after at least n refreshes, so O(1) amortized.
const HEAP_SLACK: usize = 64;

/// A point in time in seconds (Varnish's `VCL_TIME`), totally ordered for the heap.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Deadline(f64);

impl Eq for Deadline {}

impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Deadline {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// What `add` did with the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listed {
    /// A new entry, counted towards the threshold.
    Added,
    /// The object was already listed: its expiry was extended, the count is unchanged.
    Refreshed,
    /// Threshold 0: saintmode is disabled and nothing was stored.
    Disabled,
}

/// The live count crossed the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crossing {
    /// The count reached the threshold: the backend is now sick for every object.
    Reached,
    /// The count went back under the threshold.
    Cleared,
}

/// Side effects of an operation, for counters and logs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Entries reclaimed because they expired.
    pub expired: u64,
    /// A threshold crossing observed by this operation.
    pub crossing: Option<Crossing>,
}

/// Answer of a health check for one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Saintmode does not object (the wrapped backend's health still applies).
    Healthy,
    /// This object is listed.
    Listed,
    /// The live count is at or above the threshold.
    OverThreshold,
}

/// The denylist: one entry per digest, with its expiry.
#[derive(Debug)]
pub struct Blacklist {
    threshold: usize,
    expiry_of: HashMap<Digest, f64>,
    /// Min-heap of (expiry, digest). An entry whose expiry differs from `expiry_of` is stale
    /// (the digest was refreshed or removed) and is dropped when popped.
    expiries: BinaryHeap<Reverse<(Deadline, Digest)>>,
    /// Whether the last exact count was at or above the threshold.
    over: bool,
}

impl Blacklist {
    /// An empty list; `threshold` 0 disables saintmode.
    pub fn new(threshold: usize) -> Self {
        Self {
            threshold,
            expiry_of: HashMap::new(),
            expiries: BinaryHeap::new(),
            over: false,
        }
    }

    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Entries held in memory, including expired ones not reclaimed yet.
    pub fn held(&self) -> usize {
        self.expiry_of.len()
    }

    /// Heap entries, live or stale (for memory accounting in tests).
    pub fn heap_len(&self) -> usize {
        self.expiries.len()
    }

    /// Lists `digest` until `now + ttl`. Listing it again extends its expiry (never shortens
    /// it) and does not count twice. `ttl` must be positive (the caller checks).
    pub fn add(&mut self, digest: &Digest, now: f64, ttl: f64) -> (Listed, Changes) {
        let mut changes = Changes::default();
        if self.threshold == 0 {
            return (Listed::Disabled, changes);
        }
        self.reclaim(now, Some(RECLAIM_STEP), &mut changes);
        let expiry = now + ttl;
        let listed = match self.expiry_of.get_mut(digest) {
            Some(current) if *current > now => {
                if expiry <= *current {
                    return (Listed::Refreshed, self.settle(now, changes));
                }
                *current = expiry;
                Listed::Refreshed
            }
            // Expired but not reclaimed yet: it stopped counting, so this is a new entry, and
            // the old one counts as expired now (its stale heap entry will not count again).
            Some(current) => {
                *current = expiry;
                changes.expired += 1;
                Listed::Added
            }
            None => {
                self.expiry_of.insert(*digest, expiry);
                Listed::Added
            }
        };
        self.expiries.push(Reverse((Deadline(expiry), *digest)));
        self.compact_heap();
        (listed, self.settle(now, changes))
    }

    /// The health verdict for `digest` (None: no object known, e.g. in `vcl_recv`). O(1) in
    /// the number of entries unless the count is at the threshold and entries have expired
    /// since the last call, which then reclaims them (each entry once).
    pub fn check(&mut self, digest: Option<&Digest>, now: f64) -> (Verdict, Changes) {
        let mut changes = Changes::default();
        if self.threshold == 0 {
            return (Verdict::Healthy, changes);
        }
        self.reclaim(now, Some(RECLAIM_STEP), &mut changes);
        let changes = self.settle(now, changes);
        let verdict = if digest.is_some_and(|d| self.is_listed(d, now)) {
            Verdict::Listed
        } else if self.over {
            Verdict::OverThreshold
        } else {
            Verdict::Healthy
        };
        (verdict, changes)
    }

    /// Whether `digest` is listed and unexpired at `now`; one hash probe.
    pub fn is_listed(&self, digest: &Digest, now: f64) -> bool {
        self.expiry_of.get(digest).is_some_and(|&e| e > now)
    }

    /// The exact number of unexpired entries at `now`, reclaiming the expired ones.
    pub fn live_count(&mut self, now: f64) -> (usize, Changes) {
        let mut changes = Changes::default();
        self.reclaim(now, None, &mut changes);
        let changes = self.settle(now, changes);
        (self.expiry_of.len(), changes)
    }

    /// Pops expired heap entries (at most `budget` pops), removing table entries whose
    /// expiry they carry.
    fn reclaim(&mut self, now: f64, budget: Option<usize>, changes: &mut Changes) {
        let mut pops = 0;
        while let Some(Reverse((Deadline(deadline), _))) = self.expiries.peek() {
            if *deadline > now || budget.is_some_and(|b| pops >= b) {
                break;
            }
            pops += 1;
            let Some(Reverse((Deadline(deadline), digest))) = self.expiries.pop() else {
                break;
            };
            // Remove only when the table still holds this deadline; otherwise the entry was
            // refreshed (its newer deadline is elsewhere in the heap) and this one is stale.
            if self.expiry_of.get(&digest) == Some(&deadline) {
                self.expiry_of.remove(&digest);
                changes.expired += 1;
            }
        }
    }

    /// Decides whether the live count is at the threshold, reclaiming only as many expired
    /// entries as the decision needs, and records a crossing.
    fn settle(&mut self, now: f64, mut changes: Changes) -> Changes {
        if self.threshold > 0 && self.expiry_of.len() >= self.threshold {
            // When the heap's minimum is live, every entry is: the count is exact.
            while self.expiry_of.len() >= self.threshold
                && self
                    .expiries
                    .peek()
                    .is_some_and(|Reverse((Deadline(d), _))| *d <= now)
            {
                self.reclaim(now, Some(1), &mut changes);
            }
        }
        let over = self.threshold > 0 && self.expiry_of.len() >= self.threshold;
        if over != self.over {
            self.over = over;
            changes.crossing = Some(if over {
                Crossing::Reached
            } else {
                Crossing::Cleared
            });
        }
        changes
    }

    /// Rebuilds the heap from the table when refreshes left too many stale entries.
    fn compact_heap(&mut self) {
        if self.expiries.len() > 2 * self.expiry_of.len() + HEAP_SLACK {
            self.expiries = self
                .expiry_of
                .iter()
                .map(|(digest, &e)| Reverse((Deadline(e), *digest)))
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(n: u32) -> Digest {
        let mut d = [0u8; 32];
        d[..4].copy_from_slice(&n.to_le_bytes());
        d
    }

    #[test]
    fn refresh_does_not_double_count() {
        let mut bl = Blacklist::new(10);
        assert_eq!(bl.add(&digest(1), 100.0, 20.0).0, Listed::Added);
        assert_eq!(bl.add(&digest(1), 101.0, 20.0).0, Listed::Refreshed);
        assert_eq!(bl.add(&digest(1), 101.0, 20.0).0, Listed::Refreshed);
        assert_eq!(bl.live_count(102.0).0, 1);
        // The refresh extended the expiry to 121.
        assert!(bl.is_listed(&digest(1), 120.5));
        assert!(!bl.is_listed(&digest(1), 121.0));
    }

    /// Every entry added ends as expired or is still held: `added == expired + held`, also
    /// when an expired entry is listed again before it was reclaimed (found by fuzzing).
    #[test]
    fn expired_count_accounts_for_every_entry() {
        let mut bl = Blacklist::new(1_000);
        let (mut added, mut expired) = (0u64, 0u64);
        let mut tally = |listed: Listed, changes: Changes| {
            if listed == Listed::Added {
                added += 1;
            }
            expired += changes.expired;
        };
        // Many entries expiring at once, more than one operation reclaims.
        for n in 0..(4 * RECLAIM_STEP as u32) {
            let (listed, changes) = bl.add(&digest(n), 100.0, 1.0);
            tally(listed, changes);
        }
        // After expiry, list some of them again before they were reclaimed.
        let mut x: u32 = 12345;
        for step in 0..2_000u32 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let now = 102.0 + f64::from(step) * 0.01;
            let (listed, changes) = bl.add(&digest(x % 64), now, 0.5);
            tally(listed, changes);
        }
        let (held, changes) = bl.live_count(1_000.0);
        expired += changes.expired;
        assert_eq!(held, 0);
        assert_eq!(added, expired);
    }

    #[test]
    fn refresh_never_shortens() {
        let mut bl = Blacklist::new(10);
        bl.add(&digest(1), 100.0, 60.0);
        assert_eq!(bl.add(&digest(1), 101.0, 1.0).0, Listed::Refreshed);
        assert!(bl.is_listed(&digest(1), 150.0));
        assert_eq!(bl.live_count(150.0).0, 1);
        assert_eq!(bl.live_count(160.0).0, 0);
    }

    #[test]
    fn listed_object_is_unhealthy_others_are_not() {
        let mut bl = Blacklist::new(10);
        bl.add(&digest(1), 100.0, 20.0);
        assert_eq!(bl.check(Some(&digest(1)), 101.0).0, Verdict::Listed);
        assert_eq!(bl.check(Some(&digest(2)), 101.0).0, Verdict::Healthy);
        assert_eq!(bl.check(None, 101.0).0, Verdict::Healthy);
    }

    #[test]
    fn threshold_crossing_both_ways() {
        let mut bl = Blacklist::new(2);
        let (_, c) = bl.add(&digest(1), 100.0, 10.0);
        assert_eq!(c.crossing, None);
        let (_, c) = bl.add(&digest(2), 101.0, 10.0);
        assert_eq!(c.crossing, Some(Crossing::Reached));
        assert_eq!(bl.check(Some(&digest(3)), 102.0).0, Verdict::OverThreshold);
        assert_eq!(bl.check(None, 102.0).0, Verdict::OverThreshold);
        // A refresh at the threshold is not a second crossing.
        assert_eq!(bl.add(&digest(2), 103.0, 10.0).1.crossing, None);
        // digest(1) expires at 110: back under the threshold, seen by the next check.
        let (verdict, c) = bl.check(Some(&digest(3)), 110.0);
        assert_eq!(verdict, Verdict::Healthy);
        assert_eq!(c.crossing, Some(Crossing::Cleared));
        assert_eq!(c.expired, 1);
        assert_eq!(bl.check(Some(&digest(2)), 110.0).0, Verdict::Listed);
        // And up again.
        let (_, c) = bl.add(&digest(4), 111.0, 10.0);
        assert_eq!(c.crossing, Some(Crossing::Reached));
    }

    #[test]
    fn expired_entries_stop_counting_at_once() {
        let mut bl = Blacklist::new(3);
        bl.add(&digest(1), 100.0, 1.0);
        bl.add(&digest(2), 100.0, 2.0);
        assert_eq!(bl.live_count(100.5).0, 2);
        assert_eq!(bl.live_count(101.0).0, 1);
        assert!(!bl.is_listed(&digest(1), 101.0));
        assert_eq!(bl.live_count(102.0).0, 0);
        // Re-listing an expired object counts as new.
        assert_eq!(bl.add(&digest(1), 103.0, 1.0).0, Listed::Added);
    }

    #[test]
    fn expired_but_unreclaimed_entry_counts_as_new_when_relisted() {
        let mut bl = Blacklist::new(5);
        bl.add(&digest(1), 100.0, 1.0);
        // Entry held but expired; add() reclaims first, either way it is "Added".
        assert_eq!(bl.add(&digest(1), 200.0, 1.0).0, Listed::Added);
        assert_eq!(bl.live_count(200.5).0, 1);
    }

    #[test]
    fn threshold_zero_stores_nothing() {
        let mut bl = Blacklist::new(0);
        for n in 0..1000 {
            assert_eq!(bl.add(&digest(n), 100.0, 60.0).0, Listed::Disabled);
        }
        assert_eq!(bl.held(), 0);
        assert_eq!(bl.heap_len(), 0);
        assert_eq!(bl.check(Some(&digest(1)), 101.0).0, Verdict::Healthy);
        assert_eq!(bl.live_count(101.0).0, 0);
    }

    #[test]
    fn memory_is_reclaimed_incrementally() {
        let mut bl = Blacklist::new(1_000_000);
        for n in 0..10_000 {
            bl.add(&digest(n), 100.0, 1.0);
        }
        assert_eq!(bl.held(), 10_000);
        // Health checks after expiry reclaim a bounded number per call...
        let (_, c) = bl.check(Some(&digest(1)), 200.0);
        assert_eq!(c.expired, RECLAIM_STEP as u64);
        // ...and enough calls reclaim everything, without any exact count.
        let mut total = c.expired;
        for _ in 0..10_000 {
            total += bl.check(None, 200.0).1.expired;
        }
        assert_eq!(total, 10_000);
        assert_eq!(bl.held(), 0);
        assert_eq!(bl.heap_len(), 0);
    }

    #[test]
    fn refresh_storm_keeps_heap_bounded() {
        let mut bl = Blacklist::new(10);
        for i in 0..100_000 {
            bl.add(&digest(i % 3), 100.0 + f64::from(i) * 0.001, 60.0);
        }
        assert_eq!(bl.held(), 3);
        assert!(bl.heap_len() <= 2 * 3 + HEAP_SLACK + 1, "{}", bl.heap_len());
    }

    #[test]
    fn live_count_is_exact_with_stale_heap_entries() {
        let mut bl = Blacklist::new(10);
        bl.add(&digest(1), 100.0, 1.0);
        bl.add(&digest(1), 100.5, 10.0); // refreshed: stale deadline 101 in the heap
        bl.add(&digest(2), 100.0, 2.0);
        assert_eq!(bl.live_count(101.5).0, 2);
        assert_eq!(bl.live_count(102.0).0, 1);
        assert!(bl.is_listed(&digest(1), 110.0));
        assert_eq!(bl.live_count(110.5).0, 0);
    }

    #[test]
    fn over_threshold_decision_reclaims_only_what_it_needs() {
        let mut bl = Blacklist::new(2);
        bl.add(&digest(1), 100.0, 1.0);
        bl.add(&digest(2), 100.0, 50.0);
        assert_eq!(bl.check(None, 100.5).0, Verdict::OverThreshold);
        assert_eq!(bl.check(None, 101.0).0, Verdict::Healthy);
        assert_eq!(bl.live_count(101.0).0, 1);
    }
}
