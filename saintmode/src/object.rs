//! One saintmode object as the director and the VCL functions use it, in plain Rust: the
//! denylist behind a read-mostly lock, with the hot question ("may this fetch use the
//! backend?") answered without any lock or shared-memory write while nothing is listed, and
//! under a shared read lock otherwise. Writers (listing, reclaiming) take the lock briefly
//! and do a bounded amount of work. Counters go to a `Stats` block (shared memory in
//! varnishd) and are written only when something changed.

use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use parking_lot::RwLock;

use crate::blacklist::{Blacklist, Crossing, Digest, Listed, Verdict, RECLAIM_STEP};
use crate::clock::Tick;
use crate::stats::Stats;

/// Answer of a health check, with what the caller reports.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Health {
    pub verdict: Verdict,
    /// A threshold crossing this check was the first to see (log it once).
    pub crossing: Option<Crossing>,
    /// When saintmode's answer last changed (wall clock, seconds), for the `changed`
    /// argument of the health API when saintmode vetoes.
    pub changed_at: f64,
}

/// Result of `blacklist()` on this object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listing {
    pub listed: Listed,
    /// Entries held after the call.
    pub held: usize,
    pub crossing: Option<Crossing>,
}

/// The thread-safe saintmode object core.
#[derive(Debug)]
pub struct Saintmode {
    /// The VCL name of the object (`new <name> = ...`).
    pub name: String,
    /// The VCL name of the wrapped backend or director.
    pub backend_name: String,
    threshold: usize,
    /// Entries held (mirrors `list.held()`): 0 lets the hot path skip the lock.
    held: AtomicUsize,
    /// The threshold state last reported, so that a crossing is counted and logged once.
    over_seen: AtomicBool,
    /// `f64` bits of the wall-clock time of the last change of saintmode's answer.
    changed_at: AtomicU64,
    list: RwLock<Blacklist>,
    /// Where counters go; NULL when there are none (VSC allocation failed, or after
    /// `detach_stats`).
    stats: AtomicPtr<Stats>,
}

impl Saintmode {
    pub fn new(name: String, backend_name: String, threshold: usize) -> Self {
        Self {
            name,
            backend_name,
            threshold,
            held: AtomicUsize::new(0),
            over_seen: AtomicBool::new(false),
            changed_at: AtomicU64::new(0f64.to_bits()),
            list: RwLock::new(Blacklist::new(threshold)),
            stats: AtomicPtr::new(ptr::null_mut()),
        }
    }

    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// Sends counters to `stats` from now on.
    ///
    /// # Safety
    /// `stats` stays valid until `detach_stats` returns, and no operation on this object
    /// runs concurrently with `detach_stats` (Varnish guarantees it: the counters go in
    /// `__fini`, when no task uses the VCL any more).
    pub unsafe fn attach_stats(&self, stats: *mut Stats) {
        self.stats.store(stats, Ordering::Release);
    }

    /// Stops using the counters; returns the pointer that was attached.
    pub fn detach_stats(&self) -> *mut Stats {
        self.stats.swap(ptr::null_mut(), Ordering::AcqRel)
    }

    fn with_stats(&self, f: impl FnOnce(&Stats)) {
        // SAFETY: non-NULL only between `attach_stats` and `detach_stats`, whose contract
        // keeps the block valid meanwhile.
        if let Some(stats) = unsafe { self.stats.load(Ordering::Acquire).as_ref() } {
            f(stats);
        }
    }

    /// Saintmode's part of the health of the director for `digest` (None: no particular
    /// object, e.g. on the client side) at `now` (monotonic), `wall` being the same instant
    /// on the wall clock.
    pub fn check(&self, digest: Option<&Digest>, now: Tick, wall: f64) -> Health {
        // Hot path while nothing is listed: two atomic loads, no lock, no write.
        if self.threshold == 0 || self.held.load(Ordering::Acquire) == 0 {
            return Health {
                verdict: Verdict::Healthy,
                crossing: None,
                changed_at: self.changed_at(),
            };
        }
        let (verdict, over, reclaim_due) = {
            let list = self.list.read();
            (
                list.verdict(digest, now),
                list.over(now),
                list.next_expiry() <= now,
            )
        };
        let mut crossing = self.observe_threshold(over, wall);
        if reclaim_due {
            // Memory of expired entries, a few at a time; never wait for it.
            if let Some(mut list) = self.list.try_write() {
                let expired = list.reclaim(now, RECLAIM_STEP);
                crossing = crossing.or(self.after_write(&list, expired, now, wall));
            }
        }
        Health {
            verdict,
            crossing,
            changed_at: self.changed_at(),
        }
    }

    /// Lists `digest` for `ttl` ticks from `now`.
    pub fn add(&self, digest: &Digest, now: Tick, ttl: Tick, wall: f64) -> Listing {
        let mut list = self.list.write();
        let (listed, expired) = list.add(digest, now, ttl);
        self.with_stats(|s| {
            s.calls.fetch_add(1, Ordering::Relaxed);
            if listed == Listed::Refreshed {
                s.refreshed.fetch_add(1, Ordering::Relaxed);
            }
        });
        if listed == Listed::Added {
            self.changed_at.store(wall.to_bits(), Ordering::Relaxed);
        }
        let crossing = self.after_write(&list, expired, now, wall);
        Listing {
            listed,
            held: list.held(),
            crossing,
        }
    }

    /// The exact number of live entries at `now`.
    pub fn live_count(&self, now: Tick, wall: f64) -> (usize, Option<Crossing>) {
        if self.held.load(Ordering::Acquire) == 0 {
            return (0, None);
        }
        let (count, over, reclaim_due) = {
            let list = self.list.read();
            (
                list.live_count(now),
                list.over(now),
                list.next_expiry() <= now,
            )
        };
        let mut crossing = self.observe_threshold(over, wall);
        if reclaim_due {
            if let Some(mut list) = self.list.try_write() {
                let expired = list.reclaim(now, RECLAIM_STEP);
                crossing = crossing.or(self.after_write(&list, expired, now, wall));
            }
        }
        (count, crossing)
    }

    pub fn changed_at(&self) -> f64 {
        f64::from_bits(self.changed_at.load(Ordering::Relaxed))
    }

    /// Bookkeeping after the list changed, under its write lock: expired counter, the gauge
    /// (written only when the number of held entries changed) and the threshold state.
    fn after_write(
        &self,
        list: &Blacklist,
        expired: u64,
        now: Tick,
        wall: f64,
    ) -> Option<Crossing> {
        let held = list.held();
        let before = self.held.swap(held, Ordering::AcqRel);
        self.with_stats(|s| {
            if expired > 0 {
                s.expired.fetch_add(expired, Ordering::Relaxed);
            }
            if held != before {
                s.blacklisted.store(held as u64, Ordering::Relaxed);
            }
        });
        self.observe_threshold(list.over(now), wall)
    }

    /// Records a change of the threshold state, once, whoever sees it first.
    fn observe_threshold(&self, over: bool, wall: f64) -> Option<Crossing> {
        if self.over_seen.load(Ordering::Relaxed) == over
            || self
                .over_seen
                .compare_exchange(!over, over, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
        {
            return None;
        }
        self.changed_at.store(wall.to_bits(), Ordering::Relaxed);
        let crossing = if over {
            Crossing::Reached
        } else {
            Crossing::Cleared
        };
        self.with_stats(|s| {
            match crossing {
                Crossing::Reached => &s.threshold_reached,
                Crossing::Cleared => &s.threshold_cleared,
            }
            .fetch_add(1, Ordering::Relaxed);
        });
        Some(crossing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ticks_from_secs, Clock};
    use std::cell::Cell;

    const S: Tick = 1_000_000_000;

    fn digest(n: u32) -> Digest {
        let mut d = [0u8; 32];
        d[..4].copy_from_slice(&n.to_le_bytes());
        d
    }

    fn object(threshold: usize) -> (Saintmode, Box<Stats>) {
        let sm = Saintmode::new("sm".into(), "s1".into(), threshold);
        let mut stats = Box::<Stats>::default();
        // SAFETY: the box outlives every use in the test (returned alongside).
        unsafe { sm.attach_stats(&mut *stats) };
        (sm, stats)
    }

    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }

    #[test]
    fn empty_list_check_writes_nothing() {
        let (sm, stats) = object(3);
        stats.blacklisted.store(12345, Ordering::Relaxed);
        let h = sm.check(Some(&digest(1)), 5 * S, 1000.0);
        assert_eq!(h.verdict, Verdict::Healthy);
        // The gauge was not rewritten (it would read 0).
        assert_eq!(get(&stats.blacklisted), 12345);
    }

    /// Runs `f` on another thread; None if it did not finish within a minute (it waits for a
    /// lock it must not take). The limit only matters when the test fails.
    fn finishes<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(60)).ok()
    }

    #[test]
    fn empty_list_check_takes_no_lock() {
        let sm = std::sync::Arc::new(Saintmode::new("sm".into(), "s1".into(), 3));
        let writer = sm.list.write(); // a writer holds the lock throughout
        let sm2 = std::sync::Arc::clone(&sm);
        let verdict = finishes(move || sm2.check(Some(&digest(1)), S, 1.0).verdict);
        drop(writer);
        assert_eq!(verdict, Some(Verdict::Healthy));
    }

    #[test]
    fn checks_share_the_lock_with_other_readers() {
        let sm = std::sync::Arc::new(Saintmode::new("sm".into(), "s1".into(), 3));
        sm.add(&digest(1), 0, 10 * S, 0.0);
        let reader = sm.list.read(); // another reader holds the lock throughout
        let sm2 = std::sync::Arc::clone(&sm);
        let verdict = finishes(move || sm2.check(Some(&digest(1)), S, 1.0).verdict);
        drop(reader);
        assert_eq!(verdict, Some(Verdict::Listed));
    }

    #[test]
    fn gauge_is_written_only_when_the_held_count_changes() {
        let (sm, stats) = object(10);
        sm.add(&digest(1), 0, 10 * S, 0.0);
        assert_eq!(get(&stats.blacklisted), 1);
        stats.blacklisted.store(777, Ordering::Relaxed);
        sm.add(&digest(1), S, 10 * S, 1.0); // refresh: held unchanged
        sm.check(Some(&digest(2)), 2 * S, 2.0);
        assert_eq!(get(&stats.blacklisted), 777);
        sm.add(&digest(2), 3 * S, 10 * S, 3.0);
        assert_eq!(get(&stats.blacklisted), 2);
        assert_eq!(get(&stats.calls), 3);
        assert_eq!(get(&stats.refreshed), 1);
    }

    #[test]
    fn crossing_is_reported_once_each_way() {
        let (sm, stats) = object(2);
        assert_eq!(sm.add(&digest(1), 0, 10 * S, 0.0).crossing, None);
        assert_eq!(
            sm.add(&digest(2), 0, 10 * S, 0.0).crossing,
            Some(Crossing::Reached)
        );
        assert_eq!(sm.check(None, S, 1.0).crossing, None);
        assert_eq!(sm.check(None, S, 1.0).verdict, Verdict::OverThreshold);
        let h = sm.check(None, 10 * S, 10.0);
        assert_eq!(h.verdict, Verdict::Healthy);
        assert_eq!(h.crossing, Some(Crossing::Cleared));
        assert_eq!(sm.check(None, 10 * S, 10.0).crossing, None);
        assert_eq!(get(&stats.threshold_reached), 1);
        assert_eq!(get(&stats.threshold_cleared), 1);
        assert_eq!(h.changed_at, 10.0);
    }

    #[test]
    fn veto_reports_when_the_answer_changed() {
        let (sm, _stats) = object(10);
        sm.add(&digest(1), 0, 10 * S, 1234.5);
        let h = sm.check(Some(&digest(1)), S, 1235.0);
        assert_eq!(h.verdict, Verdict::Listed);
        assert_eq!(h.changed_at, 1234.5);
    }

    #[test]
    fn checks_reclaim_expired_entries_a_few_at_a_time() {
        let (sm, stats) = object(1_000_000);
        for n in 0..100 {
            sm.add(&digest(n), 0, S, 0.0);
        }
        sm.check(None, 2 * S, 2.0);
        assert_eq!(get(&stats.expired), RECLAIM_STEP as u64);
        assert_eq!(get(&stats.blacklisted), 100 - RECLAIM_STEP as u64);
        let mut checks = 1;
        while sm.held.load(Ordering::Relaxed) > 0 {
            sm.check(None, 2 * S, 2.0);
            checks += 1;
        }
        assert_eq!(checks, 100_usize.div_ceil(RECLAIM_STEP));
        assert_eq!(get(&stats.expired), 100);
        assert_eq!(get(&stats.blacklisted), 0);
    }

    #[test]
    fn threshold_zero_is_disabled() {
        let (sm, stats) = object(0);
        assert_eq!(sm.add(&digest(1), 0, S, 0.0).listed, Listed::Disabled);
        assert_eq!(sm.check(Some(&digest(1)), 0, 0.0).verdict, Verdict::Healthy);
        assert_eq!(get(&stats.calls), 1);
    }

    /// A clock whose wall time can be stepped while monotonic time runs on, as NTP or an
    /// operator does to a real machine.
    struct SteppedClock {
        mono: Cell<Tick>,
        wall: Cell<f64>,
    }

    impl Clock for SteppedClock {
        fn now(&self) -> Tick {
            self.mono.get()
        }
    }

    impl SteppedClock {
        fn advance(&self, secs: f64) {
            self.mono
                .set(self.mono.get() + ticks_from_secs(secs).unwrap_or(0));
            self.wall.set(self.wall.get() + secs);
        }
        fn step_wall(&self, secs: f64) {
            self.wall.set(self.wall.get() + secs);
        }
    }

    #[test]
    fn wall_clock_step_back_does_not_lengthen_an_entry() {
        let clock = SteppedClock {
            mono: Cell::new(0),
            wall: Cell::new(1_700_000_000.0),
        };
        let (sm, _stats) = object(10);
        let ttl = ticks_from_secs(10.0).unwrap_or(0);
        sm.add(&digest(1), clock.now(), ttl, clock.wall.get());
        clock.advance(5.0);
        clock.step_wall(-3600.0);
        let listed = |c: &SteppedClock| sm.check(Some(&digest(1)), c.now(), c.wall.get()).verdict;
        assert_eq!(listed(&clock), Verdict::Listed);
        clock.advance(5.0);
        assert_eq!(listed(&clock), Verdict::Healthy);
    }

    #[test]
    fn wall_clock_step_forward_does_not_shorten_an_entry() {
        let clock = SteppedClock {
            mono: Cell::new(0),
            wall: Cell::new(1_700_000_000.0),
        };
        let (sm, _stats) = object(10);
        let ttl = ticks_from_secs(10.0).unwrap_or(0);
        sm.add(&digest(1), clock.now(), ttl, clock.wall.get());
        clock.advance(1.0);
        clock.step_wall(3600.0);
        let listed = |c: &SteppedClock| sm.check(Some(&digest(1)), c.now(), c.wall.get()).verdict;
        assert_eq!(listed(&clock), Verdict::Listed);
        clock.advance(8.9);
        assert_eq!(listed(&clock), Verdict::Listed);
        clock.advance(0.2);
        assert_eq!(listed(&clock), Verdict::Healthy);
    }

    #[test]
    fn concurrent_checks_and_adds_agree_on_counts() {
        let (sm, stats) = object(1_000_000);
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let sm = &sm;
                s.spawn(move || {
                    for n in 0..2_000u32 {
                        sm.add(&digest(t * 10_000 + n), 0, 100 * S, 0.0);
                        sm.check(Some(&digest(n)), S, 1.0);
                    }
                });
            }
        });
        assert_eq!(sm.live_count(S, 1.0).0, 8_000);
        assert_eq!(get(&stats.blacklisted), 8_000);
        assert_eq!(get(&stats.calls), 8_000);
    }
}
