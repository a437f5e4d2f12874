//! What the peers get from varnishd: VSC segments for their counters (`PEER.<vcl>.<peer>`
//! and one `PEER_DEST.<vcl>.<peer>.<label>` per destination), VSL for their log lines, and
//! libcurl.

use std::sync::Arc;

use varnish::ffi::VslTag;
use vmod_rt::{log_raw, pin_module, VscSegment};

use crate::discover::Resolver;
use crate::sender::{EventLog, TransportFactory};
use crate::stats::{
    CounterStore, DestCounterStore, DestCounters, LocalCounters, LocalDestCounters, PeerCounters,
};
use crate::transport::HttpFactory;
use crate::vcl::Services;

/// Sender-thread lines go to VSL as `Error` records.
struct VslLog;

impl EventLog for VslLog {
    fn log(&self, line: &str) {
        log_raw(VslTag::Error, line);
    }

    fn thread_left_running(&self, line: &str) {
        // Varnish unloads the module with its last VCL: code a detached thread still runs
        // would vanish under it. Pinned instead (a rare, logged leak rather than a crash).
        if pin_module() {
            log_raw(VslTag::Error, &format!("{line}; the module stays loaded"));
        } else {
            log_raw(
                VslTag::Error,
                &format!("{line}; the module could not be pinned"),
            );
        }
    }
}

/// A peer's segment, and what names its destinations' segments.
struct PeerVsc {
    segment: VscSegment<PeerCounters>,
    vcl: String,
    peer: String,
}

impl CounterStore for PeerVsc {
    fn counters(&self) -> &PeerCounters {
        self.segment.get()
    }

    /// Made in `vcl_init` (`add_destination()`) or the warm event (the default peer), on
    /// the CLI thread; destroyed when the destination's lane is dropped.
    fn destination(&self, label: &str) -> Arc<dyn DestCounterStore> {
        let name = format!("{}.{label}", self.peer);
        match VscSegment::<DestCounters>::new(c"PEER_DEST", &self.vcl, &name) {
            Some(vsc) => Arc::new(vsc),
            None => Arc::new(LocalDestCounters::default()),
        }
    }
}

impl DestCounterStore for VscSegment<DestCounters> {
    fn counters(&self) -> &DestCounters {
        self.get()
    }
}

pub(super) struct Varnishd;

impl Services for Varnishd {
    fn counters(&self, vcl: &str, peer: &str) -> Arc<dyn CounterStore> {
        match VscSegment::<PeerCounters>::new(c"PEER", vcl, peer) {
            Some(segment) => Arc::new(PeerVsc {
                segment,
                vcl: vcl.to_string(),
                peer: peer.to_string(),
            }),
            None => Arc::new(LocalCounters::default()),
        }
    }
    fn log(&self) -> Arc<dyn EventLog> {
        Arc::new(VslLog)
    }
    fn transport(&self) -> Arc<dyn TransportFactory> {
        Arc::new(HttpFactory)
    }
    fn resolver(&self) -> Arc<dyn Resolver> {
        Arc::new(super::Getaddrinfo)
    }
}
