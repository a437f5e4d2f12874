//! Runs one `.vtc` file through `scripts/vtc-run.sh`, the one definition of the macros a VTC
//! of this repository gets (`${vmod}`: the crate's own module, `${vmod_peer}`,
//! `${vmod_saintmode}`, `${vmod_path}`, `${root}`); the shell tools use the same script.

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

fn check_built(dir: &Path, name: &str) {
    let path = dir.join(format!("libvmod_{name}.so"));
    assert!(
        path.exists(),
        "{} not found: build the VMODs first (`cargo build` or `make build`)",
        path.display()
    );
}

/// How a run ended when it did not fail.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    /// varnishtest exit 77: a `feature` the machine lacks.
    Skipped,
}

/// Runs `varnishtest` on `vtc` (relative to the crate's manifest dir) with the macros of
/// `scripts/vtc-run.sh` for `own_vmod`, then `extra_macros` (which replace macros of the same
/// name), with `env` added to varnishtest's environment. A failure is the failing lines
/// (`----`) and the end of the verbose log.
pub fn run_with(
    own_vmod: &str,
    vtc: &Path,
    extra_macros: &[(&str, &str)],
    env: &[(&str, &str)],
) -> Result<Verdict, String> {
    let dir = artifact_dir();
    for name in ["peer", "saintmode"] {
        check_built(&dir, name);
    }
    let manifest =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest.parent().expect("crate inside the workspace");
    let file = manifest.join(vtc);
    let mut cmd = Command::new("bash");
    cmd.arg(root.join("scripts/vtc-run.sh"))
        .arg("--so")
        .arg(&dir)
        .arg("--own")
        .arg(own_vmod);
    for (name, value) in extra_macros {
        cmd.arg("-D").arg(format!("{name}={value}"));
    }
    cmd.arg("--").arg(&file).envs(env.iter().copied());
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run scripts/vtc-run.sh ({e}): `eval \"$(make -s env)\"` puts varnishtest on PATH")
    });
    match out.status.code() {
        Some(0) => Ok(Verdict::Passed),
        Some(77) => Ok(Verdict::Skipped),
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
            Err(format!(
                "varnishtest {} failed ({}):\n{}\n[... last lines ...]\n{}\n{}",
                file.display(),
                out.status,
                failing.join("\n"),
                tail.join("\n"),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

/// [`run_with`] with no extra macros: panics with the log when the VTC fails; a skip (exit
/// 77) is reported on stderr.
pub fn run(own_vmod: &str, vtc: &Path) {
    match run_with(own_vmod, vtc, &[], &[]) {
        Ok(Verdict::Passed) => {}
        Ok(Verdict::Skipped) => eprintln!(
            "SKIPPED {}: varnishtest exit 77 (missing feature)",
            vtc.display()
        ),
        Err(report) => panic!("{report}"),
    }
}
