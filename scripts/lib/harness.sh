# shellcheck shell=bash
# Sourced by scripts that start varnishd instances, servers or reserved ports: the shell side
# of the one harness (scripts/harness/, `python3 -m harness --help`).
#
#   harness start|load|stop|reserve ...      the harness's CLI
#   spawn_port VAR FILE CMD...               CMD in the background; it prints the port it
#                                            holds as its first line (to FILE): VAR gets the
#                                            port, SPAWNED_PID the pid (10 s at most)

HARNESS_PY=(env "PYTHONPATH=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}" python3 -m harness)

harness() { "${HARNESS_PY[@]}" "$@"; }

SPAWNED_PID=""
spawn_port() {
    local var=$1 file=$2 _
    shift 2
    : > "$file"
    "$@" > "$file" &
    SPAWNED_PID=$!
    for _ in $(seq 1 100); do
        [ -s "$file" ] && break
        kill -0 "$SPAWNED_PID" 2>/dev/null || break
        sleep 0.1
    done
    local port
    port=$(head -n1 "$file")
    case "$port" in
        ''|*[!0-9]*) echo "spawn_port: '$*' printed no port" >&2; return 1 ;;
    esac
    printf -v "$var" '%s' "$port"
}
