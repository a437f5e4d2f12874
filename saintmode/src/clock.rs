//! Time for deadlines: a monotonic clock in nanoseconds, so that a step of the wall clock
//! (NTP, an operator's `date -s`) neither lengthens nor shortens a listed entry. Varnish's
//! `ctx->now` and `bo->t_prev` are wall-clock times (`VTIM_real`); saintmode keeps them only
//! for what users read as dates (the `changed` time of the health API).

use std::sync::OnceLock;
use std::time::Instant;

/// Nanoseconds on a monotonic clock since an arbitrary epoch (the first reading in this
/// process). 584 years fit in a `u64`.
pub type Tick = u64;

/// A source of time: monotonic ticks for deadlines, and the wall clock (seconds since the
/// epoch) for what users read as dates. The process clocks in varnishd, scripted ones in
/// tests.
pub trait Clock {
    fn now(&self) -> Tick;

    /// The wall-clock time, in seconds since the epoch.
    fn wall(&self) -> f64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    }
}

/// A task's clocks in varnishd: monotonic ticks from `Monotonic`, and the task's own
/// wall-clock time (`ctx->now`), so that the times saintmode reports agree with the
/// task's log timestamps.
#[derive(Clone, Copy, Debug)]
pub struct TaskClock {
    pub wall: f64,
}

impl Clock for TaskClock {
    fn now(&self) -> Tick {
        Monotonic.now()
    }
    fn wall(&self) -> f64 {
        self.wall
    }
}

/// A clock stopped at one instant (tests, benchmarks).
#[derive(Clone, Copy, Debug)]
pub struct Fixed {
    pub mono: Tick,
    pub wall: f64,
}

impl Clock for Fixed {
    fn now(&self) -> Tick {
        self.mono
    }
    fn wall(&self) -> f64 {
        self.wall
    }
}

/// `CLOCK_MONOTONIC` (through `std::time::Instant`), relative to the first call.
#[derive(Clone, Copy, Debug, Default)]
pub struct Monotonic;

impl Clock for Monotonic {
    fn now(&self) -> Tick {
        static EPOCH: OnceLock<Instant> = OnceLock::new();
        let epoch = *EPOCH.get_or_init(Instant::now);
        u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A VCL duration in seconds as ticks, rounded up so that a positive duration never
/// becomes 0; `None` for NaN, 0 or negative durations. Durations beyond the `u64` range
/// saturate (an entry listed for centuries is listed until the VCL goes).
pub fn ticks_from_secs(secs: f64) -> Option<Tick> {
    if secs.is_nan() || secs <= 0.0 {
        return None;
    }
    let nanos = (secs * 1e9).ceil();
    // `as` saturates for floats out of range, which is the intent here.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let ticks = nanos as u64;
    Some(ticks.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_up_and_refuse_non_positive() {
        assert_eq!(ticks_from_secs(0.5), Some(500_000_000));
        assert_eq!(ticks_from_secs(1e-12), Some(1));
        assert_eq!(ticks_from_secs(0.0), None);
        assert_eq!(ticks_from_secs(-1.0), None);
        assert_eq!(ticks_from_secs(f64::NAN), None);
        assert_eq!(ticks_from_secs(1e300), Some(u64::MAX));
    }

    #[test]
    fn task_clock_keeps_the_task_wall_time_and_runs_monotonic() {
        let c = TaskClock { wall: 1234.5 };
        assert_eq!(c.wall(), 1234.5);
        let a = c.now();
        assert!(c.now() >= a);
    }

    #[test]
    fn monotonic_clock_never_goes_back() {
        let c = Monotonic;
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
    }
}
