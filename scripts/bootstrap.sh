#!/usr/bin/env bash
# Toolchain bootstrap: installs the Debian packages the build needs and makes a
# Varnish >= 7.5 (< 9) available, building 7.7 from Debian's trixie source
# package into a cache prefix when the system has none. Idempotent.
#
# Prints nothing on stdout but the prefix in use (or "system"); progress goes
# to stderr. Environment:
#   VARNISH_PREFIX   where to build/reuse Varnish (default: cache dir below)
#   XDG_CACHE_HOME   default cache root (else ~/.cache)
#   VARNISH_SUITE    Debian suite holding the source package (default trixie)
set -euo pipefail

log() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { printf 'bootstrap: ERROR: %s\n' "$*" >&2; exit 1; }

CACHE_ROOT="${XDG_CACHE_HOME:-$HOME/.cache}/vmod-rs"
PREFIX="${VARNISH_PREFIX:-$CACHE_ROOT/varnish-7.7-deb13}"
SUITE="${VARNISH_SUITE:-trixie}"
# shellcheck source=lib/debian.sh
. "$(dirname "$0")/lib/debian.sh"

# ---------------------------------------------------------------- packages
PKGS=(build-essential automake autoconf libtool pkg-config libedit-dev
      libjemalloc-dev libncurses-dev libpcre2-dev python3 python3-docutils
      python3-sphinx clang libclang-dev libcurl4-openssl-dev curl xz-utils
      openssl ca-certificates procps patch)
ensure_debs "${PKGS[@]}" \
    || die "installing Debian packages failed: run 'apt-get install ${PKGS[*]}' by hand to see why (root needed)"

# ------------------------------------------------------- system Varnish?
if pkg-config --exists 'varnishapi >= 7.5' 2>/dev/null && ! pkg-config --exists 'varnishapi >= 9' 2>/dev/null; then
    log "using the system's Varnish $(pkg-config --modversion varnishapi)"
    echo system
    exit 0
fi

# Bumped when the build recipe changes, so that older cached builds are redone.
RECIPE="2 (orig + Debian patches)"
if [ -x "$PREFIX/sbin/varnishd" ] && [ "$(cat "$PREFIX/.complete" 2>/dev/null)" = "$RECIPE" ]; then
    log "reusing Varnish in $PREFIX"
    echo "$PREFIX"
    exit 0
fi

# ------------------------------------------------ private apt configuration
MIRROR=$(mirror_uri)
[ -n "$MIRROR" ] || die "no Debian mirror found in /etc/apt/sources.list*: add one, or install Varnish >= 7.5 with its pkg-config file and re-run"
log "Debian mirror from the apt configuration: $MIRROR (suite $SUITE)"

WORK="$CACHE_ROOT/src"
APTDIR="$CACHE_ROOT/apt"
mkdir -p "$WORK" "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" "$APTDIR/etc"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
echo "deb-src [signed-by=$KEYRING] $MIRROR $SUITE main" > "$APTDIR/etc/sources.list"
APT_OPTS=(-o "Dir::Etc::SourceList=$APTDIR/etc/sources.list"
          -o "Dir::Etc::SourceParts=/dev/null"
          -o "Dir::State::Lists=$APTDIR/lists"
          -o "Dir::Cache=$APTDIR/cache"
          -o "Acquire::Languages=none"
          -o "APT::Sandbox::User=root")
log "fetching the $SUITE source index"
apt-get "${APT_OPTS[@]}" update -qq >&2 \
    || die "could not fetch the $SUITE source index from $MIRROR (no network?); or install Varnish >= 7.5 yourself"

SOURCES=$(ls "$APTDIR"/lists/*_dists_"${SUITE}"_main_source_Sources* 2>/dev/null | head -n1)
[ -n "$SOURCES" ] || die "no Sources index for $SUITE in $APTDIR/lists"
case "$SOURCES" in
    *.lz4) CAT="lz4cat" ;; *.gz) CAT="zcat" ;; *.xz) CAT="xzcat" ;; *) CAT="cat" ;;
esac
# Paragraph of the varnish source package: directory, orig and debian tarballs with
# their sha256.
read -r DIRECTORY ORIG SHA DEBTAR DEBSHA < <($CAT "$SOURCES" | awk '
    BEGIN{RS=""; FS="\n"}
    $1 == "Package: varnish" {
        dir=""; inx=0;
        for (i=1;i<=NF;i++) {
            if ($i ~ /^Directory:/) { dir=$i; sub(/^Directory:[ \t]*/,"",dir) }
            if ($i ~ /^Checksums-Sha256:/) { inx=1; continue }
            if (inx && $i ~ /^ /) {
                split($i,a," ");
                if (a[3] ~ /\.orig\.tar\./) { sha=a[1]; f=a[3] }
                if (a[3] ~ /\.debian\.tar\./) { dsha=a[1]; d=a[3] }
            }
            else if (inx) inx=0
        }
        print dir, f, sha, d, dsha; exit
    }')
[ -n "${ORIG:-}" ] || die "the $SUITE Sources index has no varnish orig tarball"
VERSION=$(echo "$ORIG" | sed -E 's/^varnish_([^.]+\.[^.]+\.[^.]+)\.orig.*/\1/')
case "$VERSION" in 7.[5-9].*|8.*) ;; *) die "$SUITE offers Varnish $VERSION, outside 7.5..8.x";; esac
log "source: $ORIG (sha256 $SHA)"

# fetch NAME SHA256: into $WORK, verified against the Sources index.
fetch() {
    local name=$1 sha=$2 file="$WORK/$1"
    if [ -f "$file" ] && echo "$sha  $file" | sha256sum -c --status; then return 0; fi
    rm -f "$file"
    # apt-get source may fail on the .dsc while the tarballs arrive; the checksum decides.
    [ -f "$WORK/.apt-source-tried" ] || {
        (cd "$WORK" && apt-get "${APT_OPTS[@]}" source --download-only -qq "varnish/$SUITE" >&2) || true
        touch "$WORK/.apt-source-tried"
    }
    if [ ! -f "$file" ]; then
        log "fetching $name from the same mirror"
        curl -fsSL --retry 3 -o "$file" "${MIRROR%/}/$DIRECTORY/$name" \
            || die "download of $name failed (no network?)"
    fi
    echo "$sha  $file" | sha256sum -c --status \
        || { rm -f "$file"; die "checksum mismatch for $name: expected $sha (file removed; re-run to retry)"; }
}
rm -f "$WORK/.apt-source-tried"
fetch "$ORIG" "$SHA"
TARBALL="$WORK/$ORIG"
if [ -n "${DEBTAR:-}" ]; then
    fetch "$DEBTAR" "$DEBSHA"
fi
log "checksum OK"

# ------------------------------------------------------------------ build
rm -rf "$PREFIX" "$WORK/varnish-$VERSION"
tar -C "$WORK" -xf "$TARBALL"
SRC="$WORK/varnish-$VERSION"
# Debian's patches: its security fixes, and debian/vcs_version, which gives the build
# the same strict VMOD ABI id as Debian's varnish package of this version.
if [ -n "${DEBTAR:-}" ]; then
    tar -C "$SRC" -xf "$WORK/$DEBTAR"
    if [ -f "$SRC/debian/patches/series" ]; then
        while read -r patch _; do
            case "$patch" in ''|'#'*) continue ;; esac
            patch -d "$SRC" -p1 -s --no-backup-if-mismatch < "$SRC/debian/patches/$patch" \
                || die "Debian patch $patch does not apply to $ORIG"
        done < "$SRC/debian/patches/series"
        log "applied Debian's patches: $(grep -cv '^#' "$SRC/debian/patches/series") ($DEBTAR)"
    fi
fi
BUILD_LOG="$CACHE_ROOT/varnish-build.log"
log "building Varnish $VERSION into $PREFIX (log: $BUILD_LOG)"
(
    cd "$SRC"
    ./autogen.sh
    ./configure --prefix="$PREFIX" --disable-dependency-tracking
    make -j"$(nproc)"
    make install
) >"$BUILD_LOG" 2>&1 || die "Varnish build failed: see $BUILD_LOG (last lines: $(tail -n 5 "$BUILD_LOG" | tr '\n' ' '))"
rm -rf "$SRC"
echo "$RECIPE" > "$PREFIX/.complete"
log "Varnish $VERSION installed in $PREFIX"
echo "$PREFIX"
