# Sourced by scripts/faults.sh, scripts/soak.sh and faults/memcheck.sh.

# use_varnish_env ROOT NAME: when varnishd or varnishtest is not on PATH, takes them from
# ROOT/target/varnish-env.sh (written by `make bootstrap`); exits 2 with NAME in the message
# when that file is missing.
use_varnish_env() {
    command -v varnishd >/dev/null 2>&1 && command -v varnishtest >/dev/null 2>&1 && return 0
    [ -f "$1/target/varnish-env.sh" ] || { echo "$2: no varnishd; run 'make bootstrap' first" >&2; exit 2; }
    # shellcheck disable=SC1091
    . "$1/target/varnish-env.sh"
}
