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
#
# A VTC with the line `# vtc-run: private-hosts` runs in a mount namespace of its own
# (unshare, private propagation) where /etc/hosts is a copy of the machine's, ${hosts_file},
# that the VTC may rewrite to make names resolve to loopback addresses (glibc reads the hosts
# file at every lookup), and /etc/nsswitch.conf a copy whose `hosts:` line is `files`: names
# are looked up in that file only, never in DNS (no test reaches the network). Rewrite the
# hosts file in place (`cat ... > ${hosts_file}`), never by renaming a file over it: the bind
# mount would keep the old one. Without the privilege (not root, no user namespaces) the run
# is skipped (77) with a line starting `vtc-run.sh: skipped (private-hosts):`, which
# `cargo test` turns into a failure when CI is set or VTC_NO_SKIP=1 (vmod-build/src/vtc.rs).
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
private_hosts=""
for a in "$@"; do
    if [ -f "$a" ] && grep -qx '# vtc-run: private-hosts' "$a"; then
        private_hosts=1
    fi
done
if [ -n "$private_hosts" ]; then
    if unshare --mount --propagation private true 2>/dev/null; then
        unshare_cmd=(unshare --mount --propagation private)
    elif unshare --user --map-root-user --mount --propagation private true 2>/dev/null; then
        unshare_cmd=(unshare --user --map-root-user --mount --propagation private)
    else
        echo "vtc-run.sh: skipped (private-hosts): the test needs a private /etc/hosts, and" \
            "this user may unshare neither a mount namespace (root) nor a user namespace" >&2
        exit 77
    fi
    if [ ! -f /etc/nsswitch.conf ]; then
        # Nothing to bind over: glibc's default would ask DNS before the hosts file.
        echo "vtc-run.sh: skipped (private-hosts): no /etc/nsswitch.conf to replace by one" \
            "that keeps name lookups in the hosts file" >&2
        exit 77
    fi
    hosts_dir=$(mktemp -d "${TMPDIR:-/tmp}/vtc-hosts.XXXXXX")
    trap 'rm -rf "$hosts_dir"' EXIT
    cp /etc/hosts "$hosts_dir/hosts"
    { grep -v '^[[:space:]]*hosts:' /etc/nsswitch.conf 2>/dev/null || true
      echo "hosts: files"; } > "$hosts_dir/nsswitch.conf"
    chmod 644 "$hosts_dir/hosts" "$hosts_dir/nsswitch.conf"
    define hosts_file "$hosts_dir/hosts"
fi
args=(-t "$timeout")
for name in "${order[@]}"; do
    args+=(-D "$name=${macro[$name]}")
done
if [ -n "$private_hosts" ]; then
    # Not exec'd, so that the copies are removed afterwards. The bind mounts exist only in the
    # new namespace: the machine's /etc/hosts and /etc/nsswitch.conf are never touched.
    rc=0
    "${unshare_cmd[@]}" -- bash -c 'mount --bind "$1/hosts" /etc/hosts &&
        mount --bind "$1/nsswitch.conf" /etc/nsswitch.conf && shift && exec varnishtest "$@"' \
        _ "$hosts_dir" "${args[@]}" "$@" || rc=$?
    exit "$rc"
fi
exec varnishtest "${args[@]}" "$@"
