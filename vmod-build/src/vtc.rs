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
            // The verbose log is long; the failing lines ("----") and the end matter, without
            // the CLI pings and timestamps that fill a test waiting until its timeout. The
            // whole log is kept next to the .so files.
            let log = String::from_utf8_lossy(&out.stdout);
            let lines: Vec<&str> = log.lines().filter(|l| !is_noise(l)).collect();
            let failing: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| l.starts_with("----"))
                .collect();
            let tail = &lines[lines.len().saturating_sub(200)..];
            let kept = keep_log(&dir, &file, &out.stdout);
            Err(format!(
                "varnishtest {} failed ({}):\n{}\n[... last lines, pings left out ...]\n{}\n{}{kept}",
                file.display(),
                out.status,
                failing.join("\n"),
                tail.join("\n"),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }
}

/// The lines of a verbose varnishtest log that say nothing about a failure: the manager's
/// pings of the child every few seconds and the elapsed-time stamps.
fn is_noise(line: &str) -> bool {
    line.starts_with("**** dT")
        || line.ends_with("CLI             - Rd ping")
        || line.contains("CLI             - Wr 200 19 PONG")
}

/// Writes the whole log of a failed VTC to `<dir>/vtc-logs/<name>.log`; says where (or why
/// not) for the report.
fn keep_log(dir: &Path, vtc: &Path, log: &[u8]) -> String {
    let name = vtc
        .file_stem()
        .map_or_else(|| "vtc".to_string(), |s| s.to_string_lossy().into_owned());
    let logs = dir.join("vtc-logs");
    let path = logs.join(format!("{name}.log"));
    match std::fs::create_dir_all(&logs).and_then(|()| std::fs::write(&path, log)) {
        Ok(()) => format!("\nwhole log: {}", path.display()),
        Err(e) => format!("\nwhole log not kept ({}: {e})", path.display()),
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
    fn pings_and_timestamps_are_left_out_of_a_failure_report() {
        assert!(is_noise("**** dT    87.517"));
        assert!(is_noise(
            "**** v1    vsl|          0 CLI             - Rd ping"
        ));
        assert!(is_noise(
            "**** v1    vsl|          0 CLI             - Wr 200 19 PONG 1795984058 1.0"
        ));
        assert!(!is_noise("**** v1    vsl|       1006 End             b "));
        assert!(!is_noise(
            "---- v1    VCL compilation failed expected success"
        ));
    }

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
