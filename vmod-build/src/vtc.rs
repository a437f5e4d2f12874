//! Runs one `.vtc` file through `varnishtest` with both VMODs of the workspace made
//! available as macros: `${vmod}` (the crate's own), `${vmod_peer}`, `${vmod_saintmode}`,
//! and `${root}` (the workspace root, for examples and helper scripts).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The directory holding the built `.so` files: the test binary lives in
/// `target/<profile>/deps/`, the cdylibs one level up.
fn artifact_dir() -> PathBuf {
    if let Ok(dir) = env::var("VMOD_ARTIFACT_DIR") {
        return PathBuf::from(dir);
    }
    let exe = env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .expect("test binary in target/<profile>/deps")
}

fn vmod_path(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(format!("libvmod_{name}.so"));
    assert!(
        path.exists(),
        "{} not found: build the VMODs first (`cargo build` or `make build`)",
        path.display()
    );
    path
}

/// Runs `varnishtest` on `vtc` (relative to the crate's manifest dir) and panics with
/// its verbose output when it fails. Exit code 77 (a `feature` the machine lacks) is
/// reported as skipped on stderr.
pub fn run(own_vmod: &str, vtc: &Path) {
    let dir = artifact_dir();
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest
        .parent()
        .expect("crate inside the workspace")
        .to_path_buf();
    let file = manifest.join(vtc);
    let timeout = env::var("VTC_TIMEOUT").unwrap_or_else(|_| "120".into());
    let mut cmd = Command::new("varnishtest");
    cmd.arg("-t")
        .arg(&timeout)
        .arg("-D")
        .arg(format!("vmod={}", vmod_path(&dir, own_vmod).display()))
        .arg("-D")
        .arg(format!("vmod_peer={}", vmod_path(&dir, "peer").display()))
        .arg("-D")
        .arg(format!(
            "vmod_saintmode={}",
            vmod_path(&dir, "saintmode").display()
        ))
        .arg("-D")
        .arg(format!("root={}", root.display()))
        .arg(&file);
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run varnishtest ({e}): `eval \"$(make -s env)\"` puts it on PATH")
    });
    match out.status.code() {
        Some(0) => {}
        Some(77) => eprintln!(
            "SKIPPED {}: varnishtest exit 77 (missing feature)",
            file.display()
        ),
        _ => {
            // The verbose log is long; the failing lines ("----") and the end matter.
            let log = String::from_utf8_lossy(&out.stdout);
            let lines: Vec<&str> = log.lines().collect();
            let failing: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with("----"))
                .collect();
            let tail = &lines[lines.len().saturating_sub(120)..];
            panic!(
                "varnishtest {} failed ({}):\n{}\n[... last lines ...]\n{}\n{}",
                file.display(),
                out.status,
                failing.join("\n"),
                tail.join("\n"),
                String::from_utf8_lossy(&out.stderr)
            )
        }
    }
}
