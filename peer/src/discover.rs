//! Destinations discovered in DNS (`x.add_dns_destinations()`): a name stands for every
//! address it resolves to, each a destination (lane) of its own, re-resolved every `refresh`
//! by a background thread that runs while the VCL is warm. What to add, retire and log is
//! decided by [`Discovery::update`] from the answers alone (tested with an injected resolver
//! and clock); the thread only applies it to the peer.

use std::collections::BTreeSet;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};

use crate::dest::{DestError, Destination};
use crate::sender::{Peer, SetupError};

/// The shortest refresh: more often would be a load on the resolver, not a choice.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// The longest refresh: a day.
pub const MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// At most this many addresses of one name are used (the lowest, in address order): each
/// costs a queue and `concurrency` threads.
pub const MAX_ADDRESSES: usize = 64;
/// How often the discovery thread looks for retired destinations whose drain has ended.
const REAP_POLL: Duration = Duration::from_millis(200);

/// Resolves a host name to its addresses (A and AAAA).
pub trait Resolver: Send + Sync {
    fn resolve(&self, host: &str, port: u16) -> Result<Vec<IpAddr>, String>;
}

/// The system resolver (getaddrinfo: /etc/hosts, DNS, whatever nsswitch.conf says).
#[derive(Debug, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> Result<Vec<IpAddr>, String> {
        (host, port)
            .to_socket_addrs()
            .map(|addrs| addrs.map(|a| a.ip()).collect())
            .map_err(|e| e.to_string())
    }
}

/// Why `x.add_dns_destinations()` fails `vcl_init`.
#[derive(Debug, Clone, PartialEq)]
pub enum DiscoverError {
    Refresh(f64),
    Destination(DestError),
    Unresolved { host: String, why: String },
    NoAddress(String),
    Proxy,
    Duplicate(String),
    Setup(SetupError),
}

impl std::fmt::Display for DiscoverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DiscoverError::Refresh(secs) => write!(
                f,
                "refresh must be between {} s and {} s ({secs})",
                MIN_REFRESH.as_secs(),
                MAX_REFRESH.as_secs()
            ),
            DiscoverError::Destination(e) => write!(f, "destination: {e}"),
            DiscoverError::Unresolved { host, why } => {
                write!(f, "destination: \"{host}\" does not resolve ({why})")
            }
            DiscoverError::NoAddress(host) => {
                write!(f, "destination: \"{host}\" resolves to no address")
            }
            DiscoverError::Proxy => f.write_str(
                "destination: a peer with a proxy cannot send to each address of a name (the \
                 proxy resolves it)",
            ),
            DiscoverError::Duplicate(host) => {
                write!(
                    f,
                    "destination: \"{host}\" is already discovered by this peer"
                )
            }
            DiscoverError::Setup(e) => e.fmt(f),
        }
    }
}

/// Checks `refresh` (seconds, as VCL has it).
pub fn refresh(secs: f64) -> Result<Duration, DiscoverError> {
    let ok = secs >= MIN_REFRESH.as_secs_f64() && secs <= MAX_REFRESH.as_secs_f64();
    ok.then(|| Duration::from_secs_f64(secs))
        .ok_or(DiscoverError::Refresh(secs))
}

/// `x.add_dns_destinations(destination, port, refresh)` in `vcl_init`: `destination` (a
/// host and `port`, or a base URL) stands for every address its host resolves to now, and
/// will be re-resolved every `refresh` while the VCL is warm.
pub fn add_dns_destinations(
    peer: &Peer,
    destination: &[u8],
    port: i64,
    refresh_secs: f64,
    resolver: &dyn Resolver,
) -> Result<(), DiscoverError> {
    let refresh = refresh(refresh_secs)?;
    let dest = Destination::parse_bytes(destination, port).map_err(DiscoverError::Destination)?;
    if peer.settings().proxy.is_some() {
        return Err(DiscoverError::Proxy);
    }
    if peer.discoveries().lock().iter().any(|d| *d.name() == dest) {
        return Err(DiscoverError::Duplicate(dest.to_string()));
    }
    let discovery = Discovery::resolve(peer.name(), dest, refresh, resolver, Instant::now())?;
    peer.add_discovery(discovery).map_err(DiscoverError::Setup)
}

/// The addresses used from an answer: each once, the lowest [`MAX_ADDRESSES`].
fn usable(answer: Vec<IpAddr>) -> BTreeSet<IpAddr> {
    answer
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .take(MAX_ADDRESSES)
        .collect()
}

/// What a refresh changes: destinations to add and to retire, lines to log.
#[derive(Debug, Default, PartialEq)]
pub struct Update {
    pub add: Vec<Destination>,
    pub retire: Vec<Destination>,
    pub lines: Vec<String>,
}

/// One name of a peer and the addresses it stands for now.
#[derive(Debug)]
pub struct Discovery {
    peer: String,
    /// The name's destination (no address): each address is this at that address.
    dest: Destination,
    refresh: Duration,
    addresses: BTreeSet<IpAddr>,
    /// What was wrong with the last answer, as logged: logged again only when it changes.
    trouble: Option<String>,
    next: Instant,
}

impl Discovery {
    /// Resolves `dest`'s host for the peer `peer` (in `vcl_init`): fails when it has no
    /// address.
    pub fn resolve(
        peer: &str,
        dest: Destination,
        refresh: Duration,
        resolver: &dyn Resolver,
        now: Instant,
    ) -> Result<Self, DiscoverError> {
        let host = dest.bare_host().to_string();
        let addresses = usable(resolver.resolve(&host, dest.port).map_err(|why| {
            DiscoverError::Unresolved {
                host: host.clone(),
                why,
            }
        })?);
        if addresses.is_empty() {
            return Err(DiscoverError::NoAddress(host));
        }
        Ok(Discovery {
            peer: peer.to_string(),
            dest,
            refresh,
            addresses,
            trouble: None,
            next: now + refresh,
        })
    }

    /// The name's destination (without an address).
    pub fn name(&self) -> &Destination {
        &self.dest
    }

    /// One destination per address.
    pub fn destinations(&self) -> Vec<Destination> {
        self.addresses.iter().map(|a| self.dest.at(*a)).collect()
    }

    /// When the name is due to be resolved again.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// Applies an answer of the resolver obtained at `now`. A failure or an empty answer
    /// keeps the current addresses (a DNS outage must not stop every copy), logged once
    /// until the answers change; addresses that appear are added, those that disappear are
    /// retired. Additions come first, so the peer never has no destination.
    pub fn update(&mut self, answer: Result<Vec<IpAddr>, String>, now: Instant) -> Update {
        self.next = now + self.refresh;
        let mut update = Update::default();
        let (peer, name) = (&self.peer, &self.dest);
        let trouble = match &answer {
            Err(why) => Some(format!("does not resolve ({why})")),
            Ok(addrs) if addrs.is_empty() => Some("resolves to no address".to_string()),
            Ok(_) => None,
        };
        if let Some(trouble) = trouble {
            if self.trouble.as_ref() != Some(&trouble) {
                update.lines.push(format!(
                    "peer {peer}: {name} {trouble}; its {} addresses are kept until it \
                     resolves again",
                    self.addresses.len()
                ));
                self.trouble = Some(trouble);
            }
            return update;
        }
        if self.trouble.take().is_some() {
            update
                .lines
                .push(format!("peer {peer}: {name} resolves again"));
        }
        let fresh = usable(answer.unwrap_or_default());
        for address in fresh.difference(&self.addresses) {
            let dest = self.dest.at(*address);
            update
                .lines
                .push(format!("peer {peer}: {dest} added (new address in DNS)"));
            update.add.push(dest);
        }
        for address in self.addresses.difference(&fresh) {
            let dest = self.dest.at(*address);
            update.lines.push(format!(
                "peer {peer}: {dest} retired (no longer in DNS); what is queued is still sent \
                 within the drain timeout"
            ));
            update.retire.push(dest);
        }
        self.addresses = fresh;
        update
    }

    /// An address whose destination could not be added: tried again at the next refresh.
    pub fn forget(&mut self, address: IpAddr) {
        self.addresses.remove(&address);
    }
}

/// The thread that re-resolves a peer's names while the VCL is warm.
pub struct Discoverer {
    peer: Arc<Peer>,
    stop: Arc<AtomicBool>,
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
        let stop = Arc::new(AtomicBool::new(false));
        let (wake_tx, wake_rx) = bounded::<()>(0);
        let mut name = format!("peer-dns-{}", peer.name());
        name.truncate(15);
        let handle = {
            let (peer, stop) = (Arc::clone(peer), Arc::clone(&stop));
            std::thread::Builder::new()
                .name(name)
                .spawn(move || run(&peer, resolver.as_ref(), &stop, &wake_rx))?
        };
        Ok(Some(Discoverer {
            peer: Arc::clone(peer),
            stop,
            wake: Some(wake_tx),
            handle,
        }))
    }

    /// Tells the thread to stop. Returns once it can no longer change the peer: a refresh
    /// being applied is finished first (it takes no longer than starting threads); a
    /// resolution in progress is left to end, and its answer ignored.
    pub fn signal(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.wake = None;
        drop(self.peer.discoveries().lock());
    }

    /// Signals the thread and waits for it until `limit`. A thread still stuck in the
    /// resolver then is left to finish (logged); it changes nothing any more.
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

fn run(peer: &Peer, resolver: &dyn Resolver, stop: &AtomicBool, wake: &Receiver<()>) {
    loop {
        let now = Instant::now();
        let next = peer.discoveries().lock().iter().map(Discovery::next).min();
        let mut until = next.unwrap_or(now + MAX_REFRESH);
        if peer.reap_retired() > 0 {
            until = until.min(now + REAP_POLL);
        }
        match wake.recv_deadline(until) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        if stop.load(Ordering::Acquire) {
            return;
        }
        refresh_due(peer, resolver, stop);
    }
}

/// Resolves the names that are due (without holding the lock) and applies the answers.
fn refresh_due(peer: &Peer, resolver: &dyn Resolver, stop: &AtomicBool) {
    let now = Instant::now();
    let due: Vec<(usize, String, u16)> = peer
        .discoveries()
        .lock()
        .iter()
        .enumerate()
        .filter(|(_, d)| d.next() <= now)
        .map(|(i, d)| (i, d.name().bare_host().to_string(), d.name().port))
        .collect();
    for (i, host, port) in due {
        let answer = resolver.resolve(&host, port);
        let mut discoveries = peer.discoveries().lock();
        // Checked under the lock `Discoverer::signal` takes: once signalled, nothing more.
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Some(discovery) = discoveries.get_mut(i) else {
            continue;
        };
        let update = discovery.update(answer, Instant::now());
        for line in &update.lines {
            peer.log(line);
        }
        for dest in update.add {
            let address = dest.address;
            if let Err(e) = peer.add_lane(dest) {
                peer.log(&format!("{e}; tried again at the next refresh"));
                if let Some(address) = address {
                    discovery.forget(address);
                }
            }
        }
        for dest in &update.retire {
            peer.retire_lane(dest);
        }
    }
}

#[cfg(test)]
#[path = "discover_tests.rs"]
mod tests;
