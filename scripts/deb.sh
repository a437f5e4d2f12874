#!/usr/bin/env bash
# Builds the Debian 13 packages varnish-vmod-peer and varnish-vmod-saintmode the way a
# Debian build daemon would: `dpkg-buildpackage -b` with debian/ in a clean Debian 13
# root (mmdebstrap, cached in ${XDG_CACHE_HOME:-~/.cache}/vmod-rs/debian13, used through
# a throwaway overlay), against Debian's libvarnishapi-dev; then lintian on both.
#
#   scripts/deb.sh [--clean] [--force]
#     --clean  no cached cargo target dir: a full build
#     --force  build even when target/debian holds packages built from the same inputs
#              (source files, toolchain, build root): otherwise they are reused
#
# Output in target/debian/: the two .deb (plus -dbgsym .deb), .changes, .buildinfo,
# build.log and lintian.txt; the .deb paths on stdout.
# Runs as the unprivileged user nobody inside the root, offline, in a private mount
# namespace (mounts die with the run).
# Rust: the host's toolchain (`rustc --print sysroot`) is bind-mounted read-only (Debian
# 13's rustc 1.85 cannot build Cargo.lock: see debian/README.source). Crates: `cargo fetch
# --locked` on this machine, with its cargo configuration, then the registry is
# bind-mounted read-only and the package builds with `cargo build --frozen` in a network
# namespace of its own: no download during the build (Policy 4.9).
# Version: debian/changelog's plus `+varnish<version of libvarnishapi-dev in the root>`
# (a binNMU-style, binary-only changelog entry added in the root): a rebuild against a
# varnish update, whose strict ABI id changes, is an upgrade for apt.
# Depends: dh_varnishabi --strict (varnishabi-<VRT major.minor>, varnishabi-strict-<id>
# of the headers built against) and dpkg-shlibdeps.
# Needs root (mount, chroot) and network access to the Debian archive when the cached
# root is missing or older than DEB_ROOT_MAX_AGE_HOURS (24).
set -euo pipefail
ME=deb
# shellcheck source=../packaging/lib.sh
. "$(cd "$(dirname "$0")/.." && pwd)/packaging/lib.sh"
# shellcheck source=lib/debian.sh
. "$ROOT/scripts/lib/debian.sh"

usage() { sed -n '2,22s/^# \{0,1\}//p' "$0" >&2; exit 2; }
clean=0 force=0
for arg in "$@"; do
    case "$arg" in
        --clean) clean=1 ;;
        --force) force=1 ;;
        -h|--help) usage ;;
        *) log "unknown argument: $arg"; usage ;;
    esac
done
[ "$(id -u)" -eq 0 ] || die "needs root (mmdebstrap, mount, chroot): run as root"
private_mounts "$@"
for tool in rustc cargo git findmnt flock tar; do
    command -v "$tool" >/dev/null || die "$tool not found on this machine"
done

# The versions must agree: the package version is the workspace version.
cargo_version=$(workspace_version)
deb_version=$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' "$ROOT/debian/changelog")
[ "${deb_version%%-*}" = "${cargo_version//-/\~}" ] \
    || die "debian/changelog says $deb_version but Cargo.toml says $cargo_version: add a changelog entry (dch -v ${cargo_version//-/\~})"

toolchain=$(cd "$ROOT" && rustc --print sysroot) || die "rustc --print sysroot failed"
case "$toolchain" in
    /|/usr|/usr/local) die "the Rust toolchain is installed system-wide (sysroot $toolchain): its bin/ cannot be put into the Debian 13 root without shadowing Debian's; install one with rustup" ;;
esac
[ -x "$toolchain/bin/cargo" ] || die "no cargo in the toolchain $toolchain (rustup component add cargo?)"
cargo_home="${CARGO_HOME:-$HOME/.cargo}"
registry="$cargo_home/registry"
# debian/copyright lists the crates Cargo.lock links in: regenerated with it.
python3 "$ROOT/packaging/gen-copyright.py" --check || die "debian/copyright is stale"
# Every crate of Cargo.lock, downloaded here with this machine's cargo configuration
# (mirrors, proxies, CA) and under cargo's own lock on its registry cache.
(cd "$ROOT" && cargo fetch --locked -q) || die "cargo fetch --locked failed: the package build needs every crate of Cargo.lock in $registry"

ensure_root build
# binNMU-style version suffix: the varnish headers built against.
varnish_version=$(chroot "$BASE_ROOT" dpkg-query -W -f '${Version}' libvarnishapi-dev) || die "no libvarnishapi-dev in $BASE_ROOT"
deb_version="$deb_version+varnish${varnish_version//[-:]/.}"
log "build root: $BASE_ROOT (Debian $(cat "$BASE_ROOT/etc/debian_version"), $(sed -n 's/.* sources=\(.*\) variant=.*/\1/p' "$DEB_CACHE/build.stamp" | grep -Eo 'trixie[a-z-]*' | paste -sd' '), $(sed -n 2p "$DEB_CACHE/build.stamp"))"

OUT="$ROOT/target/debian"
mkdir -p "$OUT"

# Everything the build reads from this machine: the files sent into the root, the
# toolchain and the root itself. Unchanged inputs and packages present: nothing to do.
inputs=$( { (cd "$ROOT" && source_files "$ROOT" | sort -z | xargs -0 sha256sum); "$toolchain/bin/rustc" -vV; cat "$DEB_CACHE/build.stamp"; echo "$deb_version"; } | sha256sum | cut -d' ' -f1)
if [ "$force" = 0 ] && [ "$clean" = 0 ] && [ -f "$OUT/inputs" ] && [ "$(cat "$OUT/inputs")" = "$inputs" ]; then
    cands=("$OUT"/varnish-vmod-peer_"$deb_version"_*.deb "$OUT"/varnish-vmod-saintmode_"$deb_version"_*.deb)
    if [ -f "${cands[0]}" ] && [ -f "${cands[1]}" ] && [ -f "$OUT/lintian.txt" ] && [ -f "$OUT/version" ]; then
        log "up to date: ${cands[*]#"$ROOT"/} built from the same sources, toolchain and root (--force rebuilds)"
        printf '%s\n' "${cands[@]}"
        exit 0
    fi
fi
rm -f "$OUT/inputs"
trap 'root_session_end' EXIT
root_session_start "$BASE_ROOT"

# The source tree (packaging/lib.sh's source_files), every mtime set to now.
copy_sources "$ROOT" "$MERGED/build/src"

bind_into "$toolchain" /opt/rust-toolchain ro
# The registry's index and downloaded .crate files, read-only; cargo unpacks the crates it
# needs into a registry/src of the overlay (the host's unpacked copies keep each crate's
# file modes, some not readable by the unprivileged build user).
bind_into "$registry/index" /build/cargo-home/registry/index ro
bind_into "$registry/cache" /build/cargo-home/registry/cache ro
mkdir -p "$MERGED/build/cargo-home/registry/src"
# The machine's cargo configuration (source replacement names the registry directory).
for f in config.toml config; do
    [ ! -f "$cargo_home/$f" ] || cp "$cargo_home/$f" "$MERGED/build/cargo-home/$f"
done
# This checkout's own cargo target dir, locked exclusively for the whole build: another
# build of the same checkout waits, --clean never deletes it under a running build.
target_cache=$(deb_target_cache "$ROOT")
mkdir -p "$(dirname "$target_cache")"
exec {target_lock}>"$target_cache.lock"
flock -w 1800 -x "$target_lock" || die "timed out waiting for $target_cache.lock (another build of this checkout?)"
[ "$clean" = 0 ] || remove_tree "$target_cache"
mkdir -p "$target_cache"
# The build runs as the root's unprivileged `nobody` (Rules-Requires-Root: no): it owns
# /build (the .deb files land there), the sources, CARGO_HOME (cargo's locks; the
# registry in it stays read-only) and this checkout's target dir.
build_uid=$(chroot "$MERGED" id -u nobody) build_gid=$(chroot "$MERGED" id -g nobody) \
    || die "no user nobody in the build root"
mkdir -p "$MERGED/build/home"
chown "$build_uid:$build_gid" "$MERGED/build" "$MERGED/build/home" "$MERGED/build/cargo-home" \
    "$MERGED/build/cargo-home/registry" "$MERGED/build/cargo-home/registry/src"
for f in "$MERGED"/build/cargo-home/config*; do [ ! -f "$f" ] || chown "$build_uid:$build_gid" "$f"; done
chown -R "$build_uid:$build_gid" "$MERGED/build/src" "$target_cache"
bind_into "$target_cache" /build/target

# The binNMU-style entry: binary-only=yes, so the source version stays the changelog's
# and dh_installchangelogs ships the entry as changelog.Debian.<arch>.gz. Its date and
# signature are the previous entry's (reproducible: SOURCE_DATE_EPOCH comes from it).
{
    printf '%s (%s) unstable; urgency=medium, binary-only=yes\n\n' "$(sed -n '1s/ .*//p' "$ROOT/debian/changelog")" "$deb_version"
    printf '  * Binary-only rebuild against varnish %s (libvarnishapi-dev): both\n    modules are bound to its strict ABI.\n\n' "$varnish_version"
    grep -m1 '^ -- ' "$ROOT/debian/changelog"
    echo
    cat "$ROOT/debian/changelog"
} > "$MERGED/build/src/debian/changelog"

IN_ROOT_ENV=(PATH=/opt/rust-toolchain/bin:/usr/sbin:/usr/bin:/sbin:/bin
    CARGO_HOME=/build/cargo-home CARGO_TARGET_DIR=/build/target CARGO_TERM_COLOR=never
    "DEB_BUILD_OPTIONS=parallel=$(nproc)")
log "dpkg-buildpackage -b as nobody, offline, in the root (toolchain: $(in_root rustc --version); log: ${OUT#"$ROOT"/}/build.log)"
rm -f "$OUT"/*.deb "$OUT"/*.changes "$OUT"/*.buildinfo "$OUT"/lintian.txt "$OUT"/version
start=$(date +%s)
# unshare --net: no network in the build (only loopback, down); runuser: not as root.
if ! in_root unshare --net runuser -u nobody -- env HOME=/build/home "${IN_ROOT_ENV[@]}" \
        sh -c 'cd /build/src && timeout 1800 dpkg-buildpackage -b -us -uc' >"$OUT/build.log" 2>&1; then
    sed 's/^/    | /' "$OUT/build.log" | tail -n 40 >&2
    die "dpkg-buildpackage failed in the Debian 13 root (full log: $OUT/build.log)"
fi
log "built in $(( $(date +%s) - start )) s"
shopt -s nullglob
products=("$MERGED"/build/*.deb "$MERGED"/build/*.changes "$MERGED"/build/*.buildinfo)
[ "${#products[@]}" -gt 0 ] || die "dpkg-buildpackage produced no .deb (see $OUT/build.log)"
cp "${products[@]}" "$OUT/"

# ------------------------------------------------------------------ ABI check
abi=$(sed -n 's/^#define VMOD_ABI_Version "Varnish [^ ]* \([0-9a-f]\{40\}\)"$/\1/p' "$MERGED/usr/include/varnish/vmod_abi.h")
[ -n "$abi" ] || die "no 40-hex VCS id in the root's /usr/include/varnish/vmod_abi.h"
debs=()
for pkg in varnish-vmod-peer varnish-vmod-saintmode; do
    cands=("$OUT/${pkg}_${deb_version}_"*.deb); deb=${cands[0]:-}
    [ -f "$deb" ] || die "dpkg-buildpackage produced no $pkg .deb (see $OUT/build.log)"
    depends=$(dpkg-deb -f "$deb" Depends)
    grep -q "varnishabi-strict-$abi" <<<"$depends" \
        || die "$pkg Depends '$depends' lacks varnishabi-strict-$abi (the headers' strict ABI)"
    log "$(basename "$deb"): Depends: $depends"
    debs+=("$deb")
done

# ------------------------------------------------------------------ lintian
# On the .changes (both packages, their -dbgsym and the .buildinfo), as an unprivileged
# user. Errors and warnings fail the build; debian/*.lintian-overrides justify the rest.
changes=("$OUT"/*.changes)
cp "$OUT"/*.deb "$OUT"/*.buildinfo "${changes[@]}" "$MERGED/build/"
chmod 0755 "$MERGED/build"
# The .deb files are named as well: lintian 2.122 groups a binNMU's .changes (Source:
# vmod-rs (0.1.0), Version 0.1.0+varnish...) without its .deb files and checks none of
# them, silently. Each package's override must show up: proof that it was checked.
lintian_files=("/build/$(basename "${changes[0]}")")
for f in "$OUT"/*.deb; do lintian_files+=("/build/$(basename "$f")"); done
if in_root runuser -u nobody -- env HOME=/tmp lintian --fail-on error,warning --display-info --pedantic \
        --show-overrides "${lintian_files[@]}" >"$OUT/lintian.txt" 2>&1 \
        && grep -q '^O: varnish-vmod-peer: ' "$OUT/lintian.txt" && grep -q '^O: varnish-vmod-saintmode: ' "$OUT/lintian.txt"; then
    log "lintian: no errors or warnings ($(grep -c '^[IPO]: ' "$OUT/lintian.txt" || true) info/pedantic/overridden tags: ${OUT#"$ROOT"/}/lintian.txt)"
else
    sed 's/^/    | /' "$OUT/lintian.txt" >&2
    die "lintian reports errors or warnings, or did not check both packages (above; fix them or justify them in debian/*.lintian-overrides)"
fi
echo "$deb_version" > "$OUT/version"
echo "$inputs" > "$OUT/inputs"
printf '%s\n' "${debs[@]}"
