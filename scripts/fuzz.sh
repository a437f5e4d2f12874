#!/usr/bin/env bash
# cargo-fuzz (libFuzzer) over the pure parts of both VMODs (issue 6), each target for a bounded
# time (default 60 s each), printing executions per target. Crashers land in
# fuzz/artifacts/<target>/; copy them to fuzz/regressions/<target>/ to keep them: every file
# there is replayed first (a regression test) before fuzzing.
#
#   scripts/fuzz.sh [SECONDS]
#
# The toolchain is stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz use its nightly-only flags.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SECS="${1:-60}"
case "$SECS" in ''|*[!0-9]*) echo "fuzz: SECONDS must be a number" >&2; exit 2;; esac
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
cd "$ROOT/fuzz"
cargo fuzz build -O >/dev/null
TARGETS=(snapshot_wire header_validation blacklist_model)
fail=0
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus/$t" "regressions/$t" "artifacts/$t"
    bin="target/x86_64-unknown-linux-gnu/release/$t"
    if compgen -G "regressions/$t/*" >/dev/null; then
        if ! "$bin" regressions/"$t"/* >"artifacts/$t.regress.log" 2>&1; then
            echo "FAIL $t: a regression input crashes again (artifacts/$t.regress.log)"; fail=1
        fi
    fi
    log="artifacts/$t.log"
    set +e
    timeout --kill-after=30 $((SECS + 60)) "$bin" "corpus/$t" -max_total_time="$SECS" -max_len=4096 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    execs=$(awk '/stat::number_of_executed_units/{print $2}' "$log" | tail -n1)
    if [ "$rc" -eq 0 ]; then
        echo "PASS $t: ${execs:-?} executions in ${SECS} s"
    else
        echo "FAIL $t: crash after ${execs:-?} executions (rc $rc): $(ls -t artifacts/$t/ | head -n1); see fuzz/$log"
        grep -m3 -E "panicked|ERROR" "$log" | sed 's/^/    /' || true
        fail=1
    fi
done
exit $fail
