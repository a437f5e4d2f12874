//! The counters of one peer (named or default): the layout Varnish publishes as a VSC
//! segment, and where the sender finds it (shared memory in varnishd, the heap in tests).

use std::sync::atomic::{AtomicU64, Ordering};

/// One peer's counters. `#[repr(C)]` because varnishstat reads this memory through the
/// JSON description the derive generates; names and docs below are what users see.
#[repr(C)]
#[derive(Debug, Default, varnish::VscMetric)]
pub struct PeerCounters {
    /// Requests accepted into a destination queue
    #[counter]
    pub queued: AtomicU64,
    /// Requests answered by the destination with 2xx
    #[counter]
    pub sent: AtomicU64,
    /// Requests given up (attempts exhausted, not retryable, shutdown)
    #[counter]
    pub failed: AtomicU64,
    /// Retry attempts
    #[counter]
    pub retried: AtomicU64,
    /// Requests not queued because the destination queue was full (count or bytes)
    #[counter]
    pub dropped: AtomicU64,
    /// Requests given up because older than max_age
    #[counter]
    pub expired: AtomicU64,
    /// Requests refused: CR, LF or NUL in a header, the method or the URL, or a body not cached
    #[counter]
    pub refused: AtomicU64,
    /// Requests taken by a sender thread and not finished
    #[gauge]
    pub in_flight: AtomicU64,
    /// Requests waiting in a destination queue
    #[gauge]
    pub queue_length: AtomicU64,
}

impl PeerCounters {
    /// Adds one to a counter or gauge.
    pub fn inc(field: &AtomicU64) {
        field.fetch_add(1, Ordering::Relaxed);
    }

    /// Removes one from a gauge, never below zero.
    pub fn dec(field: &AtomicU64) {
        let _ = field.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1));
    }

    /// Adds `n` to a counter.
    pub fn add(field: &AtomicU64, n: u64) {
        field.fetch_add(n, Ordering::Relaxed);
    }

    /// Removes `n` from a gauge, stopping at zero.
    pub fn sub(field: &AtomicU64, n: u64) {
        let _ = field.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
            Some(v.saturating_sub(n))
        });
    }

    /// Queued or in flight.
    pub fn pending(&self) -> u64 {
        self.queue_length.load(Ordering::Relaxed) + self.in_flight.load(Ordering::Relaxed)
    }
}

/// Where a peer's counters live.
pub trait CounterStore: Send + Sync {
    fn counters(&self) -> &PeerCounters;
}

/// Counters on the heap: unit tests, and a fallback when no VSC segment can be made.
#[derive(Debug, Default)]
pub struct LocalCounters(pub PeerCounters);

impl CounterStore for LocalCounters {
    fn counters(&self) -> &PeerCounters {
        &self.0
    }
}
