//! What one VCL owns: its named peers and its default peer (an ordinary [`Peer`] named
//! `default`, configured by `peer.set()` and `peer.set_*timeout()`), and how they follow the
//! VCL temperature. Plain Rust: the FFI layer hands it arguments and events.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};

use crate::config::{settings_from, ConfigError, PeerArgs};
use crate::dest::Destination;
use crate::discover::{Discoverer, Resolver, SystemResolver};
use crate::sender::{
    EnqueueError, EventLog, Peer, SetupError, StartError, TransportFactory, JOIN_GRACE,
};
use crate::snapshot::{Snapshot, SnapshotError, Template};
use crate::stats::CounterStore;

/// What peers need from their environment: counters (VSC segments in varnishd), a log, a
/// transport.
pub trait Services: Send + Sync {
    fn counters(&self, vcl: &str, peer: &str) -> Arc<dyn CounterStore>;
    fn log(&self) -> Arc<dyn EventLog>;
    fn transport(&self) -> Arc<dyn TransportFactory>;
    /// How names of discovered destinations are resolved at run time.
    fn resolver(&self) -> Arc<dyn Resolver> {
        Arc::new(SystemResolver)
    }
}

/// The timeouts of the default peer set by `peer.set_*timeout(ms)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultTimeout {
    Connect,
    Total,
    Drain,
}

/// Why a call configuring the default peer failed.
#[derive(Debug, Clone, PartialEq)]
pub enum DefaultPeerError {
    Config(ConfigError),
    Setup(SetupError),
}

impl std::fmt::Display for DefaultPeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DefaultPeerError::Config(e) => e.fmt(f),
            DefaultPeerError::Setup(e) => e.fmt(f),
        }
    }
}

/// A refused `ms` argument of `peer.set_*timeout()`: the duration's error, in ms.
#[derive(Debug, Clone, PartialEq)]
pub struct MsError {
    pub ms: i64,
    pub error: ConfigError,
}

impl std::fmt::Display for MsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.ms;
        match &self.error {
            ConfigError::Negative { .. } => write!(f, "ms must not be negative ({ms})"),
            ConfigError::Zero { would, .. } => {
                write!(f, "ms must be at least 1 ms (0 would {would}) ({ms})")
            }
            ConfigError::TooLong { max, why, .. } => {
                write!(f, "ms must be at most {} ms{why} ({ms})", max.as_millis())
            }
            other => write!(f, "ms {ms}: {other}"),
        }
    }
}

/// The default peer: its arguments (changed in `vcl_init`), then the peer made from them.
struct DefaultPeer {
    args: PeerArgs,
    dest: Option<Destination>,
}

/// The peers of one VCL.
pub struct VclPeers {
    vcl_name: String,
    marker: String,
    services: Arc<dyn Services>,
    default_setup: Mutex<DefaultPeer>,
    default: RwLock<Option<Arc<Peer>>>,
    named: RwLock<Vec<Arc<Peer>>>,
    /// The threads re-resolving discovered names: started warm, signalled cold, joined at
    /// the next warm event (when done) or at the discard.
    discoverers: Mutex<Vec<Discoverer>>,
}

/// How long a discard waits at least for discovery threads it signalled (they exit at
/// once unless the resolver holds them).
const DISCOVERY_JOIN: std::time::Duration = std::time::Duration::from_millis(500);

/// The name of the default peer in counters and log lines.
pub const DEFAULT_PEER: &str = "default";

impl VclPeers {
    pub fn new(vcl_name: &str, marker: &str, services: Arc<dyn Services>) -> Self {
        VclPeers {
            vcl_name: vcl_name.to_string(),
            marker: marker.to_string(),
            services,
            default_setup: Mutex::new(DefaultPeer {
                args: PeerArgs::default(),
                dest: None,
            }),
            default: RwLock::new(None),
            named: RwLock::new(Vec::new()),
            discoverers: Mutex::new(Vec::new()),
        }
    }

    /// A peer made from `args` (not yet registered).
    fn make_peer(&self, name: &str, args: &PeerArgs) -> Result<Peer, ConfigError> {
        let settings = settings_from(name, args)?;
        let template = Template {
            copy_headers: settings.copy_headers,
            credentials: settings.credentials,
            marker: self.marker.clone(),
            ..Template::default()
        };
        Ok(Peer::new(
            settings,
            template,
            self.services.counters(&self.vcl_name, name),
            self.services.log(),
            self.services.transport(),
        ))
    }

    /// `new name = peer.peer(args)`.
    pub fn new_peer(&self, name: &str, args: &PeerArgs) -> Result<Arc<Peer>, ConfigError> {
        let peer = Arc::new(self.make_peer(name, args)?);
        self.named.write().push(Arc::clone(&peer));
        Ok(peer)
    }

    /// `peer.set(host, port)`: the destination of the default peer (replacing an earlier one).
    pub fn set_default_destination(&self, dest: Destination) {
        self.default_setup.lock().dest = Some(dest);
    }

    /// `peer.set_*timeout(ms)`: checked at once, with the bounds of `peer.peer()`'s
    /// arguments.
    pub fn set_default_timeout(&self, which: DefaultTimeout, ms: i64) -> Result<(), MsError> {
        let mut setup = self.default_setup.lock();
        let mut args = setup.args.clone();
        // i64 -> f64 is exact up to 2^53 ms; anything near that is refused as too long.
        #[allow(clippy::cast_precision_loss)]
        let secs = ms as f64 / 1000.0;
        match which {
            DefaultTimeout::Connect => args.connect_timeout = secs,
            DefaultTimeout::Total => args.timeout = secs,
            DefaultTimeout::Drain => args.drain_timeout = secs,
        }
        settings_from(DEFAULT_PEER, &args).map_err(|error| MsError { ms, error })?;
        setup.args = args;
        Ok(())
    }

    /// The default peer, once made (at the first warm event after `peer.set()`).
    pub fn default_peer(&self) -> Option<Arc<Peer>> {
        self.default.read().clone()
    }

    /// Makes the default peer from what `vcl_init` configured, once.
    fn make_default_peer(&self) -> Result<(), DefaultPeerError> {
        if self.default.read().is_some() {
            return Ok(());
        }
        let setup = self.default_setup.lock();
        let Some(dest) = setup.dest.clone() else {
            return Ok(());
        };
        let peer = self
            .make_peer(DEFAULT_PEER, &setup.args)
            .map_err(DefaultPeerError::Config)?;
        peer.replace_destinations(dest)
            .map_err(DefaultPeerError::Setup)?;
        *self.default.write() = Some(Arc::new(peer));
        Ok(())
    }

    fn all(&self) -> Vec<Arc<Peer>> {
        let mut all: Vec<Arc<Peer>> = self.named.read().clone();
        all.extend(self.default.read().iter().cloned());
        all
    }

    /// `peer.report()`: `{"peers":[...]}`, the named peers in the order they were made,
    /// then the default peer (once made, at the first warm event).
    pub fn report_json(&self) -> String {
        let mut out = String::from("{\"peers\":[");
        for (i, peer) in self.all().iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            peer.report_json(&mut out);
        }
        out.push_str("]}");
        out
    }

    /// Queued or in flight over all peers, without allocating (called per request).
    pub fn pending(&self) -> u64 {
        let named: u64 = self.named.read().iter().map(|p| p.pending()).sum();
        named + self.default.read().as_ref().map_or(0, |p| p.pending())
    }

    /// Warm event: starts every peer's threads. On failure the peers already started are
    /// stopped again (the VCL stays cold).
    pub fn warm(&self) -> Result<(), WarmError> {
        self.make_default_peer().map_err(WarmError::Default)?;
        let all = self.all();
        for (i, peer) in all.iter().enumerate() {
            if let Err(e) = peer.start() {
                for started in &all[..i] {
                    started.begin_drain();
                }
                return Err(WarmError::Start(e));
            }
        }
        if let Err(e) = self.start_discovery(&all) {
            self.cold();
            return Err(WarmError::Discovery(e));
        }
        Ok(())
    }

    /// Starts a discovery thread per peer that has names to re-resolve; those of an
    /// earlier warm period that have exited are joined.
    fn start_discovery(&self, all: &[Arc<Peer>]) -> std::io::Result<()> {
        let mut discoverers = self.discoverers.lock();
        discoverers.retain(|d| !d.finished());
        for peer in all {
            if let Some(d) = Discoverer::start(peer, self.services.resolver())? {
                discoverers.push(d);
            }
        }
        Ok(())
    }

    /// Cold event: discovery stops, every peer drains in the background.
    pub fn cold(&self) {
        self.discoverers
            .lock()
            .iter_mut()
            .for_each(Discoverer::signal);
        self.all().iter().for_each(|p| p.begin_drain());
    }

    /// Discard event: stops every peer together, so the whole takes at most the latest drain
    /// deadline plus [`JOIN_GRACE`] (the drain timeouts are at most 30 s, below
    /// `cli_timeout`), however many peers have a backlog. Returns the limit used.
    pub fn discard(&self) -> Option<Instant> {
        let mut discoverers = std::mem::take(&mut *self.discoverers.lock());
        discoverers.iter_mut().for_each(Discoverer::signal);
        let all = self.all();
        let stopping: Vec<_> = all.iter().map(|p| p.begin_stop()).collect();
        let latest = stopping.iter().filter_map(|s| s.deadline()).max();
        let limit = latest.map(|d| d.max(Instant::now()) + JOIN_GRACE);
        for (peer, stopping) in all.iter().zip(stopping) {
            peer.finish_stop(stopping, limit);
        }
        // Signalled above, they change nothing any more: only one inside the resolver
        // takes a moment to notice.
        let now = Instant::now();
        let discovery_limit = limit.unwrap_or(now).max(now + DISCOVERY_JOIN);
        for d in discoverers {
            d.join(discovery_limit);
        }
        limit
    }
}

/// Queues a request on `peer` for `fname` (`peer.queue_req()`, `x.queue_req_body()`...):
/// takes the snapshot only when a destination queue has room, and hands `log` the lines to
/// log as `VCL_Error` in the request's transaction (drops, refusals, nothing queued). A drop
/// for a full queue allocates nothing: a destination that is down makes every call one.
pub fn queue_on(
    peer: &Peer,
    fname: &str,
    take: impl FnOnce() -> Result<Snapshot, SnapshotError>,
    mut log: impl FnMut(&str),
) {
    if peer.batch().is_some() {
        peer.count_refused();
        let name = peer.name();
        log(&format!(
            "{fname}: peer {name} sends batches of items: queue them with {name}.queue_item(); \
             nothing queued"
        ));
        return;
    }
    queue_snapshot(peer, fname, take, log);
}

/// [`queue_on`] for requests and batch items alike (`batch::queue_item_on`).
pub(crate) fn queue_snapshot(
    peer: &Peer,
    fname: &str,
    take: impl FnOnce() -> Result<Snapshot, SnapshotError>,
    mut log: impl FnMut(&str),
) {
    let name = peer.name();
    // A peer given no destination in vcl_init (a VCL may keep one unused): refused before
    // a snapshot is taken, and counted, so that the loss shows in varnishstat.
    if !peer.has_destination() {
        peer.count_refused();
        log(&format!(
            "{fname}: peer {name} has no destination (add one with \
             {name}.add_destination() in vcl_init); nothing queued"
        ));
        return;
    }
    if !peer.has_room() {
        peer.drop_all(log);
        return;
    }
    let snap = match take() {
        Ok(snap) => snap,
        Err(e @ SnapshotError::BodyNotCached) => {
            peer.count_refused();
            log(&format!("{fname}: peer {name}: refused, {e}"));
            return;
        }
        Err(e) => {
            // Every loss is counted: this one in `refused`, like a body not cached.
            peer.count_refused();
            log(&format!("{fname}: peer {name}: {e}"));
            return;
        }
    };
    match peer.enqueue(snap) {
        Ok(report) => report.dropped.iter().for_each(|line| log(line)),
        Err(EnqueueError::NoDestination) => {
            // Checked above; kept for callers of enqueue() that did not.
            peer.count_refused();
            log(&format!(
                "{fname}: peer {name} has no destination, nothing queued"
            ));
        }
        Err(EnqueueError::Refused(why)) => {
            log(&format!("peer {name}: refused, {why}; nothing queued"));
        }
    }
}

/// Why a warm event failed.
#[derive(Debug)]
pub enum WarmError {
    Default(DefaultPeerError),
    Start(StartError),
    Discovery(std::io::Error),
}

impl std::fmt::Display for WarmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WarmError::Default(e) => write!(f, "peer: default peer: {e}"),
            WarmError::Start(e) => e.fmt(f),
            WarmError::Discovery(e) => write!(f, "peer: cannot start a DNS discovery thread: {e}"),
        }
    }
}

#[cfg(test)]
#[path = "vcl_tests.rs"]
mod tests;
