# shellcheck shell=bash
# Sourced by every script that needs the Varnish the project builds against: scripts/faults.sh,
# scripts/soak.sh, faults/memcheck.sh, bench/run.sh and (through packaging/lib.sh) the install
# and packaging scripts. The one place that finds it.

# have_varnish NEED...: true when every NEED is there: varnishd, varnishtest (on PATH) or api
# (varnishapi through pkg-config).
have_varnish() {
    local need
    for need in "$@"; do
        case $need in
            api) pkg-config --exists varnishapi 2>/dev/null || return 1 ;;
            *) command -v "$need" >/dev/null 2>&1 || return 1 ;;
        esac
    done
}

# use_varnish_env ROOT NAME [NEED...]: when a NEED (default: varnishd varnishtest) is missing
# from the caller's environment, takes the environment from ROOT/target/varnish-env.sh
# (written by `make bootstrap`); exits 2 with NAME in the message when that file is missing or
# does not provide every NEED.
use_varnish_env() {
    local root=$1 name=$2
    shift 2
    [ $# -gt 0 ] || set -- varnishd varnishtest
    have_varnish "$@" && return 0
    [ -f "$root/target/varnish-env.sh" ] || {
        echo "$name: no Varnish ($*); run 'make bootstrap' first" >&2
        exit 2
    }
    # shellcheck disable=SC1091
    . "$root/target/varnish-env.sh"
    have_varnish "$@" || {
        echo "$name: target/varnish-env.sh does not provide all of: $* (run 'make bootstrap' again)" >&2
        exit 2
    }
}
