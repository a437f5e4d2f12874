#!/usr/bin/env bash
# Toolchain bootstrap: installs the Debian packages the build needs and makes a Varnish
# >= 7.5 (< 9) available. Idempotent. The first of these that applies wins:
#
#   1. the system's Varnish (pkg-config finds varnishapi >= 7.5);
#   2. VARNISH_PREFIX naming an installed Varnish >= 7.5 (used as is, never rebuilt);
#   3. Debian's own `varnish` + `libvarnishapi-dev` when apt offers them at >= 7.5
#      (Debian 13 and later): installed with apt-get;
#   4. a complete earlier build in the cache prefix;
#   5. a build of Debian 13's (trixie) varnish source package into the cache prefix. The
#      source is the first candidate that downloads, verifies and applies:
#        a. the orig tarball + the Debian patch tarball of the revision the current trixie
#           Sources index names (sha256 from the signed index);
#        b. the same orig tarball + an earlier revision's patch tarball pinned in
#           scripts/varnish-debian-patches.sha256;
#        c. the orig tarball alone (upstream Varnish), with a warning: no Debian security
#           patches and no Debian VCS id, so modules built against it do not load into
#           Debian's own varnishd.
#      Every tarball is sha256-verified before use; a mismatch stops bootstrap.
#
#   scripts/bootstrap.sh [--fetch-only]
#
# Prints nothing on stdout but the prefix in use (or "system"); with --fetch-only, only
# step 5's source selection runs and stdout gets "selected: <candidate>" (used by the
# offline mirror tests in scripts/tests/). Progress goes to stderr. Environment:
#   VARNISH_PREFIX          an installed Varnish to use, or where to build (default below)
#   XDG_CACHE_HOME          cache root (default ~/.cache); the build goes to
#                           $XDG_CACHE_HOME/vmod-rs/varnish-7.7-deb13
#   VARNISH_SUITE           Debian suite holding the source package (default trixie)
#   VARNISH_PINNED_PATCHES  pinned patch tarballs (default scripts/varnish-debian-patches.sha256)
#   DEBIAN_MIRROR, DEBIAN_KEYRING  mirror and archive key (default: the machine's apt config)
#   BOOTSTRAP_REQUIRE_DEBIAN=1  stop instead of building upstream Varnish without Debian's
#                           patches (set by .ci/run, so that CI turns red when Debian's
#                           archive no longer serves any patch tarball bootstrap knows)
set -euo pipefail

log()  { printf 'bootstrap: %s\n' "$*" >&2; }
warn() { printf 'bootstrap: WARNING: %s\n' "$*" >&2; }
die()  { printf 'bootstrap: ERROR: %s\n' "$*" >&2; exit 1; }

HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib/debian.sh
. "$HERE/lib/debian.sh"

fetch_only=0
for arg in "$@"; do
    case "$arg" in
        --fetch-only) fetch_only=1 ;;
        *) die "unknown argument: $arg (usage: $0 [--fetch-only])" ;;
    esac
done

CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/vmod-rs"
DEFAULT_PREFIX="$CACHE_ROOT/varnish-7.7-deb13"
PREFIX=$(realpath -m "${VARNISH_PREFIX:-$DEFAULT_PREFIX}")
SUITE="${VARNISH_SUITE:-trixie}"
PINNED="${VARNISH_PINNED_PATCHES:-$HERE/varnish-debian-patches.sha256}"
# Bumped when the build recipe changes, so that older cached builds are redone.
RECIPE="3 (Debian source: index revision, else pinned revision, else orig)"

# version_supported VERSION: 7.5 <= VERSION < 9 (the varnish crate 0.5 range).
version_supported() {
    dpkg --compare-versions "$1" ge 7.5 && dpkg --compare-versions "$1" lt 9
}

# lock_cache: one bootstrap at a time per cache (worktrees share it): the others wait, then
# reuse what the first one built.
lock_cache() {
    mkdir -p "$CACHE_ROOT"
    exec 9>"$CACHE_ROOT/.lock"
    flock -w 1800 9 || die "another bootstrap has held $CACHE_ROOT/.lock for 30 minutes"
}

if [ "$fetch_only" = 0 ]; then
    # ------------------------------------------------------------ packages
    PKGS=(build-essential automake autoconf libtool pkg-config libedit-dev
          libjemalloc-dev libncurses-dev libpcre2-dev python3 python3-docutils
          python3-sphinx clang libclang-dev libcurl4-openssl-dev curl xz-utils lz4
          openssl ca-certificates procps patch gnupg)
    ensure_debs "${PKGS[@]}" \
        || die "installing Debian packages failed: run 'apt-get install ${PKGS[*]}' by hand to see why (root needed)"

    # ------------------------------------- 1. an installed Varnish in VARNISH_PREFIX
    # Checked first: an explicit choice wins over whatever the system has.
    pc=""
    if [ -n "${VARNISH_PREFIX:-}" ] && [ ! -f "$PREFIX/.building" ]; then
        for f in "$PREFIX"/lib/pkgconfig/varnishapi.pc "$PREFIX"/lib64/pkgconfig/varnishapi.pc \
                 "$PREFIX"/lib/*/pkgconfig/varnishapi.pc; do
            [ -f "$f" ] && { pc=$f; break; }
        done
    fi
    if [ -n "$pc" ]; then
        v=$(PKG_CONFIG_PATH=$(dirname "$pc") pkg-config --modversion varnishapi 2>/dev/null || true)
        [ -x "$PREFIX/sbin/varnishd" ] || die "VARNISH_PREFIX=$PREFIX has $pc but no sbin/varnishd"
        version_supported "$v" || die "VARNISH_PREFIX=$PREFIX holds Varnish '$v'; these modules need 7.5 to 8.x"
        if [ "$(dirname "$pc")" != "$PREFIX/lib/pkgconfig" ]; then
            die "VARNISH_PREFIX=$PREFIX keeps varnishapi.pc in $(dirname "$pc"); the build expects $PREFIX/lib/pkgconfig (add a symlink)"
        fi
        log "using Varnish $v in VARNISH_PREFIX=$PREFIX"
        echo "$PREFIX"
        exit 0
    fi

    # ------------------------------------------------ 2. system Varnish
    if [ -z "${VARNISH_PREFIX:-}" ] && pkg-config --exists varnishapi 2>/dev/null \
       && version_supported "$(pkg-config --modversion varnishapi)"; then
        log "using the system's Varnish $(pkg-config --modversion varnishapi)"
        echo system
        exit 0
    fi

    # ------------------------------- 3. Debian's own packages (Debian 13 and later)
    # Not when VARNISH_PREFIX names where to build: that is a request for a private build.
    candidate=$(apt-cache policy libvarnishapi-dev 2>/dev/null | awk '/Candidate:/ {print $2; exit}')
    if [ -z "${VARNISH_PREFIX:-}" ] && [ -n "$candidate" ] && [ "$candidate" != "(none)" ] && version_supported "$candidate"; then
        log "apt offers libvarnishapi-dev $candidate: installing Debian's varnish and libvarnishapi-dev"
        ensure_debs varnish libvarnishapi-dev \
            || die "apt-get install varnish libvarnishapi-dev ($candidate) failed: run it by hand to see why"
        pkg-config --exists varnishapi || die "libvarnishapi-dev $candidate is installed but pkg-config finds no varnishapi"
        log "using Debian's Varnish $(pkg-config --modversion varnishapi)"
        echo system
        exit 0
    fi

    # ------------------------------------------------ 4. a complete cached build
    lock_cache
    if [ -x "$PREFIX/sbin/varnishd" ] && [ "$(cat "$PREFIX/.complete" 2>/dev/null)" = "$RECIPE" ]; then
        source_used=$(cat "$PREFIX/.source" 2>/dev/null || echo 'source unknown')
        log "reusing Varnish in $PREFIX ($source_used)"
        case "$source_used" in
            *"named by the"*) ;;
            *) warn "that build is a fallback ($source_used); remove $PREFIX to try the index's revision again" ;;
        esac
        echo "$PREFIX"
        exit 0
    fi
fi

# ------------------------------------------------------ 5. the source package
WORK="$CACHE_ROOT/src"
APTDIR="$CACHE_ROOT/apt"
mkdir -p "$WORK"
[ "$fetch_only" = 0 ] || lock_cache
MIRROR=$(mirror_uri)
[ -n "$MIRROR" ] || die "no Debian mirror found in /etc/apt/sources.list*: add one (or set DEBIAN_MIRROR), or install Varnish >= 7.5 with its pkg-config file and re-run"
log "fetching the $SUITE source index from $MIRROR ($([ -n "${DEBIAN_MIRROR:-}" ] && echo DEBIAN_MIRROR || echo "the machine's apt configuration"))"
apt_private "$APTDIR" "deb-src [signed-by=@KEYRING@] @MIRROR@ $SUITE main" \
    || die "$APT_ERR; bootstrap needs the $SUITE Sources index to verify the Varnish sources (or install Varnish >= 7.5 yourself and set VARNISH_PREFIX)"
entry=$(sources_entry "$APTDIR" "$SUITE" varnish) && rc=0 || rc=$?
case "$rc" in
    0) ;;
    2) die "the $SUITE Sources index from $MIRROR has no varnish source package" ;;
    *) die "no readable $SUITE Sources index in $APTDIR/lists after apt-get update from $MIRROR" ;;
esac
read -r INDEX_REVISION DIRECTORY <<<"$(head -n1 <<<"$entry")"
read -r SHA ORIG <<<"$(grep -E ' varnish_[^ ]*\.orig\.tar\.[a-z0-9]+$' <<<"$entry" | head -n1)"
read -r DEBSHA DEBTAR <<<"$(grep -E ' varnish_[^ ]*\.debian\.tar\.[a-z0-9]+$' <<<"$entry" | head -n1)"
[ -n "${ORIG:-}" ] || die "the $SUITE Sources index names varnish $INDEX_REVISION but no orig tarball"
VERSION=$(sed -E 's/^varnish_([0-9][^_]*)\.orig\.tar\..*$/\1/' <<<"$ORIG")
version_supported "$VERSION" || die "$SUITE offers Varnish $VERSION, outside 7.5..8.x"
log "index: varnish $INDEX_REVISION in $DIRECTORY"
pool_url() { debian_pool_url "$MIRROR" "$DIRECTORY" "$1"; }

# The orig tarball is common to every candidate: without it there is nothing to build.
fetch_verified "$(pool_url "$ORIG")" "$WORK/$ORIG" "$SHA" || case $? in
    4) die "$FETCH_ERR. The Sources index is signed, so the mirror served something else: retry later or use another mirror" ;;
    *) die "no Varnish source can be used: the orig tarball every candidate needs failed: $FETCH_ERR" ;;
esac
log "verified $ORIG (sha256 $SHA, from the index)"

# Candidates after the orig tarball: "label|patch tarball|sha256" (empty tarball = orig only).
candidates=()
[ -n "${DEBTAR:-}" ] && candidates+=("Debian $INDEX_REVISION (named by the $SUITE index)|$DEBTAR|$DEBSHA")
if [ -f "$PINNED" ]; then
    while read -r psha pname; do
        case "$psha" in ''|'#'*) continue ;; esac
        [ "$pname" = "${DEBTAR:-}" ] && continue
        # A patch tarball applies to its own upstream version only.
        case "$pname" in
            "varnish_${VERSION}-"*) ;;
            *) log "pinned $pname is for another upstream version than $VERSION: skipped"; continue ;;
        esac
        rev=${pname#varnish_}; rev=${rev%.debian.tar.*}
        candidates+=("Debian $rev (pinned in $(basename "$PINNED"))|$pname|$psha")
    done < "$PINNED"
fi
candidates+=("upstream Varnish $VERSION (orig tarball alone, no Debian patches)||")

# prepare_tree DEBTAR: a fresh source tree in $SRC with DEBTAR's patches applied (none when
# empty). Returns 1 with PREP_ERR set when a patch does not apply.
SRC="$WORK/varnish-$VERSION"
prepare_tree() {
    local debtar=$1 patch
    rm -rf "$SRC"
    tar -C "$WORK" -xf "$WORK/$ORIG" || { PREP_ERR="cannot unpack $ORIG"; return 1; }
    [ -d "$SRC" ] || { PREP_ERR="$ORIG does not unpack into varnish-$VERSION/"; return 1; }
    [ -n "$debtar" ] || return 0
    tar -C "$SRC" -xf "$WORK/$debtar" || { PREP_ERR="cannot unpack $debtar"; return 1; }
    [ -f "$SRC/debian/patches/series" ] || return 0
    while read -r patch _; do
        case "$patch" in ''|'#'*) continue ;; esac
        # No fuzz, as dpkg-source applies a 3.0 (quilt) series: a security patch applies exactly or not at all.
        patch -d "$SRC" -p1 -F0 -N --batch -s --no-backup-if-mismatch < "$SRC/debian/patches/$patch" >/dev/null 2>&1 \
            || { PREP_ERR="Debian patch $patch from $debtar does not apply to $ORIG"; return 1; }
    done < "$SRC/debian/patches/series"
}

selected="" n=0
for c in "${candidates[@]}"; do
    n=$((n + 1))
    IFS='|' read -r label file sha <<<"$c"
    log "candidate $n/${#candidates[@]}: $label"
    if [ -n "$file" ]; then
        fetch_verified "$(pool_url "$file")" "$WORK/$file" "$sha" && rc=0 || rc=$?
        case "$rc" in
            0) ;;
            # Only "the mirror does not have it" moves on: a mirror that errs or times out
            # must not silently downgrade the build to an older revision or to upstream.
            2) log "  not usable: $FETCH_ERR"; continue ;;
            *) die "$FETCH_ERR (re-run when the mirror answers again)" ;;
        esac
        log "  verified $file (sha256 $sha)"
    fi
    if ! prepare_tree "$file"; then
        log "  not usable: $PREP_ERR"
        continue
    fi
    selected=$label
    break
done
[ -n "$selected" ] || die "no candidate source could be prepared (see the lines above)"
if [ -z "$file" ] && [ "${BOOTSTRAP_REQUIRE_DEBIAN:-0}" = 1 ]; then
    die "no Debian patch tarball of Varnish $VERSION can be downloaded (BOOTSTRAP_REQUIRE_DEBIAN=1): pin the revision Debian serves now in $(basename "$PINNED") (sha256 of its .debian.tar.xz, checked against its changelog and vcs_version)"
fi
if [ -z "$file" ]; then
    warn "building upstream Varnish $VERSION WITHOUT Debian's security patches and VCS id:"
    warn "modules built against it will NOT load into Debian's own varnishd (different strict ABI)."
    warn "Use it for development only; see README, Setup."
else
    log "  applied Debian's patches: $(grep -cvE '^(#|$)' "$SRC/debian/patches/series" 2>/dev/null) ($file)"
    [ "$n" = 1 ] || warn "using $label instead of the index's $INDEX_REVISION: Debian's fixes after it are missing"
fi

if [ "$fetch_only" = 1 ]; then
    rm -rf "$SRC"
    echo "selected: $selected"
    exit 0
fi

# ------------------------------------------------------------------ build
# Only a prefix bootstrap made (or an empty one) is ever removed.
if [ -e "$PREFIX" ] && [ -n "$(ls -A "$PREFIX" 2>/dev/null)" ] \
   && [ ! -f "$PREFIX/.complete" ] && [ ! -f "$PREFIX/.building" ]; then
    die "$PREFIX is not empty and was not made by bootstrap: refusing to build over it (choose another VARNISH_PREFIX)"
fi
rm -rf "$PREFIX"
mkdir -p "$PREFIX"
echo "$selected" > "$PREFIX/.building"
BUILD_LOG="$CACHE_ROOT/varnish-build.log"
: > "$BUILD_LOG"
log "building Varnish $VERSION ($selected) into $PREFIX (log: $BUILD_LOG)"
build_step() { # build_step NAME COMMAND...: one build step in $SRC, its output in $BUILD_LOG
    local name=$1; shift
    (cd "$SRC" && "$@") >>"$BUILD_LOG" 2>&1 \
        || die "Varnish build step '$name' failed: see $BUILD_LOG; last lines: $(tail -n 5 "$BUILD_LOG" | tr '\n' ' ')"
}
build_step autogen.sh ./autogen.sh
build_step configure ./configure --prefix="$PREFIX" --disable-dependency-tracking
build_step make make -j"$(nproc)"
build_step "make install" make install
rm -rf "$SRC"
mv "$PREFIX/.building" "$PREFIX/.source"
echo "$RECIPE" > "$PREFIX/.complete"
log "Varnish $VERSION installed in $PREFIX ($selected)"
echo "$PREFIX"
