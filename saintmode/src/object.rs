//! One saintmode object as the director and the VCL functions use it, in plain Rust: the
//! denylist behind a read-mostly lock, with the hot question ("may this fetch use the
//! backend?") answered without any lock or shared-memory write while nothing is listed, and
//! under a shared read lock otherwise. Writers (listing, reclaiming) take the lock briefly
//! and do a bounded amount of work. Counters go to a `Stats` block (shared memory in
//! varnishd) and are written only when something changed.

use std::ptr;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use parking_lot::RwLock;

use crate::blacklist::{
    Blacklist, Crossing, Digest, Listed, LiveCount, Verdict, COUNT_BUDGET, RECLAIM_STEP,
};
use crate::clock::{Clock, Tick};
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

/// Result of counting the live entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Count {
    pub live: LiveCount,
    /// Whether the live count is at or above the threshold (always exact).
    pub over: bool,
    pub crossing: Option<Crossing>,
}

/// The list and the threshold state last reported, under one lock: a crossing is recorded
/// only under the write lock, so two threads cannot both report it.
#[derive(Debug)]
struct Guarded {
    list: Blacklist,
    /// The threshold state last reported.
    over_seen: bool,
    /// The monotonic time of the last reported crossing: an observation made before it
    /// (a thread that read the clock, then waited for the lock) reports nothing.
    seen_at: Tick,
}

/// What the read-locked part of an operation saw, for its write-locked part.
#[derive(Clone, Copy, Debug)]
struct Seen {
    /// The threshold state differs from the one last reported.
    crossing_due: bool,
    /// Expired entries await reclaiming.
    reclaim_due: bool,
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
    /// `f64` bits of the wall-clock time of the last change of saintmode's answer.
    changed_at: AtomicU64,
    /// `f64` bits of the wall-clock time a check first found the wrapped backend gone
    /// (released at VCL discard); 0 until then.
    gone_at: AtomicU64,
    list: RwLock<Guarded>,
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
            changed_at: AtomicU64::new(0f64.to_bits()),
            gone_at: AtomicU64::new(0f64.to_bits()),
            list: RwLock::new(Guarded {
                list: Blacklist::new(threshold),
                over_seen: false,
                seen_at: 0,
            }),
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
    /// object, e.g. on the client side), at the time `clock` gives.
    pub fn check(&self, digest: Option<&Digest>, clock: &impl Clock) -> Health {
        // Hot path while nothing is listed: two atomic loads, no lock, no write, no clock.
        if self.threshold == 0 || self.held.load(Ordering::Acquire) == 0 {
            return Health {
                verdict: Verdict::Healthy,
                crossing: None,
                changed_at: self.changed_at(),
            };
        }
        let now = clock.now();
        let (verdict, seen) = {
            let g = self.list.read();
            (g.list.verdict(digest, now), Self::seen(&g, now))
        };
        Health {
            verdict,
            crossing: self.settle(seen, RECLAIM_STEP, clock),
            changed_at: self.changed_at(),
        }
    }

    /// What a read-locked operation at `now` leaves to do under the write lock.
    fn seen(g: &Guarded, now: Tick) -> Seen {
        Seen {
            crossing_due: g.list.over(now) != g.over_seen,
            reclaim_due: g.list.next_expiry() <= now,
        }
    }

    /// The write-locked part of a read operation: reclaims up to `budget` expired entries
    /// and records a threshold crossing, if `seen` says so and the lock is free (never
    /// waits: the next operation does it otherwise). The clock is read again under the
    /// lock, so that crossings are recorded in time order.
    fn settle(&self, seen: Seen, budget: usize, clock: &impl Clock) -> Option<Crossing> {
        if !seen.crossing_due && !seen.reclaim_due {
            return None;
        }
        let mut g = self.list.try_write()?;
        let now = clock.now();
        let expired = if seen.reclaim_due {
            g.list.reclaim(now, budget)
        } else {
            0
        };
        self.after_write(&mut g, expired, now, clock)
    }

    /// Lists `digest` for `ttl` ticks from now.
    pub fn add(&self, digest: &Digest, ttl: Tick, clock: &impl Clock) -> Listing {
        let mut g = self.list.write();
        let now = clock.now();
        let (listed, expired) = g.list.add(digest, now, ttl);
        self.with_stats(|s| {
            s.calls.fetch_add(1, Ordering::Relaxed);
            if listed == Listed::Refreshed {
                s.refreshed.fetch_add(1, Ordering::Relaxed);
            }
        });
        if listed == Listed::Added {
            self.changed_at
                .store(clock.wall().to_bits(), Ordering::Relaxed);
        }
        let crossing = self.after_write(&mut g, expired, now, clock);
        Listing {
            listed,
            held: g.list.held(),
            crossing,
        }
    }

    /// The live entries (see `Blacklist::live_count`: bounded work, exact except just
    /// after a mass expiry) and whether the threshold is reached. Reclaims up to
    /// `COUNT_BUDGET` expired entries first when the lock is free, so that repeated counts
    /// after a mass expiry converge to the exact figure.
    pub fn live_count(&self, clock: &impl Clock) -> Count {
        if self.threshold == 0 || self.held.load(Ordering::Acquire) == 0 {
            return Count {
                live: LiveCount {
                    live: 0,
                    exact: true,
                },
                over: false,
                crossing: None,
            };
        }
        let now = clock.now();
        let seen = Self::seen(&self.list.read(), now);
        let crossing = self.settle(seen, COUNT_BUDGET, clock);
        let g = self.list.read();
        Count {
            live: g.list.live_count(now),
            over: g.list.over(now),
            crossing,
        }
    }

    pub fn changed_at(&self) -> f64 {
        f64::from_bits(self.changed_at.load(Ordering::Relaxed))
    }

    /// The `changed` time to report once the wrapped backend is gone: when a check first
    /// saw it gone (`wall`, the first time this is called), or saintmode's own last change
    /// if later. Never the epoch, which would read as "sick since 1970".
    pub fn wrapped_gone(&self, wall: f64) -> f64 {
        let first = match self.gone_at.compare_exchange(
            0f64.to_bits(),
            wall.to_bits(),
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => wall,
            Err(bits) => f64::from_bits(bits),
        };
        first.max(self.changed_at())
    }

    /// Bookkeeping after the list changed, under its write lock: expired counter, the gauge
    /// (written only when the number of held entries changed) and the threshold state.
    fn after_write(
        &self,
        g: &mut Guarded,
        expired: u64,
        now: Tick,
        clock: &impl Clock,
    ) -> Option<Crossing> {
        let held = g.list.held();
        let before = self.held.swap(held, Ordering::AcqRel);
        self.with_stats(|s| {
            if expired > 0 {
                s.expired.fetch_add(expired, Ordering::Relaxed);
            }
            if held != before {
                s.blacklisted.store(held as u64, Ordering::Relaxed);
            }
        });
        self.record_crossing(g, now, clock)
    }

    /// Records a change of the threshold state at `now`, under the write lock, once;
    /// an observation older than the last recorded crossing changes nothing.
    fn record_crossing(&self, g: &mut Guarded, now: Tick, clock: &impl Clock) -> Option<Crossing> {
        if now < g.seen_at {
            return None;
        }
        let over = g.list.over(now);
        if over == g.over_seen {
            return None;
        }
        g.over_seen = over;
        g.seen_at = now;
        self.changed_at
            .store(clock.wall().to_bits(), Ordering::Relaxed);
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
    use crate::clock::{ticks_from_secs, Fixed};
    use std::cell::Cell;

    const S: Tick = 1_000_000_000;

    fn digest(n: u32) -> Digest {
        let mut d = [0u8; 32];
        d[..4].copy_from_slice(&n.to_le_bytes());
        d
    }

    /// Monotonic `mono`, wall clock `wall`.
    fn at(mono: Tick, wall: f64) -> Fixed {
        Fixed { mono, wall }
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

    /// A clock that counts its readings.
    struct Counting(Cell<u32>);

    impl Clock for Counting {
        fn now(&self) -> Tick {
            self.0.set(self.0.get() + 1);
            S
        }
    }

    #[test]
    fn empty_list_check_writes_nothing_and_reads_no_clock() {
        let (sm, stats) = object(3);
        stats.blacklisted.store(12345, Ordering::Relaxed);
        let clock = Counting(Cell::new(0));
        let h = sm.check(Some(&digest(1)), &clock);
        assert_eq!(h.verdict, Verdict::Healthy);
        // The gauge was not rewritten (it would read 0).
        assert_eq!(get(&stats.blacklisted), 12345);
        assert_eq!(clock.0.get(), 0);
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
        let verdict = finishes(move || sm2.check(Some(&digest(1)), &at(S, 1.0)).verdict);
        drop(writer);
        assert_eq!(verdict, Some(Verdict::Healthy));
    }

    #[test]
    fn checks_share_the_lock_with_other_readers() {
        let sm = std::sync::Arc::new(Saintmode::new("sm".into(), "s1".into(), 3));
        sm.add(&digest(1), 10 * S, &at(0, 0.0));
        let reader = sm.list.read(); // another reader holds the lock throughout
        let sm2 = std::sync::Arc::clone(&sm);
        let verdict = finishes(move || sm2.check(Some(&digest(1)), &at(S, 1.0)).verdict);
        drop(reader);
        assert_eq!(verdict, Some(Verdict::Listed));
    }

    #[test]
    fn gauge_is_written_only_when_the_held_count_changes() {
        let (sm, stats) = object(10);
        sm.add(&digest(1), 10 * S, &at(0, 0.0));
        assert_eq!(get(&stats.blacklisted), 1);
        stats.blacklisted.store(777, Ordering::Relaxed);
        sm.add(&digest(1), 10 * S, &at(S, 1.0)); // refresh: held unchanged
        sm.check(Some(&digest(2)), &at(2 * S, 2.0));
        assert_eq!(get(&stats.blacklisted), 777);
        sm.add(&digest(2), 10 * S, &at(3 * S, 3.0));
        assert_eq!(get(&stats.blacklisted), 2);
        assert_eq!(get(&stats.calls), 3);
        assert_eq!(get(&stats.refreshed), 1);
    }

    #[test]
    fn crossing_is_reported_once_each_way() {
        let (sm, stats) = object(2);
        assert_eq!(sm.add(&digest(1), 10 * S, &at(0, 0.0)).crossing, None);
        assert_eq!(
            sm.add(&digest(2), 10 * S, &at(0, 0.0)).crossing,
            Some(Crossing::Reached)
        );
        assert_eq!(sm.check(None, &at(S, 1.0)).crossing, None);
        assert_eq!(sm.check(None, &at(S, 1.0)).verdict, Verdict::OverThreshold);
        let h = sm.check(None, &at(10 * S, 10.0));
        assert_eq!(h.verdict, Verdict::Healthy);
        assert_eq!(h.crossing, Some(Crossing::Cleared));
        assert_eq!(sm.check(None, &at(10 * S, 10.0)).crossing, None);
        assert_eq!(get(&stats.threshold_reached), 1);
        assert_eq!(get(&stats.threshold_cleared), 1);
        assert_eq!(h.changed_at, 10.0);
    }

    /// Scripted interleaving: thread A evaluates the threshold at 9 s (still over), thread B
    /// at 10 s (cleared) and records Cleared; A then goes on with what it saw. A must not
    /// report Reached again: the count never went back up. (Before the fix, A swapped its
    /// stale `over` into the reported state after releasing the read lock.)
    #[test]
    fn a_stale_observation_does_not_report_a_crossing_again() {
        let (sm, stats) = object(2);
        sm.add(&digest(1), 10 * S, &at(0, 0.0));
        let reached = sm.add(&digest(2), 10 * S, &at(0, 0.0)).crossing;
        assert_eq!(reached, Some(Crossing::Reached));
        // A: read-locked part at 9 s.
        let a_seen = Saintmode::seen(&sm.list.read(), 9 * S);
        // B: a whole check at 10 s.
        let b = sm.check(None, &at(10 * S, 10.0));
        assert_eq!(b.crossing, Some(Crossing::Cleared));
        // A: write-locked part, its clock still at 9 s.
        assert_eq!(sm.settle(a_seen, RECLAIM_STEP, &at(9 * S, 9.0)), None);
        assert_eq!(get(&stats.threshold_reached), 1);
        assert_eq!(get(&stats.threshold_cleared), 1);
        assert_eq!(sm.changed_at(), 10.0);
    }

    /// The read-locked part no longer reports anything: a crossing seen there is recorded
    /// only by the write-locked part, which re-evaluates it.
    #[test]
    fn a_crossing_seen_while_another_thread_writes_is_reported_later_once() {
        let (sm, stats) = object(1);
        sm.add(&digest(1), S, &at(0, 0.0));
        let writer = sm.list.write();
        let seen = Saintmode::seen(&writer, 2 * S);
        assert!(seen.crossing_due);
        drop(writer);
        assert_eq!(
            sm.check(None, &at(2 * S, 2.0)).crossing,
            Some(Crossing::Cleared)
        );
        assert_eq!(sm.check(None, &at(3 * S, 3.0)).crossing, None);
        assert_eq!(get(&stats.threshold_cleared), 1);
    }

    #[test]
    fn veto_reports_when_the_answer_changed() {
        let (sm, _stats) = object(10);
        sm.add(&digest(1), 10 * S, &at(0, 1234.5));
        let h = sm.check(Some(&digest(1)), &at(S, 1235.0));
        assert_eq!(h.verdict, Verdict::Listed);
        assert_eq!(h.changed_at, 1234.5);
    }

    #[test]
    fn checks_reclaim_expired_entries_a_few_at_a_time() {
        let (sm, stats) = object(1_000_000);
        for n in 0..100 {
            sm.add(&digest(n), S, &at(0, 0.0));
        }
        sm.check(None, &at(2 * S, 2.0));
        assert_eq!(get(&stats.expired), RECLAIM_STEP as u64);
        assert_eq!(get(&stats.blacklisted), 100 - RECLAIM_STEP as u64);
        let mut checks = 1;
        while sm.held.load(Ordering::Relaxed) > 0 {
            sm.check(None, &at(2 * S, 2.0));
            checks += 1;
        }
        assert_eq!(checks, 100_usize.div_ceil(RECLAIM_STEP));
        assert_eq!(get(&stats.expired), 100);
        assert_eq!(get(&stats.blacklisted), 0);
    }

    /// After a mass expiry each count reclaims a bounded step and converges to the exact
    /// figure; the threshold answer is exact throughout.
    #[test]
    fn counts_after_a_mass_expiry_converge() {
        let (sm, stats) = object(1_000_000);
        for n in 0..10_000 {
            sm.add(&digest(n), S, &at(0, 0.0));
        }
        sm.add(&digest(99_999), 100 * S, &at(0, 0.0));
        let first = sm.live_count(&at(2 * S, 2.0));
        assert!(!first.live.exact);
        assert!(!first.over);
        assert_eq!(get(&stats.expired), COUNT_BUDGET as u64);
        let mut calls = 1;
        loop {
            let c = sm.live_count(&at(2 * S, 2.0));
            calls += 1;
            if c.live.exact {
                assert_eq!(c.live.live, 1);
                break;
            }
        }
        assert!(calls <= 10_000 / COUNT_BUDGET + 2, "{calls}");
    }

    /// The health API's `changed` once the wrapped backend is released: the first time a
    /// check saw it gone (it was 0.0, the epoch, before), or saintmode's later change.
    #[test]
    fn changed_time_when_the_wrapped_backend_is_gone_is_when_it_was_first_seen_gone() {
        let (sm, _stats) = object(10);
        assert_eq!(sm.wrapped_gone(100.0), 100.0);
        assert_eq!(sm.wrapped_gone(200.0), 100.0);
        sm.add(&digest(1), 10 * S, &at(0, 150.0));
        assert_eq!(sm.wrapped_gone(300.0), 150.0);
    }

    #[test]
    fn threshold_zero_is_disabled() {
        let (sm, stats) = object(0);
        assert_eq!(sm.add(&digest(1), S, &at(0, 0.0)).listed, Listed::Disabled);
        assert_eq!(
            sm.check(Some(&digest(1)), &at(0, 0.0)).verdict,
            Verdict::Healthy
        );
        assert_eq!(get(&stats.calls), 1);
    }

    /// A clock whose wall time can be stepped while monotonic time runs on, as NTP or an
    /// operator does to a real machine. The object reads both itself (as in varnishd,
    /// where `TaskClock` gives `Monotonic` ticks and the task's `ctx->now`).
    struct SteppedClock {
        mono: Cell<Tick>,
        wall: Cell<f64>,
    }

    impl Clock for SteppedClock {
        fn now(&self) -> Tick {
            self.mono.get()
        }
        fn wall(&self) -> f64 {
            self.wall.get()
        }
    }

    impl SteppedClock {
        fn new() -> Self {
            Self {
                mono: Cell::new(0),
                wall: Cell::new(1_700_000_000.0),
            }
        }
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
        let clock = SteppedClock::new();
        let (sm, _stats) = object(10);
        let ttl = ticks_from_secs(10.0).unwrap_or(0);
        sm.add(&digest(1), ttl, &clock);
        clock.advance(5.0);
        clock.step_wall(-3600.0);
        let listed = |c: &SteppedClock| sm.check(Some(&digest(1)), c).verdict;
        assert_eq!(listed(&clock), Verdict::Listed);
        clock.advance(5.0);
        assert_eq!(listed(&clock), Verdict::Healthy);
        assert_eq!(sm.live_count(&clock).live.live, 0);
    }

    #[test]
    fn wall_clock_step_forward_does_not_shorten_an_entry() {
        let clock = SteppedClock::new();
        let (sm, _stats) = object(10);
        let ttl = ticks_from_secs(10.0).unwrap_or(0);
        sm.add(&digest(1), ttl, &clock);
        clock.advance(1.0);
        clock.step_wall(3600.0);
        let listed = |c: &SteppedClock| sm.check(Some(&digest(1)), c).verdict;
        assert_eq!(listed(&clock), Verdict::Listed);
        assert_eq!(sm.live_count(&clock).live.live, 1);
        clock.advance(8.9);
        assert_eq!(listed(&clock), Verdict::Listed);
        clock.advance(0.2);
        assert_eq!(listed(&clock), Verdict::Healthy);
    }

    /// The `changed` time reported is the wall clock's, as stepped: it is a date for users.
    #[test]
    fn changed_time_follows_the_wall_clock() {
        let clock = SteppedClock::new();
        let (sm, _stats) = object(1);
        clock.step_wall(-3600.0);
        sm.add(&digest(1), S, &clock);
        assert_eq!(sm.check(None, &clock).changed_at, 1_700_000_000.0 - 3600.0);
    }

    #[test]
    fn concurrent_checks_and_adds_agree_on_counts() {
        let (sm, stats) = object(1_000_000);
        std::thread::scope(|s| {
            for t in 0..4u32 {
                let sm = &sm;
                s.spawn(move || {
                    for n in 0..2_000u32 {
                        sm.add(&digest(t * 10_000 + n), 100 * S, &at(0, 0.0));
                        sm.check(Some(&digest(n)), &at(S, 1.0));
                    }
                });
            }
        });
        let count = sm.live_count(&at(S, 1.0)).live;
        assert_eq!(
            count,
            LiveCount {
                live: 8_000,
                exact: true
            }
        );
        assert_eq!(get(&stats.blacklisted), 8_000);
        assert_eq!(get(&stats.calls), 8_000);
    }
}
