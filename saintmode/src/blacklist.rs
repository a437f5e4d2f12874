//! The denylist of one saintmode object, in plain Rust: which objects (hash digests) are
//! listed until when, and whether the live count has reached the threshold. Time is passed
//! in by the caller as monotonic ticks (see `clock`), so the type needs no varnishd.
//!
//! Layout (`benches/check.rs` measures it with a counting allocator):
//! - `slots`: one 32-byte slot per entry (a 128-bit key, the deadline, two heap positions),
//!   kept dense: a removed slot is refilled with the last one;
//! - `index`: a hash table of slot numbers (`u32`), 5 bytes per bucket, at most 7/8 full;
//!   hashbrown's bucket count is a power of two, so it holds 5.7 to 11.4 bytes per entry;
//! - `all`: a min-heap of slot numbers by deadline, for reclaiming expired entries in
//!   deadline order, a bounded number per operation;
//! - `top`: a min-heap of the `threshold` largest deadlines. The live count is at the
//!   threshold exactly when `top` is full and its smallest deadline is still ahead, so the
//!   threshold question costs O(1) and needs no reclaim first.
//!
//! The vectors grow by an eighth instead of doubling and give memory back once a quarter
//! of it is unused, so the bytes per entry are bounded at every size, not only where a
//! doubling just filled up: 40 bytes of slot and heap positions (36 with a threshold far
//! below the entry count), at most 45 while growing plus the index, i.e. at most 57 bytes
//! per entry while the list grows (46 to 48 in steady state), and at most 65 after a mass
//! expiry, before the list shrinks (measured: 54.1 at 65 537 entries, 47.7 at 100 000,
//! 54.7 at 131 073, 62.5 with half of 100 000 expired and reclaimed).
//!
//! Every heap entry points at a slot and every slot knows its heap positions, so a refresh
//! moves the entry in place: no stale heap entries, no rebuilds.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use hashbrown::HashTable;

use crate::clock::Tick;

/// An object's hash digest (`req.hash`), as Varnish computes it (SHA-256).
pub type Digest = [u8; 32];

/// What the list keeps of a digest: its first 128 bits. SHA-256 output is uniform, so two
/// objects share a key with probability about n / 2^128 per lookup (n listed entries): for
/// 10^6 entries and 10^12 lookups, below 10^-20. Half the memory of the full digest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key([u64; 2]);

impl Key {
    pub fn of(digest: &Digest) -> Self {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&digest[..8]);
        b.copy_from_slice(&digest[8..16]);
        Self([u64::from_le_bytes(a), u64::from_le_bytes(b)])
    }
}

/// Heap pops allowed per operation to reclaim the memory of expired entries; the rest is
/// reclaimed by later operations (each entry once).
pub const RECLAIM_STEP: usize = 8;

/// Heap nodes `live_count` may examine: it answers in bounded time under a read lock.
pub const COUNT_BUDGET: usize = 64;

/// What `live_count` found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveCount {
    /// Unexpired entries (an upper bound when not `exact`).
    pub live: usize,
    /// False only when more expired entries await reclaiming than one bounded search can
    /// count (after a mass expiry).
    pub exact: bool,
}

/// Result of a bounded walk over the expired part of a heap.
#[derive(Clone, Copy, Debug)]
struct Walk {
    expired: usize,
    visited: usize,
    complete: bool,
}

/// The vectors grow by an eighth of their length (at least `MIN_ROOM` entries) instead of
/// doubling, so that their unused room stays under 1/8 of what they hold at any size.
const GROWTH_DIVISOR: usize = 8;
const MIN_ROOM: usize = 16;

/// Makes room for one more element in `v`, growing it by an eighth, never beyond `limit`
/// elements in all. Amortized O(1) per element (each growth copies at most 9 times the
/// elements added since the previous one; large blocks are usually moved by remapping).
fn grow<T>(v: &mut Vec<T>, limit: usize) {
    if v.len() == v.capacity() {
        let step = (v.len() / GROWTH_DIVISOR).max(MIN_ROOM);
        let room = step.min(limit.saturating_sub(v.len())).max(1);
        v.reserve_exact(room);
    }
}

/// A heap position meaning "not in this heap".
const NOWHERE: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Slot {
    key: Key,
    deadline: Tick,
    /// Position in `all`.
    all_pos: u32,
    /// Position in `top`, or `NOWHERE`.
    top_pos: u32,
}

/// Which heap an operation works on.
#[derive(Clone, Copy)]
enum Heap {
    All,
    Top,
}

/// What `add` did with the object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listed {
    /// A new entry, counted towards the threshold.
    Added,
    /// The object was already listed: its expiry was extended (never shortened), the count
    /// is unchanged.
    Refreshed,
    /// Threshold 0: saintmode is disabled and nothing was stored.
    Disabled,
    /// 2^32 - 1 entries are held: nothing more is stored.
    Full,
}

/// The live count crossed the threshold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Crossing {
    /// The count reached the threshold: the backend is now sick for every object.
    Reached,
    /// The count went back under the threshold.
    Cleared,
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

/// The denylist: one entry per digest, with its deadline.
#[derive(Debug)]
pub struct Blacklist {
    threshold: usize,
    slots: Vec<Slot>,
    index: HashTable<u32>,
    all: Vec<u32>,
    top: Vec<u32>,
    /// Keyed per list, so that digests chosen to collide in one process do not collide in
    /// another (the digest is not secret: it hashes the URL and host).
    hasher: RandomState,
}

impl Blacklist {
    /// An empty list; `threshold` 0 disables saintmode.
    pub fn new(threshold: usize) -> Self {
        Self {
            threshold,
            slots: Vec::new(),
            index: HashTable::new(),
            all: Vec::new(),
            top: Vec::new(),
            hasher: RandomState::new(),
        }
    }

    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Entries held in memory, including expired ones not reclaimed yet.
    pub fn held(&self) -> usize {
        self.slots.len()
    }

    /// Bytes the list's own tables hold on the heap (without the allocator's overhead).
    pub fn reserved_bytes(&self) -> usize {
        self.slots.capacity() * size_of::<Slot>()
            + (self.all.capacity() + self.top.capacity()) * size_of::<u32>()
            + self.index.allocation_size()
    }

    /// The earliest deadline held (`Tick::MAX` when empty): no entry expires before it.
    pub fn next_expiry(&self) -> Tick {
        self.all
            .first()
            .map_or(Tick::MAX, |&i| self.slots[i as usize].deadline)
    }

    /// Lists `digest` until `now + ttl`. Listing it again extends its expiry (never shortens
    /// it) and does not count twice. Reclaims at most `RECLAIM_STEP` expired entries first;
    /// returns what it did and how many expired entries it removed or replaced.
    pub fn add(&mut self, digest: &Digest, now: Tick, ttl: Tick) -> (Listed, u64) {
        if self.threshold == 0 {
            return (Listed::Disabled, 0);
        }
        let mut expired = self.reclaim(now, RECLAIM_STEP);
        let deadline = now.saturating_add(ttl);
        let key = Key::of(digest);
        let listed = match self.find(key) {
            Some(i) => {
                let current = self.slots[i as usize].deadline;
                if current > now {
                    if deadline > current {
                        self.raise(i, deadline);
                    }
                    Listed::Refreshed
                } else {
                    // Expired but not reclaimed yet: it stopped counting, so this is a new
                    // entry, and the old one counts as expired now.
                    self.raise(i, deadline);
                    expired += 1;
                    Listed::Added
                }
            }
            None => {
                if self.slots.len() >= NOWHERE as usize {
                    return (Listed::Full, expired);
                }
                self.insert(key, deadline);
                Listed::Added
            }
        };
        (listed, expired)
    }

    /// Whether `digest` is listed and unexpired at `now`: one hash probe, no change.
    pub fn is_listed(&self, digest: &Digest, now: Tick) -> bool {
        self.find(Key::of(digest))
            .is_some_and(|i| self.slots[i as usize].deadline > now)
    }

    /// Whether the live count at `now` is at or above the threshold: O(1), exact, with or
    /// without expired entries waiting to be reclaimed.
    pub fn over(&self, now: Tick) -> bool {
        self.threshold > 0
            && self.top.len() >= self.threshold
            && self
                .top
                .first()
                .is_some_and(|&i| self.slots[i as usize].deadline > now)
    }

    /// The health verdict for `digest` (None: no object known) at `now`, without changes.
    pub fn verdict(&self, digest: Option<&Digest>, now: Tick) -> Verdict {
        if self.threshold == 0 {
            Verdict::Healthy
        } else if digest.is_some_and(|d| self.is_listed(d, now)) {
            Verdict::Listed
        } else if self.over(now) {
            Verdict::OverThreshold
        } else {
            Verdict::Healthy
        }
    }

    /// The number of unexpired entries at `now`, without changes, examining at most
    /// `COUNT_BUDGET` heap nodes (and so costing O(1) under a read lock, whatever the
    /// number of entries and however many expired together).
    ///
    /// Exact (`exact: true`) when the count is under the threshold (every live entry is then
    /// in `top`, at most `threshold` of them) and `top` has at most `COUNT_BUDGET` expired
    /// entries, or when at most `COUNT_BUDGET` expired entries await reclaiming. Otherwise,
    /// after a mass expiry, `live` is an upper bound: the held entries minus the expired
    /// ones the bounded search found; it becomes exact as operations reclaim the rest.
    pub fn live_count(&self, now: Tick) -> LiveCount {
        if self.threshold == 0 || self.slots.is_empty() {
            return LiveCount {
                live: 0,
                exact: true,
            };
        }
        let over = self.over(now);
        if !over {
            let walk = self.walk_expired(Heap::Top, now, COUNT_BUDGET);
            if walk.complete {
                return LiveCount {
                    live: self.top.len() - walk.expired,
                    exact: true,
                };
            }
        }
        let walk = self.walk_expired(Heap::All, now, COUNT_BUDGET);
        debug_assert!(walk.visited <= COUNT_BUDGET);
        let mut live = self.slots.len() - walk.expired;
        if !over {
            // Under the threshold: fewer than `threshold` entries are live.
            live = live.min(self.threshold - 1);
        }
        LiveCount {
            live,
            exact: walk.complete,
        }
    }

    /// Counts the expired entries of a heap (they form a subtree at its root), examining
    /// at most `budget` nodes.
    fn walk_expired(&self, which: Heap, now: Tick, budget: usize) -> Walk {
        let heap = match which {
            Heap::All => &self.all,
            Heap::Top => &self.top,
        };
        // Each examined node pops one position and pushes at most two: the stack never
        // holds more than `budget + 1`.
        let mut stack = [0usize; COUNT_BUDGET + 1];
        let budget = budget.min(COUNT_BUDGET);
        let mut depth = usize::from(!heap.is_empty());
        let (mut expired, mut visited) = (0, 0);
        while depth > 0 {
            if visited == budget {
                return Walk {
                    expired,
                    visited,
                    complete: false,
                };
            }
            depth -= 1;
            let pos = stack[depth];
            visited += 1;
            if self.slots[heap[pos] as usize].deadline <= now {
                expired += 1;
                for child in [2 * pos + 1, 2 * pos + 2] {
                    if child < heap.len() {
                        stack[depth] = child;
                        depth += 1;
                    }
                }
            }
        }
        Walk {
            expired,
            visited,
            complete: true,
        }
    }

    /// Removes up to `budget` expired entries, earliest deadline first; returns how many.
    pub fn reclaim(&mut self, now: Tick, budget: usize) -> u64 {
        let mut removed = 0;
        while removed < budget {
            match self.all.first() {
                Some(&i) if self.slots[i as usize].deadline <= now => self.remove(i),
                _ => break,
            }
            removed += 1;
        }
        if removed > 0 {
            self.shrink_if_sparse();
        }
        removed as u64
    }

    fn hash(hasher: &RandomState, key: Key) -> u64 {
        hasher.hash_one(key.0[0])
    }

    fn find(&self, key: Key) -> Option<u32> {
        let slots = &self.slots;
        self.index
            .find(Self::hash(&self.hasher, key), |&i| {
                slots[i as usize].key == key
            })
            .copied()
    }

    fn insert(&mut self, key: Key, deadline: Tick) {
        let i = self.slots.len() as u32;
        grow(&mut self.slots, usize::MAX);
        self.slots.push(Slot {
            key,
            deadline,
            all_pos: NOWHERE,
            top_pos: NOWHERE,
        });
        let Self {
            index,
            slots,
            hasher,
            ..
        } = self;
        index.insert_unique(Self::hash(hasher, key), i, |&j| {
            Self::hash(hasher, slots[j as usize].key)
        });
        self.push(Heap::All, i);
        self.offer_top(i);
    }

    /// Moves slot `i`'s deadline later.
    fn raise(&mut self, i: u32, deadline: Tick) {
        let slot = &mut self.slots[i as usize];
        slot.deadline = deadline;
        let (all_pos, top_pos) = (slot.all_pos, slot.top_pos);
        self.sift_down(Heap::All, all_pos as usize);
        if top_pos == NOWHERE {
            self.offer_top(i);
        } else {
            self.sift_down(Heap::Top, top_pos as usize);
        }
    }

    /// Keeps `top` holding the `threshold` largest deadlines after slot `i` was added or
    /// raised. `top` may be short only when every entry outside it has expired (an entry
    /// leaves `top` only by expiring, and the entries outside were no later than it), so a
    /// short `top` takes any live entry.
    fn offer_top(&mut self, i: u32) {
        if self.top.len() < self.threshold {
            self.push(Heap::Top, i);
        } else if let Some(&min) = self.top.first() {
            if self.slots[i as usize].deadline > self.slots[min as usize].deadline {
                self.slots[min as usize].top_pos = NOWHERE;
                self.place(Heap::Top, 0, i);
                self.sift_down(Heap::Top, 0);
            }
        }
    }

    fn remove(&mut self, i: u32) {
        let Slot {
            key,
            all_pos,
            top_pos,
            ..
        } = self.slots[i as usize];
        self.remove_at(Heap::All, all_pos as usize);
        if top_pos != NOWHERE {
            self.remove_at(Heap::Top, top_pos as usize);
        }
        if let Ok(entry) = self
            .index
            .find_entry(Self::hash(&self.hasher, key), |&j| j == i)
        {
            entry.remove();
        }
        let last = (self.slots.len() - 1) as u32;
        if i != last {
            // The last slot moves into the hole: repoint its heap and index entries.
            let moved = self.slots[last as usize];
            if let Some(j) = self
                .index
                .find_mut(Self::hash(&self.hasher, moved.key), |&j| j == last)
            {
                *j = i;
            }
            self.all[moved.all_pos as usize] = i;
            if moved.top_pos != NOWHERE {
                self.top[moved.top_pos as usize] = i;
            }
        }
        self.slots.swap_remove(i as usize);
    }

    /// Gives memory back once a quarter of the slots' room is unused, down to an eighth
    /// of room; the index when it could halve. O(1) amortized: the list shrank by at least
    /// a third of the entries the copy moves since the last resize.
    fn shrink_if_sparse(&mut self) {
        let len = self.slots.len();
        if self.slots.capacity() > MIN_ROOM && len < self.slots.capacity() / 4 * 3 {
            let room = len + (len / GROWTH_DIVISOR).max(MIN_ROOM);
            self.slots.shrink_to(room);
            self.all.shrink_to(room);
            self.top.shrink_to(room.min(self.threshold));
        }
        if self.index.capacity() > 2 * len + MIN_ROOM {
            let Self {
                index,
                slots,
                hasher,
                ..
            } = self;
            index.shrink_to(len, |&j| Self::hash(hasher, slots[j as usize].key));
        }
    }

    // --- index-based binary min-heaps over `slots` by deadline

    fn heap(&mut self, which: Heap) -> &mut Vec<u32> {
        match which {
            Heap::All => &mut self.all,
            Heap::Top => &mut self.top,
        }
    }

    /// Puts slot `i` at heap position `pos` and records the position in the slot.
    fn place(&mut self, which: Heap, pos: usize, i: u32) {
        self.heap(which)[pos] = i;
        let slot = &mut self.slots[i as usize];
        match which {
            Heap::All => slot.all_pos = pos as u32,
            Heap::Top => slot.top_pos = pos as u32,
        }
    }

    fn deadline_at(&mut self, which: Heap, pos: usize) -> Tick {
        let i = self.heap(which)[pos];
        self.slots[i as usize].deadline
    }

    fn push(&mut self, which: Heap, i: u32) {
        let limit = match which {
            Heap::All => usize::MAX,
            Heap::Top => self.threshold,
        };
        grow(self.heap(which), limit);
        let pos = self.heap(which).len();
        self.heap(which).push(i);
        self.place(which, pos, i);
        self.sift_up(which, pos);
    }

    fn remove_at(&mut self, which: Heap, pos: usize) {
        let heap = self.heap(which);
        let Some(last) = heap.pop() else { return };
        if pos < heap.len() {
            self.place(which, pos, last);
            self.sift_down(which, pos);
            self.sift_up(which, pos);
        }
    }

    fn sift_up(&mut self, which: Heap, mut pos: usize) {
        let i = self.heap(which)[pos];
        let deadline = self.slots[i as usize].deadline;
        while pos > 0 {
            let parent = (pos - 1) / 2;
            if self.deadline_at(which, parent) <= deadline {
                break;
            }
            let p = self.heap(which)[parent];
            self.place(which, pos, p);
            pos = parent;
        }
        self.place(which, pos, i);
    }

    fn sift_down(&mut self, which: Heap, mut pos: usize) {
        let len = self.heap(which).len();
        let i = self.heap(which)[pos];
        let deadline = self.slots[i as usize].deadline;
        loop {
            let left = 2 * pos + 1;
            if left >= len {
                break;
            }
            let right = left + 1;
            let child =
                if right < len && self.deadline_at(which, right) < self.deadline_at(which, left) {
                    right
                } else {
                    left
                };
            if self.deadline_at(which, child) >= deadline {
                break;
            }
            let c = self.heap(which)[child];
            self.place(which, pos, c);
            pos = child;
        }
        self.place(which, pos, i);
    }

    /// Checks every structural invariant (tests and fuzzing).
    #[doc(hidden)]
    pub fn assert_consistent(&self) {
        assert_eq!(self.all.len(), self.slots.len());
        assert_eq!(self.index.len(), self.slots.len());
        assert!(self.top.len() <= self.threshold);
        for (pos, &i) in self.all.iter().enumerate() {
            assert_eq!(self.slots[i as usize].all_pos as usize, pos);
            if pos > 0 {
                let parent = self.all[(pos - 1) / 2];
                assert!(self.slots[parent as usize].deadline <= self.slots[i as usize].deadline);
            }
        }
        for (pos, &i) in self.top.iter().enumerate() {
            assert_eq!(self.slots[i as usize].top_pos as usize, pos);
            if pos > 0 {
                let parent = self.top[(pos - 1) / 2];
                assert!(self.slots[parent as usize].deadline <= self.slots[i as usize].deadline);
            }
        }
        let top_min = self
            .top
            .first()
            .map_or(Tick::MAX, |&i| self.slots[i as usize].deadline);
        for (n, slot) in self.slots.iter().enumerate() {
            assert_eq!(self.find(slot.key), Some(n as u32));
            if slot.top_pos == NOWHERE && self.top.len() == self.threshold {
                assert!(slot.deadline <= top_min);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Tick = 1_000_000_000;

    /// The live count, which must be exact here.
    fn live_now(bl: &Blacklist, now: Tick) -> usize {
        let count = bl.live_count(now);
        assert!(count.exact, "{count:?}");
        count.live
    }

    fn digest(n: u32) -> Digest {
        let mut d = [0u8; 32];
        d[..4].copy_from_slice(&n.to_le_bytes());
        d
    }

    #[test]
    fn refresh_does_not_double_count() {
        let mut bl = Blacklist::new(10);
        assert_eq!(bl.add(&digest(1), 100 * S, 20 * S).0, Listed::Added);
        assert_eq!(bl.add(&digest(1), 101 * S, 20 * S).0, Listed::Refreshed);
        assert_eq!(bl.add(&digest(1), 101 * S, 20 * S).0, Listed::Refreshed);
        assert_eq!(live_now(&bl, 102 * S), 1);
        // The refresh extended the expiry to 121 s.
        assert!(bl.is_listed(&digest(1), 121 * S - 1));
        assert!(!bl.is_listed(&digest(1), 121 * S));
        bl.assert_consistent();
    }

    /// Every entry added ends as expired or is still held: `added == expired + held`, also
    /// when an expired entry is listed again before it was reclaimed (found by fuzzing).
    #[test]
    fn expired_count_accounts_for_every_entry() {
        let mut bl = Blacklist::new(1_000);
        let (mut added, mut expired) = (0u64, 0u64);
        let mut tally = |(listed, gone): (Listed, u64)| {
            if listed == Listed::Added {
                added += 1;
            }
            expired += gone;
        };
        for n in 0..(4 * RECLAIM_STEP as u32) {
            tally(bl.add(&digest(n), 100 * S, S));
        }
        let mut x: u32 = 12345;
        for step in 0..2_000u64 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            tally(bl.add(&digest(x % 64), 102 * S + step * S / 100, S / 2));
        }
        bl.assert_consistent();
        expired += bl.reclaim(1_000 * S, usize::MAX);
        assert_eq!(bl.held(), 0);
        assert_eq!(added, expired);
    }

    #[test]
    fn refresh_never_shortens() {
        let mut bl = Blacklist::new(10);
        bl.add(&digest(1), 100 * S, 60 * S);
        assert_eq!(bl.add(&digest(1), 101 * S, S).0, Listed::Refreshed);
        assert!(bl.is_listed(&digest(1), 150 * S));
        assert_eq!(live_now(&bl, 150 * S), 1);
        assert_eq!(live_now(&bl, 160 * S), 0);
    }

    #[test]
    fn listed_object_is_unhealthy_others_are_not() {
        let mut bl = Blacklist::new(10);
        bl.add(&digest(1), 100 * S, 20 * S);
        assert_eq!(bl.verdict(Some(&digest(1)), 101 * S), Verdict::Listed);
        assert_eq!(bl.verdict(Some(&digest(2)), 101 * S), Verdict::Healthy);
        assert_eq!(bl.verdict(None, 101 * S), Verdict::Healthy);
    }

    #[test]
    fn threshold_is_exact_as_entries_expire_without_any_reclaim() {
        let mut bl = Blacklist::new(2);
        bl.add(&digest(1), 100 * S, 10 * S);
        assert!(!bl.over(100 * S));
        bl.add(&digest(2), 101 * S, 10 * S);
        assert!(bl.over(102 * S));
        assert_eq!(
            bl.verdict(Some(&digest(3)), 102 * S),
            Verdict::OverThreshold
        );
        assert_eq!(bl.verdict(None, 102 * S), Verdict::OverThreshold);
        // digest(1) expires at 110 s: back under the threshold with nothing reclaimed.
        assert!(!bl.over(110 * S));
        assert_eq!(bl.held(), 2);
        assert_eq!(bl.verdict(Some(&digest(2)), 110 * S), Verdict::Listed);
        // And up again.
        bl.add(&digest(4), 110 * S + S / 2, 10 * S);
        assert!(bl.over(110 * S + S / 2));
        bl.assert_consistent();
    }

    #[test]
    fn threshold_counts_the_largest_deadlines_after_refreshes() {
        let mut bl = Blacklist::new(2);
        bl.add(&digest(1), 0, 5 * S);
        bl.add(&digest(2), 0, 6 * S);
        bl.add(&digest(3), 0, 7 * S); // digest(1) leaves `top`
        bl.add(&digest(1), S, 20 * S); // refreshed past the others: back in `top`
        bl.assert_consistent();
        assert!(bl.over(6 * S));
        assert!(!bl.over(7 * S)); // only digest(1) is live
        assert_eq!(live_now(&bl, 7 * S), 1);
    }

    #[test]
    fn expired_entries_stop_counting_at_once() {
        let mut bl = Blacklist::new(3);
        bl.add(&digest(1), 100 * S, S);
        bl.add(&digest(2), 100 * S, 2 * S);
        assert_eq!(live_now(&bl, 100 * S + S / 2), 2);
        assert_eq!(live_now(&bl, 101 * S), 1);
        assert!(!bl.is_listed(&digest(1), 101 * S));
        assert_eq!(live_now(&bl, 102 * S), 0);
        // Re-listing an expired object counts as new.
        assert_eq!(bl.add(&digest(1), 103 * S, S).0, Listed::Added);
    }

    #[test]
    fn threshold_zero_stores_nothing() {
        let mut bl = Blacklist::new(0);
        for n in 0..1000 {
            assert_eq!(bl.add(&digest(n), 100 * S, 60 * S).0, Listed::Disabled);
        }
        assert_eq!(bl.held(), 0);
        assert_eq!(bl.verdict(Some(&digest(1)), 101 * S), Verdict::Healthy);
        assert_eq!(live_now(&bl, 101 * S), 0);
    }

    #[test]
    fn reclaim_is_bounded_per_operation_and_complete_over_time() {
        let mut bl = Blacklist::new(1_000_000);
        for n in 0..10_000 {
            bl.add(&digest(n), 100 * S, S);
        }
        assert_eq!(bl.held(), 10_000);
        // An add after expiry reclaims a bounded number...
        let (_, gone) = bl.add(&digest(10_001), 200 * S, S);
        assert_eq!(gone, RECLAIM_STEP as u64);
        // ...and enough steps reclaim everything, in deadline order.
        let mut total = gone;
        while bl.next_expiry() <= 200 * S {
            total += bl.reclaim(200 * S, RECLAIM_STEP);
        }
        assert_eq!(total, 10_000);
        assert_eq!(bl.held(), 1);
        bl.assert_consistent();
        assert!(bl.reserved_bytes() < 10_000 * 8, "{}", bl.reserved_bytes());
    }

    #[test]
    fn refresh_storm_keeps_memory_bounded() {
        let mut bl = Blacklist::new(10);
        for i in 0..100_000u64 {
            bl.add(&digest((i % 3) as u32), 100 * S + i * S / 1000, 60 * S);
        }
        assert_eq!(bl.held(), 3);
        assert_eq!(bl.all.len(), 3);
        bl.assert_consistent();
    }

    #[test]
    fn live_count_is_exact_with_refreshed_entries() {
        let mut bl = Blacklist::new(10);
        bl.add(&digest(1), 100 * S, S);
        bl.add(&digest(1), 100 * S + S / 2, 10 * S);
        bl.add(&digest(2), 100 * S, 2 * S);
        assert_eq!(live_now(&bl, 101 * S + S / 2), 2);
        assert_eq!(live_now(&bl, 102 * S), 1);
        assert!(bl.is_listed(&digest(1), 110 * S));
        assert_eq!(live_now(&bl, 110 * S + S / 2), 0);
    }

    /// 100 000 entries expiring together: counting examines at most `COUNT_BUDGET` heap
    /// nodes (the old count walked every expired entry, on every call), is exact under the
    /// threshold, and an upper bound that reaches the exact count as entries are reclaimed.
    #[test]
    fn counting_after_a_mass_expiry_does_bounded_work() {
        for threshold in [10, 1_000_000] {
            let mut bl = Blacklist::new(threshold);
            for n in 0..100_000 {
                bl.add(&digest(n), 100 * S, S);
            }
            bl.add(&digest(200_000), 100 * S, 10 * S); // one stays live
            let walk = bl.walk_expired(Heap::All, 101 * S, COUNT_BUDGET);
            assert!(!walk.complete);
            assert_eq!(walk.visited, COUNT_BUDGET);
            let count = bl.live_count(101 * S);
            if threshold == 10 {
                // Under the threshold every live entry is in `top`: exact.
                assert_eq!(
                    count,
                    LiveCount {
                        live: 1,
                        exact: true
                    }
                );
            } else {
                assert!(!count.exact);
                assert!(count.live >= 1 && count.live <= 100_001 - COUNT_BUDGET);
            }
            while bl.next_expiry() <= 101 * S {
                bl.reclaim(101 * S, RECLAIM_STEP);
            }
            assert_eq!(live_now(&bl, 101 * S), 1);
        }
    }

    /// Bytes per entry of the tables at sizes straddling powers of two, where doubling
    /// vectors and tables would hold up to twice what they need (~89 B per entry at 65 537
    /// before), and after half the entries expired and were reclaimed. The bounds are the
    /// documented ones: 57 B growing (vectors 40 B + 1/8, index <= 11.5 B), 65 B after
    /// expiry (vectors shrink below 3/4 fill).
    #[test]
    fn bytes_per_entry_stay_bounded_at_every_size() {
        for n in [
            1_000u32, 65_535, 65_536, 65_537, 100_000, 131_071, 131_072, 131_073,
        ] {
            // A threshold above n: `top` holds every entry too (the worst case).
            let mut bl = Blacklist::new(1_000_000);
            for i in 0..n {
                bl.add(&digest(i), 100 * S + Tick::from(i % 2) * 10 * S, 60 * S);
            }
            let per_entry = bl.reserved_bytes() as f64 / bl.held() as f64;
            assert!(per_entry <= 57.0, "{n} entries: {per_entry:.1} B per entry");
            // Half expire (the odd ones live 10 s longer) and are reclaimed.
            while bl.next_expiry() <= 165 * S {
                bl.reclaim(165 * S, RECLAIM_STEP);
            }
            assert_eq!(bl.held(), n as usize / 2);
            let per_entry = bl.reserved_bytes() as f64 / bl.held() as f64;
            assert!(
                per_entry <= 65.0,
                "{n} / 2 after expiry: {per_entry:.1} B per entry"
            );
            bl.assert_consistent();
        }
    }

    /// A model check: random adds, refreshes and reclaims against a plain map.
    #[test]
    fn agrees_with_a_naive_model() {
        use std::collections::HashMap;
        for threshold in [1usize, 2, 5, 50] {
            let mut bl = Blacklist::new(threshold);
            let mut model: HashMap<u32, Tick> = HashMap::new();
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ threshold as u64;
            let mut now: Tick = 0;
            for _ in 0..5_000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                now += x % (S / 4);
                let n = (x >> 20) as u32 % 40;
                let ttl = 1 + (x >> 32) % (3 * S);
                if x % 5 == 1 {
                    bl.reclaim(now, (x % 4) as usize);
                } else {
                    bl.add(&digest(n), now, ttl);
                    let e = model.entry(n).or_insert(0);
                    *e = (*e).max(now + ttl);
                }
                let live = model.values().filter(|&&d| d > now).count();
                assert_eq!(live_now(&bl, now), live);
                assert_eq!(bl.over(now), live >= threshold);
                assert_eq!(
                    bl.is_listed(&digest(n), now),
                    model.get(&n).is_some_and(|&d| d > now)
                );
            }
            bl.assert_consistent();
        }
    }
}
