//! vmod_saintmode: a director that marks its backend sick for single objects (hash digests)
//! that recently failed, and for all objects once too many did. The VCL interface and its
//! documentation are in `vmod.vcc`; this crate implements the generated C prototypes.
//!
//! - `blacklist`: the per-object denylist with O(1) lookups and heap-ordered expiry (pure Rust).
//! - `report`: the `status()` JSON and `backend.list` text (pure Rust).
//! - `ffi`: everything that touches Varnish (entry points, director callbacks, VSC, VSL).

pub mod blacklist;
// The FFI layer calls varnishd symbols that exist only once varnishd loads the VMOD, so the
// unit-test executable (which tests the pure modules) is built without it.
#[cfg(not(test))]
mod ffi;
pub mod report;

#[cfg(not(test))]
extern "C" {
    static Vmod_saintmode_Data: u8;
}
/// Keeps the C descriptor in the link.
#[cfg(not(test))]
#[used]
// SAFETY: only the address is taken.
static KEEP_DESCRIPTOR: &u8 = unsafe { &Vmod_saintmode_Data };
