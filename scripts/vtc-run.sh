#!/usr/bin/env bash
# The one place that says which macros a VTC of this repository gets; everything that runs
# varnishtest goes through it: `cargo test` (vmod-build/src/vtc.rs), check-examples.sh,
# faults/memcheck.sh, faults/run.py, the install checks (packaging/lib.sh's run_vtcs) and
# check-deb.sh (copied into its Debian root, where it runs Debian's varnishtest).
#
#   scripts/vtc-run.sh [--so DIR] [--own peer|saintmode] [--timeout S] [-D name=value]...
#                      [--] [varnishtest option]... FILE...
#
# Macros: ${root} (the repository); with --so DIR (where libvmod_peer.so and
# libvmod_saintmode.so are): ${vmod_peer}, ${vmod_saintmode}, ${vmod_path} (DIR, then
# Varnish's vmoddir, for plain `import peer;`) and, with --own, ${vmod} (that module's .so).
# A -D given here replaces the macro of the same name (e.g. ${vmod} pointing at another
# build of the module). --timeout defaults to $VTC_TIMEOUT, else 120 seconds.
# Exits with varnishtest's status (77: a feature the machine lacks).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
so="" own="" timeout="${VTC_TIMEOUT:-120}"
declare -A macro=([root]="$ROOT")
order=(root)
define() { # define NAME VALUE: later definitions win, first position kept
    [ -n "${macro[$1]+set}" ] || order+=("$1")
    macro[$1]=$2
}
overrides=()
while [ $# -gt 0 ]; do
    case "$1" in
        --so) so=$2; shift 2 ;;
        --own) own=$2; shift 2 ;;
        --timeout) timeout=$2; shift 2 ;;
        -D) overrides+=("$2"); shift 2 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
if [ -n "$so" ]; then
    define vmod_peer "$so/libvmod_peer.so"
    define vmod_saintmode "$so/libvmod_saintmode.so"
    vmoddir=$(pkg-config --variable=vmoddir varnishapi 2>/dev/null || true)
    define vmod_path "$so${vmoddir:+:$vmoddir}"
    [ -z "$own" ] || define vmod "$so/libvmod_$own.so"
fi
for o in "${overrides[@]}"; do
    define "${o%%=*}" "${o#*=}"
done
args=(-t "$timeout")
for name in "${order[@]}"; do
    args+=(-D "$name=${macro[$name]}")
done
exec varnishtest "${args[@]}" "$@"
