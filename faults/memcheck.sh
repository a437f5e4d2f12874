#!/usr/bin/env bash
# Memory-checker run: the VTCs of both VMODs (peer/tests, saintmode/tests, faults/*.vtc) against
# an AddressSanitizer build of libvmod_peer.so and libvmod_saintmode.so, loaded into an
# uninstrumented varnishd that gets the ASan runtime with LD_PRELOAD (the manager forks the
# child without exec, so the child has it too). Only varnishd is wrapped (a `varnishd` script
# first in PATH, which also gives it -p thread_pool_stack=1M: instrumented debug code needs more
# stack); varnishtest, python and curl run normally.
#
#   faults/memcheck.sh [VTC...]   (default: every VTC of both modules + faults/*.vtc, then a
#                                  MEMCHECK_SOAK-second soak (default 90) under ASan)
#
# Each VTC gets its own log directory (ASAN_OPTIONS log_path, one file per process, named
# after the executable). Reports are attributed by faults/memcheck_classify.py: a report with
# a frame in libvmod_peer/libvmod_saintmode or their Rust crates is OURS; everything else
# (exit-time leaks of varnishd's manager and child, the VCL compiler gcc/cc1/as/ld that the
# manager runs and that inherits LD_PRELOAD) is NOISE and only summarised.
# First a self-test (faults/memcheck_probe.rs: a deliberate overflow must be reported and
# attributed to us). Verdict per VTC: PASS when varnishtest passed and there is no report of ours; the last line
# is "N passed, M failed". faults/known_bug_*.vtc are expected to fail as tests (they
# reproduce open bugs): for them only the reports of ours count.
#
# Build: RUSTC_BOOTSTRAP=1 -Zsanitizer=address (with recover, so that one run collects every
# error), --target x86_64-unknown-linux-gnu so build scripts and proc macros are not
# instrumented, into target/asan. Runtime: gcc's libasan.so.8 (Debian libasan8), or clang's
# libclang_rt.asan; installed with apt-get only when neither is there.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=../scripts/lib/varnish.sh
. "$ROOT/scripts/lib/varnish.sh"
use_varnish_env "$ROOT" memcheck
find_rt() {
    for f in /usr/lib/x86_64-linux-gnu/libasan.so.8 /usr/lib/x86_64-linux-gnu/libasan.so.* \
             /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.asan-x86_64.so \
             /usr/lib/llvm-*/lib/clang/*/lib/x86_64-pc-linux-gnu/libclang_rt.asan.so; do
        [ -f "$f" ] && { echo "$f"; return 0; }
    done
    return 1
}
RT="${ASAN_RUNTIME:-$(find_rt || true)}"
if [ -z "$RT" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q libasan8 >/dev/null 2>&1 || true
    RT="$(find_rt || true)"
fi
[ -n "$RT" ] || { echo "memcheck: no ASan runtime (apt-get install libasan8)" >&2; exit 2; }

TARGET=x86_64-unknown-linux-gnu
OUT="$ROOT/target/asan"
echo "memcheck: building the ASan VMODs into $OUT (runtime $RT)"
RUSTC_BOOTSTRAP=1 RUSTFLAGS="-Zsanitizer=address -Zsanitizer-recover=address -Cforce-frame-pointers=yes" \
    CARGO_TARGET_DIR="$OUT" timeout 1800 cargo build -q --locked --target "$TARGET" -p vmod-peer -p vmod-saintmode
SO="$OUT/$TARGET/debug"
for m in peer saintmode; do
    nm -D "$SO/libvmod_$m.so" 2>/dev/null | grep -c __asan_init >/dev/null || { echo "memcheck: $SO/libvmod_$m.so is not instrumented" >&2; exit 2; }
done

REAL_VARNISHD="$(command -v varnishd)"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/memcheck.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/bin" target/memcheck
rm -rf target/memcheck/logs && mkdir -p target/memcheck/logs
cat > "$WORK/bin/varnishd" <<WRAP
#!/bin/sh
# ASan runtime for varnishd only; MEMCHECK_LOGDIR is set per VTC by memcheck.sh.
export LD_PRELOAD="$RT"
export ASAN_OPTIONS="log_path=\${MEMCHECK_LOGDIR:-/tmp}/asan:log_exe_name=1:halt_on_error=0:detect_leaks=1:detect_odr_violation=0:allocator_may_return_null=1:handle_segv=0:handle_abort=0:use_sigaltstack=0:detect_stack_use_after_return=0"
# Instrumented code needs more stack than Varnish's default worker stack; a VTC that sets the
# parameter itself still overrides this.
exec "$REAL_VARNISHD" -p thread_pool_stack=1M "\$@"
WRAP
chmod +x "$WORK/bin/varnishd"

# Self-test: a deliberate heap overflow in an instrumented Rust cdylib named like ours
# (faults/memcheck_probe.rs), preloaded into varnishd: ASan must report it and the classifier
# must call it ours, or nothing below would be trustworthy.
passed=0 failed=0
mkdir -p "$WORK/probe-logs"
RUSTC_BOOTSTRAP=1 timeout 300 rustc --edition 2021 --crate-type cdylib --crate-name vmod_peer_asan_probe \
    -Zsanitizer=address -Zsanitizer-recover=address -g -C opt-level=0 --target "$TARGET" \
    faults/memcheck_probe.rs -o "$WORK/libvmod_peer_asan_probe.so"
LD_PRELOAD="$RT $WORK/libvmod_peer_asan_probe.so" \
    ASAN_OPTIONS="log_path=$WORK/probe-logs/asan:log_exe_name=1:halt_on_error=0:detect_leaks=0" \
    "$REAL_VARNISHD" -V >/dev/null 2>&1 || true
probe="$(python3 faults/memcheck_classify.py "$WORK/probe-logs")"
probe="${probe%%$'\n'*}"
if grep -rq "heap-buffer-overflow" "$WORK/probe-logs" && [ "${probe%% *}" = "ours=1" ]; then
    echo "PASS self_test: deliberate heap-buffer-overflow in instrumented Rust code reported by ASan and attributed ($probe)"
    passed=1
else
    echo "FAIL self_test: the deliberate overflow was not reported/attributed ($probe); results below are not trustworthy"
    failed=1
fi

if [ $# -gt 0 ]; then
    VTCS=("$@")
else
    VTCS=(peer/tests/*.vtc saintmode/tests/*.vtc faults/*.vtc)
fi
ours_total=0
t_start=$(date +%s)
for vtc in "${VTCS[@]}"; do
    name="$(basename "$(dirname "$(dirname "$vtc")")")/$(basename "$vtc")"
    [ "${vtc#faults/}" != "$vtc" ] && name="faults/$(basename "$vtc")"
    own=peer
    case "$vtc" in saintmode/*) own=saintmode;; esac
    logdir="$ROOT/target/memcheck/logs/${name//\//_}"
    mkdir -p "$logdir"
    t0=$(date +%s)
    rc=0
    MEMCHECK_LOGDIR="$logdir" PATH="$WORK/bin:$PATH" timeout --kill-after=10 300 \
        scripts/vtc-run.sh --so "$SO" --own "$own" --timeout 240 "$vtc" \
        > "$logdir/varnishtest.out" 2>&1 || rc=$?
    mv "$logdir/varnishtest.out" "target/memcheck/${name//\//_}.varnishtest.out"
    cls="$(python3 faults/memcheck_classify.py "$logdir")"
    first="${cls%%$'\n'*}"
    ours="$(sed -n 's/^ours=\([0-9]*\).*/\1/p' <<<"$first")"
    noise="$(sed -n 's/.*noise=\([0-9]*\)/\1/p' <<<"$first")"
    ours_total=$((ours_total + ours))
    case "$rc" in 0) vt=passed;; 77) vt=skipped;; *) vt="failed(rc=$rc)";; esac
    verdict=PASS
    case "$vtc" in
        faults/known_bug_*) [ "$ours" -eq 0 ] || verdict=FAIL; vt="$vt (known bug, expected to fail)";; # none at present
        *) { [ "$rc" -eq 0 ] || [ "$rc" -eq 77 ]; } && [ "$ours" -eq 0 ] || verdict=FAIL;;
    esac
    echo "$verdict $name: varnishtest $vt, ASan reports in our code $ours, varnishd/compiler noise $noise ($(( $(date +%s) - t0 ))s)"
    if [ "$ours" -gt 0 ]; then { echo "$cls" | tail -n +2 | head -80 | sed 's/^/    /'; } || true; fi
    if [ "$verdict" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
# A short soak (faults/soak.py: paced load, peer flaps, VCL reloads) against the ASan build,
# for the code paths the VTCs touch only briefly (sender threads under retries, drains,
# discards with queued requests, saintmode under concurrency). MEMCHECK_SOAK=0 skips it.
# Judged on the reports of ours plus the soak's functional checks (child_stable, peer_*,
# clients); its RSS/thread lines are informational only (ASan's quarantine holds freed
# memory, and instrumented debug code is slower).
SOAK_S="${MEMCHECK_SOAK:-90}"
if [ $# -eq 0 ] && [ "$SOAK_S" -gt 0 ]; then
    logdir="$ROOT/target/memcheck/logs/soak"
    mkdir -p "$logdir" target/memcheck/soak
    t0=$(date +%s)
    MEMCHECK_LOGDIR="$logdir" PATH="$WORK/bin:$PATH" FAULTS_TMP="$WORK" \
        VMOD_PEER="$SO/libvmod_peer.so" VMOD_SAINTMODE="$SO/libvmod_saintmode.so" \
        timeout --kill-after=30 $((SOAK_S + 600)) python3 faults/soak.py "$SOAK_S" --out target/memcheck/soak \
        > target/memcheck/soak.out 2>&1 || true
    cls="$(python3 faults/memcheck_classify.py "$logdir")"
    first="${cls%%$'\n'*}"
    ours="$(sed -n 's/^ours=\([0-9]*\).*/\1/p' <<<"$first")"
    noise="$(sed -n 's/.*noise=\([0-9]*\)/\1/p' <<<"$first")"
    ours_total=$((ours_total + ours))
    func_fail="$(grep -E '^FAIL (child_stable|peer_|clients|setup)' target/memcheck/soak.out | cut -c1-200 || true)"
    info="$(grep -E '^(PASS|FAIL) (rss_bounded|threads_baseline|reloads|saintmode)' target/memcheck/soak.out | cut -d: -f1 | tr '\n' ',' || true)"
    verdict=PASS
    { [ "$ours" -eq 0 ] && [ -z "$func_fail" ] && grep -q '^PASS child_stable' target/memcheck/soak.out; } || verdict=FAIL
    echo "$verdict soak_${SOAK_S}s: ASan reports in our code $ours, varnishd/compiler noise $noise, functional checks $([ -z "$func_fail" ] && echo ok || echo "FAILED: $func_fail"); informational: ${info%,} ($(( $(date +%s) - t0 ))s, output target/memcheck/soak.out)"
    if [ "$ours" -gt 0 ]; then { echo "$cls" | tail -n +2 | head -80 | sed 's/^/    /'; } || true; fi
    if [ "$verdict" = PASS ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
fi
echo "noise by origin (exit-time leaks of varnishd and of the VCL compiler it runs):"
python3 faults/memcheck_classify.py target/memcheck/logs --summary || true
echo "memcheck: $(( $(date +%s) - t_start ))s, reports in our code: $ours_total; logs in target/memcheck/"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
