#!/usr/bin/env bash
# Builds target/debian/vmod-rs_<version>_<arch>.deb (package varnish-vmod-rs) with dpkg-deb
# from the already built modules: run `make release` (or `cargo build --release
# --workspace --locked`) first.
#
#   scripts/deb.sh [--release|--debug] [--no-strip]      (default --release, stripped)
#
# Contents: libvmod_peer.so and libvmod_saintmode.so in the vmoddir of the Varnish they
# were built against (`pkg-config --variable=vmoddir varnishapi`; VMODDIR overrides it),
# man pages vmod_peer.3.gz / vmod_saintmode.3.gz in /usr/share/man/man3 (vmodtool RST +
# rst2man from each vmod.vcc), README.md and LICENSE (as copyright) in
# /usr/share/doc/varnish-vmod-rs.
# Control fields: Version from [workspace.package] in Cargo.toml (+ "-$DEB_REVISION" when
# set), Architecture from dpkg, Depends on the Varnish ABI the modules were built against
# under the virtual package names Debian's varnish package Provides (varnishabi-<VRT
# major>.<minor> and, for `$ABI strict` modules, varnishabi-strict-<vcs id of the
# VMOD_ABI_Version string>) plus the shared libraries found by dpkg-shlibdeps (libcurl4
# as soon as a module links libcurl), Conflicts with varnish-modules (its own
# libvmod_saintmode.so). Maintainer from DEBFULLNAME/DEBEMAIL when set.
set -euo pipefail
ME=deb
# shellcheck source=../packaging/lib.sh
. "$(cd "$(dirname "$0")/.." && pwd)/packaging/lib.sh"

PACKAGE=varnish-vmod-rs
usage() { sed -n '2,20s/^# \{0,1\}//p' "$0" >&2; exit 2; }

profile=release strip=1
for arg in "$@"; do
    case "$arg" in
        --release) profile=release ;;
        --debug) profile=debug ;;
        --no-strip) strip=0 ;;
        -h|--help) usage ;;
        *) log "unknown argument: $arg"; usage ;;
    esac
done
for tool in dpkg dpkg-deb dpkg-shlibdeps cpp gzip strip; do
    command -v "$tool" >/dev/null || die "$tool not found: install dpkg-dev, binutils and cpp (apt-get install dpkg-dev build-essential)"
done

ensure_varnish_env
artifacts=$(artifact_dir "$profile")
require_artifacts "$artifacts" "$profile"
for name in "${VMODS[@]}"; do require_loadable "$artifacts/libvmod_$name.so"; done
[ "$profile" = release ] || log "note: packaging the debug build"

# ------------------------------------------------------------------ ABI
IFS='|' read -r vrt_version abi_string < <(headers_abi) || die "cannot read the Varnish ABI from the varnishapi headers"
strict=0
for name in "${VMODS[@]}"; do
    IFS='|' read -r so_abi_string so_major so_minor _ < <(so_abi "$artifacts/libvmod_$name.so") \
        || die "libvmod_$name.so has no readable VMOD descriptor: rebuild it"
    [ "$so_abi_string" = "$abi_string" ] \
        || die "libvmod_$name.so was built against \"$so_abi_string\" but pkg-config points at \"$abi_string\": rebuild (cargo clean -p vmod-$name, then make release)"
    [ "$so_major.$so_minor" = "0.0" ] && strict=1
done
vcs_id=${abi_string##* }
depends=("varnishabi-$vrt_version")
if [ "$strict" = 1 ]; then
    if [[ "$vcs_id" =~ ^[0-9a-f]{40}$ ]]; then
        depends+=("varnishabi-strict-$vcs_id")
    else
        # The headers carry no VCS id (a Varnish built outside git without Debian's
        # debian/vcs_version). The strict modules load only into a varnishd with this very
        # ABI string, which no Debian package Provides: say so in the dependency.
        depends+=("varnishabi-strict-$(tr 'A-Z' 'a-z' <<<"$vcs_id" | tr -c 'a-z0-9.+\n-' '-')")
    fi
fi
pcfile="$(pkg-config --variable=pcfiledir varnishapi)/varnishapi.pc"
debian_varnish=""
if owner=$(dpkg -S "$pcfile" 2>/dev/null); then
    debian_varnish=${owner%%:*}
fi

# ---------------------------------------------------------------- version, arch
version=$(workspace_version)
version=${version//-/\~}            # semver pre-release 1.0.0-rc1 sorts as 1.0.0~rc1
[ -z "${DEB_REVISION:-}" ] || version="$version-$DEB_REVISION"
[[ "$version" =~ ^[0-9][A-Za-z0-9.+~-]*$ ]] || die "workspace version '$version' is not a valid Debian version"
arch=$(dpkg --print-architecture)
vmoddir=${VMODDIR:-$(varnish_var vmoddir)}; vmoddir=${vmoddir%/}
case "$vmoddir" in /*) ;; *) die "VMODDIR must be an absolute path, got '$vmoddir'" ;; esac
maintainer="${DEBFULLNAME:-vmod-rs maintainers} <${DEBEMAIL:-vmod-rs@localhost}>"
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || stat -c %Y "$ROOT/Cargo.toml")}
export SOURCE_DATE_EPOCH

# ------------------------------------------------------------------ stage
OUT="$ROOT/target/debian"
mkdir -p "$OUT"
work=$(mktemp -d "$OUT/.build.XXXXXX")
trap 'rm -rf "$work"' EXIT
stage="$work/debian/$PACKAGE"     # dpkg-shlibdeps expects debian/<package>/
docdir="$stage/usr/share/doc/$PACKAGE"
mandir="$stage/usr/share/man/man3"
install -d -m 0755 "$stage$vmoddir" "$mandir" "$docdir" "$stage/DEBIAN"
for name in "${VMODS[@]}"; do
    so="$stage$vmoddir/libvmod_$name.so"
    install -m 0644 "$artifacts/libvmod_$name.so" "$so"
    # As dh_strip does for shared libraries; the VMOD descriptor is dynamic, it stays.
    [ "$strip" = 0 ] || strip --remove-section=.comment --remove-section=.note --strip-unneeded "$so"
    gen_man "$name" "$work" "$artifacts/libvmod_$name.so"
    gzip -9n -c "$work/vmod_$name.3" > "$mandir/vmod_$name.3.gz"
    chmod 0644 "$mandir/vmod_$name.3.gz"
done
install -m 0644 "$ROOT/LICENSE" "$docdir/copyright"
install -m 0644 "$ROOT/README.md" "$docdir/README.md"

# ------------------------------------------------------------- dependencies
printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$PACKAGE" "$PACKAGE" > "$work/debian/control"
sos=(); for name in "${VMODS[@]}"; do sos+=("debian/$PACKAGE$vmoddir/libvmod_$name.so"); done
shlibs=$(cd "$work" && dpkg-shlibdeps -O "${sos[@]}" 2>"$work/shlibdeps.err") \
    || die "dpkg-shlibdeps failed: $(cat "$work/shlibdeps.err") (a module links a library no Debian package ships?)"
shlibs=${shlibs#shlibs:Depends=}
[ -z "$shlibs" ] || depends+=("$shlibs")

# ------------------------------------------------------------------ control
installed_size=$(du -k -s --apparent-size "$stage" | cut -f1)
desc_abi="Built against $abi_string (VRT $vrt_version)"
[ "$strict" = 1 ] && desc_abi="$desc_abi; strict ABI: loads only into a varnishd with the same ABI string"
{
    echo "Package: $PACKAGE"
    echo "Version: $version"
    echo "Architecture: $arch"
    echo "Maintainer: $maintainer"
    echo "Installed-Size: $installed_size"
    printf 'Depends: %s' "${depends[0]}"; printf ', %s' "${depends[@]:1}"; echo
    echo "Conflicts: varnish-modules"
    echo "Enhances: varnish"
    echo "Section: httpd"
    echo "Priority: optional"
    echo "Description: Varnish Cache modules vmod_peer and vmod_saintmode, in Rust"
    echo " vmod_peer and vmod_saintmode for Varnish Cache, built as two shared objects"
    echo " so that plain \`import peer;\` and \`import saintmode;\` work. Man pages:"
    echo " vmod_peer(3), vmod_saintmode(3)."
    echo " ."
    echo " $desc_abi." | fold -s -w 78 | sed -e 's/ *$//' -e '2,$s/^/ /'
} > "$stage/DEBIAN/control"
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) > "$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/control" "$stage/DEBIAN/md5sums"
find "$stage" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

deb="$OUT/vmod-rs_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb.tmp" >/dev/null 2>"$work/dpkg-deb.err" \
    || die "dpkg-deb --build failed: $(cat "$work/dpkg-deb.err")"
mv -f "$deb.tmp" "$deb"

log "built ${deb#"$ROOT"/}"
log "  Depends: $(dpkg-deb -f "$deb" Depends)"
log "  modules in $vmoddir"
if [ -z "$debian_varnish" ]; then
    log "note: the Varnish in use ($(pkg-config --variable=prefix varnishapi)) is not a Debian package."
    log "note: the package still depends on ${depends[0]}${depends[1]:+ and ${depends[1]}} (what Debian's varnish package Provides), so dpkg/apt will only install it next to a varnish package that provides that ABI."
    if [ "$strict" = 1 ] && ! [[ "$vcs_id" =~ ^[0-9a-f]{40}$ ]]; then
        log "note: this Varnish's ABI string \"$abi_string\" has no VCS id, so no Debian package provides ${depends[1]}: the strict-ABI modules would not load into Debian's varnishd anyway. Build against the system's libvarnishapi-dev, or a Varnish built with Debian's debian/vcs_version, to get an installable package; \`dpkg -i --force-depends\` only makes sense on this machine."
    fi
    [ -n "${VMODDIR:-}" ] || log "note: the modules go to $vmoddir, the vmoddir of that Varnish (set VMODDIR=/usr/lib/$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo '<multiarch>')/varnish/vmods for Debian's layout)."
else
    log "Varnish headers from the Debian package $debian_varnish"
fi
printf '%s\n' "$deb"
