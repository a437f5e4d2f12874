#!/usr/bin/env bash
# Instructions per fetch through the saintmode director against the plain backend, counted by
# valgrind's callgrind in the measured varnishd child (repeatable, unlike throughput on shared
# cores). The VCL is bench/run.sh's saintmode instance: /sm/* passes through `sm.backend()`,
# /plain/* straight to the same origin, /blp/* responses are blacklisted.
#
#   bench/callgrind_saintmode.sh [N entries (0)] [fetches per phase (2000)] [out dir]
#
# Prints one line per phase (instructions of the whole child per fetch) and the difference;
# the dumps (callgrind.out.<phase>) stay in the out dir for callgrind_annotate.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-0}
FETCHES=${2:-2000}
OUT=${3:-$(mktemp -d "${TMPDIR:-/tmp}/sm-callgrind.XXXXXX")}
SO="${VMOD_ARTIFACT_DIR:-$ROOT/target/release}/libvmod_saintmode.so"
mkdir -p "$OUT"
# shellcheck source=../scripts/lib/varnish.sh
. "$ROOT/scripts/lib/varnish.sh"
use_varnish_env "$ROOT" callgrind_saintmode varnishd
# shellcheck source=../scripts/lib/harness.sh
. "$ROOT/scripts/lib/harness.sh"
# shellcheck source=lib/vcl_saintmode.sh
. "$ROOT/bench/lib/vcl_saintmode.sh"
[ -f "$SO" ] || { echo "missing $SO (cargo build --release -p vmod-saintmode)" >&2; exit 1; }

cleanup() { harness stop "$OUT/front" "$OUT/origin" >/dev/null 2>&1 || true; }
trap cleanup EXIT

cat > "$OUT/origin.vcl" <<'EOF'
vcl 4.1;
backend default none;
sub vcl_recv { return (synth(200)); }
sub vcl_synth { synthetic("ok"); return (deliver); }
EOF
OPORT=$(harness start "$OUT/origin" --vcl "$OUT/origin.vcl")
vcl_saintmode "$OUT/sm.vcl" "$SO" "$OPORT"
FPORT=$(harness start "$OUT/front" --vcl "$OUT/sm.vcl" --storage malloc,256m --start-timeout 600 \
    --wrap "valgrind --tool=callgrind --trace-children=yes --trace-children-skip='*/sh,*/rm,*/gcc,*/cc,*/cc1,*/as,*/ld*,*/collect2' --instr-atstart=no --callgrind-out-file=$OUT/cg.%p" \
    -- -p cli_timeout=600 -p thread_pool_min=10 -p thread_pool_max=50)
CHILD=$(harness child "$OUT/front")

fetch() { # prefix count: sequential keep-alive GETs, distinct URLs
    python3 - "$FPORT" "$1" "$2" <<'PY'
import http.client, sys
port, prefix, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
bad = 0
for i in range(n):
    c.request("GET", f"{prefix}{i}")
    r = c.getresponse(); r.read()
    bad += r.status != 200
if bad: sys.exit(f"{bad} non-200 answers")
PY
}

if [ "$N" -gt 0 ]; then fetch /blp/ "$N"; fi
COUNT=$(curl -s -D - -o /dev/null "http://127.0.0.1:$FPORT/count" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-count"{print $2}')
fetch /sm/warm- 200; fetch /plain/warm- 200
callgrind_control -i on "$CHILD" >/dev/null
for phase in plain sm plain2 sm2; do
    callgrind_control -z "$CHILD" >/dev/null
    fetch "/${phase%2}/x" "$FETCHES"
    callgrind_control -d "$phase" "$CHILD" >/dev/null
    # shellcheck disable=SC2012 # our own dump names; the newest is this phase's
    f=$(ls -t "$OUT"/cg."$CHILD".* | head -n1)
    mv "$f" "$OUT/callgrind.out.$phase"
    # One dump per thread or one in all: sum the event totals.
    ir=$(awk '/^summary:/{s+=$2} END{print s}' "$OUT/callgrind.out.$phase")
    printf '%s\t%d entries\t%d instructions per fetch\n' "$phase" "${COUNT:-0}" $(( ir / FETCHES ))
done
echo "dumps: $OUT" >&2
