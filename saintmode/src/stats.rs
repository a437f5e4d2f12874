//! The counters of one saintmode object: the layout Varnish publishes as the VSC segment
//! `SAINTMODE.<vcl>.<object>` (shared memory in varnishd, the heap in tests).

use std::sync::atomic::AtomicU64;

/// Per-object counters. `#[repr(C)]` because varnishstat reads this memory through the
/// JSON description the derive generates; names and docs below are what users see.
#[derive(Debug, Default, varnish::VscMetric)]
#[repr(C)]
pub struct Stats {
    /// Entries currently held
    ///
    /// Objects on the list; expired entries leave at a later operation on the object.
    #[gauge]
    pub blacklisted: AtomicU64,
    /// Calls of blacklist()
    ///
    /// Calls of saintmode.blacklist() or denylist() that reached this object.
    #[counter]
    pub calls: AtomicU64,
    /// Refreshed entries
    ///
    /// Calls for an object already listed: expiry extended, not counted twice.
    #[counter]
    pub refreshed: AtomicU64,
    /// Expired entries
    ///
    /// Entries removed because they expired.
    #[counter]
    pub expired: AtomicU64,
    /// Threshold reached
    ///
    /// Times the live count reached the threshold (backend sick for all objects).
    #[counter]
    pub threshold_reached: AtomicU64,
    /// Threshold cleared
    ///
    /// Times the live count went back under the threshold.
    #[counter]
    pub threshold_cleared: AtomicU64,
}
