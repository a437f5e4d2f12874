//! Time for deadlines: a monotonic clock in nanoseconds, so that a step of the wall clock
//! (NTP, an operator's `date -s`) neither lengthens nor shortens a listed entry. Varnish's
//! `ctx->now` and `bo->t_prev` are wall-clock times (`VTIM_real`); saintmode keeps them only
//! for what users read as dates (the `changed` time of the health API).

use std::sync::OnceLock;
use std::time::Instant;

/// Nanoseconds on a monotonic clock since an arbitrary epoch (the first reading in this
/// process). 584 years fit in a `u64`.
pub type Tick = u64;

/// A source of monotonic time: the process clock in varnishd, a scripted one in tests.
pub trait Clock {
    fn now(&self) -> Tick;
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
    fn monotonic_clock_never_goes_back() {
        let c = Monotonic;
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
    }
}
