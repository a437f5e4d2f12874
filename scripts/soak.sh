#!/usr/bin/env bash
# Soak test: one varnishd with both VMODs for SECONDS (default 600, capped at 7200) under a
# paced load (40 GET/s through saintmode around two local origins, one of which fails every
# 4th object; 5 PURGE/s forwarded by two named peers to a local peer server), with the peer
# server down 8 s out of every 20 s and a VCL reload (load new, use, cold, discard old) every
# 30 s. Samples RSS, threads and the PEER/SAINTMODE counters every 2 s into
# target/soak/samples.csv and draws target/soak/soak.png.
#
#   scripts/soak.sh [SECONDS]
#
# Verdict rules (details in faults/soak.py's header), one PASS/FAIL line each:
#   child_stable     no child restart, no panic;
#   rss_bounded      median RSS of the last third <= median of the middle third +10% +4 MiB
#                    (first third = warm-up, not judged; medians ignore reload spikes);
#   threads_baseline after every discard and at the end, min of 5 thread counts <= the
#                    pre-reload baseline + 4, and exactly one VCL's worth of peer-* threads
#                    (worker pools are fixed so the count only moves with the VMODs);
#   reloads          every discard completes and removes the old VCL's counters;
#   peer_fwd/small   per VCL generation, once drained: queued == sent+failed+expired and
#                    offered == queued+dropped+refused (offered counted by the load generator
#                    from the x-vcl label of each PURGE response);
#   clients          every request answered, <= 0.5% of GETs not 200;
#   saintmode        exercised (calls, expiries) and the live count bounded.
# Last line "N passed, M failed"; exit 1 if any failed. Only 127.0.0.1 is used.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
SECONDS_ARG="${1:-600}"
case "$SECONDS_ARG" in ''|*[!0-9]*) echo "soak: SECONDS must be a number" >&2; exit 2;; esac
[ "$SECONDS_ARG" -gt 7200 ] && SECONDS_ARG=7200
# shellcheck source=../scripts/lib/varnish.sh
. "$ROOT/scripts/lib/varnish.sh"
use_varnish_env "$ROOT" soak
# The plot needs matplotlib (the verdict does not): use a python3 that has it, installing
# Debian's python3-matplotlib only when none does.
PY=python3
has_mpl() { "$1" -c 'import matplotlib' >/dev/null 2>&1; }
if ! has_mpl "$PY"; then
    if ! has_mpl /usr/bin/python3 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q python3-matplotlib >/dev/null 2>&1 || true
    fi
    if has_mpl /usr/bin/python3; then PY=/usr/bin/python3; else echo "soak: no matplotlib; no PNG" >&2; fi
fi
cargo build --release --workspace --locked -q
mkdir -p target/soak
export FAULTS_TMP="${FAULTS_TMP:-$(mktemp -d "${TMPDIR:-/tmp}/soak.XXXXXX")}"
trap 'rm -rf "$FAULTS_TMP"' EXIT
# soak.py stops its own varnishd and servers; the time limit is a last resort against a hang.
timeout --signal=TERM --kill-after=30 $((SECONDS_ARG + 600)) "$PY" faults/soak.py "$SECONDS_ARG" --out target/soak
