//! Destinations discovered in DNS (`x.add_dns_destinations()`): a name stands for every
//! address of one family it resolves to, each a destination (lane) of its own, re-resolved
//! every `refresh` by a background thread that runs while the VCL is warm. What to add,
//! retire and log is decided by [`Discovery::update`] from the answers alone (tested with an
//! injected resolver and clock); the thread (`discover_thread.rs`) only applies it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, RecvTimeoutError};

use crate::dest::{DestError, Destination};
use crate::report::NameReport;
use crate::sender::{Peer, SetupError};

#[cfg(test)]
use crate::discover_thread::refresh_due;
pub use crate::discover_thread::Discoverer;

/// The shortest refresh: more often would be a load on the resolver, not a choice.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// The longest refresh: a day.
pub const MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// At most this many addresses of one name are used (the lowest, in address order): each
/// costs a queue and `concurrency` threads.
pub const MAX_ADDRESSES: usize = 64;
/// An address missing from this many answers in a row is retired: resolvers that answer
/// with a random subset of a large set must not make lanes come and go at every refresh.
pub const RETIRE_AFTER: u32 = 2;
/// How long `vcl_init` waits for the first answer: well below `cli_timeout` (60 s by
/// default), so that a resolver that does not answer fails the load with a message
/// instead of the CLI command timing out.
pub const INIT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Which addresses of a name are used (`family` of `x.add_dns_destinations()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4 only (the default): a dual-stack host is one destination, not two.
    Ipv4,
    Ipv6,
    /// Both: for names whose hosts have one address each, of either family.
    Any,
}

impl Family {
    /// From the VCL enum.
    pub fn from_vcl(s: &str) -> Option<Family> {
        match s {
            "ipv4" => Some(Family::Ipv4),
            "ipv6" => Some(Family::Ipv6),
            "any" => Some(Family::Any),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "ipv4",
            Family::Ipv6 => "ipv6",
            Family::Any => "any",
        }
    }

    pub fn admits(self, ip: &IpAddr) -> bool {
        match self {
            Family::Ipv4 => ip.is_ipv4(),
            Family::Ipv6 => ip.is_ipv6(),
            Family::Any => true,
        }
    }

    fn address(self) -> &'static str {
        match self {
            Family::Ipv4 => "IPv4 address",
            Family::Ipv6 => "IPv6 address",
            Family::Any => "address",
        }
    }
}

/// Resolves a host name to its addresses of `family`.
pub trait Resolver: Send + Sync {
    fn resolve(&self, host: &str, port: u16, family: Family) -> Result<Vec<IpAddr>, String>;
}

/// Resolution through the standard library (getaddrinfo with no hints), filtered by family:
/// the default of [`crate::vcl::Services`]; varnishd uses `ffi::discover::Getaddrinfo`,
/// which passes the family and `AI_ADDRCONFIG` to the resolver.
#[derive(Debug, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(&self, host: &str, port: u16, family: Family) -> Result<Vec<IpAddr>, String> {
        (host, port)
            .to_socket_addrs()
            .map(|addrs| addrs.map(|a| a.ip()).filter(|a| family.admits(a)).collect())
            .map_err(|e| e.to_string())
    }
}

/// Why `x.add_dns_destinations()` fails `vcl_init`.
#[derive(Debug, Clone, PartialEq)]
pub enum DiscoverError {
    Refresh(f64),
    Destination(DestError),
    Unresolved { host: String, why: String },
    NoAddress { host: String, family: Family },
    TimedOut { host: String, after: Duration },
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
            DiscoverError::NoAddress { host, family } => {
                write!(
                    f,
                    "destination: \"{host}\" resolves to no {}",
                    family.address()
                )?;
                match family {
                    Family::Ipv4 => f.write_str(" (family = ipv6 uses its IPv6 addresses)"),
                    Family::Ipv6 => f.write_str(" (family = ipv4 uses its IPv4 addresses)"),
                    Family::Any => Ok(()),
                }
            }
            DiscoverError::TimedOut { host, after } => write!(
                f,
                "destination: \"{host}\" did not resolve within {} s (the resolver does not \
                 answer)",
                after.as_secs()
            ),
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

/// `x.add_dns_destinations(destination, port, refresh, family)` in `vcl_init`:
/// `destination` (a host and `port`, or a base URL) stands for every address of `family`
/// its host resolves to now, and will be re-resolved every `refresh` while the VCL is warm.
/// The resolution runs on a thread of its own and is given up after `limit`
/// ([`INIT_RESOLVE_TIMEOUT`] in varnishd): the CLI thread is never blocked longer.
pub fn add_dns_destinations(
    peer: &Peer,
    destination: &[u8],
    port: i64,
    refresh_secs: f64,
    family: Family,
    resolver: &Arc<dyn Resolver>,
    limit: Duration,
) -> Result<(), DiscoverError> {
    let refresh = refresh(refresh_secs)?;
    let dest = Destination::parse_bytes(destination, port).map_err(DiscoverError::Destination)?;
    if peer.settings().proxy.is_some() {
        return Err(DiscoverError::Proxy);
    }
    if peer.discoveries().lock().iter().any(|d| *d.name() == dest) {
        return Err(DiscoverError::Duplicate(dest.to_string()));
    }
    let host = dest.bare_host().to_string();
    let answer = resolve_within(resolver, &host, dest.port, family, limit)?;
    let name = Name {
        dest,
        refresh,
        family,
    };
    let discovery = Discovery::new(peer.name(), name, Ok(answer), Instant::now())?;
    if let Some(line) = discovery.cut_line() {
        peer.log(&line);
    }
    peer.add_discovery(discovery).map_err(DiscoverError::Setup)
}

/// Resolves `host` on a thread of its own, waiting at most `limit`. A resolver that does
/// not answer by then is left to finish: its thread holds only the resolver and the name.
fn resolve_within(
    resolver: &Arc<dyn Resolver>,
    host: &str,
    port: u16,
    family: Family,
    limit: Duration,
) -> Result<Vec<IpAddr>, DiscoverError> {
    let unresolved = |why: String| DiscoverError::Unresolved {
        host: host.to_string(),
        why,
    };
    let (tx, rx) = bounded(1);
    let (resolver, name) = (Arc::clone(resolver), host.to_string());
    std::thread::Builder::new()
        .name("peer-dns-init".into())
        .spawn(move || {
            let _ = tx.send(resolver.resolve(&name, port, family));
        })
        .map_err(|e| unresolved(format!("cannot start a thread to resolve it: {e}")))?;
    match rx.recv_timeout(limit) {
        Ok(answer) => answer.map_err(unresolved),
        Err(RecvTimeoutError::Timeout) => Err(DiscoverError::TimedOut {
            host: host.to_string(),
            after: limit,
        }),
        Err(RecvTimeoutError::Disconnected) => Err(unresolved("the resolver failed".into())),
    }
}

/// The addresses of `family` used from an answer, each once, the lowest [`MAX_ADDRESSES`];
/// and how many there were.
fn usable(answer: Vec<IpAddr>, family: Family) -> (BTreeSet<IpAddr>, usize) {
    let all: BTreeSet<IpAddr> = answer.into_iter().filter(|a| family.admits(a)).collect();
    let found = all.len();
    (all.into_iter().take(MAX_ADDRESSES).collect(), found)
}

/// What a refresh changes: destinations to add and to retire, lines to log now. Whoever
/// applies it logs each addition and retirement once it is done ([`added_line`],
/// [`retired_line`]), and gives back what it could not do ([`Discovery::not_applied`]).
#[derive(Debug, Default, PartialEq)]
pub struct Update {
    pub add: Vec<Destination>,
    pub retire: Vec<Destination>,
    pub lines: Vec<String>,
}

/// The line logged once a discovered address has its destination.
pub fn added_line(peer: &str, dest: &Destination) -> String {
    format!("peer {peer}: {dest} added (new address in DNS)")
}

/// The line logged once a destination is retired.
pub fn retired_line(peer: &str, dest: &Destination) -> String {
    format!(
        "peer {peer}: {dest} retired (not in DNS for {RETIRE_AFTER} answers in a row); what \
         is queued is still sent within the drain timeout"
    )
}

/// What `x.add_dns_destinations()` was given.
#[derive(Debug, Clone)]
pub struct Name {
    /// The name's destination (no address): each address is this at that address.
    pub dest: Destination,
    pub refresh: Duration,
    pub family: Family,
}

/// One name of a peer and the addresses it stands for now.
#[derive(Debug)]
pub struct Discovery {
    peer: String,
    name: Name,
    /// The addresses that have a destination.
    addresses: BTreeSet<IpAddr>,
    /// Of those, the ones missing from the last answers, and from how many in a row.
    missing: BTreeMap<IpAddr, u32>,
    /// How many addresses of the family the last answer had (more than used when above
    /// [`MAX_ADDRESSES`]).
    found: usize,
    /// What was wrong with the last answer, as logged: logged again only when it changes.
    trouble: Option<String>,
    next: Instant,
}

impl Discovery {
    /// The discovery of `name` for the peer `peer` from the first answer (in `vcl_init`):
    /// fails when it has no address of the family.
    pub fn new(
        peer: &str,
        name: Name,
        answer: Result<Vec<IpAddr>, String>,
        now: Instant,
    ) -> Result<Self, DiscoverError> {
        let host = name.dest.bare_host().to_string();
        let answer = answer.map_err(|why| DiscoverError::Unresolved {
            host: host.clone(),
            why,
        })?;
        let (addresses, found) = usable(answer, name.family);
        if addresses.is_empty() {
            return Err(DiscoverError::NoAddress {
                host,
                family: name.family,
            });
        }
        Ok(Discovery {
            peer: peer.to_string(),
            next: now + name.refresh,
            name,
            addresses,
            missing: BTreeMap::new(),
            found,
            trouble: None,
        })
    }

    /// The name's destination (without an address).
    pub fn name(&self) -> &Destination {
        &self.name.dest
    }

    pub fn family(&self) -> Family {
        self.name.family
    }

    /// One destination per address.
    pub fn destinations(&self) -> Vec<Destination> {
        self.addresses
            .iter()
            .map(|a| self.name.dest.at(*a))
            .collect()
    }

    /// When the name is due to be resolved again.
    pub fn next(&self) -> Instant {
        self.next
    }

    /// What `.report()` shows of the name.
    pub fn report(&self) -> NameReport {
        NameReport {
            name: self.name.dest.to_string(),
            family: self.name.family.as_str(),
            found: self.found,
            used: self.addresses.len(),
        }
    }

    /// The line saying that addresses are left unused, when they are.
    pub fn cut_line(&self) -> Option<String> {
        (self.found > MAX_ADDRESSES).then(|| {
            format!(
                "peer {}: {} has {} {}es, {} used (the lowest)",
                self.peer,
                self.name.dest,
                self.found,
                self.name.family.address(),
                self.addresses.len()
            )
        })
    }

    /// Applies an answer of the resolver obtained at `now`. A failure or an answer with no
    /// address of the family keeps the current addresses (a DNS outage must not stop every
    /// copy), logged once until the answers change; addresses that appear are added, those
    /// missing from [`RETIRE_AFTER`] answers in a row are retired.
    pub fn update(&mut self, answer: Result<Vec<IpAddr>, String>, now: Instant) -> Update {
        self.next = now + self.name.refresh;
        let mut update = Update::default();
        let (peer, name) = (&self.peer, &self.name.dest);
        let answer = answer.map(|a| usable(a, self.name.family));
        let trouble = match &answer {
            Err(why) => Some(format!("does not resolve ({why})")),
            Ok((fresh, _)) if fresh.is_empty() => {
                Some(format!("resolves to no {}", self.name.family.address()))
            }
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
        let (fresh, found) = answer.unwrap_or_default();
        let cut_changed =
            found != self.found && (found > MAX_ADDRESSES || self.found > MAX_ADDRESSES);
        self.found = found;
        for address in fresh.difference(&self.addresses) {
            update.add.push(self.name.dest.at(*address));
        }
        let mut gone = Vec::new();
        for address in self.addresses.difference(&fresh) {
            let times = self.missing.entry(*address).or_insert(0);
            *times += 1;
            if *times >= RETIRE_AFTER {
                gone.push(*address);
            }
        }
        self.missing.retain(|a, _| !fresh.contains(a));
        for address in gone {
            self.missing.remove(&address);
            self.addresses.remove(&address);
            update.retire.push(self.name.dest.at(address));
        }
        self.addresses.extend(fresh);
        if cut_changed {
            update.lines.extend(self.cut_line().or_else(|| {
                Some(format!(
                    "peer {}: {} has {found} {}es, all used",
                    self.peer,
                    self.name.dest,
                    self.name.family.address()
                ))
            }));
        }
        update
    }

    /// Gives back what an [`Update`] could not apply: `not_added` addresses are tried again
    /// at the next refresh, `not_retired` ones stay (and are retired at the next answer
    /// that still lacks them).
    pub fn not_applied(&mut self, not_added: &[IpAddr], not_retired: &[IpAddr]) {
        for address in not_added {
            self.addresses.remove(address);
        }
        for address in not_retired {
            self.addresses.insert(*address);
            self.missing.insert(*address, RETIRE_AFTER - 1);
        }
    }
}

#[cfg(test)]
#[path = "discover_tests.rs"]
mod tests;
