//! The thread that re-resolves a peer's discovered names while the VCL is warm and applies
//! the answers ([`crate::discover::Discovery::update`] decides) to the peer's lanes. It
//! holds only a `Weak` reference to the peer (a resolver stuck after a discard keeps
//! nothing alive), resolves without any lock, and changes lanes one at a time under a short
//! lock that [`Discoverer::signal`] takes: the CLI thread never waits for a resolution.

use std::net::IpAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use crate::discover::{added_line, retired_line, Discovery, Resolver, Update, MAX_REFRESH};
use crate::sender::Peer;

/// How often the discovery thread looks for retired destinations whose drain has ended.
const REAP_POLL: Duration = Duration::from_millis(200);

/// True once signalled; held while the thread changes one lane.
type StopGate = Mutex<bool>;

/// The thread that re-resolves a peer's names while the VCL is warm.
pub struct Discoverer {
    peer: Arc<Peer>,
    stop: Arc<StopGate>,
    /// Dropped to wake the thread up (it then sees `stop`).
    wake: Option<Sender<()>>,
    handle: JoinHandle<()>,
}

impl Discoverer {
    /// Starts the thread for `peer`, or nothing when it has no name to discover.
    pub fn start(
        peer: &Arc<Peer>,
        resolver: Arc<dyn Resolver>,
    ) -> std::io::Result<Option<Discoverer>> {
        if peer.discoveries().lock().is_empty() {
            return Ok(None);
        }
        let stop = Arc::new(Mutex::new(false));
        let (wake_tx, wake_rx) = bounded::<()>(0);
        let mut name = format!("peer-dns-{}", peer.name());
        name.truncate(15);
        let handle = {
            let (weak, stop) = (Arc::downgrade(peer), Arc::clone(&stop));
            std::thread::Builder::new()
                .name(name)
                .spawn(move || run(&weak, resolver.as_ref(), &stop, &wake_rx))?
        };
        Ok(Some(Discoverer {
            peer: Arc::clone(peer),
            stop,
            wake: Some(wake_tx),
            handle,
        }))
    }

    /// Tells the thread to stop. Returns once it adds or retires no lane any more: it waits
    /// at most for the one lane change in progress (starting that lane's threads), never for
    /// a resolution (whose answer is then ignored). The thread then only ends the lanes it
    /// had retired, as their drains end, and exits.
    pub fn signal(&mut self) {
        *self.stop.lock() = true;
        self.wake = None;
    }

    /// Signals the thread and waits for it until `limit`. A thread still stuck in the
    /// resolver then is left to finish (logged); it changes nothing any more, and holds no
    /// reference to the peer while it resolves.
    pub fn join(mut self, limit: Instant) {
        self.signal();
        while !self.handle.is_finished() && Instant::now() < limit {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.handle.is_finished() {
            let _ = self.handle.join();
        } else {
            self.peer.thread_left_running(&format!(
                "peer {}: the DNS discovery thread is still resolving and was left to finish",
                self.peer.name()
            ));
        }
    }

    /// True once the thread has exited.
    pub fn finished(&self) -> bool {
        self.handle.is_finished()
    }
}

fn run(peer: &Weak<Peer>, resolver: &dyn Resolver, stop: &StopGate, wake: &Receiver<()>) {
    loop {
        let Some(until) = peer.upgrade().map(|p| next_wakeup(&p)) else {
            return;
        };
        match wake.recv_deadline(until) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => break,
        }
        if *stop.lock() {
            break;
        }
        let refreshed = catch_unwind(AssertUnwindSafe(|| refresh_due(peer, resolver, stop)));
        if let Err(panic) = refreshed {
            if let Some(p) = peer.upgrade() {
                p.log(&format!(
                    "peer {}: DNS discovery stopped by an internal error ({}); the current \
                     destinations are kept",
                    p.name(),
                    vmod_rt::guard::panic_text(panic.as_ref())
                ));
            }
            break;
        }
    }
    // Signalled (cold event): lanes retired before still drain; end them as they finish, so
    // that their leftovers and counters do not wait for the next warm event or the discard
    // (which takes them over: then there is nothing left here).
    while let Some(p) = peer.upgrade() {
        if p.reap_retired() == 0 {
            return;
        }
        drop(p);
        std::thread::sleep(REAP_POLL);
    }
}

/// When the next name is due, or sooner while retired lanes drain.
fn next_wakeup(peer: &Peer) -> Instant {
    let now = Instant::now();
    let next = peer.discoveries().lock().iter().map(Discovery::next).min();
    let mut until = next.unwrap_or(now + MAX_REFRESH);
    if peer.reap_retired() > 0 {
        until = until.min(now + REAP_POLL);
    }
    until
}

/// Resolves the names that are due (holding no lock and no reference to the peer) and
/// applies the answers.
pub(crate) fn refresh_due(peer: &Weak<Peer>, resolver: &dyn Resolver, stop: &StopGate) {
    let now = Instant::now();
    let Some(due) = peer.upgrade().map(|p| {
        let discoveries = p.discoveries().lock();
        let due = discoveries
            .iter()
            .enumerate()
            .filter(|(_, d)| d.next() <= now);
        due.map(|(i, d)| {
            (
                i,
                d.name().bare_host().to_string(),
                d.name().port,
                d.family(),
            )
        })
        .collect::<Vec<_>>()
    }) else {
        return;
    };
    for (i, host, port, family) in due {
        let answer = resolver.resolve(&host, port, family);
        let Some(p) = peer.upgrade() else {
            return;
        };
        if *stop.lock() {
            return;
        }
        let update = match p.discoveries().lock().get_mut(i) {
            Some(d) => d.update(answer, Instant::now()),
            None => continue,
        };
        for line in &update.lines {
            p.log(line);
        }
        let (not_added, not_retired) = apply(&p, update, stop);
        if !not_added.is_empty() || !not_retired.is_empty() {
            if let Some(d) = p.discoveries().lock().get_mut(i) {
                d.not_applied(&not_added, &not_retired);
            }
        }
    }
}

/// Adds, then retires, one lane at a time under the stop gate. After a failure to add, the
/// other additions and every retirement wait for the next refresh: a name never loses an
/// address to one that could not be added. Returns the addresses added and retired not.
fn apply(peer: &Peer, update: Update, stop: &StopGate) -> (Vec<IpAddr>, Vec<IpAddr>) {
    let address = |d: &crate::dest::Destination| d.address;
    let mut not_added: Vec<IpAddr> = Vec::new();
    let mut failed = None;
    for dest in update.add {
        let gate = stop.lock();
        if *gate || failed.is_some() {
            not_added.extend(address(&dest));
            continue;
        }
        match peer.add_lane(dest.clone()) {
            Ok(()) => peer.log(&added_line(peer.name(), &dest)),
            Err(e) => {
                not_added.extend(address(&dest));
                failed = Some(e);
            }
        }
    }
    let mut not_retired: Vec<IpAddr> = Vec::new();
    if let Some(e) = failed {
        not_retired = update.retire.iter().filter_map(address).collect();
        peer.log(&format!(
            "{e}; {} new addresses and {} retirements wait for the next refresh",
            not_added.len(),
            not_retired.len()
        ));
        return (not_added, not_retired);
    }
    for dest in update.retire {
        let gate = stop.lock();
        // Never the last lane: a peer keeps a destination whatever DNS says.
        if *gate || peer.lane_count() <= 1 {
            not_retired.extend(address(&dest));
            continue;
        }
        if peer.retire_lane(&dest) {
            peer.log(&retired_line(peer.name(), &dest));
        }
        drop(gate);
    }
    (not_added, not_retired)
}
