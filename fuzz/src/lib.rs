//! The pure parts of both VMODs, compiled from their own sources for fuzzing: peer's snapshot
//! (with the destination type it renders for) and saintmode's denylist. Linking the VMOD crates
//! themselves would pull their FFI layers, which need varnishd's symbols.
#![allow(dead_code)]

#[path = "../../saintmode/src/blacklist.rs"]
pub mod blacklist;
#[path = "../../saintmode/src/clock.rs"]
pub mod clock;
#[path = "../../peer/src/dest.rs"]
pub mod dest;
#[path = "../../peer/src/escape.rs"]
pub mod escape;
#[path = "../../peer/src/snapshot.rs"]
pub mod snapshot;

/// `snapshot::Template` names the batch settings of a batch peer; the fuzz targets render
/// plain requests and never build one, so the type alone is enough here (the real one lives
/// with the sender, which needs varnishd's symbols).
pub mod batch {
    #[derive(Debug)]
    pub struct BatchSpec;
}

/// Splits fuzz input into fields at 0x1F bytes (a separator the interesting inputs rarely need).
pub fn fields(data: &[u8]) -> Vec<&[u8]> {
    data.split(|b| *b == 0x1f).collect()
}
