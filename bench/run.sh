#!/usr/bin/env bash
# Benchmark suite for the peer and saintmode VMODs (issues 5 and 16). Throughput figures are ratios
# measured side by side in one run: A and B alternated in many short runs, the measured varnishd
# pinned to one core (BENCH_CPU_MEASURED) and wrk, the destinations and this script to the other
# (BENCH_CPU_LOAD). Every alternation group carries its A/A control; a group whose A/A median falls
# outside BENCH_AA_BAND is measured again (at most BENCH_AA_RETRIES times, within the budget) and its
# figures are reported invalid if it stays outside. Each run also bills CPU time per request (the
# measured child's utime+stime from /proc). Micro-benchmarks come from the crates' `cargo bench` targets.
# Results: target/bench/results.json and a table on stdout (target/bench/results.md too).
#
#   bench/run.sh                         full run (bounded: under 10 minutes on 2 cores)
#   BENCH_ONLY="peer sender" bench/run.sh   only some sections:
#                                        peer micro sender p99 drain memory saintmode
#
# Expects the release build of the VMODs (make release) and Varnish from `make bootstrap`
# (target/varnish-env.sh is sourced when varnishd is not on PATH). Installs wrk and fetches/builds
# the C comparators (varnish-modules' saintmode, libvmod-curl) into a cache outside the clone
# (bench/lib/tools.sh). A figure that cannot be measured is recorded as null with the reason.
# Environment knobs (defaults in brackets):
#   BENCH_DURATION [1]  seconds per wrk run        BENCH_REPS [6]   alternations per peer figure
#   BENCH_SM_REPS [3]   alternations per saintmode size (that result is far above the noise)
#   BENCH_CONNS [16]    wrk connections            BENCH_THREADS [2] wrk threads
#   BENCH_AA_BAND ["0.97 1.03"]  A/A median accepted  BENCH_AA_RETRIES [2]  repeats of a group outside it
#   BENCH_CPU_MEASURED [0] / BENCH_CPU_LOAD [1]  cores (taskset); pinning is off with fewer than 2 CPUs
#   BENCH_NS ["0 1000 10000 100000"]  saintmode blacklist sizes
#   BENCH_P99_DURATION [6]  seconds per open-loop run (the three fronts in turns)   BENCH_P99_LOAD [0.5]  fraction of capacity
#   BENCH_P99_REPS [4]  BENCH_P99_AA_BAND ["0.9 1.1"]  p99 runs and its A/A band; BENCH_P99_CONNS [CONNS] per front
#   BENCH_P99_BLOCK [0.25]  seconds a front is driven alone before the next one's turn
#   BENCH_PEER_RESERVE / BENCH_MICRO_RESERVE / BENCH_P99_RESERVE  seconds kept for later sections
#                       (default: the calibrated costs of the wanted later sections, SECTION_COST)
#   BENCH_DRAIN_REPS [4]  drain measurements   BENCH_SENDER_RATE [2000]  req/s on the sender front
#   BENCH_PEER_CONNS [1]  sender concurrency of the named peer = wrk connections of the drain denominator
#   BENCH_PEER_OBJ_ARGS   arguments of peer.peer(...) for the drain and memory figures (large queue)
#   BENCH_PEER_SET_EXTRA  extra arguments appended to peer.set("127.0.0.1", PORT ...)
#   BENCH_QUEUED [30000]  requests queued for peer_bytes_per_queued_request
#   BENCH_BUDGET [540]    seconds; sections (and A/A repeats) that would not fit are skipped (null)
#   BENCH_KEEP=1  keep the run directory (VCLs, varnishd logs, raw measurements)
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$BENCH_DIR")
cd "$ROOT"

log() { printf 'bench: %s\n' "$*" >&2; }
T_START=$(date +%s)   # the budget counts from here
logt() { log "$* (at $(( $(date +%s) - T_START )) s)"; }
die() { printf 'bench: ERROR: %s\n' "$*" >&2; exit 1; }

DUR="${BENCH_DURATION:-1}"
REPS="${BENCH_REPS:-6}"
SM_REPS="${BENCH_SM_REPS:-3}"
AA_BAND="${BENCH_AA_BAND:-0.97 1.03}"
AA_RETRIES="${BENCH_AA_RETRIES:-2}"
CPU_MEASURED="${BENCH_CPU_MEASURED:-0}"
CPU_LOAD="${BENCH_CPU_LOAD:-1}"
P99_DUR="${BENCH_P99_DURATION:-6}"
P99_LOAD="${BENCH_P99_LOAD:-0.5}"
CONNS="${BENCH_CONNS:-16}"
THREADS="${BENCH_THREADS:-2}"
NS="${BENCH_NS:-0 1000 10000 100000}"
QUEUED="${BENCH_QUEUED:-30000}"
ONLY="${BENCH_ONLY:-peer micro sender p99 drain memory saintmode}"
BUDGET="${BENCH_BUDGET:-540}"   # seconds; what would not fit in it is skipped (null with the reason)
PEER_SET_EXTRA="${BENCH_PEER_SET_EXTRA:-}"
PEER_CONNS="${BENCH_PEER_CONNS:-1}"
OBJ_QUEUE=1000
# The named peer used where the default peer's queue (1000) is too small: drain and memory figures.
PEER_OBJ_ARGS="${BENCH_PEER_OBJ_ARGS:-queue_size=@QUEUE@, concurrency=$PEER_CONNS, max_attempts=1000, backoff=100ms, max_backoff=1s, max_age=1h, timeout=1h}"
BENCH_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/vmod-rs/bench"
OUT_DIR="$ROOT/target/bench"

want() { case " $ONLY " in *" $1 "*) return 0;; esac; return 1; }

# ------------------------------------------------------------------ environment
# shellcheck source=../scripts/lib/varnish.sh
. "$ROOT/scripts/lib/varnish.sh"
use_varnish_env "$ROOT" bench varnishd api

# shellcheck source=lib/tools.sh
. "$BENCH_DIR/lib/tools.sh"
ensure_tools

PEER_SO="${VMOD_ARTIFACT_DIR:-$ROOT/target/release}/libvmod_peer.so"
SAINT_SO="${VMOD_ARTIFACT_DIR:-$ROOT/target/release}/libvmod_saintmode.so"
if [ ! -f "$PEER_SO" ] || [ ! -f "$SAINT_SO" ]; then
    log "release VMODs missing: cargo build --release --workspace"
    cargo build --release --workspace --locked >&2 || log "release build failed: our figures will be null"
fi

# varnishd instances, servers and reserved ports: the harness (scripts/harness/).
# shellcheck source=../scripts/lib/harness.sh
. "$ROOT/scripts/lib/harness.sh"

RUN=$(mktemp -d "${TMPDIR:-/tmp}/vmod-bench.XXXXXX")
declare -A VD_DIR VD_PORT VD_MGR WARMED
BG_PIDS=()
cleanup() {
    local n p dirs=()
    for n in "${!VD_MGR[@]}"; do dirs+=("$RUN/$n"); done
    [ ${#dirs[@]} -eq 0 ] || harness stop "${dirs[@]}" 2>/dev/null || true
    for p in "${BG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ "${BENCH_KEEP:-0}" = 1 ]; then log "run directory kept: $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

: > "$RUN/runs.jsonl"
: > "$RUN/figures.jsonl"
: > "$RUN/groups.jsonl"
: > "$RUN/pins.jsonl"

# ------------------------------------------------------------------ CPU pinning
# The measured varnishd (manager and child: children inherit the affinity) runs alone on
# CPU_MEASURED; this script and so everything it starts (wrk, origins, destinations, helpers) on
# CPU_LOAD. Other processes on the machine are not ours to move: the A/A controls show their effect.
PIN=""
NCPU=$(nproc)        # before pinning: nproc counts the CPUs this process may use
ALL_CPUS=$(taskset -pc $$ | awk '{print $NF}')
if [ "$NCPU" -ge 2 ] && command -v taskset >/dev/null; then
    if taskset -pc "$CPU_LOAD" $$ >/dev/null; then
        PIN=1
        log "pinning: measured varnishd on CPU $CPU_MEASURED; this script, wrk and destinations on CPU $CPU_LOAD"
    else
        log "taskset failed: running unpinned"
    fi
else
    log "fewer than 2 CPUs or no taskset: running unpinned"
fi
# Measured instances: the fronts whose throughput, latency or memory a figure reports.
is_measured() { case $1 in f_*|l_*|s_ours|s_c|d_front|m_front|sm_mem_ours|sm_mem_c) return 0;; esac; return 1; }

jstr() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }
fig_ratio() { # name group num den target [note]
    printf '{"figure":"%s","kind":"ratio","group":"%s","num":"%s","den":"%s","target":%s,"note":%s}\n' \
        "$1" "$2" "$3" "$4" "$(jstr "$5")" "$(jstr "${6:-}")" >> "$RUN/figures.jsonl"
}
fig_null() { # name target reason
    log "figure $1: null ($3)"
    printf '{"figure":"%s","kind":"null","target":%s,"reason":%s}\n' "$1" "$(jstr "$2")" "$(jstr "$3")" \
        >> "$RUN/figures.jsonl"
}
fig_samples() { # name unit target samples_json [extra_json] [reason] [value]
    printf '{"figure":"%s","kind":"samples","unit":"%s","target":%s,"samples":%s,"extra":%s,"reason":%s,"value":%s}\n' \
        "$1" "$2" "$(jstr "$3")" "$4" "${5:-null}" "$(jstr "${6:-}")" "${7:-null}" >> "$RUN/figures.jsonl"
}

# ------------------------------------------------------------------ varnishd instances
# varnish-modules' Debian build links libvarnishapi.so.3: every instance (ours too, so that both
# run alike) gets the library directory of the Varnish in use.
VD_LDPATH="$(pkg-config --variable=libdir varnishapi)${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
VD_ERR=""

# Does a VCL load (compile, dlopen its VMODs, run vcl_init) in a throwaway instance? 0 if so;
# VD_ERR holds the complaint otherwise. The probe instance is started on first use.
vcl_check() { # vclfile
    local out
    if [ -z "${VD_MGR[probe]:-}" ]; then
        printf 'vcl 4.1;\nbackend default none;\nsub vcl_recv { return (synth(200)); }\n' > "$RUN/probe.vcl"
        vd_start probe "$RUN/probe.vcl" || die "cannot start varnishd at all: $VD_ERR"
    fi
    VD_CHECKS=$(( ${VD_CHECKS:-0} + 1 ))
    if out=$(vd_adm probe vcl.load "check$VD_CHECKS" "$1" 2>&1); then
        vd_adm probe vcl.discard "check$VD_CHECKS" >/dev/null 2>&1 || true
        return 0
    fi
    VD_ERR=$(printf '%s\n' "$out" | grep -v -e '^$' -e '^Message from VCC' -e 'VCL compilation failed' \
             -e 'Failed initialization' -e '^Message:' | head -n 4 | tr '\n\t' '  ' \
             | sed -e 's#\./vmod_cache/_vmod_[A-Za-z0-9_]*\.[0-9a-f]*#<vmod_cache copy>#g' -e 's/  */ /g' | cut -c1-400)
    return 1
}

# The harness starts it in $RUN/NAME (varnishd -n $RUN/NAME/n, output in $RUN/NAME/log) on a
# port the OS assigns; a measured instance gets CPU_MEASURED (sched_setaffinity, as taskset -c).
vd_start() { # name vclfile [varnishd args...]
    local name=$1 vcl=$2 dir="$RUN/$1" port
    shift 2
    mkdir -p "$dir"
    local pin=()
    if [ -n "$PIN" ] && is_measured "$name"; then pin=(--cpus "$CPU_MEASURED"); fi
    if ! port=$(harness start "$dir" --vcl "$vcl" --storage malloc,256m "${pin[@]}" --env "LD_LIBRARY_PATH=$VD_LDPATH" \
            ${VD_MALLOC_CONF:+--env "MALLOC_CONF=$VD_MALLOC_CONF"} -- -p vcc_allow_inline_c=off "$@" 2>"$dir/harness.err"); then
        VD_ERR=$(grep -v '^$' "$dir/log" 2>/dev/null | head -n 4 | tr '\n' ' ' | cut -c1-300)
        [ -n "$VD_ERR" ] || VD_ERR=$(head -c 300 "$dir/harness.err")
        log "varnishd $name failed: $VD_ERR"
        return 1
    fi
    VD_DIR[$name]="$dir/n"
    VD_MGR[$name]=$(cat "$dir/pid")
    VD_PORT[$name]=$port
    # Record (and check) where the manager and its child may run: taskset -p of both pids.
    local child mgr_aff child_aff want=any
    child=$(vd_child "$name")
    mgr_aff=$(taskset -p "${VD_MGR[$name]}" 2>/dev/null | awk '{print $NF}')
    child_aff=$(taskset -p "$child" 2>/dev/null | awk '{print $NF}')
    if [ -n "$PIN" ]; then
        want=$(printf '%x' $(( 1 << ( $(is_measured "$name" && echo "$CPU_MEASURED" || echo "$CPU_LOAD") ) )))
        [ "$child_aff" = "$want" ] || log "WARNING: $name child $child has affinity mask ${child_aff:-?}, expected $want"
    fi
    printf '{"name":"%s","measured":%s,"manager_pid":%s,"child_pid":%s,"manager_mask":"%s","child_mask":"%s","expected_mask":"%s"}\n' \
        "$name" "$(is_measured "$name" && echo true || echo false)" "${VD_MGR[$name]}" "${child:-null}" "$mgr_aff" "$child_aff" "$want" >> "$RUN/pins.jsonl"
}

vd_stop() {
    local name=$1
    [ -n "${VD_MGR[$1]:-}" ] || return 0
    harness stop "$RUN/$name" 2>/dev/null || true
    unset "VD_MGR[$name]"
}

vd_adm() { local name=$1; shift; varnishadm -n "${VD_DIR[$name]}" "$@"; }
vd_stat() { varnishstat -n "${VD_DIR[$1]}" -1 -f "$2" 2>/dev/null | awk -v f="$2" '$1==f{print $2; exit}'; }
vd_child() { pgrep -P "${VD_MGR[$1]}" | head -n1; }
vd_rss_kb() { awk '/^VmRSS:/{print $2}' "/proc/$(vd_child "$1")/status"; }
vd_url() { echo "http://127.0.0.1:${VD_PORT[$1]}$2"; }

# Wait until our own processes are quiet (a peer draining a backlog, retries...) so the next run
# does not pay for the previous one. Only the CPU time of the varnishd children and helpers started
# here counts: other activity on the machine is noise that alternation and medians must absorb.
our_ticks() {
    local n p pids=() t=0
    for n in "${!VD_MGR[@]}"; do p=$(pgrep -P "${VD_MGR[$n]}" 2>/dev/null | head -n1) && pids+=("$p"); done
    pids+=("${BG_PIDS[@]}")
    for p in "${pids[@]}"; do
        [ -r "/proc/$p/stat" ] && t=$(( t + $(awk '{sub(/^.*\) /,""); print $12 + $13}' "/proc/$p/stat") ))
    done
    echo "$t"
}
wait_idle() {
    local i a b
    sleep 0.1
    for i in $(seq 1 25); do
        a=$(our_ticks); sleep 0.2; b=$(our_ticks)
        [ $(( b - a )) -le 2 ] && return 0   # <= 2 clock ticks (20 ms) of CPU in 200 ms
    done
    log "our processes still busy after 5 s; measuring anyway"
}

# The child pid of the instance listening on a URL's port (the one whose CPU a run bills).
child_of_url() {
    local port=${1##*:} n
    port=${port%%/*}
    for n in "${!VD_PORT[@]}"; do
        if [ "${VD_PORT[$n]}" = "$port" ] && [ -n "${VD_MGR[$n]:-}" ]; then vd_child "$n"; return; fi
    done
}

ATTEMPT=1
# wrk once against a URL through bench/lib/measure.py (CPU of the serving child and of wrk itself);
# appends a run record. Args: group rep label url [conns] [threads]
# Args: group rep label url [connections] [threads] [cpu]: with a cpu, wrk runs there (taskset)
# instead of on CPU_LOAD with this script.
wrk_run() {
    local group=$1 rep=$2 label=$3 url=$4 c=${5:-$CONNS} t=${6:-$THREADS} cpu=()
    [ -n "${7:-}" ] && [ -n "$PIN" ] && cpu=(taskset -c "$7")
    read -r WRK_RPS WRK_CPU < <(python3 "$BENCH_DIR/lib/measure.py" --pid "$(child_of_url "$url")" --timeout $(( DUR + 30 )) \
        --append "$RUN/runs.jsonl" --tag "group=$group" --tag "rep=$rep" --tag "label=$label" --tag "attempt=$ATTEMPT" \
        -- "${cpu[@]}" wrk -t"$t" -c"$c" -d"${DUR}s" "$url")
    log "  $group #$rep $label: $WRK_RPS req/s, child $WRK_CPU us CPU/req"
}

# Alternate labels within a group, rotating the order every rep. Args: group reps "label url" ...
alternate() {
    local group=$1 reps=$2 rep i n k pair
    shift 2
    local items=("$@")
    n=${#items[@]}
    for pair in "${items[@]}"; do  # warm-up, not recorded
        [ -n "${WARMED[${pair#* }]:-}" ] && continue
        wrk -t"$THREADS" -c"$CONNS" -d1s "${pair#* }" >/dev/null 2>&1 || true
        WARMED[${pair#* }]=1
    done
    for rep in $(seq 1 "$reps"); do
        for i in $(seq 0 $((n - 1))); do
            # Reps 1,2 use order 0..n-1 then its reverse, reps 3,4 the order rotated by one and its
            # reverse, ...: each label runs early and late equally often.
            k=$(( (i + (rep - 1) / 2) % n ))
            [ $((rep % 2)) -eq 0 ] && k=$(( (n - 1 - i + (rep - 1) / 2) % n ))
            pair=${items[$k]}
            wait_idle
            wrk_run "$group" "$rep" "${pair%% *}" "${pair#* }"
        done
    done
}

time_left() { echo $(( BUDGET - ( $(date +%s) - T_START ) )); }

# alternate(), gated on the group's A/A control: while the median of A/A ratios (aa_a / aa_b, two
# identical things) is outside AA_BAND, measure the whole group again (a new attempt; the report
# uses the last one), at most AA_RETRIES times and only while `reserve` seconds stay for the rest.
# Writes the verdict to groups.jsonl. Args: group reps aa_a aa_b reserve "label url" ...
gated_alternate() {
    local group=$1 reps=$2 aa_a=$3 aa_b=$4 reserve=$5 t0 spent aa valid
    shift 5
    local medians=()
    for ATTEMPT in $(seq 1 $(( AA_RETRIES + 1 ))); do
        t0=$(date +%s)
        alternate "$group" "$reps" "$@"
        spent=$(( $(date +%s) - t0 ))
        read -r aa valid < <(python3 "$BENCH_DIR/lib/report.py" --aa "$RUN/runs.jsonl" "$group" "$ATTEMPT" "$aa_a" "$aa_b" $AA_BAND)
        medians+=("$aa")
        log "  $group attempt $ATTEMPT: A/A median $aa ($( [ "$valid" = true ] && echo inside || echo OUTSIDE) $AA_BAND), ${spent}s"
        [ "$valid" = true ] && break
        if [ "$ATTEMPT" -le "$AA_RETRIES" ] && [ "$(time_left)" -lt $(( spent + reserve )) ]; then
            log "  $group: no time for another attempt (${spent}s needed, $(time_left)s left, ${reserve}s reserved)"
            break
        fi
    done
    printf '{"group":"%s","attempts":%d,"aa_label":"%s/%s","aa_medians":[%s],"band":"%s","valid":%s}\n' \
        "$group" "$ATTEMPT" "$aa_a" "$aa_b" "$(IFS=,; echo "${medians[*]}")" "$AA_BAND" "$valid" >> "$RUN/groups.jsonl"
    ATTEMPT=1
}

# Send exactly N requests (distinct URLs) with bench/lib/hammer.py. Args: port count prefix [extra args]
hammer() {
    local port=$1 count=$2 prefix=$3
    shift 3
    python3 "$BENCH_DIR/lib/hammer.py" --port "$port" --count "$count" --prefix "$prefix" "$@"
}

# ------------------------------------------------------------------ VCL
SYNTH='sub vcl_synth { set resp.http.Content-Type = "text/plain"; synthetic("ok"); return (deliver); }'
vcl_origin() { # file [sleep]
    {
        echo 'vcl 4.1;'
        [ -n "${2:-}" ] && echo 'import vtc;'
        echo 'backend default none;'
        echo "sub vcl_recv {${2:+ vtc.sleep($2);} return (synth(200)); }"
        echo "$SYNTH"
    } > "$1"
}
# Front whose vcl_recv optionally queues every request for the peer; answers synthetically so
# that the measured thing is the VCL call. Args: file peer_port|"" call(0/1) [extra recv code] [style]
# style "fn" (default): the default peer, peer.set() + peer.queue_req() (the issue's interface);
# style "obj": a named peer object built with $PEER_OBJ_ARGS (queue size, sender concurrency...).
# In the extra recv code, @PENDING@ stands for the pending() call of the style in use.
vcl_peer_front() {
    local style=${5:-fn} q=peer.queue_req pending=peer.pending
    [ "$style" = obj ] && { q=pr.queue_req; pending=pr.pending; }
    {
        echo 'vcl 4.1;'
        if [ -n "$2" ]; then
            echo "import peer from \"$PEER_SO\";"
            echo 'backend default none;'
            if [ "$style" = obj ]; then
                echo "sub vcl_init { new pr = peer.peer(${PEER_OBJ_ARGS//@QUEUE@/$OBJ_QUEUE}); pr.add_destination(\"127.0.0.1\", $2); }"
            else
                echo "sub vcl_init { peer.set(\"127.0.0.1\", $2$PEER_SET_EXTRA); }"
            fi
        else
            echo 'backend default none;'
        fi
        echo 'sub vcl_recv {'
        [ -n "${4:-}" ] && echo "    ${4//@PENDING@/$pending()}"
        [ "$3" = 1 ] && echo "    $q();"
        echo '    return (synth(200));'
        echo '}'
        echo "$SYNTH"
    } > "$1"
}
vcl_curl_front() { # file slow_port
    cat > "$1" <<EOF
vcl 4.1;
import curl from "$C_CURL_SO";
backend default none;
sub vcl_recv {
    curl.get("http://127.0.0.1:$2/");
    curl.free();
    return (synth(200));
}
$SYNTH
EOF
}
# shellcheck source=lib/vcl_saintmode.sh
. "$BENCH_DIR/lib/vcl_saintmode.sh"

header_of() { curl -s -D - -o /dev/null "$1" | awk -v h="$2" 'BEGIN{IGNORECASE=1} index(tolower($0), tolower(h)":")==1 {sub(/^[^:]*:[ \t]*/,""); sub(/\r$/,""); print; exit}'; }

# ------------------------------------------------------------------ capabilities
# Which name a saintmode VMOD uses for blacklisting (read from the VMOD's embedded JSON spec).
sm_verb() { if grep -aq 'denylist_count' "$1" && ! grep -aq 'blacklist_count' "$1"; then echo denylist; else echo blacklist; fi; }
PEER_OK="" PEER_ERR="" PEER_OBJ_OK="" PEER_OBJ_ERR=""
SAINT_OK="" SAINT_ERR=""
mkdir -p "$RUN/check"
if [ -f "$PEER_SO" ]; then
    vcl_peer_front "$RUN/check/peer.vcl" 9 1 'set req.http.X-Pending = peer.pending();'
    if vcl_check "$RUN/check/peer.vcl"; then PEER_OK=1; else PEER_ERR="our peer VMOD lacks the interface (set/queue_req/pending): $VD_ERR"; fi
    vcl_peer_front "$RUN/check/peer-obj.vcl" 9 1 'set req.http.X-Pending = @PENDING@;' obj
    if vcl_check "$RUN/check/peer-obj.vcl"; then PEER_OBJ_OK=1; else PEER_OBJ_ERR="our peer VMOD has no peer.peer($PEER_OBJ_ARGS) object: $VD_ERR"; fi
else
    PEER_ERR="$PEER_SO missing (release build failed)"
fi
if [ -f "$SAINT_SO" ]; then
    printf 'vcl 4.1;\nbackend origin { .host = "127.0.0.1"; .port = "9"; }\n' > "$RUN/check/o.vcl"
    SAINT_VERB=$(sm_verb "$SAINT_SO")
    vcl_saintmode "$RUN/check/sm.vcl" "$SAINT_SO" 9 "$SAINT_VERB"
    if vcl_check "$RUN/check/sm.vcl"; then SAINT_OK=1; else SAINT_ERR="our saintmode VMOD lacks the interface (saintmode(BACKEND, INT), backend(), blacklist(DURATION), blacklist_count()): $VD_ERR"; fi
else
    SAINT_ERR="$SAINT_SO missing (release build failed)"
fi
C_SAINT_OK="" C_CURL_OK=""
if [ -n "$C_SAINTMODE_SO" ]; then
    C_SAINT_VERB=$(sm_verb "$C_SAINTMODE_SO")
    vcl_saintmode "$RUN/check/csm.vcl" "$C_SAINTMODE_SO" 9 "$C_SAINT_VERB"
    if vcl_check "$RUN/check/csm.vcl"; then C_SAINT_OK=1; else C_SAINTMODE_ERR="varnish-modules saintmode does not load here: $VD_ERR"; fi
fi
if [ -n "$C_CURL_SO" ]; then
    vcl_curl_front "$RUN/check/curl.vcl" 9
    if vcl_check "$RUN/check/curl.vcl"; then C_CURL_OK=1; else C_CURL_ERR="libvmod-curl does not load here: $VD_ERR"; fi
fi
vd_stop probe
[ -n "$PEER_OK" ] || log "peer figures: $PEER_ERR"
[ -n "$SAINT_OK" ] || log "saintmode figures: $SAINT_ERR"

# ------------------------------------------------------------------ run facts
cat > "$RUN/meta.json" <<EOF
{
  "cpu_count": $NCPU,
  "cpu_model": $(jstr "$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)"),
  "kernel": $(jstr "$(uname -sr)"),
  "varnish_version": $(jstr "$(varnishd -V 2>&1 | head -n1)"),
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "command": "make bench (bench/run.sh)",
  "git": $(jstr "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD -- peer saintmode 2>/dev/null || echo '+uncommitted')"),
  "comparators": {
    "saintmode": $(jstr "$( [ -n "$C_SAINT_OK" ] && cat "$BENCH_CACHE/c-saintmode/VERSION" || echo "unavailable: $C_SAINTMODE_ERR")"),
    "curl": $(jstr "$( [ -n "$C_CURL_OK" ] && cat "$BENCH_CACHE/c-curl/VERSION" || echo "unavailable: $C_CURL_ERR")")
  },
  "loadavg": $(jstr "$(cut -d' ' -f1-3 /proc/loadavg)"),
  "pin_summary": $(jstr "$( [ -n "$PIN" ] && echo "measured varnishd on CPU $CPU_MEASURED, wrk and destinations on CPU $CPU_LOAD (taskset)" || echo "unpinned")"),
  "config": {"wrk": "-t$THREADS -c$CONNS -d${DUR}s", "reps": $REPS, "saintmode_reps": $SM_REPS, "aa_band": $(jstr "$AA_BAND"), "aa_retries": $AA_RETRIES, "budget_s": $BUDGET, "wrk_version": $(jstr "$(wrk -v 2>&1 | head -n1 | awk '{print $2}')")}
}
EOF

T97=">= 0.97"

# Seconds each section needs at least, without A/A repeats (a full run on the shared 2-core machine,
# 2026-11-29; micro without a build). An A/A repeat or a compile is only started when what is left
# covers it plus the cost of the wanted sections after it.
SECTION_ORDER=(peer micro sender p99 drain memory saintmode)
declare -A SECTION_COST=([peer]=75 [micro]=30 [sender]=45 [p99]=40 [drain]=46 [memory]=64 [saintmode]=150)
reserve_after() {
    local s seen="" total=0
    for s in "${SECTION_ORDER[@]}"; do
        if [ -n "$seen" ] && want "$s"; then total=$((total + SECTION_COST[$s])); fi
        [ "$s" = "$1" ] && seen=1
    done
    echo "$total"
}

# The targets of issue 16, for the figures a skipped section leaves null.
declare -A TARGET=([noise_control_aa]="0.97 .. 1.03" [peer_queue_req_ns]="<= 1000" [peer_overhead_slow]=">= 0.97"
    [peer_overhead_down]=">= 0.97" [peer_sender_cpu_ratio]="<= 2.0" [peer_p99_ratio]="<= 1.1"
    [peer_drain_ratio]=">= 0.8" [peer_bytes_per_queued_request]="<= 1331" [saintmode_check_ns_100000]="<= 200"
    [saintmode_lookup_0]=">= 0.97" [saintmode_lookup_1000]=">= 0.97" [saintmode_lookup_10000]=">= 0.97"
    [saintmode_lookup_100000]=">= 0.97" [saintmode_bytes_per_entry]="<= 72")

# Does a section fit in what is left of the budget? If not, its figures are null with the reason.
# Args: section seconds_needed figure...
fits() {
    local sec=$1 need=$2 f
    shift 2
    want "$sec" || return 1
    [ "$(time_left)" -ge "$need" ] && return 0
    log "== $sec: skipped, $(time_left) s left of the $BUDGET s budget, about $need s needed"
    for f in "$@"; do fig_null "$f" "${TARGET[$f]:-}" "skipped: time budget ($BUDGET s) spent before this section (about $need s needed)"; done
    return 1
}

# ================================================================== peer overhead + blocking anchor
if fits peer 60 noise_control_aa peer_overhead_fast peer_overhead_slow peer_overhead_down blocking_anchor_slow; then
    logt "== peer overhead and blocking anchor"
    vcl_origin "$RUN/p_fast.vcl"
    vcl_origin "$RUN/p_slow.vcl" 200ms
    vd_start p_fast "$RUN/p_fast.vcl" || die "origin varnishd failed: $VD_ERR"
    vd_start p_slow "$RUN/p_slow.vcl" -p thread_pool_max=2000 || die "origin varnishd failed: $VD_ERR"
    # Nothing listens there (connections are refused); the harness holds the port for the run.
    spawn_port DOWN_PORT "$RUN/down.port" "${HARNESS_PY[@]}" reserve || die "no port reserved for the down peer"
    BG_PIDS+=("$SPAWNED_PID")
    items=()
    if [ -n "$PEER_OK" ]; then
        # Baseline: the same VCL (peer configured) minus the call.
        vcl_peer_front "$RUN/f_nocall.vcl" "${VD_PORT[p_fast]}" 0
    else
        vcl_peer_front "$RUN/f_nocall.vcl" "" 0
    fi
    if ! vd_start f_nocall "$RUN/f_nocall.vcl"; then
        die "baseline varnishd failed: $VD_ERR"
    fi
    items+=("nocall $(vd_url f_nocall /x)")
    # A/A control: a second instance with the very same VCL shows the noise floor of this machine.
    if vd_start f_nocall2 "$RUN/f_nocall.vcl"; then
        items+=("nocall2 $(vd_url f_nocall2 /x)")
        fig_ratio noise_control_aa peer nocall2 nocall "0.97 .. 1.03" "A/A control: two identical no-call instances"
    fi
    if [ -n "$PEER_OK" ]; then
        for kind in fast slow down; do
            case $kind in fast) port=${VD_PORT[p_fast]};; slow) port=${VD_PORT[p_slow]};; down) port=$DOWN_PORT;; esac
            vcl_peer_front "$RUN/f_$kind.vcl" "$port" 1
            if vd_start "f_$kind" "$RUN/f_$kind.vcl"; then
                items+=("$kind $(vd_url "f_$kind" /x)")
                tgt=$T97; [ "$kind" = fast ] && tgt=""   # forwarding every request costs real CPU: no target
                fig_ratio "peer_overhead_$kind" peer "$kind" nocall "$tgt" "peer $kind"
            else
                fig_null "peer_overhead_$kind" "$( [ "$kind" = fast ] || echo "$T97")" "varnishd with the peer VCL failed: $VD_ERR"
            fi
        done
    else
        for kind in fast slow down; do fig_null "peer_overhead_$kind" "$( [ "$kind" = fast ] || echo "$T97")" "$PEER_ERR"; done
    fi
    if [ -n "$C_CURL_OK" ]; then
        vcl_curl_front "$RUN/f_curl.vcl" "${VD_PORT[p_slow]}"
        if vd_start f_curl "$RUN/f_curl.vcl"; then
            items+=("curl $(vd_url f_curl /x)")
            fig_ratio blocking_anchor_slow peer curl nocall "" "libvmod-curl GET to the 200 ms peer in vcl_recv"
        else
            fig_null blocking_anchor_slow "" "varnishd with libvmod-curl failed: $VD_ERR"
        fi
    else
        fig_null blocking_anchor_slow "" "libvmod-curl unavailable: $C_CURL_ERR"
    fi
    gated_alternate peer "$REPS" nocall2 nocall "${BENCH_PEER_RESERVE:-$(reserve_after peer)}" "${items[@]}"
    for n in f_nocall f_nocall2 f_fast f_slow f_down f_curl p_fast p_slow; do vd_stop "$n"; done
fi

# ================================================================== cargo bench micro-benchmarks
MICRO_IDS=(peer_queue_req_ns saintmode_check_ns_0 saintmode_check_ns_100000)
# The crates' own micro-benchmarks (peer/benches, saintmode/benches; harness = false) print one
# `bench-figure {json}` line per figure: median and spread. peer's links without varnishd's
# symbols only without its default `vmod` feature, hence one cargo call per crate.
MICRO_CMDS=("cargo bench --locked -p vmod-peer --no-default-features --bench peer_queue_req_ns"
            "cargo bench --locked -p vmod-saintmode --bench check")
if want micro; then
    logt "== micro-benchmarks (cargo bench)"
    t_bench=$(date +%s)
    : > "$RUN/cargo-bench.log"
    why=""
    for cmd in "${MICRO_CMDS[@]}"; do
        # Reserve: what the later wanted sections need. A build cut short by the timeout is not
        # lost: cargo keeps what it compiled for the next run.
        left=$(( $(time_left) - ${BENCH_MICRO_RESERVE:-$(reserve_after micro)} ))
        [ $left -gt 240 ] && left=240
        if [ $left -lt 30 ]; then
            why="skipped: time budget ($BUDGET s) nearly spent"; break
        fi
        # Build on both cores, then measure on the measured varnishd's core (the quieter one).
        # shellcheck disable=SC2086
        if ! timeout "$left" taskset -c "$ALL_CPUS" $cmd --no-run >>"$RUN/cargo-bench.log" 2>&1; then
            why="'$cmd --no-run' failed or timed out after ${left}s (see the run's cargo-bench.log)"; continue
        fi
        left=$(( $(time_left) - ${BENCH_MICRO_RESERVE:-$(reserve_after micro)} + 60 ))
        # shellcheck disable=SC2086
        if [ $left -lt 20 ] || ! timeout "$left" ${PIN:+taskset -c "$CPU_MEASURED"} $cmd >>"$RUN/cargo-bench.log" 2>&1; then
            why="'$cmd' failed or timed out (see the run's cargo-bench.log)"
        fi
    done
    grep -v '^bench-figure ' "$RUN/cargo-bench.log" | tail -n 8 | sed 's/^/  cargo bench: /' >&2 || true
    python3 "$BENCH_DIR/lib/criterion_read.py" --lines "$RUN/cargo-bench.log" --target "peer_queue_req_ns=<= 1000" \
        --target "saintmode_check_ns_100000=<= 200" ${why:+--missing "$why"} "${MICRO_IDS[@]}" >> "$RUN/figures.jsonl"
    log "  cargo bench: $(( $(date +%s) - t_bench )) s"
fi

# ================================================================== peer sender CPU against wrk
# Sum of the per-request PEER.*.sent counters and the peer-* sender threads' CPU of one instance.
peer_sent() { varnishstat -n "${VD_DIR[$1]}" -1 -f 'PEER.*.sent' 2>/dev/null | awk '{s+=$2} END {print s+0}'; }
peer_busy() { varnishstat -n "${VD_DIR[$1]}" -1 -f 'PEER.*.queue_length' -f 'PEER.*.in_flight' 2>/dev/null | awk '{s+=$2} END {print s+0}'; }
# CPU of the peer-* sender threads of an instance: "TICKS NS" (utime+stime from stat, and the exact
# run time from schedstat, which the ratio uses: a few thousand requests are only a few 10 ms ticks).
sender_cpu() { python3 "$BENCH_DIR/lib/measure.py" snap "$(vd_child "$1")" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(*(sum(v for k, v in s[f].items() if k.startswith("peer-")) for f in ("threads", "threads_ns")))'; }
OPENLOOP="$ROOT/target/openloop/release/openloop"
OPENLOOP_ERR=""
ensure_openloop() {
    [ -x "$OPENLOOP" ] && [ -z "$(find "$BENCH_DIR/openloop/src" -newer "$OPENLOOP")" ] && return 0
    cargo build --release --offline -q --manifest-path "$BENCH_DIR/openloop/Cargo.toml" --target-dir "$ROOT/target/openloop" >&2 \
        && [ -x "$OPENLOOP" ] || { OPENLOOP_ERR="bench/openloop did not build"; return 1; }
}

if fits sender 25 peer_sender_cpu_ratio; then
    logt "== peer sender CPU per forwarded request, against wrk's CPU per request to the same destination"
    if [ -z "$PEER_OK" ]; then
        fig_null peer_sender_cpu_ratio "<= 2.0" "$PEER_ERR"
    else
        vcl_origin "$RUN/sd_dest.vcl"
        vd_start sd_dest "$RUN/sd_dest.vcl" || die "destination varnishd failed: $VD_ERR"
        vcl_peer_front "$RUN/f_sender.vcl" "${VD_PORT[sd_dest]}" 1
        vd_start f_sender "$RUN/f_sender.vcl" || die "sender front varnishd failed: $VD_ERR"
        # The default peer (peer.set) has one sender thread: wrk gets one connection and one thread.
        # The front is driven at a fixed rate the sender keeps up with (BENCH_SENDER_RATE, no queue
        # overflow, the sender not starved by saturated workers), by bench/openloop when it builds.
        SENDER_RATE=${BENCH_SENDER_RATE:-2000}
        samples=() s_us=() w_us=() w_same=() sent_n=() s_tick_us=() conns_n=()
        clk=$(getconf CLK_TCK)
        ensure_openloop || log "  $OPENLOOP_ERR: driving the front with wrk instead (the queue may overflow)"
        # What the idle sender threads burn (polling, timers): billed to no request, reported apart.
        wait_idle
        read -r _ ns0 < <(sender_cpu f_sender); sleep 1; read -r _ ns1 < <(sender_cpu f_sender)
        idle_us_per_s=$(( (ns1 - ns0) / 1000 ))
        log "  idle sender threads: $idle_us_per_s us CPU per second"
        for rep in $(seq 1 "$REPS"); do
            wait_idle
            read -r t0 ns0 < <(sender_cpu f_sender); n0=$(peer_sent f_sender); c0=$(vd_stat sd_dest MAIN.sess_conn)
            if [ -x "$OPENLOOP" ]; then
                timeout 30 "$OPENLOOP" --addr "127.0.0.1:${VD_PORT[f_sender]}" --path /s --rate "$SENDER_RATE" \
                    --duration "$(( DUR > 2 ? DUR : 2 ))" --conns 4 > "$RUN/sender.$rep.json" || true
            else
                wrk_run sender "$rep" front "$(vd_url f_sender /s)"
            fi
            for _ in $(seq 1 100); do [ "$(peer_busy f_sender)" = 0 ] && break; sleep 0.1; done  # <= 10 s drain
            read -r t1 ns1 < <(sender_cpu f_sender); n1=$(peer_sent f_sender); c1=$(vd_stat sd_dest MAIN.sess_conn)
            conns_n+=("$(( ${c1:-0} - ${c0:-0} ))")   # connections the sender opened: reuse or not
            # wrk where the sender runs (the measured CPU), so that both reach the destination
            # across the same two cores; and, for the record, wrk on the destination's own core,
            # where no wake-up crosses cores (much cheaper on a VM: no inter-processor interrupt).
            wait_idle
            wrk_run sender "$rep" direct_same_core "$(vd_url sd_dest /direct)" 1 1
            wsame=$(tail -n1 "$RUN/runs.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("gen_cpu_us_per_req") or "null")')
            wait_idle
            wrk_run sender "$rep" direct "$(vd_url sd_dest /direct)" 1 1 "$CPU_MEASURED"
            wus=$(tail -n1 "$RUN/runs.jsonl" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("gen_cpu_us_per_req") or "")')
            if [ $((n1 - n0)) -gt 0 ] && [ -n "$wus" ]; then
                sus=$(python3 -c "print(round(($ns1 - $ns0) / 1000 / ($n1 - $n0), 3))")
                s_tick_us+=("$(python3 -c "print(round(($t1 - $t0) * 1e6 / $clk / ($n1 - $n0), 3))")")
                s_us+=("$sus") w_us+=("$wus") w_same+=("$wsame") sent_n+=("$((n1 - n0))")
                samples+=("$(python3 -c "print(round($sus / $wus, 4))")")
                log "  sender #$rep: $((n1 - n0)) forwarded, sender threads $sus us CPU/req (ticks: ${s_tick_us[-1]}); wrk -t1 -c1 $wus us CPU/req from the sender's CPU, $wsame from the destination's"
            fi
        done
        extra="{\"sender_us_per_req\": [$(IFS=,; echo "${s_us[*]:-}")], \"sender_us_per_req_from_ticks\": [$(IFS=,; echo "${s_tick_us[*]:-}")], \"wrk_us_per_req\": [$(IFS=,; echo "${w_us[*]:-}")], \"wrk_us_per_req_on_the_destination_core\": [$(IFS=,; echo "${w_same[*]:-}")], \"forwarded\": [$(IFS=,; echo "${sent_n[*]:-}")], \"destination_connections\": [$(IFS=,; echo "${conns_n[*]:-}")], \"idle_sender_us_per_s\": $idle_us_per_s, \"front_rate\": $( [ -x "$OPENLOOP" ] && echo "$SENDER_RATE" || echo null), \"method\": \"CPU time of the front child's peer-* threads (/proc/<child>/task/*/schedstat run time; utime+stime in sender_us_per_req_from_ticks) from the start of a load run on the front until its queue is empty, / PEER.*.sent growth; divided by wrk -t1 -c1's own utime+stime (wait4 rusage) per request straight to the same destination varnishd$( [ -n "$PIN" ] && echo ", wrk pinned to the sender's CPU (CPU_MEASURED, the destination on CPU_LOAD)" || echo " (unpinned run)")\"}"
        fig_samples peer_sender_cpu_ratio ratio "<= 2.0" "[$(IFS=,; echo "${samples[*]:-}")]" "$extra" \
            "no forwarded requests counted (PEER.*.sent) or no wrk CPU figure"
        vd_stop f_sender; vd_stop sd_dest
    fi
fi

# ================================================================== client p99 with and without queue_req
if fits p99 35 peer_p99_ratio; then
    logt "== client p99 at ${P99_LOAD} of capacity, fixed rate (bench/openloop)"
    if [ -z "$PEER_OK" ]; then
        fig_null peer_p99_ratio "<= 1.1" "$PEER_ERR"
    elif ! ensure_openloop; then
        fig_null peer_p99_ratio "<= 1.1" "$OPENLOOP_ERR"
    else
        vcl_origin "$RUN/l_dest.vcl"
        vd_start pl_dest "$RUN/l_dest.vcl" || die "destination varnishd failed: $VD_ERR"
        vcl_peer_front "$RUN/l_call.vcl" "${VD_PORT[pl_dest]}" 1
        vcl_peer_front "$RUN/l_nocall.vcl" "${VD_PORT[pl_dest]}" 0
        vd_start l_call "$RUN/l_call.vcl" && vd_start l_nocall "$RUN/l_nocall.vcl" && vd_start l_nocall2 "$RUN/l_nocall.vcl" \
            || die "p99 front varnishd failed: $VD_ERR"
        # Capacity: closed-loop wrk against the front that calls queue_req (the slower of the two).
        wrk -t"$THREADS" -c"$CONNS" -d1s "$(vd_url l_call /w)" >/dev/null 2>&1 || true
        wait_idle
        caps=()
        for rep in 1 2 3; do wait_idle; wrk_run p99cap "$rep" call "$(vd_url l_call /c)"; caps+=("$WRK_RPS"); done
        cap=$(python3 -c 'import statistics,sys; print(int(statistics.median(float(x) for x in sys.argv[1:])))' "${caps[@]}")
        rate=$(python3 -c "print(int(${cap:-0} * $P99_LOAD))")
        P99_REPS=${BENCH_P99_REPS:-4} P99_CONNS=${BENCH_P99_CONNS:-$CONNS} P99_BLOCK=${BENCH_P99_BLOCK:-0.25} P99_AA_BAND=${BENCH_P99_AA_BAND:-0.9 1.1}
        # The generator must wake on time even on a busy load core: as root, a low real-time
        # priority (SCHED_FIFO 1; it sleeps between sends, and the kernel's RT throttling bounds
        # it anyway). Its lag is measured and gates the figure either way.
        RT=()
        if [ "$(id -u)" -eq 0 ] && command -v chrt >/dev/null && chrt -f 1 true 2>/dev/null; then RT=(chrt -f 1); fi
        : > "$RUN/p99.jsonl"
        p99_attempt=0 p99_valid=false
        while [ "$rate" -gt 0 ] && [ $p99_attempt -le "$AA_RETRIES" ]; do
            p99_attempt=$((p99_attempt + 1))
            labels=(nocall call nocall2) addrs=()
            for lab in "${labels[@]}"; do addrs+=(--addr "127.0.0.1:${VD_PORT[l_$lab]}"); done
            for rep in $(seq 1 "$P99_REPS"); do
                # One run takes the three fronts in turns of short blocks (BENCH_P99_BLOCK s), each
                # front alone on its core at the full rate during its blocks (openloop rotates the
                # order): a stall of the machine (a VM's host, softirq work deferred to a thread)
                # falls on any of them alike, while none adds its load to another's.
                wait_idle
                out=$(timeout $(( P99_DUR + 15 )) "${RT[@]}" "$OPENLOOP" "${addrs[@]}" --path /p \
                      --rate "$rate" --duration "$P99_DUR" --conns "$P99_CONNS" --block "$P99_BLOCK" --timeout 5 || true)
                for i in 0 1 2; do
                    # Front i's part of the run (its target entry), tagged with its label.
                    one=$(python3 -c 'import json,sys
try: r=json.loads(sys.argv[1])["targets"][int(sys.argv[2])]
except Exception: r={"p99_us": None}
r.update(label=sys.argv[3], rep=int(sys.argv[4]), attempt=int(sys.argv[5])); print(json.dumps(r))' \
                        "$out" "$i" "${labels[$i]}" "$rep" "$p99_attempt")
                    echo "$one" >> "$RUN/p99.jsonl"
                    log "  p99 #$rep ${labels[$i]}: $(python3 "$BENCH_DIR/lib/p99.py" line "$one")"
                done
            done
            read -r p99_valid p99_why < <(python3 "$BENCH_DIR/lib/p99.py" verdict "$RUN/p99.jsonl" "$p99_attempt" $P99_AA_BAND)
            log "  p99 attempt $p99_attempt: $p99_valid $p99_why"
            [ "$p99_valid" = true ] && break
            [ "$(time_left)" -lt $(( ${BENCH_P99_RESERVE:-$(reserve_after p99)} + 45 )) ] && break
        done
        python3 "$BENCH_DIR/lib/p99.py" figure "$RUN/p99.jsonl" "$p99_attempt" $P99_AA_BAND \
            "$cap" "$rate" "$P99_DUR" "$P99_CONNS" "$P99_BLOCK" >> "$RUN/figures.jsonl"
        for n in l_call l_nocall l_nocall2 pl_dest; do vd_stop "$n"; done
    fi
fi

# ================================================================== peer drain ratio
if fits drain 40 peer_drain_ratio; then
    logt "== peer drain ratio"
    if [ -z "$PEER_OK" ]; then
        fig_null peer_drain_ratio ">= 0.8" "$PEER_ERR"
    else
        vcl_origin "$RUN/d_peer.vcl"
        vcl_origin "$RUN/d_hold.vcl" "${BENCH_HOLD:-200ms}"
        vd_start d_peer "$RUN/d_peer.vcl" -p thread_pool_max=2000 || die "origin varnishd failed: $VD_ERR"
        vd_adm d_peer vcl.load hold "$RUN/d_hold.vcl" >/dev/null
        style=fn drain_note="default peer (queue 1000, one sender): $PEER_OBJ_ERR"
        if [ -n "$PEER_OBJ_OK" ]; then style=obj drain_note="peer.peer(${PEER_OBJ_ARGS//@QUEUE@/${BENCH_DRAIN_QUEUE:-60000}})"; fi
        OBJ_QUEUE=${BENCH_DRAIN_QUEUE:-60000} vcl_peer_front "$RUN/d_front.vcl" "${VD_PORT[d_peer]}" 1 "" "$style"
        vd_start d_front "$RUN/d_front.vcl" || die "drain front varnishd failed after its VCL loaded in the probe: $VD_ERR"
        samples=() rates=() directs=() backlogs=() drain_us=()
        boot=$(vd_adm d_peer vcl.list | awk '$1=="active"{print $NF}' | head -n1)
        for rep in $(seq 1 "${BENCH_DRAIN_REPS:-4}"); do
            wait_idle
            vd_adm d_peer vcl.use hold >/dev/null
            # Fill the sender's queue while the peer holds every request, then let the peer answer
            # at full speed and follow the sender's own PEER.*.sent counter (the peer's
            # MAIN.client_req is only summed when its worker goes idle, never during a drain).
            wrk -t"$THREADS" -c"$CONNS" -d"${BENCH_DRAIN_FILL:-2}s" "$(vd_url d_front /d)" >/dev/null 2>&1 || true
            read -r _ dns0 < <(sender_cpu d_front); dn0=$(peer_sent d_front)
            vd_adm d_peer vcl.use "$boot" >/dev/null
            : > "$RUN/drain.$rep"
            for _ in $(seq 1 300); do
                read -r sent qlen inflight < <(varnishstat -n "${VD_DIR[d_front]}" -1 -f 'PEER.*.sent' \
                    -f 'PEER.*.queue_length' -f 'PEER.*.in_flight' 2>/dev/null | awk '
                    $1 ~ /\.sent$/ {s+=$2} $1 ~ /\.queue_length$/ {q+=$2} $1 ~ /\.in_flight$/ {f+=$2}
                    END {print s+0, q+0, f+0}')
                echo "$(date +%s.%N) $sent $qlen" >> "$RUN/drain.$rep"
                [ "$qlen" = 0 ] && [ "$inflight" = 0 ] && break
                sleep 0.1
            done
            read -r _ dns1 < <(sender_cpu d_front); dn1=$(peer_sent d_front)
            # The sender's CPU per request at full speed (a backlog), next to its cost when paced.
            [ $((dn1 - dn0)) -gt 0 ] && drain_us+=("$(python3 -c "print(round(($dns1 - $dns0) / 1000 / ($dn1 - $dn0), 3))")")
            read -r rate backlog < <(python3 "$BENCH_DIR/lib/drain_rate.py" "$RUN/drain.$rep")
            wait_idle
            # From the sender's CPU, as the sender reaches the peer (see the sender figure).
            wrk_run drain "$rep" direct "$(vd_url d_peer /direct)" "$PEER_CONNS" "$(( PEER_CONNS < THREADS ? PEER_CONNS : THREADS ))" "$CPU_MEASURED"
            log "  drain #$rep: backlog of $backlog sent at ${rate} req/s; wrk -c$PEER_CONNS to the peer: $WRK_RPS req/s"
            rates+=("$rate") directs+=("$WRK_RPS") backlogs+=("$backlog")
            if [ "$rate" != null ]; then samples+=("$(python3 -c "print($rate / $WRK_RPS)")"); fi
        done
        extra="{\"sender_rps\": [$(IFS=,; echo "${rates[*]}")], \"sender_us_per_req_during_drain\": [$(IFS=,; echo "${drain_us[*]:-}")], \"wrk_direct_rps\": [$(IFS=,; echo "${directs[*]}")], \"backlogs\": [$(IFS=,; echo "${backlogs[*]}")], \"peer_conns\": $PEER_CONNS, \"peer\": $(jstr "$drain_note"), \"method\": \"backlog queued while the peer holds requests; PEER.*.sent rate over 10..90 % of it, vs wrk -c$PEER_CONNS straight to the peer$( [ -n "$PIN" ] && echo " from the sender's CPU (CPU_MEASURED)" || echo " (unpinned run)")\"}"
        fig_samples peer_drain_ratio ratio ">= 0.8" "[$(IFS=,; echo "${samples[*]:-}")]" "$extra" \
            "backlog too small to time (no PEER.*.sent counter, or queue capacity too small)"
        vd_stop d_front; vd_stop d_peer
    fi
fi

# ================================================================== saintmode population (lookups and memory)
# Populate instance s_$1 up to $2 live entries in chunks of at most $3; appends "bytes per entry"
# of every chunk of >= 9000 entries to SM_BYTES[$1] (child VmRSS growth / blacklist_count() growth).
declare -A SM_BYTES SM_POP
sm_populate() { # impl target chunkmax
    local impl=$1 inst=s_$1 target=$2 max=$3 cnt cnt1 chunk rss0 rss1 res
    [ -n "${SM_MEM:-}" ] && inst=sm_mem_$1
    while :; do
        cnt=$(header_of "$(vd_url "$inst" /count)" X-Count)
        [ "${cnt:-0}" -ge "$target" ] && return 0
        chunk=$(( target - cnt )); [ $chunk -gt "$max" ] && chunk=$max
        rss0=$(vd_rss_kb "$inst")
        # Populate through the plain backend when the VMOD accepts it: the same entries, without
        # C saintmode's O(N) lookup on every populating fetch (a minute at 100000).
        res=$(hammer "${VD_PORT[$inst]}" "$chunk" "${SM_POP[$impl]:-/blp/}$cnt-" --conns 4)
        cnt1=$(header_of "$(vd_url "$inst" /count)" X-Count)
        rss1=$(vd_rss_kb "$inst")
        log "  $inst: +$chunk blacklisted ($res): count $cnt -> $cnt1, RSS $rss0 -> $rss1 kB"
        if [ "${cnt1:-0}" -le "$cnt" ]; then
            if [ "${SM_POP[$impl]:-/blp/}" = /blp/ ]; then
                log "  $impl: entries are only taken through the director: populating via /bl/"
                SM_POP[$impl]=/bl/
                continue
            fi
            log "  $impl: blacklist count does not grow; stopping population"
            return 1
        fi
        if [ -n "${SM_MEM:-}" ] && [ $((cnt1 - cnt)) -ge 9000 ]; then
            SM_BYTES[$impl]+="$(( (rss1 - rss0) * 1024 / (cnt1 - cnt) )),"
        fi
    done
}


# ================================================================== memory figures
# Dedicated instances whose jemalloc returns freed pages at once (MALLOC_CONF decay 0), so that
# VmRSS follows live memory instead of the allocator's purge schedule.
MEM_MALLOC_CONF="dirty_decay_ms:0,muzzy_decay_ms:0"
if fits memory 40 saintmode_bytes_per_entry c_saintmode_bytes_per_entry peer_bytes_per_queued_request; then MEMORY_FITS=1; else MEMORY_FITS=""; fi
if [ -n "$MEMORY_FITS" ]; then
    logt "== saintmode memory per entry"
    SM_MEM_N="${BENCH_SM_MEM_N:-100000}"
    vcl_origin "$RUN/sm_mem_origin.vcl"
    vd_start sm_mem_origin "$RUN/sm_mem_origin.vcl" || die "origin varnishd failed: $VD_ERR"
    for impl in ours c; do
        name=saintmode_bytes_per_entry; tgt="<= 72" so=$SAINT_SO verb=${SAINT_VERB:-blacklist} ok=$SAINT_OK err=$SAINT_ERR
        [ "$impl" = c ] && { name=c_saintmode_bytes_per_entry; tgt=""; so=$C_SAINTMODE_SO; verb=${C_SAINT_VERB:-denylist}; ok=$C_SAINT_OK; err="varnish-modules saintmode unavailable: $C_SAINTMODE_ERR"; }
        if [ -z "$ok" ]; then fig_null "$name" "$tgt" "$err"; continue; fi
        vcl_saintmode "$RUN/sm_mem_$impl.vcl" "$so" "${VD_PORT[sm_mem_origin]}" "$verb"
        if ! VD_MALLOC_CONF=$MEM_MALLOC_CONF vd_start "sm_mem_$impl" "$RUN/sm_mem_$impl.vcl"; then
            fig_null "$name" "$tgt" "varnishd failed: $VD_ERR"; continue
        fi
        # Warm up (threads, workspaces, backend connections) with the same requests, not blacklisted.
        hammer "${VD_PORT[sm_mem_$impl]}" 20000 /warm/ --conns 4 >/dev/null
        SM_BYTES[$impl]=""
        c0=$(header_of "$(vd_url "sm_mem_$impl" /count)" X-Count); r0=$(vd_rss_kb "sm_mem_$impl")
        SM_MEM=1 sm_populate "$impl" "$SM_MEM_N" $(( SM_MEM_N / 4 )) || true
        c1=$(header_of "$(vd_url "sm_mem_$impl" /count)" X-Count); r1=$(vd_rss_kb "sm_mem_$impl")
        total=null; [ "$c1" -gt "$c0" ] && total=$(( (r1 - r0) * 1024 / (c1 - c0) ))
        fig_samples "$name" bytes "$tgt" "[${SM_BYTES[$impl]%,}]" \
            "{\"entries\": $((c1 - c0)), \"rss_kb\": [$r0, $r1], \"method\": \"value: child VmRSS growth / blacklist_count() growth over all entries; samples: the same per chunk of $(( SM_MEM_N / 4 )); jemalloc $MEM_MALLOC_CONF\"}" \
            "no population chunk of >= 9000 entries (BENCH_SM_MEM_N too small?)" "$total"
        vd_stop "sm_mem_$impl"
    done
    vd_stop sm_mem_origin
fi

# ================================================================== peer bytes per queued request
if [ -n "$MEMORY_FITS" ]; then
    logt "== peer memory per queued request"
    if [ -z "$PEER_OBJ_OK" ]; then
        fig_null peer_bytes_per_queued_request "<= 1331" "${PEER_OBJ_ERR:-$PEER_ERR}"
    else
        spawn_port BH_PORT "$RUN/blackhole.port" python3 "$BENCH_DIR/lib/blackhole.py" || die "blackhole.py did not start"
        BG_PIDS+=("$SPAWNED_PID")
        OBJ_QUEUE=$(( QUEUED * 2 )) vcl_peer_front "$RUN/m_front.vcl" "$BH_PORT" 0 \
            'if (req.url ~ "^/q/") { pr.queue_req(); } if (req.url == "/pending") { return (synth(200, "" + @PENDING@)); }' obj
        VD_MALLOC_CONF=$MEM_MALLOC_CONF vd_start m_front "$RUN/m_front.vcl" || die "memory front varnishd failed after its VCL loaded in the probe: $VD_ERR"
        hammer "${VD_PORT[m_front]}" 20000 /warm/ --size 1024 >/dev/null
        sleep 0.5
        samples=()
        step=$(( QUEUED / 3 ))
        pa=$(curl -s -D - -o /dev/null "$(vd_url m_front /pending)" | tr -d '\r' | awk 'NR==1{print $3}'); ra=$(vd_rss_kb m_front)
        for s in 1 2 3; do
            p0=$(curl -s -D - -o /dev/null "$(vd_url m_front /pending)" | tr -d '\r' | awk 'NR==1{print $3}')
            rss0=$(vd_rss_kb m_front)
            res=$(hammer "${VD_PORT[m_front]}" "$step" "/q/$s-" --size 1024 --conns 4)
            sleep 0.3
            p1=$(curl -s -D - -o /dev/null "$(vd_url m_front /pending)" | tr -d '\r' | awk 'NR==1{print $3}')
            rss1=$(vd_rss_kb m_front)
            log "  step $s: +$step requests of 1024 bytes ($res): pending $p0 -> $p1, RSS $rss0 -> $rss1 kB"
            if [ $((p1 - p0)) -ge $((step / 2)) ]; then
                samples+=("$(( (rss1 - rss0) * 1024 / (p1 - p0) ))")
            fi
        done
        total=null; [ "${p1:-0}" -gt "$pa" ] && total=$(( (rss1 - ra) * 1024 / (p1 - pa) ))
        fig_samples peer_bytes_per_queued_request bytes "<= 1331" "[$(IFS=,; echo "${samples[*]:-}")]" \
            "{\"request_bytes\": 1024, \"method\": \"child VmRSS growth / pending() growth, peer accepts and never answers, jemalloc $MEM_MALLOC_CONF\", \"peer\": $(jstr "peer.peer(${PEER_OBJ_ARGS//@QUEUE@/$(( QUEUED * 2 ))})")}" \
            "pending() did not grow by the requests sent (queue capacity below $step? see BENCH_PEER_OBJ_ARGS)" "$total"
        vd_stop m_front
    fi
fi

# ================================================================== saintmode lookups (last: the sizes that
# do not fit in the budget are skipped, the smallest first measured)
if fits saintmode 60 saintmode_lookup_{0,1000,10000,100000} c_saintmode_lookup_{0,1000,10000,100000}; then
    logt "== saintmode lookups"
    vcl_origin "$RUN/s_origin.vcl"
    vd_start s_origin "$RUN/s_origin.vcl" || die "origin varnishd failed: $VD_ERR"
    impls=()
    if [ -n "$SAINT_OK" ]; then
        vcl_saintmode "$RUN/s_ours.vcl" "$SAINT_SO" "${VD_PORT[s_origin]}" "$SAINT_VERB"
        if vd_start s_ours "$RUN/s_ours.vcl"; then impls+=(ours); else SAINT_ERR="varnishd failed: $VD_ERR"; fi
    fi
    if [ -n "$C_SAINT_OK" ]; then
        vcl_saintmode "$RUN/s_c.vcl" "$C_SAINTMODE_SO" "${VD_PORT[s_origin]}" "$C_SAINT_VERB"
        if vd_start s_c "$RUN/s_c.vcl"; then impls+=(c); else C_SAINTMODE_ERR="varnishd failed: $VD_ERR"; fi
    fi
    measured=" "
    read -r -a sizes_after <<<"$NS"
    for N in $NS; do
        sizes_after=("${sizes_after[@]:1}")   # an A/A repeat of this size must leave time for these
        if [ "$(time_left)" -lt 25 ]; then
            log "time budget ($BUDGET s) spent: skipping N=$N"; continue
        fi
        for impl in "${impls[@]}"; do sm_populate "$impl" "$N" 50000 || true; done
        items=()
        for impl in "${impls[@]}"; do
            items+=("${impl}_sm $(vd_url "s_$impl" /sm/x)" "${impl}_plain $(vd_url "s_$impl" /plain/x)")
        done
        # A/A control of the group: the first implementation's plain path measured twice per rep.
        [ ${#items[@]} -gt 0 ] && items+=("${impls[0]}_plain_aa $(vd_url "s_${impls[0]}" /plain/x)") &&
            gated_alternate "sm_$N" "$SM_REPS" "${impls[0]}_plain_aa" "${impls[0]}_plain" "$(( ${BENCH_SM_SIZE_COST:-50} * ${#sizes_after[@]} + 10 ))" "${items[@]}"
        for impl in "${impls[@]}"; do
            cnt=$(header_of "$(vd_url "s_$impl" /count)" X-Count)
            name=saintmode_lookup_$N; [ "$impl" = c ] && name=c_saintmode_lookup_$N
            tgt=$T97; [ "$impl" = c ] && tgt=""   # the C module is the comparison, not held to a target
            fig_ratio "$name" "sm_$N" "${impl}_sm" "${impl}_plain" "$tgt" "$cnt live entries"
        done
        measured+="$N "
    done
    for N in $NS; do
        if [[ "$measured" != *" $N "* ]]; then
            fig_null "saintmode_lookup_$N" "$T97" "skipped: time budget of $BUDGET s spent"
            fig_null "c_saintmode_lookup_$N" "" "skipped: time budget of $BUDGET s spent"
            continue
        fi
        [[ " ${impls[*]} " = *" ours "* ]] || fig_null "saintmode_lookup_$N" "$T97" "$SAINT_ERR"
        [[ " ${impls[*]} " = *" c "* ]] || fig_null "c_saintmode_lookup_$N" "" "varnish-modules saintmode unavailable: $C_SAINTMODE_ERR"
    done
    for n in s_ours s_c s_origin; do vd_stop "$n"; done
fi

# ------------------------------------------------------------------ report
python3 "$BENCH_DIR/lib/report.py" "$RUN" "$OUT_DIR"
log "results: $OUT_DIR/results.json ($(( $(date +%s) - T_START )) s)"
