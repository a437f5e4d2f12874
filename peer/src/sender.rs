//! The sender: one queue per destination, bounded in requests and in bytes, sender threads
//! that take requests from it, retry them per the policy, and count the results.
//! `enqueue()` does no I/O and takes no lock but the read side of the lanes' `RwLock`, held
//! while it queues to each lane (a few atomic operations per lane, never a wait); the threads follow the VCL temperature (start, drain with a deadline,
//! join), one crew per lane (`crew.rs`), so that lanes can be added and retired while the
//! peer runs (`sender_lanes.rs`, for DNS discovery).
//!
//! Modelled on tracing-appender's worker: lossy `try_send` with a dropped counter, named
//! threads, a stop signal, and a join bounded in time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use crate::batch::BatchSpec;
use crate::config::Settings;
use crate::crew::Crew;
use crate::dest::Destination;
use crate::deststate::{label_for, DestState, NameError};
use crate::policy::Outcome;
use crate::report::{peer_json, DestReport};
use crate::snapshot::{HeaderError, Prepared, Refusal, Snapshot, Template};
use crate::stats::{CounterStore, PeerCounters, Tally};
pub use crate::worker::Control;
use crate::worker::{drop_line, fail_lane_leftovers, Job, Lane, QueueFull, Shared};

/// Extra time given to threads after the drain deadline: aborting a transfer in progress
/// takes until libcurl's next progress check (0.1 s).
pub const JOIN_GRACE: Duration = Duration::from_secs(3);

/// How long a warm event waits for the threads of the generation it replaces: they are
/// aborted, so they stop at libcurl's next progress check (0.1 s). A thread still running
/// after that is left to finish detached; the request it held goes back to its queue.
pub const RESTART_JOIN: Duration = Duration::from_secs(2);

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

    /// A sender thread did not stop in time and keeps running detached. In varnishd its code
    /// must stay mapped after the VCL (and maybe the module) is discarded.
    fn thread_left_running(&self, line: &str) {
        self.log(line);
    }
}

/// Starts a named thread (`std::thread::Builder` in production; tests make it fail).
pub type Spawn = fn(String, Box<dyn FnOnce() + Send>) -> std::io::Result<JoinHandle<()>>;

fn spawn_thread(name: String, f: Box<dyn FnOnce() + Send>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(name).spawn(f)
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
    Name(NameError),
}

impl std::fmt::Display for SetupError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SetupError::InUse => {
                f.write_str("the peer is already in use; configure it in vcl_init")
            }
            SetupError::Header(e) => e.fmt(f),
            SetupError::Name(e) => e.fmt(f),
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
    /// The line to log for each destination whose queue was full
    /// ([`crate::worker::drop_line`]).
    pub dropped: Vec<String>,
}

struct Frozen {
    /// The lanes requests are queued to. Replaced as a whole when a lane is added or
    /// retired, so that `enqueue()` only holds an uncontended read lock while it queues.
    lanes: RwLock<Arc<Vec<Arc<Lane>>>>,
    template: Arc<Template>,
}

/// One generation of sender threads (from a warm event to the next cold one): a crew per
/// lane.
struct Generation {
    /// Not told to drain yet: a lane added now gets its threads at once.
    warm: bool,
    crews: Vec<(Arc<Lane>, Crew)>,
}

/// A lane taken out of the peer's lanes, draining, until it is ended (see
/// [`Peer::reap_retired`]).
struct Retired {
    lane: Arc<Lane>,
    /// Its threads, if it had any (none when retired while the peer was not running).
    crew: Option<Crew>,
}

/// What a stopping peer still has to join (see [`Peer::begin_stop`]).
pub struct Stopping {
    generation: Option<Generation>,
    retired: Vec<Retired>,
}

impl Stopping {
    /// When its threads stop attempting anything.
    pub fn deadline(&self) -> Option<Instant> {
        let crews = self
            .generation
            .iter()
            .flat_map(|g| g.crews.iter().map(|(_, c)| c));
        let retired = self.retired.iter().filter_map(|r| r.crew.as_ref());
        crews.chain(retired).filter_map(Crew::deadline).max()
    }
}

#[derive(Default)]
struct Setup {
    dests: Vec<(Destination, DestState)>,
    template: Template,
}

/// A peer: its destinations, their queues, and the sender threads.
pub struct Peer {
    shared: Arc<Shared>,
    setup: Mutex<Setup>,
    frozen: OnceLock<Frozen>,
    running: Mutex<Option<Generation>>,
    retired: Mutex<Vec<Retired>>,
    /// Serializes what changes the lanes or their threads (temperature events, lanes added
    /// and retired by discovery): held across a restart's join, never by `enqueue()`.
    changes: Mutex<()>,
    /// Numbers lanes in thread names.
    serial: AtomicUsize,
    spawn: Spawn,
    /// Names re-resolved while the VCL is warm (`discover.rs`).
    discoveries: Mutex<Vec<crate::discover::Discovery>>,
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
            retired: Mutex::new(Vec::new()),
            changes: Mutex::new(()),
            serial: AtomicUsize::new(0),
            spawn: spawn_thread,
            discoveries: Mutex::new(Vec::new()),
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
        self.add_named_destination(dest, "")
    }

    /// Adds `dest` under the label `name`, or one made from its host and port when empty.
    pub fn add_named_destination(&self, dest: Destination, name: &str) -> Result<(), SetupError> {
        if self.frozen.get().is_some() {
            return Err(SetupError::InUse);
        }
        let mut setup = self.setup.lock();
        let taken: Vec<&str> = setup.dests.iter().map(|(_, s)| s.label.as_str()).collect();
        let label = label_for(&dest, name, &taken).map_err(SetupError::Name)?;
        let state = self.dest_state(label);
        setup.dests.push((dest, state));
        Ok(())
    }

    /// A new destination's state: its counters (a VSC segment in varnishd) and gate. For
    /// every destination, configured or discovered (see `sender_lanes.rs`).
    fn dest_state(&self, label: String) -> DestState {
        let counters = self.shared.counters.destination(&label);
        DestState::new(label, counters, &self.shared.settings.gate, Instant::now())
    }

    /// Replaces every destination by `dest` (`peer.set()` called again).
    pub fn replace_destinations(&self, dest: Destination) -> Result<(), SetupError> {
        self.change_setup(|s| s.dests.clear())?;
        self.add_destination(dest)
    }

    /// The state of every destination as JSON (`x.report()`).
    pub fn report_json(&self, out: &mut String) {
        let names: Vec<_> = self.discoveries.lock().iter().map(|d| d.report()).collect();
        peer_json(out, self.name(), &self.destinations(), &names);
    }

    /// The state of every destination, without freezing the setup (destinations retired
    /// and still draining are not shown).
    pub fn destinations(&self) -> Vec<DestReport> {
        let now = Instant::now();
        match self.frozen.get() {
            Some(frozen) => (frozen.lanes.read().iter())
                .map(|l| DestReport::of(&l.state, &l.dest, now))
                .collect(),
            None => (self.setup.lock().dests.iter())
                .map(|(dest, state)| DestReport::of(state, dest, now))
                .collect(),
        }
    }

    /// A fixed header, as bytes: the value is sent exactly as given.
    pub fn set_header(&self, name: &[u8], value: &[u8]) -> Result<(), SetupError> {
        Template::check_set_header(name, value).map_err(SetupError::Header)?;
        self.change_setup(|s| s.template.fixed.push((name.to_vec(), value.to_vec())))
    }

    /// Makes this a batch peer (`x.set_batch()`).
    pub fn set_batch(&self, spec: BatchSpec) -> Result<(), SetupError> {
        self.change_setup(|s| s.template.batch = Some(Arc::new(spec)))
    }

    /// The call of a batch peer (fixed from the first use on, like the destinations).
    pub fn batch(&self) -> Option<&BatchSpec> {
        self.frozen().template.batch.as_deref()
    }

    pub fn unset_header(&self, name: &[u8]) -> Result<(), SetupError> {
        Template::check_fixed(name, b"").map_err(SetupError::Header)?;
        self.change_setup(|s| s.template.unset.push(name.to_vec()))
    }

    /// True when the peer has a destination (it is configured from then on).
    pub fn has_destination(&self) -> bool {
        self.with_lanes(|lanes| !lanes.is_empty())
    }

    /// True when at least one destination queue has room: otherwise a caller need not
    /// even take a snapshot ([`Peer::drop_all`] counts the loss).
    pub fn has_room(&self) -> bool {
        self.with_lanes(|lanes| {
            lanes.is_empty()
                || lanes
                    .iter()
                    .any(|l| l.full(&self.shared.settings).is_none())
        })
    }

    /// Counts a request dropped for every destination, without a snapshot, and hands `log`
    /// each destination's line (made once per lane: no allocation per drop).
    pub fn drop_all(&self, mut log: impl FnMut(&str)) {
        let counters = self.counters();
        let settings = &self.shared.settings;
        self.with_lanes(|lanes| {
            for lane in lanes {
                PeerCounters::inc(&counters.dropped);
                lane.state.counters().tally(Tally::Dropped);
                log(lane.full_lines(settings).line(lane.full(settings)));
            }
        });
    }

    /// Queues `snap` for every destination. Never blocks: a full queue drops the request
    /// for that destination.
    pub fn enqueue(&self, snap: Snapshot) -> Result<EnqueueReport, EnqueueError> {
        let counters = self.counters();
        if let Err(refusal) = snap.validate() {
            PeerCounters::inc(&counters.refused);
            return Err(EnqueueError::Refused(refusal));
        }
        self.with_lanes(|lanes| self.enqueue_on(lanes, snap))
    }

    fn enqueue_on(
        &self,
        lanes: &[Arc<Lane>],
        snap: Snapshot,
    ) -> Result<EnqueueReport, EnqueueError> {
        let counters = self.counters();
        if lanes.is_empty() {
            return Err(EnqueueError::NoDestination);
        }
        let size = snap.size();
        let mut report = EnqueueReport::default();
        let settings = &self.shared.settings;
        for lane in lanes {
            if let Err(why) = lane.reserve(size, settings) {
                PeerCounters::inc(&counters.dropped);
                lane.state.counters().tally(Tally::Dropped);
                report.dropped.push(match why {
                    QueueFull::NoRoomFor { .. } => drop_line(&settings.name, &lane.dest, &why),
                    _ => lane.full_lines(settings).line(Some(why)).to_owned(),
                });
                continue;
            }
            // Counted before the send so that a sender thread never sees it below zero.
            PeerCounters::inc(&counters.queue_length);
            let job = Job { snap: snap.clone() };
            // The receiver lives as long as the lane: a send cannot fail.
            PeerCounters::inc(&lane.state.counters().queue_length);
            if lane.tx.send(job).is_ok() {
                PeerCounters::inc(&counters.queued);
                lane.state.counters().tally(Tally::Queued);
                report.queued += 1;
            } else {
                lane.release(size);
                PeerCounters::dec(&counters.queue_length);
                PeerCounters::inc(&counters.dropped);
                PeerCounters::dec(&lane.state.counters().queue_length);
                lane.state.counters().tally(Tally::Dropped);
                report
                    .dropped
                    .push(drop_line(&settings.name, &lane.dest, &"queue closed"));
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

    /// Starts the sender threads (warm event). A previous generation still draining is
    /// aborted at once and joined for at most [`RESTART_JOIN`], without holding the
    /// `running` lock: the warm event answers promptly on the CLI, and what it had not sent
    /// stays queued (the request in flight goes back to the head of its queue) for the new
    /// threads. If a thread cannot be started, those already started are stopped and the
    /// error returned. Lanes retired earlier keep draining on their own.
    pub fn start(&self) -> Result<(), StartError> {
        let _changes = self.changes.lock();
        let old = {
            let mut running = self.running.lock();
            if running.as_ref().is_some_and(|g| g.warm) {
                return Ok(());
            }
            running.take()
        };
        if let Some(old) = old {
            self.stop_generation(old);
        }
        let generation = self.spawn_generation()?;
        let replaced = self.running.lock().replace(generation);
        // `changes` is held: nothing else starts a generation.
        if let Some(other) = replaced {
            self.stop_generation(other);
        }
        Ok(())
    }

    fn spawn_generation(&self) -> Result<Generation, StartError> {
        let mut generation = Generation {
            warm: true,
            crews: Vec::new(),
        };
        for lane in self.lanes().iter() {
            match self.spawn_crew(lane) {
                Ok(crew) => generation.crews.push((Arc::clone(lane), crew)),
                Err(e) => {
                    self.stop_generation(generation);
                    return Err(e);
                }
            }
        }
        Ok(generation)
    }

    fn spawn_crew(&self, lane: &Arc<Lane>) -> Result<Crew, StartError> {
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let template = &self.frozen().template;
        Crew::spawn(&self.shared, lane, template, serial, self.spawn)
    }

    /// Stops a generation that is being replaced or could not start in full: at once, and
    /// without giving up its queues (the next generation, or the discard, takes them).
    fn stop_generation(&self, generation: Generation) {
        let crews = generation.crews.into_iter().map(|(_, mut crew)| {
            crew.abort_for_restart();
            crew
        });
        self.join(crews, Some(Instant::now() + RESTART_JOIN));
    }

    /// Cold event: the threads send what is queued until the queues are empty or the
    /// drain timeout has passed, then exit. Does not wait for them.
    pub fn begin_drain(&self) {
        let _changes = self.changes.lock();
        if let Some(generation) = self.running.lock().as_mut() {
            self.signal_drain(generation);
        }
    }

    fn signal_drain(&self, generation: &mut Generation) {
        generation.warm = false;
        for (_, crew) in &mut generation.crews {
            crew.drain(self.shared.settings.drain_timeout);
        }
    }

    /// Tells the threads to drain (if not already draining) and hands back what to join:
    /// several peers are stopped together this way (see [`Peer::finish_stop`]).
    pub fn begin_stop(&self) -> Stopping {
        let _changes = self.changes.lock();
        let generation = self.running.lock().take().map(|mut g| {
            self.signal_drain(&mut g);
            g
        });
        Stopping {
            generation,
            retired: std::mem::take(&mut *self.retired.lock()),
        }
    }

    /// Joins the threads of `stopping`, waiting at most until `limit` (by default its
    /// deadline plus [`JOIN_GRACE`]); then counts what is still queued as failed, in bulk.
    pub fn finish_stop(&self, stopping: Stopping, limit: Option<Instant>) {
        let limit = limit.unwrap_or_else(|| {
            stopping
                .deadline()
                .unwrap_or_else(Instant::now)
                .max(Instant::now())
                + JOIN_GRACE
        });
        let mut retired = stopping.retired;
        let crews = stopping.generation.into_iter().flat_map(|g| g.crews);
        let crews = crews.map(|(_, crew)| crew);
        let retired_crews = retired.iter_mut().filter_map(|r| r.crew.take());
        self.join(crews.chain(retired_crews), Some(limit));
        for r in retired {
            self.end_lane(r.lane);
        }
        for lane in self.lanes().iter() {
            fail_lane_leftovers(&self.shared, lane);
        }
    }

    /// Drains (if not already draining) and joins the threads, waiting at most the drain
    /// timeout plus a grace period. Requests still queued afterwards are counted as failed.
    pub fn stop(&self) {
        let stopping = self.begin_stop();
        self.finish_stop(stopping, None);
    }

    /// Joins `crews`, all within `limit` (by default the latest deadline plus
    /// [`JOIN_GRACE`]). A thread stuck in a transfer holds its own references to the shared
    /// state: it is left to finish detached (logged once), and the counters (the VSC
    /// segment) are freed when it lets go, not leaked.
    fn join(&self, crews: impl Iterator<Item = Crew>, limit: Option<Instant>) {
        let crews: Vec<Crew> = crews.collect();
        let limit = limit.unwrap_or_else(|| {
            crews
                .iter()
                .filter_map(Crew::deadline)
                .max()
                .unwrap_or_else(Instant::now)
                .max(Instant::now())
                + JOIN_GRACE
        });
        let mut all_joined = true;
        for crew in crews {
            all_joined &= crew.join(limit);
        }
        if !all_joined {
            self.shared.log.thread_left_running(&format!(
                "peer {}: a sender thread did not stop in time and was left to finish",
                self.shared.settings.name
            ));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[path = "sender_lanes.rs"]
mod lanes;

#[cfg(test)]
#[path = "sender_tests.rs"]
pub(crate) mod tests;

#[cfg(test)]
#[path = "sender_gate_tests.rs"]
mod gate_tests;
