//! Runs every `tests/*.vtc` of this crate through varnishtest, one test each.
//!
//! Files named `compat_*.vtc` or `upstream_*.vtc` describe behaviour shared with
//! varnish-modules' C saintmode: they run against this module, then against the C module
//! when the benchmark cache holds it (`tests/support/fetch-c-saintmode.sh` puts it there),
//! so that an unintended difference fails a test. Without the C module the second run is
//! reported as skipped on stderr.
mod vtc {
    use std::env;
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use vmod_build::vtc;

    pub fn run(path: &Path) {
        vtc::run("saintmode", path);
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("compat_") || name.starts_with("upstream_") {
            run_against_c(path);
        }
    }

    /// Where `bench/lib/tools.sh` caches varnish-modules' libvmod_saintmode.so.
    fn c_module() -> Option<PathBuf> {
        let cache = env::var_os("BENCH_CACHE").map(PathBuf::from).or_else(|| {
            env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .map(|c| c.join("vmod-rs/bench"))
        })?;
        let so = cache.join("c-saintmode/libvmod_saintmode.so");
        (cache.join("c-saintmode/.complete").exists() && so.exists()).then_some(so)
    }

    /// The same VTC with `${vmod}` pointing at the C module. It links libvarnishapi, so the
    /// loader needs the library directory of the Varnish in use.
    fn run_against_c(path: &Path) {
        let Some(so) = c_module() else {
            eprintln!(
                "SKIPPED (C module) {}: varnish-modules' saintmode not cached; run \
                 saintmode/tests/support/fetch-c-saintmode.sh",
                path.display()
            );
            return;
        };
        let libdir = Command::new("pkg-config")
            .args(["--variable=libdir", "varnishapi"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
        let so_text = so.display().to_string();
        let macros = [("vmod", so_text.as_str())];
        let env = [("LD_LIBRARY_PATH", libdir.as_str())];
        if let Err(report) = vtc::run_with("saintmode", path, &macros, &env) {
            panic!(
                "{} passes with this module but FAILS with varnish-modules' C module ({}): \
                 an unintended difference?\n{report}",
                path.display(),
                so.display(),
            );
        }
    }
}
include!(concat!(env!("OUT_DIR"), "/vtc_tests.rs"));
