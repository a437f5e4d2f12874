#!/usr/bin/env bash
# Tests scripts/deb.sh: builds the modules (cargo, incremental) and the .deb, checks its
# control fields and contents with dpkg-deb -I/-f/-c, extracts it with dpkg-deb -x and
# loads the extracted modules in varnishtest (packaging/tests/*.vtc) through vmod_path.
#
#   scripts/check-deb.sh [--no-build]
#
# Prints one `ok`/`FAIL` line per check and `N passed, M failed` last; exits 1 on failure.
set -euo pipefail
ME=check-deb
# shellcheck source=../packaging/lib.sh
. "$(cd "$(dirname "$0")/.." && pwd)/packaging/lib.sh"

build=1
for arg in "$@"; do
    case "$arg" in
        --no-build) build=0 ;;
        *) die "unknown argument: $arg (usage: $0 [--no-build])" ;;
    esac
done

ensure_varnish_env
for tool in varnishtest man dpkg-deb readelf; do
    command -v "$tool" >/dev/null || die "$tool not found (PATH=$PATH)"
done
if [ "$build" = 1 ]; then
    log "cargo build --release --workspace --locked"
    (cd "$ROOT" && cargo build --release --workspace --locked --quiet) \
        || die "cargo build failed: the tree does not build, nothing to package"
fi

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/check-deb.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
passed=0 failed=0
ok()   { passed=$((passed + 1)); echo "ok - $*"; }
fail() { failed=$((failed + 1)); echo "FAIL - $*"; }
check() { # check DESCRIPTION COMMAND...: runs COMMAND, shows its output on failure
    local desc=$1; shift
    if "$@" >"$SCRATCH/out" 2>&1; then ok "$desc"; else fail "$desc"; sed 's/^/    | /' "$SCRATCH/out" | tail -n 30; fi
}

# ------------------------------------------------------------------ build it
if ! deb=$("$ROOT/scripts/deb.sh" 2>"$SCRATCH/deb.log"); then
    fail "scripts/deb.sh builds the package"; sed 's/^/    | /' "$SCRATCH/deb.log"
    echo "$passed passed, $failed failed"; exit 1
fi
ok "scripts/deb.sh builds ${deb#"$ROOT"/}"
cp "$deb" "$SCRATCH/pkg.deb"
DEB=$SCRATCH/pkg.deb

# What the package must say, computed here independently of deb.sh.
version=$(workspace_version); version=${version//-/\~}
arch=$(dpkg --print-architecture)
vmoddir=${VMODDIR:-$(varnish_var vmoddir)}; vmoddir=${vmoddir%/}
inc=$(varnish_var pkgincludedir)
vrt="$(sed -n 's/^#define[[:space:]]*VRT_MAJOR_VERSION[[:space:]]*\([0-9]*\)U.*/\1/p' "$inc/vrt.h").$(sed -n 's/^#define[[:space:]]*VRT_MINOR_VERSION[[:space:]]*\([0-9]*\)U.*/\1/p' "$inc/vrt.h")"
abi_string=$(sed -n 's/^#define VMOD_ABI_Version "\(.*\)"/\1/p' "$inc/vmod_abi.h")
vcs_id=$(tr 'A-Z' 'a-z' <<<"${abi_string##* }")
field() { dpkg-deb -f "$DEB" "$1"; }

check "file name is vmod-rs_${version}_${arch}.deb" test "$(basename "$deb")" = "vmod-rs_${version}_${arch}.deb"
check "dpkg-deb -I reads the package" dpkg-deb -I "$DEB"
check "Package: varnish-vmod-rs" test "$(field Package)" = varnish-vmod-rs
check "Version: $version (Cargo.toml workspace version)" test "$(field Version)" = "$version"
check "Architecture: $arch" test "$(field Architecture)" = "$arch"
dep_has() { tr ',' '\n' <<<"$(field Depends)" | sed 's/^ *//; s/ .*//' | grep -qx -- "$1" || { echo "Depends: $(field Depends)"; return 1; }; }
check "Depends on varnishabi-$vrt (VRT major.minor of the headers)" dep_has "varnishabi-$vrt"
check "Depends on varnishabi-strict-$vcs_id (strict ABI \"$abi_string\")" dep_has "varnishabi-strict-$vcs_id"
check "Conflicts with varnish-modules (ships another libvmod_saintmode.so)" \
    bash -c 'dpkg-deb -f "$1" Conflicts | tr "," "\n" | sed "s/^ *//; s/ .*//" | grep -qx varnish-modules' _ "$DEB"
check "Maintainer, Installed-Size, Section and Description are set" \
    bash -c 'for f in Maintainer Installed-Size Section Description; do [ -n "$(dpkg-deb -f "$1" $f)" ] || { echo "no $f"; exit 1; }; done' _ "$DEB"

# ------------------------------------------------------------------ contents
dpkg-deb -c "$DEB" > "$SCRATCH/contents"
want=()
for n in "${VMODS[@]}"; do
    want+=("./${vmoddir#/}/libvmod_$n.so" "./usr/share/man/man3/vmod_$n.3.gz")
done
want+=("./usr/share/doc/varnish-vmod-rs/copyright" "./usr/share/doc/varnish-vmod-rs/README.md")
files_are() { diff <(printf '%s\n' "${want[@]}" | sort) <(awk '$1 !~ /^d/ {print $6}' "$SCRATCH/contents" | sort); }
check "dpkg-deb -c: both .so in $vmoddir, both man pages, copyright, README, nothing else" files_are
check "every entry is owned by root/root" bash -c '! awk "\$2 != \"root/root\"" "$1" | grep .' _ "$SCRATCH/contents"

X=$SCRATCH/extract
check "dpkg-deb -x extracts the package" dpkg-deb -x "$DEB" "$X"
dpkg-deb -e "$DEB" "$X/DEBIAN"
check "extracted files match DEBIAN/md5sums" bash -c 'cd "$1" && md5sum --quiet -c DEBIAN/md5sums' _ "$X"
same_as_license() { cmp "$ROOT/LICENSE" "$X/usr/share/doc/varnish-vmod-rs/copyright"; }
check "copyright is the project's LICENSE" same_as_license

# ------------------------------------------------------------------ man pages
man_ok() {
    local n page
    for n in "${VMODS[@]}"; do
        zcat "$X/usr/share/man/man3/vmod_$n.3.gz" | grep -q "^\.TH \"VMOD_${n^^}\" 3" \
            || { echo "vmod_$n.3.gz: no .TH \"VMOD_${n^^}\" 3 line"; return 1; }
        page=$(MANWIDTH=80 man -l "$X/usr/share/man/man3/vmod_$n.3.gz" 2>&1) || { echo "$page"; return 1; }
        grep -q "^VMOD_${n^^}(3)" <<<"$page" || { echo "man -l vmod_$n.3.gz: no VMOD_${n^^}(3) header"; return 1; }
        grep -q "import $n" <<<"$page" || { echo "man -l vmod_$n.3.gz: no 'import $n' in SYNOPSIS"; return 1; }
    done
}
check "man pages: .TH VMOD_<NAME> 3 and man -l renders them" man_ok

# ------------------------------------------------------------------ modules
so_ok() {
    local n so
    for n in "${VMODS[@]}"; do
        so="$X$vmoddir/libvmod_$n.so"
        nm -D --defined-only "$so" | grep -qw "Vmod_${n}_Data" || { echo "libvmod_$n.so does not export Vmod_${n}_Data"; return 1; }
        if readelf -S "$so" | grep -q '\.debug_info'; then echo "libvmod_$n.so is not stripped"; return 1; fi
        [ "$(so_abi "$so" | cut -d'|' -f1)" = "$abi_string" ] || { echo "libvmod_$n.so ABI $(so_abi "$so")"; return 1; }
    done
}
check "extracted .so files: stripped, export Vmod_<name>_Data, ABI \"$abi_string\"" so_ok
# Every shared library a module needs is in Depends, through the package that ships it.
needed_in_depends() {
    local n lib path pkg
    for n in "${VMODS[@]}"; do
        for lib in $(readelf -d "$X$vmoddir/libvmod_$n.so" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
            path=$(ldconfig -p | awk -v l="$lib" '$1 == l {print $NF; exit}')
            [ -n "$path" ] || { echo "$lib (needed by libvmod_$n.so) not found by ldconfig"; return 1; }
            pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -n1 | cut -d: -f1) \
                || pkg=$(dpkg -S "$path" 2>/dev/null | head -n1 | cut -d: -f1) || pkg=""
            [ -n "$pkg" ] || { echo "$lib ($path) belongs to no Debian package"; return 1; }
            dep_has "$pkg" || { echo "libvmod_$n.so needs $lib from $pkg, not in Depends"; return 1; }
            echo "libvmod_$n.so: $lib -> $pkg"
        done
    done
}
check "Depends covers every NEEDED library (libcurl4 once a module links libcurl)" needed_in_depends
check "varnishtest packaging/tests/*.vtc: plain import of the extracted modules via vmod_path" \
    run_vtcs "$X$vmoddir"

# ------------------------------------------------------- dpkg's view of the fields
# A scratch dpkg database (--admindir) and root (--instdir): stand-ins for the packages
# Depends names, and a `varnish` that Provides what Debian's varnish package does
# (dh_varnishabi: varnishabi-<VRT major.minor>, varnishabi-strict-<vcs id>).
fake_db() { # fake_db NAME VARNISH_PROVIDES [EXTRA_INSTALLED_PACKAGE]
    local db="$SCRATCH/dpkg-$1/db" dep a v m
    mkdir -p "$db/updates" "$db/info" "$SCRATCH/dpkg-$1/root"
    : > "$db/available"
    stanza() { printf 'Package: %s\nStatus: install ok installed\nMaintainer: stand-in <root@localhost>\nArchitecture: %s\nVersion: %s\n%bDescription: stand-in\n\n' "$@"; }
    {
        for dep in $(field Depends | tr ',' '\n' | sed 's/^ *//; s/ .*//'); do
            case "$dep" in varnishabi-*) continue ;; esac
            a=$(dpkg-query -W -f '${Architecture}' "$dep") v=$(dpkg-query -W -f '${Version}' "$dep")
            m=$(dpkg-query -W -f '${Multi-Arch}' "$dep"); [ -z "$m" ] || m="Multi-Arch: $m\n"
            stanza "$dep" "$a" "$v" "$m"
        done
        stanza varnish "$arch" 7.7.0-0stand-in "Provides: $2\n"
        [ -z "${3:-}" ] || stanza "$3" "$arch" 1.0 ""
    } > "$db/status"
}
dpkg_i() { # dpkg_i NAME: dpkg -i into the scratch database NAME (no --force-depends)
    dpkg --admindir="$SCRATCH/dpkg-$1/db" --instdir="$SCRATCH/dpkg-$1/root" \
        --force-not-root --force-script-chrootless -i "$DEB"
}
refused() { if dpkg_i "$1" >"$SCRATCH/dpkg.log" 2>&1; then echo "dpkg -i succeeded"; return 1; fi; grep -q -- "$2" "$SCRATCH/dpkg.log" || { cat "$SCRATCH/dpkg.log"; return 1; }; }
installs_and_removes() {
    dpkg_i good || return 1
    [ -f "$SCRATCH/dpkg-good/root$vmoddir/libvmod_${VMODS[0]}.so" ] || { echo "no module under the instdir"; return 1; }
    dpkg --admindir="$SCRATCH/dpkg-good/db" --instdir="$SCRATCH/dpkg-good/root" \
        --force-not-root --force-script-chrootless -r varnish-vmod-rs || return 1
    ! find "$SCRATCH/dpkg-good/root" -type f | grep .
}
fake_db good "varnishabi-$vrt, varnishabi-strict-$vcs_id"
check "dpkg -i accepts it next to a varnish that Provides varnishabi-$vrt, varnishabi-strict-$vcs_id; dpkg -r removes it" installs_and_removes
fake_db other "varnishabi-$vrt, varnishabi-strict-0000000000000000000000000000000000000000"
check "dpkg -i refuses it next to a varnish with another strict ABI" refused other "varnishabi-strict-$vcs_id"
fake_db conflict "varnishabi-$vrt, varnishabi-strict-$vcs_id" varnish-modules
check "dpkg -i refuses it while varnish-modules is installed" refused conflict "conflicts with varnish-modules"

# ------------------------------------------------------------------ the build itself
check "rebuilding gives a byte-identical .deb" \
    bash -c '"$1" >/dev/null 2>&1 && cmp "$2" "$3"' _ "$ROOT/scripts/deb.sh" "$deb" "$DEB"
pcfile="$(pkg-config --variable=pcfiledir varnishapi)/varnishapi.pc"
if owner=$(dpkg -S "$pcfile" 2>/dev/null); then
    provides() {
        local p; p=$(dpkg-query -W -f '${Provides}' varnish) || return 1
        for d in "varnishabi-$vrt" "varnishabi-strict-$vcs_id"; do
            grep -qw -- "$d" <<<"$p" || { echo "installed varnish Provides: $p; missing $d"; return 1; }
        done
    }
    check "the installed varnish package (headers from ${owner%%:*}) Provides both ABI names" provides
else
    check "deb.sh notes that the Varnish in use is not a Debian package" \
        grep -q "note: the Varnish in use .* is not a Debian package" "$SCRATCH/deb.log"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] || { echo "$ME: $failed check(s) failed (see FAIL lines above)" >&2; exit 1; }
