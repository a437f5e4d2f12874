//! The sender: one queue per destination, bounded in requests and in bytes, sender threads
//! that take requests from it, retry them per the policy, and count the results.
//! `enqueue()` does no I/O and takes no lock; the threads follow the VCL temperature
//! (start, drain with a deadline, join).
//!
//! Modelled on tracing-appender's worker: lossy `try_send` with a dropped counter, named
//! threads, a stop signal, and a join bounded in time.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, unbounded, Receiver, RecvTimeoutError, Sender};
use parking_lot::{Condvar, Mutex};

use crate::config::Settings;
use crate::dest::Destination;
use crate::policy::{Decision, Outcome};
use crate::snapshot::{HeaderError, Prepared, Refusal, Snapshot, Template};
use crate::stats::{CounterStore, PeerCounters};

/// Extra time given to threads after the drain deadline: aborting a transfer in progress
/// takes until libcurl's next progress check (0.1 s).
pub const JOIN_GRACE: Duration = Duration::from_secs(3);

/// Sends one prepared request. One instance per sender thread, so it may keep a
/// connection open between calls.
pub trait Transport {
    fn send(
        &mut self,
        dest: &Destination,
        req: &Prepared,
        settings: &Settings,
        control: &Arc<Control>,
    ) -> Outcome;
}

/// Makes a transport for each sender thread.
pub trait TransportFactory: Send + Sync {
    fn create(&self) -> Box<dyn Transport>;
}

/// Where the lines about lost requests go (VSL in varnishd).
pub trait EventLog: Send + Sync {
    fn log(&self, line: &str);
}

/// Starts a named thread (`std::thread::Builder` in production; tests make it fail).
pub type Spawn = fn(String, Box<dyn FnOnce() + Send>) -> std::io::Result<JoinHandle<()>>;

fn spawn_thread(name: String, f: Box<dyn FnOnce() + Send>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(f)
}

/// The stop deadline of one generation of sender threads, and the wait that honours it.
#[derive(Debug, Default)]
pub struct Control {
    deadline: Mutex<Option<Instant>>,
    changed: Condvar,
}

impl Control {
    /// Sets (or brings forward) the moment after which nothing more is attempted.
    fn set_deadline(&self, at: Instant) {
        let mut deadline = self.deadline.lock();
        *deadline = Some(deadline.map_or(at, |old| old.min(at)));
        self.changed.notify_all();
    }

    fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock()
    }

    /// True once the deadline has passed: transfers in progress should be aborted.
    pub fn aborted(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }

    /// Sleeps `duration`, or less when the deadline comes first. False when aborted.
    fn sleep(&self, duration: Duration) -> bool {
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

/// Why `enqueue()` queued nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnqueueError {
    NoDestination,
    Refused(Refusal),
}

/// Why a peer cannot be configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupError {
    /// Changed after its first use (outside `vcl_init`).
    InUse,
    Header(HeaderError),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::InUse => {
                f.write_str("the peer is already in use; configure it in vcl_init")
            }
            SetupError::Header(e) => e.fmt(f),
        }
    }
}

/// Why the sender threads could not start (the WARM event fails with it).
#[derive(Debug)]
pub struct StartError {
    pub peer: String,
    pub dest: String,
    pub error: std::io::Error,
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "peer {}: cannot start a sender thread for {}: {}",
            self.peer, self.dest, self.error
        )
    }
}

/// What `enqueue()` did, per destination.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EnqueueReport {
    pub queued: usize,
    /// Destinations whose queue was full, and why.
    pub dropped: Vec<String>,
}

struct Job {
    snap: Arc<Snapshot>,
    size: usize,
    queued_at: Instant,
}

/// One destination's queue. The channel is unbounded (it allocates as requests arrive,
/// nothing for an idle queue); `len` and `bytes` are the bounds, checked before a send.
struct Lane {
    dest: Arc<Destination>,
    tx: Sender<Job>,
    rx: Receiver<Job>,
    len: AtomicUsize,
    bytes: AtomicUsize,
}

impl Lane {
    /// Reserves room for a job of `size` bytes, or says why there is none.
    fn reserve(&self, size: usize, settings: &Settings) -> Result<(), String> {
        if self.len.fetch_add(1, Ordering::AcqRel) >= settings.queue_size {
            self.len.fetch_sub(1, Ordering::AcqRel);
            return Err(format!("queue full, capacity {}", settings.queue_size));
        }
        let before = self.bytes.fetch_add(size, Ordering::AcqRel);
        if before.saturating_add(size) > settings.queue_bytes {
            self.bytes.fetch_sub(size, Ordering::AcqRel);
            self.len.fetch_sub(1, Ordering::AcqRel);
            return Err(format!(
                "queue full, {before} of queue_bytes {} in use, request of {size} bytes",
                settings.queue_bytes
            ));
        }
        Ok(())
    }

    fn release(&self, size: usize) {
        self.len.fetch_sub(1, Ordering::AcqRel);
        self.bytes.fetch_sub(size, Ordering::AcqRel);
    }

    /// Why the queue is full, if it is (no request, however small, would fit).
    fn full(&self, settings: &Settings) -> Option<String> {
        if self.len.load(Ordering::Acquire) >= settings.queue_size {
            Some(format!("queue full, capacity {}", settings.queue_size))
        } else if self.bytes.load(Ordering::Acquire) >= settings.queue_bytes {
            Some(format!(
                "queue full, queue_bytes {} in use",
                settings.queue_bytes
            ))
        } else {
            None
        }
    }
}

struct Frozen {
    lanes: Vec<Arc<Lane>>,
    template: Arc<Template>,
}

/// Everything sender threads share with the peer.
struct Shared {
    settings: Settings,
    counters: Arc<dyn CounterStore>,
    log: Arc<dyn EventLog>,
    transport: Arc<dyn TransportFactory>,
}

impl Shared {
    fn counters(&self) -> &PeerCounters {
        self.counters.counters()
    }
}

/// One generation of sender threads (from a warm event to the next cold one).
struct Generation {
    control: Arc<Control>,
    stop: Option<Sender<()>>,
    done: Receiver<()>,
    handles: Vec<JoinHandle<()>>,
}

/// A generation told to stop, to be joined (see [`Peer::begin_stop`]).
pub struct Stopping(Option<Generation>);

impl Stopping {
    /// When its threads stop attempting anything.
    pub fn deadline(&self) -> Option<Instant> {
        self.0.as_ref().and_then(|g| g.control.deadline())
    }
}

#[derive(Default)]
struct Setup {
    dests: Vec<Destination>,
    template: Template,
}

/// A peer: its destinations, their queues, and the sender threads.
pub struct Peer {
    shared: Arc<Shared>,
    setup: Mutex<Setup>,
    frozen: OnceLock<Frozen>,
    running: Mutex<Option<Generation>>,
    spawn: Spawn,
}

impl Peer {
    pub fn new(
        settings: Settings,
        template: Template,
        counters: Arc<dyn CounterStore>,
        log: Arc<dyn EventLog>,
        transport: Arc<dyn TransportFactory>,
    ) -> Self {
        Peer {
            shared: Arc::new(Shared {
                settings,
                counters,
                log,
                transport,
            }),
            setup: Mutex::new(Setup {
                dests: Vec::new(),
                template,
            }),
            frozen: OnceLock::new(),
            running: Mutex::new(None),
            spawn: spawn_thread,
        }
    }

    /// The same peer starting its threads with `spawn` (tests).
    #[must_use]
    pub fn with_spawn(mut self, spawn: Spawn) -> Self {
        self.spawn = spawn;
        self
    }

    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    pub fn name(&self) -> &str {
        &self.shared.settings.name
    }

    pub fn counters(&self) -> &PeerCounters {
        self.shared.counters()
    }

    fn change_setup(&self, f: impl FnOnce(&mut Setup)) -> Result<(), SetupError> {
        if self.frozen.get().is_some() {
            return Err(SetupError::InUse);
        }
        f(&mut self.setup.lock());
        Ok(())
    }

    pub fn add_destination(&self, dest: Destination) -> Result<(), SetupError> {
        self.change_setup(|s| s.dests.push(dest))
    }

    /// Replaces every destination by `dest` (`peer.set()` called again).
    pub fn replace_destinations(&self, dest: Destination) -> Result<(), SetupError> {
        self.change_setup(|s| s.dests = vec![dest])
    }

    /// A fixed header, as bytes: the value is sent exactly as given.
    pub fn set_header(&self, name: &[u8], value: &[u8]) -> Result<(), SetupError> {
        Template::check_set_header(name, value).map_err(SetupError::Header)?;
        self.change_setup(|s| s.template.fixed.push((name.to_vec(), value.to_vec())))
    }

    pub fn unset_header(&self, name: &[u8]) -> Result<(), SetupError> {
        Template::check_fixed(name, b"").map_err(SetupError::Header)?;
        self.change_setup(|s| s.template.unset.push(name.to_vec()))
    }

    /// The destinations and template, fixed from the first use on.
    fn frozen(&self) -> &Frozen {
        self.frozen.get_or_init(|| {
            let setup = std::mem::take(&mut *self.setup.lock());
            let lanes = setup
                .dests
                .into_iter()
                .map(|dest| {
                    let (tx, rx) = unbounded();
                    Arc::new(Lane {
                        dest: Arc::new(dest),
                        tx,
                        rx,
                        len: AtomicUsize::new(0),
                        bytes: AtomicUsize::new(0),
                    })
                })
                .collect();
            Frozen {
                lanes,
                template: Arc::new(setup.template),
            }
        })
    }

    /// True when at least one destination queue has room: otherwise a caller need not
    /// even take a snapshot ([`Peer::drop_all`] counts the loss).
    pub fn has_room(&self) -> bool {
        let frozen = self.frozen();
        frozen.lanes.is_empty()
            || frozen
                .lanes
                .iter()
                .any(|l| l.full(&self.shared.settings).is_none())
    }

    /// Counts a request dropped for every destination, without a snapshot.
    pub fn drop_all(&self) -> EnqueueReport {
        let counters = self.counters();
        let mut report = EnqueueReport::default();
        for lane in &self.frozen().lanes {
            let why = lane
                .full(&self.shared.settings)
                .unwrap_or_else(|| "queue full".into());
            PeerCounters::inc(&counters.dropped);
            report.dropped.push(format!("{} ({why})", lane.dest));
        }
        report
    }

    /// Queues `snap` for every destination. Never blocks: a full queue drops the request
    /// for that destination.
    pub fn enqueue(&self, snap: Snapshot) -> Result<EnqueueReport, EnqueueError> {
        let counters = self.counters();
        if let Err(refusal) = snap.validate() {
            PeerCounters::inc(&counters.refused);
            return Err(EnqueueError::Refused(refusal));
        }
        let frozen = self.frozen();
        if frozen.lanes.is_empty() {
            return Err(EnqueueError::NoDestination);
        }
        let size = snap.size();
        let snap = Arc::new(snap);
        let queued_at = Instant::now();
        let mut report = EnqueueReport::default();
        for lane in &frozen.lanes {
            if let Err(why) = lane.reserve(size, &self.shared.settings) {
                PeerCounters::inc(&counters.dropped);
                report.dropped.push(format!("{} ({why})", lane.dest));
                continue;
            }
            // Counted before the send so that a sender thread never sees it below zero.
            PeerCounters::inc(&counters.queue_length);
            let job = Job {
                snap: Arc::clone(&snap),
                size,
                queued_at,
            };
            // The receiver lives as long as the lane: a send cannot fail.
            if lane.tx.send(job).is_ok() {
                PeerCounters::inc(&counters.queued);
                report.queued += 1;
            } else {
                lane.release(size);
                PeerCounters::dec(&counters.queue_length);
                PeerCounters::inc(&counters.dropped);
                report.dropped.push(format!("{} (queue closed)", lane.dest));
            }
        }
        Ok(report)
    }

    /// Counts a request refused before a snapshot could be taken (a body not cached).
    pub fn count_refused(&self) {
        PeerCounters::inc(&self.counters().refused);
    }

    /// Requests queued or in flight.
    pub fn pending(&self) -> u64 {
        self.counters().pending()
    }

    /// Starts the sender threads (warm event). Threads of a previous generation that is
    /// still draining are joined first, without holding the lock. If a thread cannot be
    /// started, those already started are stopped and the error returned.
    pub fn start(&self) -> Result<(), StartError> {
        let old = {
            let mut running = self.running.lock();
            if running.as_ref().is_some_and(|g| g.stop.is_some()) {
                return Ok(());
            }
            running.take()
        };
        if let Some(old) = old {
            self.join(old, None);
        }
        let generation = self.spawn_generation()?;
        let replaced = self.running.lock().replace(generation);
        // Events are serialized on the CLI thread: nothing else starts a generation.
        if let Some(other) = replaced {
            self.stop_generation(other);
        }
        Ok(())
    }

    fn spawn_generation(&self) -> Result<Generation, StartError> {
        let frozen = self.frozen();
        let control = Arc::new(Control::default());
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let (done_tx, done_rx) = bounded::<()>(0);
        let mut generation = Generation {
            control: Arc::clone(&control),
            stop: Some(stop_tx),
            done: done_rx,
            handles: Vec::new(),
        };
        let settings = &self.shared.settings;
        for (lane_no, lane) in frozen.lanes.iter().enumerate() {
            for thread_no in 0..settings.concurrency.max(1) {
                let worker = Worker {
                    shared: Arc::clone(&self.shared),
                    lane: Arc::clone(lane),
                    template: Arc::clone(&frozen.template),
                    control: Arc::clone(&control),
                };
                let stop_rx = stop_rx.clone();
                let done_tx = done_tx.clone();
                let mut name = format!("peer-{lane_no}.{thread_no}-{}", settings.name);
                name.truncate(15);
                let body = Box::new(move || {
                    let _done = done_tx;
                    worker.run(&stop_rx);
                });
                match (self.spawn)(name, body) {
                    Ok(handle) => generation.handles.push(handle),
                    Err(error) => {
                        self.stop_generation(generation);
                        return Err(StartError {
                            peer: settings.name.clone(),
                            dest: lane.dest.to_string(),
                            error,
                        });
                    }
                }
            }
        }
        Ok(generation)
    }

    fn stop_generation(&self, mut generation: Generation) {
        Self::signal_drain(&mut generation, Duration::ZERO);
        self.join(generation, None);
    }

    /// Cold event: the threads send what is queued until the queues are empty or the
    /// drain timeout has passed, then exit. Does not wait for them.
    pub fn begin_drain(&self) {
        let mut running = self.running.lock();
        if let Some(generation) = running.as_mut() {
            Self::signal_drain(generation, self.shared.settings.drain_timeout);
        }
    }

    fn signal_drain(generation: &mut Generation, drain_timeout: Duration) {
        if generation.stop.is_some() {
            generation
                .control
                .set_deadline(Instant::now() + drain_timeout);
            generation.stop = None;
        } else if drain_timeout.is_zero() {
            generation.control.set_deadline(Instant::now());
        }
    }

    /// Tells the threads to drain (if not already draining) and hands back what to join:
    /// several peers are stopped together this way (see [`Peer::finish_stop`]).
    pub fn begin_stop(&self) -> Stopping {
        let generation = self.running.lock().take();
        Stopping(generation.map(|mut g| {
            Self::signal_drain(&mut g, self.shared.settings.drain_timeout);
            g
        }))
    }

    /// Joins the threads of `stopping`, waiting at most until `limit` (by default its
    /// deadline plus [`JOIN_GRACE`]); then counts what is still queued as failed, in bulk.
    pub fn finish_stop(&self, stopping: Stopping, limit: Option<Instant>) {
        if let Some(generation) = stopping.0 {
            self.join(generation, limit);
        }
        self.fail_leftovers();
    }

    /// Drains (if not already draining) and joins the threads, waiting at most the drain
    /// timeout plus a grace period. Requests still queued afterwards are counted as failed.
    pub fn stop(&self) {
        let stopping = self.begin_stop();
        self.finish_stop(stopping, None);
    }

    fn join(&self, generation: Generation, limit: Option<Instant>) {
        let limit = limit.unwrap_or_else(|| {
            generation
                .control
                .deadline()
                .unwrap_or_else(Instant::now)
                .max(Instant::now())
                + JOIN_GRACE
        });
        // Nothing is sent on `done`: it disconnects when the last thread exits, so this
        // loop ends at the disconnection or at `limit`.
        loop {
            match generation.done.recv_deadline(limit) {
                Ok(()) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    for handle in generation.handles {
                        let _ = handle.join();
                    }
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {
                    // A thread is stuck in a transfer. It holds its own reference to the
                    // shared state; dropping the handles detaches it, and the counters (the
                    // VSC segment) are freed when it lets go, not leaked.
                    self.shared.log.log(&format!(
                        "peer {}: a sender thread did not stop in time and was left to finish",
                        self.shared.settings.name
                    ));
                    return;
                }
            }
        }
    }

    /// Counts what is still queued as failed: in bulk, one log line per destination.
    fn fail_leftovers(&self) {
        if let Some(frozen) = self.frozen.get() {
            for lane in &frozen.lanes {
                fail_lane_leftovers(&self.shared, lane);
            }
        }
    }
}

/// Takes every job left in `lane` and counts it as failed, with one log line: no rendering,
/// no line per request, so that a backlog of millions ends in well under a second.
fn fail_lane_leftovers(shared: &Shared, lane: &Lane) {
    let mut left = 0u64;
    for job in lane.rx.try_iter() {
        lane.release(job.size);
        left += 1;
    }
    if left > 0 {
        let counters = shared.counters();
        PeerCounters::sub(&counters.queue_length, left);
        PeerCounters::add(&counters.failed, left);
        shared.log.log(&format!(
            "peer {}: gave up {left} requests to {}: shutdown before they were sent",
            shared.settings.name, lane.dest
        ));
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One sender thread of one destination.
struct Worker {
    shared: Arc<Shared>,
    lane: Arc<Lane>,
    template: Arc<Template>,
    control: Arc<Control>,
}

enum End {
    Sent,
    Failed(String),
    Expired(String),
}

impl Worker {
    fn run(&self, stop: &Receiver<()>) {
        let mut transport = self.shared.transport.create();
        loop {
            select! {
                recv(self.lane.rx) -> job => match job {
                    Ok(job) => self.process(transport.as_mut(), job),
                    Err(_) => return,
                },
                recv(stop) -> _ => break,
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
            match self.lane.rx.try_recv() {
                Ok(job) => self.process(transport.as_mut(), job),
                Err(_) => return,
            }
        }
        fail_lane_leftovers(&self.shared, &self.lane);
    }

    fn process(&self, transport: &mut dyn Transport, job: Job) {
        let counters = self.shared.counters();
        PeerCounters::inc(&counters.in_flight);
        PeerCounters::dec(&counters.queue_length);
        self.lane.release(job.size);
        let end = catch_unwind(AssertUnwindSafe(|| self.attempts(transport, &job)))
            .unwrap_or_else(|_| End::Failed("internal error (panic) in the sender".into()));
        let (counter, verb, reason) = match &end {
            End::Sent => (&counters.sent, "", ""),
            End::Failed(r) => (&counters.failed, "gave up", r.as_str()),
            End::Expired(r) => (&counters.expired, "expired", r.as_str()),
        };
        PeerCounters::inc(counter);
        PeerCounters::dec(&counters.in_flight);
        if !verb.is_empty() {
            self.shared.log.log(&format!(
                "peer {}: {verb} {} {} to {}: {reason}",
                self.shared.settings.name,
                String::from_utf8_lossy(&job.snap.method),
                String::from_utf8_lossy(&job.snap.url),
                self.lane.dest,
            ));
        }
    }

    fn attempts(&self, transport: &mut dyn Transport, job: &Job) -> End {
        let settings = &self.shared.settings;
        let policy = &settings.policy;
        if self.control.aborted() {
            return End::Failed("shutdown before it was sent".into());
        }
        let prepared = self.template.render(&job.snap, &self.lane.dest);
        let mut attempts = 0;
        loop {
            if self.control.aborted() {
                return End::Failed("shutdown before it was sent".into());
            }
            if policy.is_expired(job.queued_at, Instant::now()) {
                return End::Expired(format!("waited longer than max_age {:?}", policy.max_age));
            }
            attempts += 1;
            let outcome = transport.send(&self.lane.dest, &prepared, settings, &self.control);
            match policy.decide(attempts, job.queued_at, Instant::now(), &outcome) {
                Decision::Sent => return End::Sent,
                Decision::Failed(reason) => return End::Failed(reason),
                Decision::Expired(reason) => return End::Expired(reason),
                Decision::RetryAfter(wait) => {
                    if !self.control.sleep(wait) {
                        return End::Failed(format!("{outcome}; shutdown before the retry"));
                    }
                    // Counted when the retry is about to happen, not when it was planned.
                    PeerCounters::inc(&self.shared.counters().retried);
                }
            }
        }
    }
}

#[cfg(test)]
#[path = "sender_tests.rs"]
mod tests;
