//! Runs every `tests/*.vtc` of this crate through varnishtest, one test each.
mod vtc {
    pub fn run(path: &std::path::Path) {
        vmod_build::vtc::run("peer", path);
    }
}
include!(concat!(env!("OUT_DIR"), "/vtc_tests.rs"));
