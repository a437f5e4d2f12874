//! One sender thread of one destination and what it works with: the destination's queue
//! (bounded in requests and bytes) and state (its counters and gate: see `deststate`), the
//! stop deadline, and the retry loop of one request.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, Sender};
use parking_lot::{Condvar, Mutex};

use crate::config::Settings;
use crate::dest::Destination;
use crate::deststate::{DestState, Passage};
use crate::policy::{Decision, Outcome};
use crate::sender::{EventLog, Transport, TransportFactory};
use crate::snapshot::{Prepared, Snapshot, Template};
use crate::stats::{CounterStore, PeerCounters, Tally};

/// How long a sender thread may wait for a job before it looks at its lane's resumed jobs
/// again (they are handed back without waking anyone, see [`Lane::resume`]).
const RESUME_POLL: Duration = Duration::from_secs(1);

/// How often a transfer in progress (libcurl's or the built-in client's) checks the drain
/// deadline, and the built-in client its attempt's timeout, while it is blocked.
pub(crate) const ABORT_CHECK: Duration = Duration::from_millis(100);

/// The stop deadline of one generation of sender threads, and the wait that honours it.
#[derive(Debug, Default)]
pub struct Control {
    deadline: Mutex<Option<Instant>>,
    changed: Condvar,
    /// Stopped because the VCL went warm again: a new generation takes over the queues, so
    /// nothing is given up (the request in flight goes back to its lane).
    restarting: AtomicBool,
}

impl Control {
    /// Stops this generation at once for a new one (a warm event while it drains).
    pub(crate) fn abort_for_restart(&self) {
        self.restarting.store(true, Ordering::Release);
        self.set_deadline(Instant::now());
    }

    /// True when this generation was stopped for a new one.
    pub(crate) fn restarting(&self) -> bool {
        self.restarting.load(Ordering::Acquire)
    }

    /// Sets (or brings forward) the moment after which nothing more is attempted.
    pub(crate) fn set_deadline(&self, at: Instant) {
        let mut deadline = self.deadline.lock();
        *deadline = Some(deadline.map_or(at, |old| old.min(at)));
        self.changed.notify_all();
    }

    pub(crate) fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock()
    }

    /// True once the deadline has passed: transfers in progress should be aborted.
    pub fn aborted(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }

    /// Sleeps `duration`, or less when the deadline comes first. False when aborted.
    pub(crate) fn sleep(&self, duration: Duration) -> bool {
        let end = Instant::now() + duration;
        let mut deadline = self.deadline.lock();
        loop {
            let limit = deadline.map_or(end, |d| d.min(end));
            if Instant::now() >= limit {
                break;
            }
            let _ = self.changed.wait_until(&mut deadline, limit);
        }
        drop(deadline);
        !self.aborted()
    }
}

/// A request in one destination's queue: only the snapshot, a one-word pointer shared by
/// every destination's job (each word counts in `peer_bytes_per_queued_request`).
pub(crate) struct Job {
    pub(crate) snap: Snapshot,
}

impl Job {
    /// Bytes counted in the queue's byte bound while it waits.
    pub(crate) fn size(&self) -> usize {
        self.snap.size()
    }

    /// When `queue_req()` copied it: its age counts from then.
    pub(crate) fn queued_at(&self) -> Instant {
        self.snap.taken_at()
    }
}

/// One destination's queue. The channel is unbounded (it allocates as requests arrive,
/// nothing for an idle queue); `len` and `bytes` are the bounds, checked before a send.
pub(crate) struct Lane {
    pub(crate) dest: Arc<Destination>,
    pub(crate) tx: Sender<Job>,
    pub(crate) rx: Receiver<Job>,
    pub(crate) len: AtomicUsize,
    pub(crate) bytes: AtomicUsize,
    /// Jobs a stopped generation had taken and handed back unsent: taken before the
    /// channel, so they keep their place ahead of what was queued after them.
    pub(crate) resumed: Mutex<VecDeque<Job>>,
    /// Its label, counters and gate: made and dropped with the lane.
    pub(crate) state: DestState,
    /// Taken out of the peer's lanes (its address left DNS): nothing new is queued to it,
    /// what is queued is sent until its drain deadline.
    retired: AtomicBool,
    /// Its drop lines, made at the first drop.
    full_lines: OnceLock<FullLines>,
}

impl Lane {
    pub(crate) fn new(dest: Destination, state: DestState) -> Self {
        let (tx, rx) = crossbeam_channel::unbounded();
        Lane {
            state,
            dest: Arc::new(dest),
            tx,
            rx,
            len: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            resumed: Mutex::new(VecDeque::new()),
            retired: AtomicBool::new(false),
            full_lines: OnceLock::new(),
        }
    }

    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
    }

    /// Why what is left in the queue is given up when its threads stop.
    pub(crate) fn stop_reason(&self) -> &'static str {
        if self.retired.load(Ordering::Acquire) {
            "the destination was retired (its address left DNS)"
        } else {
            "shutdown"
        }
    }

    /// Hands back a job taken but not sent: it counts in the queue again, above its bounds
    /// if need be (it had its room before).
    pub(crate) fn resume(&self, job: Job) {
        self.len.fetch_add(1, Ordering::AcqRel);
        self.bytes.fetch_add(job.size(), Ordering::AcqRel);
        self.resumed.lock().push_back(job);
    }

    /// Puts a job received but not taken (it did not fit in a batch) back at the head of
    /// the queue: it still counts there, nothing to add.
    pub(crate) fn put_back(&self, job: Job) {
        self.resumed.lock().push_front(job);
    }

    pub(crate) fn take_resumed(&self) -> Option<Job> {
        self.resumed.lock().pop_front()
    }

    /// Reserves room for a job of `size` bytes, or says why there is none.
    pub(crate) fn reserve(&self, size: usize, settings: &Settings) -> Result<(), QueueFull> {
        if self.len.fetch_add(1, Ordering::AcqRel) >= settings.queue_size {
            self.len.fetch_sub(1, Ordering::AcqRel);
            return Err(QueueFull::Capacity(settings.queue_size));
        }
        let before = self.bytes.fetch_add(size, Ordering::AcqRel);
        if before.saturating_add(size) > settings.queue_bytes {
            self.bytes.fetch_sub(size, Ordering::AcqRel);
            self.len.fetch_sub(1, Ordering::AcqRel);
            return Err(QueueFull::NoRoomFor {
                before,
                limit: settings.queue_bytes,
                size,
            });
        }
        Ok(())
    }

    pub(crate) fn release(&self, size: usize) {
        self.len.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(size, Ordering::AcqRel);
    }

    /// Its drop lines (the peer's settings do not change, so they are made once).
    pub(crate) fn full_lines(&self, settings: &Settings) -> &FullLines {
        self.full_lines
            .get_or_init(|| FullLines::new(&self.dest, settings))
    }

    /// Why the queue is full, if it is (no request, however small, would fit). Asked on
    /// every `queue_req()`: no allocation.
    pub(crate) fn full(&self, settings: &Settings) -> Option<QueueFull> {
        if self.len.load(Ordering::Acquire) >= settings.queue_size {
            Some(QueueFull::Capacity(settings.queue_size))
        } else if self.bytes.load(Ordering::Acquire) >= settings.queue_bytes {
            Some(QueueFull::Bytes(settings.queue_bytes))
        } else {
            None
        }
    }
}

/// The line logged for a request dropped because a destination's queue is full:
/// `peer <name>: dropped for <dest> (<why>)`.
pub(crate) fn drop_line(
    peer: &str,
    dest: &dyn std::fmt::Display,
    why: &dyn std::fmt::Display,
) -> String {
    format!("peer {peer}: dropped for {dest} ({why})")
}

/// One destination's drop lines for the reasons that do not depend on the request: a peer
/// whose destination is down drops every request, and logs one of these for each.
pub(crate) struct FullLines {
    capacity: String,
    bytes: String,
    /// The queue had room again by the time the drop was counted.
    plain: String,
}

impl FullLines {
    fn new(dest: &Destination, settings: &Settings) -> Self {
        let line = |why: &dyn std::fmt::Display| drop_line(&settings.name, dest, why);
        FullLines {
            capacity: line(&QueueFull::Capacity(settings.queue_size)),
            bytes: line(&QueueFull::Bytes(settings.queue_bytes)),
            plain: line(&"queue full"),
        }
    }

    pub(crate) fn line(&self, why: Option<QueueFull>) -> &str {
        match why {
            Some(QueueFull::Capacity(_)) => &self.capacity,
            Some(QueueFull::Bytes(_) | QueueFull::NoRoomFor { .. }) => &self.bytes,
            None => &self.plain,
        }
    }
}

/// Why a destination's queue took no request: the reason in its `dropped for` log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueFull {
    /// As many requests as `queue_size` are queued.
    Capacity(usize),
    /// `queue_bytes` is in use.
    Bytes(usize),
    /// This request's bytes do not fit in what is left of `queue_bytes`.
    NoRoomFor {
        before: usize,
        limit: usize,
        size: usize,
    },
}

impl std::fmt::Display for QueueFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueueFull::Capacity(n) => write!(f, "queue full, capacity {n}"),
            QueueFull::Bytes(limit) => write!(f, "queue full, queue_bytes {limit} in use"),
            QueueFull::NoRoomFor {
                before,
                limit,
                size,
            } => write!(
                f,
                "queue full, {before} of queue_bytes {limit} in use, request of {size} bytes"
            ),
        }
    }
}

/// Everything sender threads share with the peer.
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) counters: Arc<dyn CounterStore>,
    pub(crate) log: Arc<dyn EventLog>,
    pub(crate) transport: Arc<dyn TransportFactory>,
}

impl Shared {
    pub(crate) fn counters(&self) -> &PeerCounters {
        self.counters.counters()
    }
}

/// Takes every job left in `lane` and counts it as failed, with one log line: no rendering,
/// no line per request, so that a backlog of millions ends in well under a second.
pub(crate) fn fail_lane_leftovers(shared: &Shared, lane: &Lane) {
    let mut left = 0u64;
    let resumed = std::mem::take(&mut *lane.resumed.lock());
    for job in resumed.into_iter().chain(lane.rx.try_iter()) {
        lane.release(job.size());
        left += 1;
    }
    if left > 0 {
        let counters = shared.counters();
        PeerCounters::sub(&counters.queue_length, left);
        PeerCounters::add(&counters.failed, left);
        lane.state.counters().tally(Tally::LeftOver(left));
        shared.log.log(&format!(
            "peer {}: gave up {left} requests to {}: {} before they were sent",
            shared.settings.name,
            lane.dest,
            lane.stop_reason()
        ));
    }
}

/// One sender thread of one destination.
pub(crate) struct Worker {
    pub(crate) shared: Arc<Shared>,
    pub(crate) lane: Arc<Lane>,
    pub(crate) template: Arc<Template>,
    pub(crate) control: Arc<Control>,
}

pub(crate) enum End {
    Sent,
    Failed(String),
    Expired(String),
    /// Not sent, handed back to the lane for the next generation.
    Resumed,
}

impl Worker {
    pub(crate) fn run(&self, stop: &Receiver<()>) {
        let mut transport = self.shared.transport.create();
        loop {
            if let Some(job) = self.lane.take_resumed() {
                self.process(transport.as_mut(), job);
            } else {
                select! {
                    recv(self.lane.rx) -> job => match job {
                        Ok(job) => self.process(transport.as_mut(), job),
                        Err(_) => return,
                    },
                    recv(stop) -> _ => break,
                    default(RESUME_POLL) => {}
                }
            }
            // `select!` picks at random among ready operations: past the deadline, stop
            // taking jobs one by one.
            if self.control.aborted() {
                break;
            }
        }
        // Draining: what is queued, until the deadline. What is left then is counted in
        // bulk (one line per destination, not per request).
        while !self.control.aborted() {
            match self
                .lane
                .take_resumed()
                .ok_or(())
                .or_else(|()| self.lane.rx.try_recv())
            {
                Ok(job) => self.process(transport.as_mut(), job),
                Err(_) => return,
            }
        }
        // Stopped for a new generation (warm again): the queue is kept for it.
        if !self.control.restarting() {
            fail_lane_leftovers(&self.shared, &self.lane);
        }
    }

    /// What becomes of a request when this generation stops before it is sent.
    pub(crate) fn stopped(&self, reason: impl FnOnce() -> String) -> End {
        if self.control.restarting() {
            End::Resumed
        } else {
            End::Failed(reason())
        }
    }

    /// Moves `job` from its queue into flight: counted in flight first, so that pending()
    /// never dips while it moves.
    pub(crate) fn take(&self, job: &Job) {
        let counters = self.shared.counters();
        PeerCounters::inc(&counters.in_flight);
        PeerCounters::dec(&counters.queue_length);
        self.lane.state.counters().tally(Tally::Taken);
        self.lane.release(job.size());
    }

    /// Hands a job taken but not sent back to its queue (a new generation takes over): counted
    /// there again before it leaves in_flight, so that pending() never dips while it moves.
    pub(crate) fn hand_back(&self, job: Job) {
        let counters = self.shared.counters();
        PeerCounters::inc(&counters.queue_length);
        PeerCounters::dec(&counters.in_flight);
        self.lane.state.counters().tally(Tally::Resumed);
        self.lane.resume(job);
    }

    /// Counts `n` requests (or batch items) in flight as ending with `end`, on the peer and
    /// on the destination. `None` for [`End::Resumed`] (nothing counted: hand them back),
    /// else the verb and the reason of the line to log (an empty verb: nothing to log).
    pub(crate) fn count_end<'e>(&self, end: &'e End, n: u64) -> Option<(&'static str, &'e str)> {
        let counters = self.shared.counters();
        let (counter, tally, verb, reason) = match end {
            End::Resumed => return None,
            End::Sent => (&counters.sent, Tally::Sent, "", ""),
            End::Failed(r) => (&counters.failed, Tally::Failed, "gave up", r.as_str()),
            End::Expired(r) => (&counters.expired, Tally::Expired, "expired", r.as_str()),
        };
        PeerCounters::add(counter, n);
        PeerCounters::sub(&counters.in_flight, n);
        self.lane.state.counters().tally_n(tally, n);
        Some((verb, reason))
    }

    fn process(&self, transport: &mut dyn Transport, job: Job) {
        if let Some(spec) = self.template.batch.as_deref() {
            return self.process_batch(transport, job, spec);
        }
        self.take(&job);
        let end = catch_unwind(AssertUnwindSafe(|| self.attempts(transport, &job)))
            .unwrap_or_else(|_| End::Failed("internal error (panic) in the sender".into()));
        let Some((verb, reason)) = self.count_end(&end, 1) else {
            self.hand_back(job);
            return;
        };
        if !verb.is_empty() {
            self.shared.log.log(&format!(
                "peer {}: {verb} {} {} to {}: {reason}",
                self.shared.settings.name,
                String::from_utf8_lossy(job.snap.method()),
                String::from_utf8_lossy(job.snap.url()),
                self.lane.dest,
            ));
        }
    }

    fn attempts(&self, transport: &mut dyn Transport, job: &Job) -> End {
        let settings = &self.shared.settings;
        let policy = &settings.policy;
        if self.control.aborted() {
            return self.stopped(|| format!("{} before it was sent", self.lane.stop_reason()));
        }
        let prepared = self.template.render(&job.snap, &self.lane.dest);
        let mut attempts = 0;
        loop {
            if self.control.aborted() {
                return self.stopped(|| format!("{} before it was sent", self.lane.stop_reason()));
            }
            if policy.is_expired(job.queued_at(), Instant::now()) {
                return End::Expired(format!("waited longer than max_age {:?}", policy.max_age));
            }
            if let Some(end) = self.wait_at_gate(job.queued_at()) {
                return end;
            }
            if attempts > 0 {
                // Counted when the retry is about to happen: after its backoff and its wait
                // at the gate, which may still give it up.
                PeerCounters::inc(&self.shared.counters().retried);
                self.lane.state.counters().tally(Tally::Retried);
            }
            attempts += 1;
            if let Some(end) = self.attempt(transport, &prepared, attempts, job.queued_at()) {
                return end;
            }
        }
    }

    /// Waits at the destination's gate (its pause, circuit and rate limit) for an attempt of
    /// what was queued at `queued_at`; `Some` when it ends there instead.
    pub(crate) fn wait_at_gate(&self, queued_at: Instant) -> Option<End> {
        match self
            .lane
            .state
            .pass(queued_at, &self.shared.settings.policy, &self.control)
        {
            Passage::Go => None,
            Passage::Expired(reason) => Some(End::Expired(reason)),
            Passage::Stopped => {
                Some(self.stopped(|| format!("{} before it was sent", self.lane.stop_reason())))
            }
        }
    }

    /// Attempt number `attempts` of `call`, whose age counts from `queued_at`: sent, told to
    /// the gate (a circuit that opens or closes is logged), decided by the retry policy. `None`
    /// when it is to be retried (the wait before the retry has passed), else how it ended.
    pub(crate) fn attempt(
        &self,
        transport: &mut dyn Transport,
        call: &Prepared,
        attempts: u32,
        queued_at: Instant,
    ) -> Option<End> {
        let settings = &self.shared.settings;
        let outcome = transport.send(&self.lane.dest, call, settings, &self.control);
        let now = Instant::now();
        let line = (self.lane.state).record(&outcome, now, &settings.name, &self.lane.dest);
        if let Some(line) = line {
            self.shared.log.log(&line);
        }
        let decision = settings.policy.decide(attempts, queued_at, now, &outcome);
        if matches!(outcome, Outcome::Failed(_)) && self.control.restarting() {
            // The transfer was cut short for a new generation: it sends it again. (An
            // answer, even an error status, stands: it is decided on as usual.)
            return Some(End::Resumed);
        }
        match decision {
            Decision::Sent => Some(End::Sent),
            Decision::Failed(reason) => Some(End::Failed(reason)),
            Decision::Expired(reason) => Some(End::Expired(reason)),
            Decision::RetryAfter(wait) => (!self.control.sleep(wait)).then(|| {
                self.stopped(|| format!("{outcome}; {} before the retry", self.lane.stop_reason()))
            }),
        }
    }
}
