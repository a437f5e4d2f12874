//! The counters of one peer (named or default) and of each of its destinations: the layouts
//! Varnish publishes as VSC segments, and where the sender finds them (shared memory in
//! varnishd, the heap in tests).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

    /// The counters of one of the peer's destinations, `label` unique within the peer
    /// (`PEER_DEST.<vcl>.<peer>.<label>` in varnishd). Dropping the last handle removes them.
    fn destination(&self, label: &str) -> Arc<dyn DestCounterStore> {
        let _ = label;
        Arc::new(LocalDestCounters::default())
    }
}

/// One destination's counters. The per-peer [`PeerCounters`] stay the sum over its
/// destinations; these say which destination it was, and what its gate is doing.
#[repr(C)]
#[derive(Debug, Default, varnish::VscMetric)]
pub struct DestCounters {
    /// Requests accepted into this destination's queue
    #[counter]
    pub queued: AtomicU64,
    /// Requests answered by this destination with 2xx
    #[counter]
    pub sent: AtomicU64,
    /// Requests to this destination given up (attempts exhausted, not retryable, shutdown)
    #[counter]
    pub failed: AtomicU64,
    /// Requests to this destination given up because older than max_age
    #[counter]
    pub expired: AtomicU64,
    /// Retry attempts to this destination
    #[counter]
    pub retried: AtomicU64,
    /// Requests not queued because this destination's queue was full
    #[counter]
    pub dropped: AtomicU64,
    /// Requests taken by a sender thread of this destination and not finished
    #[gauge]
    pub in_flight: AtomicU64,
    /// Requests waiting in this destination's queue
    #[gauge]
    pub queue_length: AtomicU64,
    /// Status of the last answer; 0 when the last attempt got none
    #[gauge]
    pub last_status: AtomicU64,
    /// Circuit: 0 closed, 1 open, 2 half-open (a probe is out)
    #[gauge]
    pub circuit: AtomicU64,
    /// Times the circuit opened
    #[counter]
    pub circuit_opened: AtomicU64,
    /// Times a 429 or 503 with Retry-After paused this destination
    #[counter]
    pub paused: AtomicU64,
}

/// What happened to a request at one destination, for its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tally {
    /// Accepted (`queue_length` is counted before, by whoever puts it in the queue, so that
    /// a sender thread never takes it below zero).
    Queued,
    Dropped,
    /// Taken from the queue by a sender thread.
    Taken,
    /// Handed back to the queue unsent (a new generation of threads takes over).
    Resumed,
    Sent,
    Failed,
    Expired,
    Retried,
    /// This many left in the queue, given up at shutdown.
    LeftOver(u64),
}

impl DestCounters {
    pub fn tally(&self, t: Tally) {
        self.tally_n(t, 1);
    }

    /// `t` for `n` requests at once (the items of a batch).
    pub fn tally_n(&self, t: Tally, n: u64) {
        let (to_end, from) = match t {
            Tally::Queued => (&self.queued, None),
            Tally::Dropped => (&self.dropped, None),
            Tally::Retried => (&self.retried, None),
            Tally::Taken => (&self.in_flight, Some(&self.queue_length)),
            Tally::Resumed => (&self.queue_length, Some(&self.in_flight)),
            Tally::Sent => (&self.sent, Some(&self.in_flight)),
            Tally::Failed => (&self.failed, Some(&self.in_flight)),
            Tally::Expired => (&self.expired, Some(&self.in_flight)),
            Tally::LeftOver(n) => {
                PeerCounters::sub(&self.queue_length, n);
                PeerCounters::add(&self.failed, n);
                return;
            }
        };
        PeerCounters::add(to_end, n);
        if let Some(from) = from {
            PeerCounters::sub(from, n);
        }
    }
}

/// Where a destination's counters live.
pub trait DestCounterStore: Send + Sync {
    fn counters(&self) -> &DestCounters;
}

/// A destination's counters on the heap (tests, or no VSC segment).
#[derive(Debug, Default)]
pub struct LocalDestCounters(pub DestCounters);

impl DestCounterStore for LocalDestCounters {
    fn counters(&self) -> &DestCounters {
        &self.0
    }
}

/// Counters on the heap: unit tests, and a fallback when no VSC segment can be made.
#[derive(Debug, Default)]
pub struct LocalCounters(pub PeerCounters);

impl CounterStore for LocalCounters {
    fn counters(&self) -> &PeerCounters {
        &self.0
    }
}
