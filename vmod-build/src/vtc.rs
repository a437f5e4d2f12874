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

/// What `scripts/vtc-run.sh` prints when it skips a `# vtc-run: private-hosts` test.
const PRIVATE_HOSTS_SKIP: &str = "vtc-run.sh: skipped (private-hosts):";

/// True when a skip of a private-hosts VTC must fail the run: on CI (`CI` set, as CI
/// services do and `.ci/run` does) or with `VTC_NO_SKIP=1`. Those VTCs are the only test of
/// DNS discovery end to end: a CI machine without the privilege must turn red, not green.
pub fn skips_forbidden() -> bool {
    let set = |name: &str| env::var(name).is_ok_and(|v| !v.is_empty() && v != "0" && v != "false");
    set("CI") || set("VTC_NO_SKIP")
}

/// The verdict of an exit 77. Only a private-hosts skip is refused when `forbidden`: a
/// `feature` varnishtest reports missing (a command such as `openssl`) is the machine's, and
/// stays a skip.
fn skipped(stderr: &str, forbidden: bool) -> Result<Verdict, String> {
    match stderr.lines().find(|l| l.starts_with(PRIVATE_HOSTS_SKIP)) {
        Some(line) if forbidden => Err(format!(
            "{line}\nA private-hosts VTC may not be skipped here (CI or VTC_NO_SKIP=1 is set): \
             run as root, or allow user namespaces (sysctl kernel.unprivileged_userns_clone=1)"
        )),
        _ => Ok(Verdict::Skipped),
    }
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
        Some(77) => skipped(&String::from_utf8_lossy(&out.stderr), skips_forbidden())
            .map_err(|why| format!("varnishtest {}: {why}", file.display())),
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

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTS: &str = "vtc-run.sh: skipped (private-hosts): the test needs a private \
                         /etc/hosts, and this user may unshare neither...";

    #[test]
    fn a_private_hosts_skip_fails_when_skips_are_forbidden() {
        let e = skipped(HOSTS, true).unwrap_err();
        assert!(
            e.contains("may not be skipped here (CI or VTC_NO_SKIP=1 is set)"),
            "{e}"
        );
        assert_eq!(skipped(HOSTS, false), Ok(Verdict::Skipped));
    }

    #[test]
    fn a_missing_varnishtest_feature_stays_a_skip_everywhere() {
        let feature = "**** top   0.0 feature cmd \"openssl version\" not available";
        assert_eq!(skipped(feature, true), Ok(Verdict::Skipped));
        assert_eq!(skipped("", true), Ok(Verdict::Skipped));
    }
}
