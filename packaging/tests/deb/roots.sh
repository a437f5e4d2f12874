#!/usr/bin/env bash
# Tests the cached Debian 13 roots of packaging/lib.sh (ensure_root, root_session_*) in a
# scratch cache: made when missing, reused while fresh, remade when stale, broken,
# half-made or of another recipe, dead sessions unmounted before deletion, and an
# unreachable archive named in the error. A stand-in mmdebstrap hard-links the real
# cached check root (SEED): no case downloads.
#
#   packaging/tests/deb/roots.sh [SEED]
#     SEED  a sane check root the caller already holds (scripts/check-deb.sh passes the
#           one it uses); without it, `ensure_root check` picks one. A caller holding the
#           shared lock on its root must pass it: ensure_root here would wait for that
#           lock exclusively once the root turned DEB_ROOT_MAX_AGE_HOURS old, a deadlock.
#
# Prints `ok`/`FAIL` lines and `N passed, M failed`; exits 1 on failure. Needs root.
set -euo pipefail
ME=roots
# shellcheck source=../../lib.sh
. "$(cd "$(dirname "$0")/../.." && pwd)/lib.sh"
# shellcheck source=../../../scripts/lib/debian.sh
. "$ROOT/scripts/lib/debian.sh"
[ "$(id -u)" -eq 0 ] || die "needs root (chroot, mount)"
private_mounts "$@"

if [ -n "${1:-}" ]; then
    SEED=$1
    why=$(root_sane check "$SEED") || die "the check root given, $SEED, is not sane: $why"
else
    ensure_root check
    SEED=$BASE_ROOT
fi
T=$(mktemp -d "${TMPDIR:-/tmp}/roots-test.XXXXXX")
cleanup() { unmount_under "$T"; if findmnt -rn -o TARGET | grep -qF "$T"; then echo "$ME: mounts left under $T" >&2; else rm -rf "$T"; fi; }
trap cleanup EXIT
mkdir -p "$T/bin" "$T/xdg"
# The stand-in: counts its calls, copies the seed root into the destination as hard
# links (fast; so this test only ever replaces or unlinks files there, never writes
# into one: that would write into the seed).
cat > "$T/bin/mmdebstrap" <<STUB
#!/bin/sh
echo call >> "$T/calls"
# mmdebstrap [OPTIONS] SUITE TARGET MIRROR...: the target follows the suite.
dest="" prev=""
for a; do [ "\$prev" = trixie ] && [ -z "\$dest" ] && dest=\$a; prev=\$a; done
[ -n "\$dest" ] || { echo "stand-in mmdebstrap: no target after the suite in: \$*" >&2; exit 2; }
cp -al "$SEED" "\$dest"
STUB
chmod +x "$T/bin/mmdebstrap"

# shellcheck source=../../../scripts/lib/checks.sh
. "$ROOT/scripts/lib/checks.sh"
calls() { [ -f "$T/calls" ] && wc -l < "$T/calls" || echo 0; }
# ensure DESC EXPECTED_CALLS: ensure_root check in the scratch cache (own process), then
# the stand-in must have run EXPECTED_CALLS times in all and the root must be sane.
ensure() {
    local desc=$1 want=$2 out
    if ! out=$(PATH="$T/bin:$PATH" XDG_CACHE_HOME="$T/xdg" DEB_ROOT_MAX_AGE_HOURS=24 timeout "${ENSURE_TIMEOUT:-600}" bash -c '
            set -euo pipefail; ME=roots
            . "$1/packaging/lib.sh"; . "$1/scripts/lib/debian.sh"
            ensure_root check; root_sane check "$BASE_ROOT"' _ "$ROOT" 2>&1); then
        fail "$desc"; sed 's/^/    | /' <<<"$out"; return
    fi
    if [ "$(calls)" -ne "$want" ]; then
        fail "$desc (mmdebstrap ran $(calls) times in all, expected $want)"; sed 's/^/    | /' <<<"$out"; return
    fi
    if [ -e "$T/xdg/vmod-rs/debian13/check.new" ]; then fail "$desc (check.new left behind)"; return; fi
    ok "$desc"
}
C="$T/xdg/vmod-rs/debian13"

ensure "no cached root: made" 1
ensure "fresh root: reused, not remade" 1
# A running build or check holds a shared lock on the root it uses: a second run that
# finds the root fresh must not wait for it (check-deb runs this script under its lock).
exec {holder}>"$C/check.lock"
flock -s "$holder"
ENSURE_TIMEOUT=30 ensure "fresh root while another run holds it: reused within 30 s" 1
exec {holder}>&-
touch -d '25 hours ago' "$C/check.stamp"
ensure "root older than DEB_ROOT_MAX_AGE_HOURS (24): remade" 2
rm -f "$C"/check/var/cache/apt/archives/varnish_*.deb
ensure "broken root (downloaded varnish package gone): remade" 3
printf 'garbage\n' > "$T/status" && mv "$T/status" "$C/check/var/lib/dpkg/status"
ensure "broken root (dpkg database unreadable): remade" 4
sed -i '1s/recipe=[0-9]*/recipe=0/' "$C/check.stamp"
ensure "root made from another recipe: remade" 5
rm -f "$C/check.stamp"; mkdir -p "$C/check.new/half"
ensure "half-made root (no stamp, check.new left by a killed run): remade, never used" 6

# A session of a process that died: its mounts are undone before its files are deleted.
dead_session() {
    local s="$C/run/session.dead" out
    mkdir -p "$s/merged/proc" "$s/merged/dev"
    mount -t proc proc "$s/merged/proc"
    mount --bind /dev "$s/merged/dev"
    echo 999999999 > "$s/pid"
    out=$(XDG_CACHE_HOME="$T/xdg" bash -c '
        set -euo pipefail; ME=roots
        . "$1/packaging/lib.sh"; trap root_session_end EXIT
        root_session_start "$2"; [ -x "$MERGED/usr/bin/apt-get" ]' _ "$ROOT" "$C/check" 2>&1) || { echo "$out"; return 1; }
    if findmnt -rn -o TARGET | grep -qF "$C/run"; then echo "mounts left: $(findmnt -rn -o TARGET | grep -F "$C/run")"; return 1; fi
    [ ! -e "$s" ] || { echo "$s not deleted"; return 1; }
    [ -c /dev/null ] && [ -e "$C/check/usr/bin/apt-get" ] || { echo "/dev or the cached root damaged"; return 1; }
}
if out=$(dead_session 2>&1); then ok "dead session with live /proc and /dev mounts: unmounted, then deleted; /dev and the cached root intact"
else fail "dead session cleanup"; sed 's/^/    | /' <<<"$out"; fi

# No access to the archive: the error names the download that failed.
rm -rf "$T/xdg"
if out=$(XDG_CACHE_HOME="$T/xdg" DEB_MIRROR=http://127.0.0.1:9/debian bash -c '
        set -euo pipefail; ME=roots
        . "$1/packaging/lib.sh"; . "$1/scripts/lib/debian.sh"; ensure_root check' _ "$ROOT" 2>&1); then
    fail "unreachable archive: ensure_root succeeded"
elif grep -q "ERROR: mmdebstrap could not download from the Debian archive.*Failed to fetch http://127.0.0.1:9/debian/dists/trixie/InRelease" <<<"$out" \
        && [ ! -e "$T/xdg/vmod-rs/debian13/check" ] && [ ! -e "$T/xdg/vmod-rs/debian13/check.new" ]; then
    ok "unreachable archive: stops naming the failed download, leaves no root behind"
else
    fail "unreachable archive: message"; sed 's/^/    | /' <<<"$out"
fi

finish
