# shellcheck shell=bash
# Sourced by bench/run.sh: makes the load generator and the C comparators available.
#
# Sets, for run.sh:
#   C_SAINTMODE_SO / C_SAINTMODE_ERR   varnish-modules' libvmod_saintmode.so (trixie binary package)
#   C_CURL_SO      / C_CURL_ERR        libvmod-curl built from Debian's orig tarball (sid source package)
# Each comparator is cached under $BENCH_CACHE and fetched/built only when missing; a failure leaves
# the *_ERR variable set with the reason and the run goes on without that figure.
#
# No registry host name is written anywhere: the Debian mirror is the one this machine's apt
# configuration already uses (same technique as scripts/bootstrap.sh), driven through a private apt
# configuration (own sources list, lists and cache dirs) under $BENCH_CACHE/apt.

C_SAINTMODE_SO="" C_SAINTMODE_ERR=""
C_CURL_SO="" C_CURL_ERR=""
C_SAINTMODE_VERSION_WANTED="${C_SAINTMODE_VERSION_WANTED:-0.25.0}"

# ensure_debs and mirror_uri are shared with scripts/bootstrap.sh.
# shellcheck source=../../scripts/lib/debian.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/debian.sh"

APT_READY=""
# Private apt configuration (scripts/lib/debian.sh): trixie binaries (varnish-modules) and sid
# sources (libvmod-curl). Sets APT_OPTS; APT_ERR says why it failed.
private_apt() {
    [ -n "$APT_READY" ] && { [ "$APT_READY" = ok ]; return; }
    APT_READY=fail
    apt_private "$BENCH_CACHE/apt" \
        "deb [arch=$(dpkg --print-architecture) signed-by=@KEYRING@] @MIRROR@ trixie main" \
        "deb-src [signed-by=@KEYRING@] @MIRROR@ sid main" || return 1
    log "private apt configuration: $(mirror_uri) (trixie binaries, sid sources) in $BENCH_CACHE/apt"
    APT_READY=ok
}

# --- (a) varnish-modules' saintmode, from the trixie binary package
ensure_c_saintmode() {
    local dir="$BENCH_CACHE/c-saintmode" deb ver tmp
    if [ -f "$dir/.complete" ] && [ -f "$dir/libvmod_saintmode.so" ]; then
        C_SAINTMODE_SO="$dir/libvmod_saintmode.so"; return 0
    fi
    if ! private_apt; then C_SAINTMODE_ERR="$APT_ERR"; return 1; fi
    ver=$(apt-cache "${APT_OPTS[@]}" madison varnish-modules 2>/dev/null \
          | awk -F'|' -v w="$C_SAINTMODE_VERSION_WANTED" '{gsub(/ /,"",$2)} index($2,w)==1 {print $2; exit}')
    if [ -z "$ver" ]; then
        C_SAINTMODE_ERR="varnish-modules $C_SAINTMODE_VERSION_WANTED not in the trixie index"; return 1
    fi
    tmp=$(mktemp -d "$BENCH_CACHE/dl.XXXXXX")
    if ! (cd "$tmp" && apt-get "${APT_OPTS[@]}" download -qq "varnish-modules=$ver" >&2); then
        rm -rf "$tmp"; C_SAINTMODE_ERR="apt-get download varnish-modules=$ver failed"; return 1
    fi
    deb=$(ls "$tmp"/varnish-modules_*.deb 2>/dev/null | head -n1)
    mkdir -p "$tmp/x"
    if [ -z "$deb" ] || ! dpkg-deb -x "$deb" "$tmp/x"; then
        rm -rf "$tmp"; C_SAINTMODE_ERR="could not unpack the varnish-modules package"; return 1
    fi
    local so
    so=$(find "$tmp/x" -name libvmod_saintmode.so | head -n1)
    if [ -z "$so" ]; then rm -rf "$tmp"; C_SAINTMODE_ERR="no libvmod_saintmode.so in $deb"; return 1; fi
    rm -rf "$dir"; mkdir -p "$dir"
    cp "$so" "$dir/libvmod_saintmode.so"
    echo "varnish-modules $ver (Debian trixie binary package)" > "$dir/VERSION"
    touch "$dir/.complete"
    rm -rf "$tmp"
    C_SAINTMODE_SO="$dir/libvmod_saintmode.so"
    log "C saintmode: $(cat "$dir/VERSION") -> $C_SAINTMODE_SO"
}

# --- (b) libvmod-curl, from the orig tarball of Debian's sid source package
ensure_c_curl() {
    local dir="$BENCH_CACHE/c-curl" src="$BENCH_CACHE/src" tree
    if [ -f "$dir/.complete" ] && [ -f "$dir/libvmod_curl.so" ]; then
        C_CURL_SO="$dir/libvmod_curl.so"; return 0
    fi
    if ! private_apt; then C_CURL_ERR="$APT_ERR"; return 1; fi
    local entry directory orig sha
    if ! entry=$(sources_entry "$BENCH_CACHE/apt" sid libvmod-curl); then
        C_CURL_ERR="the sid Sources index has no libvmod-curl"; return 1
    fi
    directory=$(head -n1 <<<"$entry" | cut -d' ' -f2)
    read -r sha orig <<<"$(grep -E '\.orig\.tar\.[a-z0-9]+$' <<<"$entry" | head -n1)"
    if [ -z "${orig:-}" ]; then C_CURL_ERR="the sid Sources index has no libvmod-curl orig tarball"; return 1; fi
    if ! fetch_verified "$(debian_pool_url "$(mirror_uri)" "$directory" "$orig")" "$src/$orig" "$sha"; then
        C_CURL_ERR=$FETCH_ERR; return 1
    fi
    log "libvmod-curl: $orig (sha256 $sha, checked against the Sources index)"
    tree="$src/build-curl"
    rm -rf "$tree"; mkdir -p "$tree"
    tar -C "$tree" -xf "$src/$orig" || { C_CURL_ERR="cannot unpack $orig"; return 1; }
    tree=$(find "$tree" -mindepth 1 -maxdepth 1 -type d | head -n1)
    local vprefix
    vprefix=$(pkg-config --variable=prefix varnishapi 2>/dev/null || true)
    if [ -z "$vprefix" ]; then C_CURL_ERR="pkg-config finds no varnishapi"; return 1; fi
    log "building libvmod-curl against Varnish in $vprefix (log: $BENCH_CACHE/curl-build.log)"
    if ! (cd "$tree" &&
          export ACLOCAL_PATH="$vprefix/share/aclocal${ACLOCAL_PATH:+:$ACLOCAL_PATH}" &&
          export PKG_CONFIG_PATH="$vprefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}" &&
          sh autogen.sh && ./configure && make -j"$(nproc)") > "$BENCH_CACHE/curl-build.log" 2>&1; then
        C_CURL_ERR="libvmod-curl build failed (see $BENCH_CACHE/curl-build.log)"; return 1
    fi
    rm -rf "$dir"; mkdir -p "$dir"
    cp "$tree/src/.libs/libvmod_curl.so" "$dir/libvmod_curl.so"
    echo "libvmod-curl ${orig#libvmod-curl_} (Debian sid orig tarball)" | sed 's/\.orig\.tar\..*$//' > "$dir/VERSION"
    touch "$dir/.complete"
    rm -rf "$(dirname "$tree")"
    C_CURL_SO="$dir/libvmod_curl.so"
    log "C curl: $(cat "$dir/VERSION") -> $C_CURL_SO"
}

ensure_tools() {
    mkdir -p "$BENCH_CACHE"
    ensure_debs wrk python3 procps curl lz4 xz-utils autoconf automake libtool pkg-config \
        libcurl4-openssl-dev python3-docutils \
        || die "could not install the benchmark's Debian packages (wrk ...): root and network needed"
    command -v wrk >/dev/null || die "wrk missing after installation"
    ensure_c_saintmode || log "C saintmode unavailable: $C_SAINTMODE_ERR"
    ensure_c_curl || log "libvmod-curl unavailable: $C_CURL_ERR"
}
