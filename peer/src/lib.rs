//! vmod_peer: forwards copies of requests to other HTTP services (peer caches, CDN purge
//! APIs) from background threads, so that the Varnish worker never waits for them.
//!
//! `ffi` is the only module with raw pointers: `ffi::vmod` (the VCL entry points declared in
//! `vmod.vcc`, which only convert), `ffi::request` (reading a request) and `ffi::curl`; the
//! Varnish primitives they use come from the shared crate `vmod-rt`. The rest is plain Rust
//! with unit tests: `config` (arguments, defaults, bounds), `vcl` (a VCL's peers and its temperature), `snapshot` (the
//! copy of a request and its wire form), `dest` (destinations), `policy` (retries),
//! `sender` (queues and threads; `crew`: the threads of one destination), `discover`
//! (destinations found in DNS; `discover_thread`: the thread that re-resolves), `batch` and `batch_send` (batch peers: items merged into one
//! call), `transport` (libcurl), `stats` (counters), `escape`,
//! `magic` (the tag checked on the object pointers Varnish hands back), and each
//! destination's own state: `deststate` (label, counters, gate), `gate` (pause, circuit and
//! rate limit before each attempt), `circuit`, `bucket` (token bucket), `report` (JSON).

pub mod batch;
pub mod batch_send;
pub mod bucket;
pub mod circuit;
pub mod config;
mod crew;
pub mod dest;
pub mod deststate;
pub mod discover;
mod discover_thread;
pub mod escape;
pub mod ffi;
pub mod gate;
pub mod h1;
pub mod magic;
pub mod policy;
pub mod report;
pub mod sender;
pub mod snapshot;
pub mod stats;
pub mod transport;
pub mod vcl;
pub mod worker;

#[cfg(all(not(test), feature = "vmod"))]
extern "C" {
    static Vmod_peer_Data: u8;
}
/// Keeps the C descriptor in the link (not in unit tests: it points at the entry points).
#[cfg(all(not(test), feature = "vmod"))]
#[used]
// SAFETY: only the address is taken.
static KEEP_DESCRIPTOR: &u8 = unsafe { &Vmod_peer_Data };
