//! Which saintmode object `blacklist()` blames, and whether the call is valid, in plain
//! Rust (the FFI layer supplies the pointers).
//!
//! `blacklist()` must find the saintmode object "whose director resolved the backend that
//! served this fetch", also when that saintmode wraps a director (then `bo->director_resp`
//! is a backend the saintmode never saw). Re-resolving the wrapped director later is wrong
//! (random and round-robin pick again), and a global "last resolved" slot would race
//! between fetches. So the resolve callback records, in a `Trail` that lives on the fetch's
//! own workspace, each saintmode that resolved and the backend it resolved to. A
//! resolution chain starts when a saintmode resolve is entered at depth 0, which forgets
//! the hops of an earlier chain or attempt; nested saintmodes record first, so the
//! innermost comes first.
//!
//! `bo->director_resp` is set only when a resolution succeeds, so after an attempt that
//! contacted no backend (saintmode refused it, or a director found no healthy member) it
//! still names an earlier attempt's backend, or NULL. Blaming that backend would refresh an
//! entry for a failure that did not happen. So the trail also records, when the first
//! saintmode callback of an attempt runs during its resolution, what `director_resp` held
//! then: if it still holds that after the attempt and no hop explains it, the attempt
//! contacted no backend and nothing is listed. (The one case this cannot tell apart: the
//! attempt resolved, without saintmode, the same backend as the previous attempt; it is then
//! taken for "no backend contacted".)
//!
//! When the trail has no answer otherwise (no saintmode took part in this attempt,
//! `std.rollback(bereq)` cleared it, the retry went to a plain backend, the workspace was
//! full), the C module's rule applies: the object that wraps `director_resp` directly.

use std::fmt;

/// Hops a trail records; deeper nesting falls back to the C module's rule.
pub const MAX_HOPS: usize = 4;

/// The saintmode objects (`O`) that resolved this fetch and the backends (`B`) they
/// resolved to. Fixed size, so it fits a workspace allocation and needs no destructor.
#[derive(Clone, Copy, Debug)]
pub struct Trail<O: Copy, B: Copy> {
    /// The attempt (`bo->retries`) the rest describes; meaningless until `started`.
    attempt: u32,
    started: bool,
    depth: u32,
    len: usize,
    hops: [(O, B); MAX_HOPS],
    /// `bo->director_resp` when this attempt's resolution began (None: not recorded).
    resp_before: Option<Option<B>>,
}

impl<O: Copy + PartialEq, B: Copy + PartialEq> Trail<O, B> {
    /// An empty trail; `filler` only fills unused hops.
    pub fn new(filler: (O, B)) -> Self {
        Self {
            attempt: 0,
            started: false,
            depth: 0,
            len: 0,
            hops: [filler; MAX_HOPS],
            resp_before: None,
        }
    }

    /// Forgets everything when `attempt` is not the one recorded. A new attempt also
    /// resets the depth, so that a resolve that never returned (a panic caught in between)
    /// does not hide the next attempt's chains.
    fn switch_to(&mut self, attempt: u32) {
        if !self.started || self.attempt != attempt {
            self.attempt = attempt;
            self.started = true;
            self.depth = 0;
            self.len = 0;
            self.resp_before = None;
        }
    }

    /// A saintmode callback runs while attempt `attempt` is being resolved (before it
    /// contacts any backend), `resp` being `bo->director_resp` at that moment. Only the
    /// first call of an attempt records `resp`.
    pub fn begin(&mut self, attempt: u32, resp: Option<B>) {
        self.switch_to(attempt);
        if self.resp_before.is_none() {
            self.resp_before = Some(resp);
        }
    }

    /// A saintmode resolve starts for fetch attempt `attempt` (`bo->retries`).
    pub fn enter(&mut self, attempt: u32) {
        self.switch_to(attempt);
        if self.depth == 0 {
            self.len = 0;
        }
        self.depth = self.depth.saturating_add(1);
    }

    /// The resolve of `object` ends with `resolved` (None: it refused or found nothing).
    pub fn leave(&mut self, object: O, resolved: Option<B>) {
        self.depth = self.depth.saturating_sub(1);
        if let Some(backend) = resolved {
            if self.len < MAX_HOPS {
                self.hops[self.len] = (object, backend);
                self.len += 1;
            }
        }
    }

    fn hops(&self) -> &[(O, B)] {
        &self.hops[..self.len]
    }
}

/// What `blacklist()` acts on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame<O> {
    /// List the fetch's object on this saintmode object.
    Object(O),
    /// The attempt (`bo->retries`) contacted no backend: nothing to list. Not an error:
    /// the VCL of a retry loop calls `blacklist()` in every `vcl_backend_error`.
    NoBackendContacted(u32),
    /// No saintmode object resolved or wraps the backend that answered.
    NotFound,
}

/// The object to blame for a fetch that `resp` answered (`bo->director_resp`) in attempt
/// `attempt`: the innermost saintmode of this attempt's trail that resolved to `resp`;
/// nothing when the attempt contacted no backend (`resp` unchanged since the attempt's
/// resolution began, or NULL); else the first object (in declaration order) that wraps
/// `resp` directly, as the C module does.
pub fn find_target<O: Copy + PartialEq, B: Copy + PartialEq>(
    trail: Option<&Trail<O, B>>,
    attempt: u32,
    resp: Option<B>,
    wrapped_by: impl IntoIterator<Item = (O, B)>,
) -> Blame<O> {
    if let Some(t) = trail.filter(|t| t.started && t.attempt == attempt) {
        if let Some((o, _)) = t.hops().iter().find(|(_, b)| Some(*b) == resp) {
            return Blame::Object(*o);
        }
        if t.resp_before == Some(resp) {
            return Blame::NoBackendContacted(attempt);
        }
    }
    let Some(resp) = resp else {
        return Blame::NoBackendContacted(attempt);
    };
    wrapped_by
        .into_iter()
        .find(|(_, wrapped)| *wrapped == resp)
        .map_or(Blame::NotFound, |(o, _)| Blame::Object(o))
}

/// Why `blacklist()` did nothing (logged as `VCL_Error`, prefixed with the function name).
#[derive(Clone, Debug, PartialEq)]
pub enum BlacklistError {
    /// Called outside `vcl_backend_response` and `vcl_backend_error`.
    OutsideBackendSubs,
    /// `expires` was not a positive duration.
    BadExpires(f64),
    /// The VCL declares no saintmode object.
    NotConfigured,
    /// No busyobj in this context.
    NoFetch,
    /// No saintmode object resolved or wraps the backend of this fetch (its VCL name).
    NoTarget(String),
}

impl fmt::Display for BlacklistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::OutsideBackendSubs => {
                f.write_str("called outside vcl_backend_response and vcl_backend_error")
            }
            Self::BadExpires(secs) => write!(f, "expires must be > 0s (got {secs})"),
            Self::NotConfigured => f.write_str("no saintmode object in this VCL"),
            Self::NoFetch => f.write_str("no fetch in this context"),
            Self::NoTarget(backend) => write!(
                f,
                "no saintmode object resolved backend {backend} for this fetch"
            ),
        }
    }
}

/// Checks the arguments of `blacklist(expires)` called in a subroutine that is (or not) a
/// backend response/error subroutine; returns the duration in ticks.
pub fn check_call(in_backend_subs: bool, expires: f64) -> Result<u64, BlacklistError> {
    if !in_backend_subs {
        return Err(BlacklistError::OutsideBackendSubs);
    }
    crate::clock::ticks_from_secs(expires).ok_or(BlacklistError::BadExpires(expires))
}

#[cfg(test)]
mod tests {
    use super::*;

    type T = Trail<u32, u32>;

    #[test]
    fn innermost_saintmode_that_resolved_the_answering_backend_is_blamed() {
        let mut t = T::new((0, 0));
        t.enter(0); // outer saintmode 1
        t.enter(0); // inner saintmode 2
        t.leave(2, Some(100));
        t.leave(1, Some(100));
        assert_eq!(
            find_target(Some(&t), 0, Some(100), [(1, 50)]),
            Blame::Object(2)
        );
    }

    #[test]
    fn saintmode_wrapping_a_director_is_blamed_for_the_backend_it_picked() {
        let mut t = T::new((0, 0));
        t.enter(0);
        t.leave(7, Some(300)); // wraps a director that picked backend 300
        assert_eq!(find_target(Some(&t), 0, Some(300), []), Blame::Object(7));
    }

    #[test]
    fn without_trail_the_object_wrapping_the_backend_directly_is_blamed() {
        assert_eq!(
            find_target::<u32, u32>(None, 0, Some(5), [(1, 4), (2, 5), (3, 5)]),
            Blame::Object(2)
        );
        assert_eq!(
            find_target::<u32, u32>(None, 0, Some(6), [(1, 4)]),
            Blame::NotFound
        );
        // No backend ever answered this fetch: nothing to list, not an error.
        assert_eq!(
            find_target::<u32, u32>(None, 2, None, [(1, 4)]),
            Blame::NoBackendContacted(2)
        );
    }

    #[test]
    fn trail_of_another_attempt_falls_back_to_the_wrapping_object() {
        let mut t = T::new((0, 0));
        t.enter(0);
        t.leave(7, Some(300));
        // Retry 1 went to a plain backend 5 (no saintmode resolve in this attempt).
        assert_eq!(
            find_target(Some(&t), 1, Some(5), [(2, 5)]),
            Blame::Object(2)
        );
        // Or the trail's backend is not the one that answered.
        assert_eq!(
            find_target(Some(&t), 0, Some(5), [(2, 5)]),
            Blame::Object(2)
        );
    }

    #[test]
    fn a_new_attempt_forgets_the_previous_hops() {
        let mut t = T::new((0, 0));
        t.enter(0);
        t.leave(7, Some(300));
        t.enter(1);
        t.leave(8, None); // refused this time
        assert_eq!(find_target(Some(&t), 1, Some(300), []), Blame::NotFound);
    }

    /// The vmod.vcc example: attempt 0 reached backend 300 through saintmode 7 and failed;
    /// attempts 1.. were refused by saintmode 7, `director_resp` still says 300.
    #[test]
    fn an_attempt_saintmode_refused_is_not_blamed_on_the_previous_backend() {
        let mut t = T::new((0, 0));
        t.begin(0, None);
        t.enter(0);
        t.leave(7, Some(300));
        assert_eq!(
            find_target(Some(&t), 0, Some(300), [(7, 300)]),
            Blame::Object(7)
        );
        for attempt in 1..5 {
            t.enter(attempt);
            t.begin(attempt, Some(300));
            t.leave(7, None);
            assert_eq!(
                find_target(Some(&t), attempt, Some(300), [(7, 300)]),
                Blame::NoBackendContacted(attempt)
            );
        }
    }

    /// A fallback director asked the health of its saintmode members (no resolve) and
    /// found none healthy: the attempt has no hops, `director_resp` is the last attempt's.
    #[test]
    fn an_attempt_a_director_found_no_member_for_is_not_blamed() {
        let mut t = T::new((0, 0));
        t.enter(1);
        t.begin(1, Some(200));
        t.leave(8, Some(300));
        t.begin(2, Some(300)); // health checks of attempt 2, both members refuse
        t.begin(2, Some(300));
        assert_eq!(
            find_target(Some(&t), 2, Some(300), [(8, 300)]),
            Blame::NoBackendContacted(2)
        );
    }

    /// A saintmode refused, then the director picked a plain backend that failed: that
    /// backend was contacted (`director_resp` changed), so the C rule still applies.
    #[test]
    fn a_plain_backend_picked_after_a_refusal_is_still_blamed() {
        let mut t = T::new((0, 0));
        t.begin(1, Some(300));
        t.enter(1);
        t.leave(7, None);
        assert_eq!(
            find_target(Some(&t), 1, Some(5), [(2, 5)]),
            Blame::Object(2)
        );
    }

    /// A panic between `enter` and `leave` leaves the depth raised; the next attempt starts
    /// a chain of its own anyway.
    #[test]
    fn a_resolve_that_never_left_does_not_leak_into_the_next_attempt() {
        let mut t = T::new((0, 0));
        t.enter(0);
        t.enter(0); // the inner resolve panicked: no leave
        t.leave(1, Some(9));
        t.enter(1);
        t.leave(2, Some(10));
        assert_eq!(find_target(Some(&t), 1, Some(10), []), Blame::Object(2));
        assert_eq!(t.hops().len(), 1);
    }

    #[test]
    fn deep_nesting_keeps_the_innermost_hops() {
        let mut t = T::new((0, 0));
        for _ in 0..(MAX_HOPS + 2) {
            t.enter(0);
        }
        for o in 0..(MAX_HOPS as u32 + 2) {
            t.leave(o, Some(9));
        }
        assert_eq!(find_target(Some(&t), 0, Some(9), []), Blame::Object(0));
    }

    #[test]
    fn call_checks_say_what_is_wrong() {
        assert_eq!(check_call(true, 0.5), Ok(500_000_000));
        assert_eq!(
            check_call(false, 0.5),
            Err(BlacklistError::OutsideBackendSubs)
        );
        assert_eq!(check_call(true, 0.0), Err(BlacklistError::BadExpires(0.0)));
        assert_eq!(
            BlacklistError::BadExpires(-1.0).to_string(),
            "expires must be > 0s (got -1)"
        );
        assert!(matches!(
            check_call(true, f64::NAN),
            Err(BlacklistError::BadExpires(_))
        ));
        assert_eq!(
            BlacklistError::NoTarget("s1".into()).to_string(),
            "no saintmode object resolved backend s1 for this fetch"
        );
    }
}
