# Sourced by scripts/demo.sh and scripts/demo-cluster.sh: a run directory cleaned up on
# exit, free loopback ports, and varnishd instances started in it.
# The caller sets STACK_NAME (for messages) before sourcing.

RUN=$(mktemp -d "${TMPDIR:-/tmp}/vmod-${STACK_NAME:-stack}.XXXXXX")
STACK_PIDS=()
stack_cleanup() {
    local f
    for f in "$RUN"/*.pid; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
    done
    for f in "${STACK_PIDS[@]}"; do kill "$f" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$RUN"
}
trap stack_cleanup EXIT
trap 'exit 130' INT TERM

stack_die() { echo "${STACK_NAME:-stack}: $*" >&2; exit 1; }

# A free TCP port on 127.0.0.1.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_varnish NAME PORT VCL [varnishd args...]: a daemon with its own -n dir in $RUN.
start_varnish() {
    local name=$1 port=$2 vcl=$3 jail=()
    shift 3
    [ "$(id -u)" -eq 0 ] && jail=(-j none)
    varnishd -n "$RUN/$name" -a "127.0.0.1:$port" -T 127.0.0.1:0 -f "$vcl" -s malloc,64m \
        -P "$RUN/$name.pid" "${jail[@]}" "$@" 2>"$RUN/$name.err" \
        || stack_die "varnishd $name failed to start: $(cat "$RUN/$name.err")"
}

# wait_http PORT: until something answers HTTP there (10 s at most).
wait_http() {
    for _ in $(seq 1 100); do
        curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0
        sleep 0.1
    done
    stack_die "nothing answers on 127.0.0.1:$1"
}
