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
PREFIX="${VARNISH_PREFIX:-$CACHE_ROOT/varnish-7.7}"
SUITE="${VARNISH_SUITE:-trixie}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# ---------------------------------------------------------------- packages
PKGS=(build-essential automake autoconf libtool pkg-config libedit-dev
      libjemalloc-dev libncurses-dev libpcre2-dev python3 python3-docutils
      python3-sphinx clang libclang-dev libcurl4-openssl-dev curl xz-utils
      openssl ca-certificates procps)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq >&2 \
        || die "apt-get update failed: check the network and /etc/apt/sources.list*"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
        || die "apt-get install ${missing[*]} failed: run it by hand to see why (root needed)"
fi

# ------------------------------------------------------- system Varnish?
if pkg-config --exists 'varnishapi >= 7.5' 2>/dev/null && ! pkg-config --exists 'varnishapi >= 9' 2>/dev/null; then
    log "using the system's Varnish $(pkg-config --modversion varnishapi)"
    echo system
    exit 0
fi

if [ -f "$PREFIX/.complete" ] && [ -x "$PREFIX/sbin/varnishd" ]; then
    log "reusing Varnish in $PREFIX"
    echo "$PREFIX"
    exit 0
fi

# ------------------------------------------------ private apt configuration
# The mirror is the one this machine already uses for Debian itself.
mirror_uri() {
    local f uri=""
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk '
            BEGIN{RS=""; FS="\n"}
            {
              u=""; s=""; t="";
              for (i=1;i<=NF;i++) {
                if ($i ~ /^URIs:/)   { u=$i; sub(/^URIs:[ \t]*/,"",u) }
                if ($i ~ /^Suites:/) { s=$i }
                if ($i ~ /^Types:/)  { t=$i }
              }
              if (t ~ /deb/ && s !~ /security/ && u ~ /debian\/?$/) { split(u,a," "); print a[1]; exit }
            }' "$f")
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk '$1 ~ /^deb(-src)?$/ && $0 !~ /security/ {
                  for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) { if ($i ~ /debian\/?$/) { print $i; exit } } }' "$f")
        [ -n "$uri" ] && { echo "$uri"; return; }
    done
}
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
# Paragraph of the varnish source package: directory, orig tarball name and sha256.
read -r DIRECTORY ORIG SHA < <($CAT "$SOURCES" | awk '
    BEGIN{RS=""; FS="\n"}
    $1 == "Package: varnish" {
        dir=""; inx=0;
        for (i=1;i<=NF;i++) {
            if ($i ~ /^Directory:/) { dir=$i; sub(/^Directory:[ \t]*/,"",dir) }
            if ($i ~ /^Checksums-Sha256:/) { inx=1; continue }
            if (inx && $i ~ /^ /) { split($i,a," "); if (a[3] ~ /\.orig\.tar\./) { sha=a[1]; f=a[3] } }
            else if (inx) inx=0
        }
        print dir, f, sha; exit
    }')
[ -n "${ORIG:-}" ] || die "the $SUITE Sources index has no varnish orig tarball"
VERSION=$(echo "$ORIG" | sed -E 's/^varnish_([^.]+\.[^.]+\.[^.]+)\.orig.*/\1/')
case "$VERSION" in 7.[5-9].*|8.*) ;; *) die "$SUITE offers Varnish $VERSION, outside 7.5..8.x";; esac
log "source: $ORIG (sha256 $SHA)"

TARBALL="$WORK/$ORIG"
check_sum() { [ -f "$TARBALL" ] && echo "$SHA  $TARBALL" | sha256sum -c --status; }
if ! check_sum; then
    rm -f "$TARBALL"
    # apt-get source may fail on the .dsc while the tarball arrives; the
    # checksum below is what decides.
    (cd "$WORK" && apt-get "${APT_OPTS[@]}" source --download-only -qq "varnish/$SUITE" >&2) || true
    if [ ! -f "$TARBALL" ]; then
        log "apt-get source did not deliver the tarball; fetching it from the same mirror"
        curl -fsSL --retry 3 -o "$TARBALL" "${MIRROR%/}/$DIRECTORY/$ORIG" \
            || die "download of $ORIG failed (no network?)"
    fi
    check_sum || { rm -f "$TARBALL"; die "checksum mismatch for $ORIG: expected $SHA (file removed; re-run to retry)"; }
fi
log "checksum OK"

# ------------------------------------------------------------------ build
rm -rf "$PREFIX" "$WORK/varnish-$VERSION"
tar -C "$WORK" -xf "$TARBALL"
SRC="$WORK/varnish-$VERSION"
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
touch "$PREFIX/.complete"
log "Varnish $VERSION installed in $PREFIX"
echo "$PREFIX"
