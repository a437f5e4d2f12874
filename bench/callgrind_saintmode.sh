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
# shellcheck disable=SC1091
command -v varnishd >/dev/null || . "$ROOT/target/varnish-env.sh"
[ -f "$SO" ] || { echo "missing $SO (cargo build --release -p vmod-saintmode)" >&2; exit 1; }

PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

port_of() { # workdir
    for _ in $(seq 1 600); do
        p=$(varnishadm -n "$1" debug.listen_address 2>/dev/null | awk '$1=="a0"{print $3; exit}') || true
        [ -n "${p:-}" ] && { echo "$p"; return 0; }
        sleep 0.2
    done
    return 1
}

cat > "$OUT/origin.vcl" <<'EOF'
vcl 4.1;
backend default none;
sub vcl_recv { return (synth(200)); }
sub vcl_synth { synthetic("ok"); return (deliver); }
EOF
varnishd -F -n "$OUT/origin" -a 127.0.0.1:0 -T 127.0.0.1:0 -j none -f "$OUT/origin.vcl" \
    -s malloc,64m > "$OUT/origin.log" 2>&1 & PIDS+=($!)
OPORT=$(port_of "$OUT/origin")

cat > "$OUT/sm.vcl" <<EOF
vcl 4.1;
import saintmode from "$SO";
backend origin { .host = "127.0.0.1"; .port = "$OPORT"; }
sub vcl_init { new sm = saintmode.saintmode(origin, 100000000); }
sub vcl_recv {
    if (req.url == "/count") { return (synth(200)); }
    if (req.url ~ "^/(sm|bl|warm)/") {
        set req.backend_hint = sm.backend();
    } else {
        set req.backend_hint = origin;
    }
    return (pass);
}
sub vcl_backend_response {
    if (bereq.url ~ "^/(bl|blp)/") { saintmode.blacklist(1h); }
}
sub vcl_synth {
    set resp.http.X-Count = sm.blacklist_count();
    synthetic("ok");
    return (deliver);
}
EOF
valgrind --tool=callgrind --trace-children=yes --trace-children-skip='*/sh,*/rm,*/gcc,*/cc,*/cc1,*/as,*/ld*,*/collect2' --instr-atstart=no \
    --callgrind-out-file="$OUT/cg.%p" \
    varnishd -F -n "$OUT/front" -a 127.0.0.1:0 -T 127.0.0.1:0 -j none -f "$OUT/sm.vcl" \
    -s malloc,256m -p cli_timeout=600 -p thread_pool_min=10 -p thread_pool_max=50 \
    > "$OUT/front.log" 2>&1 & PIDS+=($!)
FPORT=$(port_of "$OUT/front")
CHILD=$(sed -n 's/^Debug: Child (\([0-9]*\)) Started.*/\1/p' "$OUT/front.log" | tail -n1)
[ -n "$CHILD" ] || { echo "no child pid in $OUT/front.log" >&2; exit 1; }

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
