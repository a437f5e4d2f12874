#!/usr/bin/env bash
# Tests how scripts/deb.sh hands a checkout to cargo in the build root (packaging/lib.sh):
# every checkout has its own cargo target dir, and a source change is always rebuilt,
# even when the changed tree carries older mtimes than the last build in that target dir
# (the bug: two checkouts shared one target dir, tar kept mtimes, and cargo, which
# rebuilds by mtime, let the older checkout's package ship the newer checkout's code).
# A one-file cdylib crate built twice with the host's cargo, offline: about 2 s. Also:
# debian/copyright's check against Cargo.lock catches a missing crate.
#
#   packaging/tests/deb/sources.sh
#
# Prints `ok`/`FAIL` lines and `N passed, M failed`; exits 1 on failure.
set -euo pipefail
ME=sources
# shellcheck source=../../lib.sh
. "$(cd "$(dirname "$0")/../.." && pwd)/lib.sh"
command -v cargo >/dev/null || die "cargo not found"
T=$(mktemp -d "${TMPDIR:-/tmp}/sources-test.XXXXXX")
trap 'rm -rf "$T"' EXIT
# shellcheck source=../../../scripts/lib/checks.sh
. "$ROOT/scripts/lib/checks.sh"

# Two checkouts: one cache each, stable for a checkout.
mkdir -p "$T/a" "$T/b"
ca=$(deb_target_cache "$T/a") cb=$(deb_target_cache "$T/b") ca2=$(deb_target_cache "$T/a/.")
if [ "$ca" != "$cb" ] && [ "$ca" = "$ca2" ] && [[ "$ca" == "$DEB_CACHE/cargo-targets/"* ]]; then
    ok "each checkout has its own cargo target dir ($(basename "$ca") vs $(basename "$cb"))"
else
    fail "cargo target dirs of two checkouts: $ca, $cb (and $ca2 for the first again)"
fi

# Two source trees differing in one line; the one built second has the OLDER mtimes.
for v in new old; do
    mkdir -p "$T/$v/src"
    printf '[package]\nname = "probe"\nversion = "0.1.0"\nedition = "2021"\n[lib]\ncrate-type = ["cdylib"]\n[workspace]\n' > "$T/$v/Cargo.toml"
    printf '#[no_mangle]\npub static PROBE: [u8; 12] = *b"tree-is-%s!";\n' "$v" > "$T/$v/src/lib.rs"
done
touch -d '2 hours ago' "$T"/old/Cargo.toml "$T"/old/src/lib.rs
build_from() { # build_from TREE: copy_sources into the same fixed path, build in the same target dir
    rm -rf "$T/build"
    copy_sources "$T/$1" "$T/build/src"
    (cd "$T/build/src" && CARGO_TARGET_DIR="$T/target" cargo build --offline -q) >"$T/log" 2>&1 || { cat "$T/log"; return 1; }
    cp "$T/target/debug/libprobe.so" "$T/$1.so"
}
if out=$(build_from new && build_from old 2>&1); then
    if grep -q 'tree-is-old!' "$T/old.so" && ! cmp -s "$T/new.so" "$T/old.so"; then
        ok "a tree with older mtimes than the last build in the same target dir is rebuilt (its .so differs)"
    else
        fail "the second tree's build reused the first's: $(grep -ao 'tree-is-[a-z]*!' "$T/old.so" | head -n 1)"
    fi
else
    fail "building the probe crate"; sed 's/^/    | /' <<<"$out"
fi
# debian/copyright against Cargo.lock: a crate missing from it (Cargo.lock gained one,
# nobody ran the generator) is caught.
cp "$ROOT/debian/copyright" "$T/copyright.ok"
awk 'BEGIN{RS=""; ORS="\n\n"} !/^Files: registry\/cfg-if-/' "$ROOT/debian/copyright" | sed '$d' > "$T/copyright.stale"
if ! python3 "$ROOT/packaging/gen-copyright.py" --check "$T/copyright.ok" >"$T/log" 2>&1; then
    fail "gen-copyright.py --check on the committed debian/copyright"; sed 's/^/    | /' "$T/log"
elif cmp -s "$T/copyright.ok" "$T/copyright.stale"; then
    fail "could not drop a crate stanza from a copy of debian/copyright"
elif python3 "$ROOT/packaging/gen-copyright.py" --check "$T/copyright.stale" >"$T/log" 2>&1; then
    fail "gen-copyright.py --check accepts a debian/copyright that lacks a crate of Cargo.lock"
else
    ok "gen-copyright.py --check passes debian/copyright and refuses a copy lacking one crate of Cargo.lock"
fi
finish
