# shellcheck shell=bash disable=SC2034  # MODE, PROFILE_DIR, RUN are for the sourcing script
# Sourced by scripts/demo.sh and scripts/demo-cluster.sh: MODE (interactive, or smoke with
# --smoke), ROOT, PROFILE_DIR (the build's .so files), a run directory cleaned up on exit,
# with varnishd instances and servers started in it by the harness (scripts/harness/) on
# ports the OS assigns. The caller sets STACK_NAME (for messages) before sourcing.

# shellcheck source=harness.sh
. "$(dirname "${BASH_SOURCE[0]}")/harness.sh"

MODE=interactive
[ "${1:-}" = "--smoke" ] && MODE=smoke
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PROFILE_DIR="${VMOD_ARTIFACT_DIR:-$ROOT/target/release}"

RUN=$(mktemp -d "${TMPDIR:-/tmp}/vmod-${STACK_NAME:-stack}.XXXXXX")
STACK_PIDS=()
stack_cleanup() {
    local d dirs=() p
    for d in "$RUN"/*/; do [ -f "$d/pid" ] && dirs+=("$d"); done
    [ ${#dirs[@]} -eq 0 ] || harness stop "${dirs[@]}" || true
    for p in "${STACK_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$RUN"
}
trap stack_cleanup EXIT
trap 'exit 130' INT TERM

stack_die() { echo "${STACK_NAME:-stack}: $*" >&2; exit 1; }

# stack_require SO...: the built modules and varnishd, or a message saying how to get them.
stack_require() {
    local so
    for so in "$@"; do
        [ -f "$so" ] || stack_die "$so missing: run 'make release' first"
    done
    command -v varnishd >/dev/null || stack_die "varnishd not on PATH: eval \"\$(make -s env)\""
}

# start_varnish NAME [VCL] [varnishd args...]: a daemon in $RUN/NAME (varnishd -n
# $RUN/NAME/n); prints its port. Without VCL (or with ""), a boot VCL until `harness load`.
start_varnish() {
    local name=$1 vcl=${2:-} vclarg=()
    shift; [ $# -gt 0 ] && shift
    [ -n "$vcl" ] && vclarg=(--vcl "$vcl")
    harness start "$RUN/$name" "${vclarg[@]}" -- "$@" 2>"$RUN/$name.err" \
        || stack_die "varnishd $name failed to start: $(cat "$RUN/$name.err")"
}

# start_server VAR NAME CMD...: a server that prints the port it listens on; VAR gets it.
start_server() {
    local var=$1 name=$2
    shift 2
    spawn_port "$var" "$RUN/$name.port" "$@" || stack_die "$name did not start"
    STACK_PIDS+=("$SPAWNED_PID")
}

# wait_http PORT: until something answers HTTP there (10 s at most).
wait_http() {
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
        sleep 0.1
    done
    stack_die "nothing answers on 127.0.0.1:$1"
}
