//! vmod_saintmode: a director that marks its backend sick for single objects (hash digests)
//! that recently failed, and for all objects once too many did. The VCL interface and its
//! documentation are in `vmod.vcc`; this crate implements the generated C prototypes.
//!
//! Pure Rust, unit-tested without varnishd:
//! - `blacklist`: the compact per-object denylist (hash index, expiry and threshold heaps);
//! - `object`: one saintmode object as the director uses it (lock-free when empty,
//!   read-locked otherwise, counters written on change);
//! - `blame`: which object `blacklist()` blames, and its argument checks;
//! - `report`: the `status()` JSON, `backend.list` text and log lines;
//! - `clock`: monotonic time for deadlines; `stats`: the counters' layout.
//!
//! Talking to Varnish (compiled out of unit tests: varnishd's symbols exist only once it
//! loads the VMOD):
//! - `ffi`: the entry points, each a thin conversion around the modules above;
//! - `instance`: the Varnish-side object (director, wrapped backend, registry, trail).
//!
//! The Varnish primitives (checks, VSL, VSC, PRIV, workspace, panic guards) are the shared
//! crate `vmod-rt`'s.

pub mod blacklist;
pub mod blame;
pub mod clock;
pub mod object;
pub mod report;
pub mod stats;

#[cfg(not(test))]
mod ffi;
#[cfg(not(test))]
mod instance;

#[cfg(not(test))]
extern "C" {
    static Vmod_saintmode_Data: u8;
}
/// Keeps the C descriptor in the link.
#[cfg(not(test))]
#[used]
// SAFETY: only the address is taken.
static KEEP_DESCRIPTOR: &u8 = unsafe { &Vmod_saintmode_Data };
