//! The sender: one bounded queue per destination, sender threads that take requests from
//! it, retry them per the policy, and count the results. `enqueue()` does no I/O and takes
//! no lock; the threads follow the VCL temperature (start, drain with a deadline, join).
//!
//! Modelled on tracing-appender's worker: lossy `try_send` with a dropped counter, named
//! threads, a stop signal, and a join bounded in time.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, select, Receiver, RecvTimeoutError, Sender, TrySendError};
use parking_lot::{Condvar, Mutex};

use crate::dest::Destination;
use crate::policy::{Decision, Outcome, RetryPolicy};
use crate::snapshot::{Prepared, Refusal, Snapshot, Template};
use crate::stats::{CounterStore, PeerCounters};

/// Extra time given to threads after the drain deadline: aborting a transfer in progress
/// takes until libcurl's next progress callback.
const JOIN_GRACE: Duration = Duration::from_secs(3);

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

/// A peer's settings, fixed in `vcl_init` except the timeouts of the default peer, which its
/// `peer.set_*timeout()` functions may change after `peer.set()`.
#[derive(Debug)]
pub struct Settings {
    pub name: String,
    pub queue_size: usize,
    pub concurrency: usize,
    pub policy: RetryPolicy,
    pub connect_timeout_ms: AtomicU64,
    pub timeout_ms: AtomicU64,
    pub tls_verify: bool,
    pub ca_file: Option<PathBuf>,
    pub drain_timeout_ms: AtomicU64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            name: "default".into(),
            queue_size: 1000,
            concurrency: 1,
            policy: RetryPolicy::default(),
            connect_timeout_ms: AtomicU64::new(1000),
            timeout_ms: AtomicU64::new(5000),
            tls_verify: true,
            ca_file: None,
            drain_timeout_ms: AtomicU64::new(5000),
        }
    }
}

impl Settings {
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms.load(Ordering::Relaxed))
    }
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }
    pub fn drain_timeout(&self) -> Duration {
        Duration::from_millis(self.drain_timeout_ms.load(Ordering::Relaxed))
    }
}

/// The largest per-attempt timeout accepted: libcurl takes milliseconds as a C `long`.
#[allow(clippy::cast_sign_loss)] // c_long::MAX is positive.
pub const MAX_TIMEOUT_MS: u64 = std::ffi::c_long::MAX as u64;

/// The longest drain accepted. `vcl.discard` may wait for the drain on the CLI thread (up
/// to the drain timeout plus [`JOIN_GRACE`]), and the manager kills the child when a CLI
/// command takes longer than `cli_timeout` (60 s by default).
pub const MAX_DRAIN_TIMEOUT_MS: u64 = 30_000;

/// Checks a drain timeout: 0 (give up what is queued at once) up to [`MAX_DRAIN_TIMEOUT_MS`].
pub fn check_drain_timeout_ms(ms: u64) -> Result<(), String> {
    if ms > MAX_DRAIN_TIMEOUT_MS {
        Err(format!(
            "must be at most {MAX_DRAIN_TIMEOUT_MS} ms (vcl.discard waits for the drain on the \
             CLI, which must answer within cli_timeout)"
        ))
    } else {
        Ok(())
    }
}

/// Checks a connect or total timeout for libcurl, which reads 0 as "wait forever": every
/// wait must be bounded, so at least 1 ms.
pub fn check_timeout_ms(ms: u64) -> Result<(), String> {
    if ms == 0 {
        Err("must be at least 1 ms (0 would mean no timeout)".into())
    } else if ms > MAX_TIMEOUT_MS {
        Err(format!("must be at most {MAX_TIMEOUT_MS} ms"))
    } else {
        Ok(())
    }
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

/// What `enqueue()` did, per destination.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EnqueueReport {
    pub queued: usize,
    /// Destinations whose queue was full, with its capacity.
    pub dropped: Vec<String>,
}

struct Job {
    snap: Arc<Snapshot>,
    queued_at: Instant,
}

struct Lane {
    dest: Arc<Destination>,
    tx: Sender<Job>,
    rx: Receiver<Job>,
}

struct Frozen {
    lanes: Vec<Lane>,
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
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.shared.settings
    }

    pub fn counters(&self) -> &PeerCounters {
        self.shared.counters()
    }

    fn change_setup(&self, f: impl FnOnce(&mut Setup)) -> Result<(), String> {
        if self.frozen.get().is_some() {
            return Err("the peer is already in use; configure it in vcl_init".into());
        }
        f(&mut self.setup.lock());
        Ok(())
    }

    pub fn add_destination(&self, dest: Destination) -> Result<(), String> {
        self.change_setup(|s| s.dests.push(dest))
    }

    /// A fixed header, as bytes: the value is sent exactly as given.
    pub fn set_header(&self, name: &[u8], value: &[u8]) -> Result<(), String> {
        Template::check_set_header(name, value)?;
        self.change_setup(|s| s.template.fixed.push((name.to_vec(), value.to_vec())))
    }

    pub fn unset_header(&self, name: &[u8]) -> Result<(), String> {
        Template::check_fixed(name, b"")?;
        self.change_setup(|s| s.template.unset.push(name.to_vec()))
    }

    /// The destinations and template, fixed from the first use on.
    fn frozen(&self) -> &Frozen {
        self.frozen.get_or_init(|| {
            let setup = std::mem::take(&mut *self.setup.lock());
            let capacity = self.shared.settings.queue_size.max(1);
            let lanes = setup
                .dests
                .into_iter()
                .map(|dest| {
                    let (tx, rx) = bounded(capacity);
                    Lane {
                        dest: Arc::new(dest),
                        tx,
                        rx,
                    }
                })
                .collect();
            Frozen {
                lanes,
                template: Arc::new(setup.template),
            }
        })
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
        let snap = Arc::new(snap);
        let queued_at = Instant::now();
        let mut report = EnqueueReport::default();
        for lane in &frozen.lanes {
            // Counted before the send so that a sender thread never sees it below zero.
            PeerCounters::inc(&counters.queue_length);
            let job = Job {
                snap: Arc::clone(&snap),
                queued_at,
            };
            match lane.tx.try_send(job) {
                Ok(()) => {
                    PeerCounters::inc(&counters.queued);
                    report.queued += 1;
                }
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    PeerCounters::dec(&counters.queue_length);
                    PeerCounters::inc(&counters.dropped);
                    report.dropped.push(format!(
                        "{} (queue full, capacity {})",
                        lane.dest,
                        lane.tx.capacity().unwrap_or(0)
                    ));
                }
            }
        }
        Ok(report)
    }

    /// Requests queued or in flight.
    pub fn pending(&self) -> u64 {
        self.counters().pending()
    }

    /// Starts the sender threads (warm event). Threads of a previous generation that is
    /// still draining are joined first.
    pub fn start(&self) {
        let mut running = self.running.lock();
        if running.as_ref().is_some_and(|g| g.stop.is_some()) {
            return;
        }
        if let Some(old) = running.take() {
            self.join(old);
        }
        let frozen = self.frozen();
        let control = Arc::new(Control::default());
        let (stop_tx, stop_rx) = bounded::<()>(0);
        let (done_tx, done_rx) = bounded::<()>(0);
        let mut handles = Vec::new();
        let settings = &self.shared.settings;
        for (lane_no, lane) in frozen.lanes.iter().enumerate() {
            for thread_no in 0..settings.concurrency.max(1) {
                let worker = Worker {
                    shared: Arc::clone(&self.shared),
                    dest: Arc::clone(&lane.dest),
                    rx: lane.rx.clone(),
                    template: Arc::clone(&frozen.template),
                    control: Arc::clone(&control),
                };
                let stop_rx = stop_rx.clone();
                let done_tx = done_tx.clone();
                let mut name = format!("peer-{lane_no}.{thread_no}-{}", settings.name);
                name.truncate(15);
                let spawned = std::thread::Builder::new().name(name).spawn(move || {
                    let _done = done_tx;
                    worker.run(&stop_rx);
                });
                match spawned {
                    Ok(handle) => handles.push(handle),
                    Err(e) => self.shared.log.log(&format!(
                        "peer {}: cannot start a sender thread for {}: {e}",
                        settings.name, lane.dest
                    )),
                }
            }
        }
        *running = Some(Generation {
            control,
            stop: Some(stop_tx),
            done: done_rx,
            handles,
        });
    }

    /// Cold event: the threads send what is queued until the queues are empty or the
    /// drain timeout has passed, then exit. Does not wait for them.
    pub fn begin_drain(&self) {
        let mut running = self.running.lock();
        if let Some(generation) = running.as_mut() {
            Self::signal_drain(generation, self.shared.settings.drain_timeout());
        }
    }

    fn signal_drain(generation: &mut Generation, drain_timeout: Duration) {
        generation
            .control
            .set_deadline(Instant::now() + drain_timeout);
        generation.stop = None;
    }

    /// Drains (if not already draining) and joins the threads, waiting at most the drain
    /// timeout plus a grace period. Requests still queued afterwards are counted as failed.
    pub fn stop(&self) {
        let generation = self.running.lock().take();
        if let Some(mut generation) = generation {
            if generation.stop.is_some() {
                Self::signal_drain(&mut generation, self.shared.settings.drain_timeout());
            }
            self.join(generation);
        }
        self.fail_leftovers();
    }

    fn join(&self, generation: Generation) {
        let limit = generation
            .control
            .deadline()
            .unwrap_or_else(Instant::now)
            .max(Instant::now())
            + JOIN_GRACE;
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
                    // A thread is stuck in a transfer: it keeps the shared state (and the
                    // counters' memory) alive; never free it under its feet.
                    std::mem::forget(Arc::clone(&self.shared));
                    self.shared.log.log(&format!(
                        "peer {}: a sender thread did not stop in time and was left running",
                        self.shared.settings.name
                    ));
                    return;
                }
            }
        }
    }

    fn fail_leftovers(&self) {
        let Some(frozen) = self.frozen.get() else {
            return;
        };
        let counters = self.counters();
        for lane in &frozen.lanes {
            let left = lane.rx.try_iter().count();
            if left > 0 {
                for _ in 0..left {
                    PeerCounters::dec(&counters.queue_length);
                    PeerCounters::inc(&counters.failed);
                }
                self.shared.log.log(&format!(
                    "peer {}: gave up {left} requests to {}: shutdown before they were sent",
                    self.shared.settings.name, lane.dest
                ));
            }
        }
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
    dest: Arc<Destination>,
    rx: Receiver<Job>,
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
                recv(self.rx) -> job => match job {
                    Ok(job) => self.process(transport.as_mut(), job),
                    Err(_) => return,
                },
                recv(stop) -> _ => break,
            }
        }
        // Draining: what is queued, until the deadline (then `process` gives up at once).
        while let Ok(job) = self.rx.try_recv() {
            self.process(transport.as_mut(), job);
        }
    }

    fn process(&self, transport: &mut dyn Transport, job: Job) {
        let counters = self.shared.counters();
        PeerCounters::inc(&counters.in_flight);
        PeerCounters::dec(&counters.queue_length);
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
                self.dest,
            ));
        }
    }

    fn attempts(&self, transport: &mut dyn Transport, job: &Job) -> End {
        let settings = &self.shared.settings;
        let policy = &settings.policy;
        let prepared = self.template.render(&job.snap, &self.dest);
        let mut attempts = 0;
        loop {
            if self.control.aborted() {
                return End::Failed("shutdown before it was sent".into());
            }
            if policy.is_expired(job.queued_at, Instant::now()) {
                return End::Expired(format!("waited longer than max_age {:?}", policy.max_age));
            }
            attempts += 1;
            let outcome = transport.send(&self.dest, &prepared, settings, &self.control);
            match policy.decide(attempts, job.queued_at, Instant::now(), &outcome) {
                Decision::Sent => return End::Sent,
                Decision::Failed(reason) => return End::Failed(reason),
                Decision::Expired(reason) => return End::Expired(reason),
                Decision::RetryAfter(wait) => {
                    PeerCounters::inc(&self.shared.counters().retried);
                    if !self.control.sleep(wait) {
                        return End::Failed(format!("{outcome}; shutdown before the retry"));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::LocalCounters;
    use std::collections::VecDeque;

    /// A transport that plays scripted outcomes per destination and records what it sent.
    #[derive(Default)]
    struct Script {
        outcomes: Mutex<std::collections::HashMap<String, VecDeque<Outcome>>>,
        sent: Mutex<Vec<(String, Vec<u8>)>>,
        /// Destinations whose transfers block until the deadline (a dead peer).
        hang: Mutex<Vec<String>>,
    }

    struct ScriptTransport(Arc<Script>);

    impl Transport for ScriptTransport {
        fn send(
            &mut self,
            dest: &Destination,
            req: &Prepared,
            _: &Settings,
            control: &Arc<Control>,
        ) -> Outcome {
            let key = dest.to_string();
            if self.0.hang.lock().contains(&key) {
                while !control.aborted() {
                    std::thread::sleep(Duration::from_millis(5));
                }
                return Outcome::Permanent("aborted".into());
            }
            let outcome = self
                .0
                .outcomes
                .lock()
                .get_mut(&key)
                .and_then(VecDeque::pop_front)
                .unwrap_or(Outcome::Status(200));
            self.0.sent.lock().push((key, req.url.clone()));
            outcome
        }
    }

    impl TransportFactory for Arc<Script> {
        fn create(&self) -> Box<dyn Transport> {
            Box::new(ScriptTransport(Arc::clone(self)))
        }
    }

    #[derive(Default)]
    struct Lines(Mutex<Vec<String>>);
    impl EventLog for Lines {
        fn log(&self, line: &str) {
            self.0.lock().push(line.to_string());
        }
    }

    fn peer(settings: Settings, script: &Arc<Script>, log: &Arc<Lines>) -> Peer {
        let template = Template {
            copy_headers: true,
            marker: "t".into(),
            ..Template::default()
        };
        Peer::new(
            settings,
            template,
            Arc::new(LocalCounters::default()),
            Arc::clone(log) as Arc<dyn EventLog>,
            Arc::new(Arc::clone(script)),
        )
    }

    fn fast() -> Settings {
        Settings {
            policy: RetryPolicy {
                max_attempts: 3,
                backoff: Duration::from_millis(1),
                max_backoff: Duration::from_millis(4),
                max_age: Duration::from_secs(30),
            },
            drain_timeout_ms: AtomicU64::new(5000),
            ..Settings::default()
        }
    }

    fn snap(url: &str) -> Snapshot {
        Snapshot {
            method: b"PURGE".to_vec(),
            url: url.as_bytes().to_vec(),
            headers: vec![(b"Host".to_vec(), b"h".to_vec())],
            ..Snapshot::default()
        }
    }

    fn wait_until(what: impl Fn() -> bool) {
        let end = Instant::now() + Duration::from_secs(10);
        while !what() {
            assert!(Instant::now() < end, "condition not reached in 10 s");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn fifo_per_destination_and_pending_drains() {
        let script = Arc::new(Script::default());
        let log = Arc::new(Lines::default());
        let p = peer(fast(), &script, &log);
        p.add_destination(Destination::parse("a", 1).unwrap())
            .unwrap();
        for i in 0..50 {
            p.enqueue(snap(&format!("/{i}"))).unwrap();
        }
        assert_eq!(p.pending(), 50);
        p.start();
        wait_until(|| p.pending() == 0);
        let urls: Vec<String> = script
            .sent
            .lock()
            .iter()
            .map(|(_, u)| String::from_utf8_lossy(u).into_owned())
            .collect();
        let expect: Vec<String> = (0..50).map(|i| format!("http://a:1/{i}")).collect();
        assert_eq!(urls, expect);
        assert_eq!(p.counters().sent.load(Ordering::Relaxed), 50);
        assert_eq!(p.counters().queued.load(Ordering::Relaxed), 50);
    }

    #[test]
    fn retries_keep_order_then_fail() {
        let script = Arc::new(Script::default());
        script.outcomes.lock().insert(
            "http://a:1".into(),
            VecDeque::from([Outcome::Transient("refused".into()), Outcome::Status(503)]),
        );
        script.outcomes.lock().insert(
            "http://b:1".into(),
            VecDeque::from(vec![Outcome::Status(500); 3]),
        );
        let log = Arc::new(Lines::default());
        let p = peer(fast(), &script, &log);
        p.add_destination(Destination::parse("a", 1).unwrap())
            .unwrap();
        p.add_destination(Destination::parse("b", 1).unwrap())
            .unwrap();
        p.enqueue(snap("/1")).unwrap();
        p.enqueue(snap("/2")).unwrap();
        p.start();
        wait_until(|| p.pending() == 0);
        let c = p.counters();
        assert_eq!(c.retried.load(Ordering::Relaxed), 4);
        assert_eq!(c.sent.load(Ordering::Relaxed), 3);
        assert_eq!(c.failed.load(Ordering::Relaxed), 1);
        let to_a: Vec<Vec<u8>> = script
            .sent
            .lock()
            .iter()
            .filter(|(d, _)| d == "http://a:1")
            .map(|(_, u)| u.clone())
            .collect();
        assert_eq!(
            to_a,
            vec![
                b"http://a:1/1".to_vec(),
                b"http://a:1/1".to_vec(),
                b"http://a:1/1".to_vec(),
                b"http://a:1/2".to_vec()
            ]
        );
        let lines = log.0.lock();
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].contains("gave up PURGE /1 to http://b:1"),
            "{lines:?}"
        );
    }

    #[test]
    fn full_queue_drops_without_waiting() {
        let script = Arc::new(Script::default());
        let log = Arc::new(Lines::default());
        let p = peer(
            Settings {
                queue_size: 2,
                ..fast()
            },
            &script,
            &log,
        );
        p.add_destination(Destination::parse("a", 1).unwrap())
            .unwrap();
        let mut dropped = 0;
        for i in 0..5 {
            dropped += p.enqueue(snap(&format!("/{i}"))).unwrap().dropped.len();
        }
        assert_eq!(dropped, 3);
        assert_eq!(p.counters().dropped.load(Ordering::Relaxed), 3);
        assert_eq!(p.pending(), 2);
    }

    #[test]
    fn refused_and_no_destination() {
        let script = Arc::new(Script::default());
        let log = Arc::new(Lines::default());
        let p = peer(fast(), &script, &log);
        assert_eq!(p.enqueue(snap("/")), Err(EnqueueError::NoDestination));
        let mut bad = snap("/");
        bad.headers.push((b"X".to_vec(), b"a\nb".to_vec()));
        assert!(matches!(p.enqueue(bad), Err(EnqueueError::Refused(_))));
        assert_eq!(p.counters().refused.load(Ordering::Relaxed), 1);
        assert!(p
            .add_destination(Destination::parse("a", 1).unwrap())
            .is_err());
    }

    #[test]
    fn dead_destination_does_not_delay_the_others_and_stop_is_bounded() {
        let script = Arc::new(Script::default());
        script.hang.lock().push("http://dead:1".into());
        let log = Arc::new(Lines::default());
        let p = peer(
            Settings {
                drain_timeout_ms: AtomicU64::new(200),
                ..fast()
            },
            &script,
            &log,
        );
        p.add_destination(Destination::parse("dead", 1).unwrap())
            .unwrap();
        p.add_destination(Destination::parse("live", 1).unwrap())
            .unwrap();
        p.start();
        for i in 0..10 {
            p.enqueue(snap(&format!("/{i}"))).unwrap();
        }
        wait_until(|| p.counters().sent.load(Ordering::Relaxed) == 10);
        assert_eq!(p.pending(), 10);
        let started = Instant::now();
        p.stop();
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(p.pending(), 0);
        assert_eq!(p.counters().failed.load(Ordering::Relaxed), 10);
    }

    #[test]
    fn cold_drains_then_warm_restarts() {
        let script = Arc::new(Script::default());
        let log = Arc::new(Lines::default());
        let p = peer(fast(), &script, &log);
        p.add_destination(Destination::parse("a", 1).unwrap())
            .unwrap();
        p.start();
        p.enqueue(snap("/1")).unwrap();
        p.begin_drain();
        wait_until(|| p.pending() == 0);
        p.start();
        p.enqueue(snap("/2")).unwrap();
        wait_until(|| p.counters().sent.load(Ordering::Relaxed) == 2);
        p.stop();
    }

    /// Each send waits on a 4-party barrier: only 4 requests in flight at once get through.
    struct Together(Arc<std::sync::Barrier>);
    impl Transport for Together {
        fn send(
            &mut self,
            _: &Destination,
            _: &Prepared,
            _: &Settings,
            _: &Arc<Control>,
        ) -> Outcome {
            self.0.wait();
            Outcome::Status(204)
        }
    }
    impl TransportFactory for Arc<std::sync::Barrier> {
        fn create(&self) -> Box<dyn Transport> {
            Box::new(Together(Arc::clone(self)))
        }
    }

    #[test]
    fn concurrency_puts_several_requests_in_flight() {
        let barrier = Arc::new(std::sync::Barrier::new(4));
        let p = Peer::new(
            Settings {
                concurrency: 4,
                ..fast()
            },
            Template::default(),
            Arc::new(LocalCounters::default()),
            Arc::new(Lines::default()),
            Arc::new(barrier),
        );
        p.add_destination(Destination::parse("a", 1).unwrap())
            .unwrap();
        p.start();
        for i in 0..8 {
            p.enqueue(snap(&format!("/{i}"))).unwrap();
        }
        wait_until(|| p.counters().sent.load(Ordering::Relaxed) == 8);
        p.stop();
    }

    #[test]
    fn zero_timeout_is_refused_because_libcurl_would_wait_forever() {
        assert!(check_timeout_ms(0).unwrap_err().contains("at least 1 ms"));
        assert!(check_timeout_ms(1).is_ok());
        assert!(check_timeout_ms(MAX_TIMEOUT_MS).is_ok());
        assert!(check_timeout_ms(MAX_TIMEOUT_MS + 1).is_err());
    }

    #[test]
    fn drain_timeout_stays_below_the_cli_timeout() {
        assert!(check_drain_timeout_ms(0).is_ok());
        assert!(check_drain_timeout_ms(MAX_DRAIN_TIMEOUT_MS).is_ok());
        assert!(check_drain_timeout_ms(MAX_DRAIN_TIMEOUT_MS + 1)
            .unwrap_err()
            .contains("cli_timeout"));
    }

    #[test]
    fn control_sleep_stops_at_the_deadline() {
        let c = Control::default();
        c.set_deadline(Instant::now() + Duration::from_millis(20));
        let started = Instant::now();
        assert!(!c.sleep(Duration::from_secs(5)));
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(c.aborted());
    }
}
