#!/usr/bin/env bash
# Builds the Debian 13 packages (scripts/deb.sh) and proves them where users install
# them: in a fresh Debian 13 root (a throwaway overlay over a cached minimal root),
# `apt-get install ./varnish-vmod-*.deb` pulls Debian's varnish; Debian's varnishd and
# varnishtest then load the modules with plain imports, run the purge fan-out between two
# varnishd and the saintmode retry example, and `man 3` shows both pages. The same
# next to varnish-modules (its xkey and var with our saintmode in one VCL), and
# `apt-get remove`/`purge` leave the root as it was (a file-by-file snapshot), with
# varnish-modules' saintmode restored.
# Also: reinstalls of ours and of varnish-modules while diverted, a downgrade/upgrade of
# ours, the remove/purge snapshot taken on a fresh root that never had ours, a foreign
# (admin) diversion of libvmod_saintmode.so (the install stops cleanly), the former
# varnish-vmod-rs package replaced, the offline build, debian/copyright against Cargo.lock.
# Last, packaging/tests/deb/roots.sh (given this run's check root, never choosing one
# itself: that would deadlock on the lock this run holds) and sources.sh: the cached roots
# are remade when stale or broken, an unreachable archive is named, every checkout has its
# own cargo target dir and a source change is always rebuilt.
#
#   scripts/check-deb.sh [--no-build]    (--no-build: test the .deb already in target/debian)
#
# Prints one `ok`/`FAIL` line per check and `N passed, M failed` last; exits 1 on failure.
# Needs root (mount, chroot) and, when the cached roots are missing or stale, network
# access to the Debian archive.
set -euo pipefail
ME=check-deb
# shellcheck source=../packaging/lib.sh
. "$(cd "$(dirname "$0")/.." && pwd)/packaging/lib.sh"
# shellcheck source=lib/debian.sh
. "$ROOT/scripts/lib/debian.sh"

build=1
for arg in "$@"; do
    case "$arg" in
        --no-build) build=0 ;;
        *) die "unknown argument: $arg (usage: $0 [--no-build])" ;;
    esac
done
[ "$(id -u)" -eq 0 ] || die "needs root (mount, chroot): run as root"
private_mounts "$@"

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/check-deb.XXXXXX")
trap 'root_session_end; rm -rf "$SCRATCH"' EXIT
# shellcheck source=lib/checks.sh
. "$ROOT/scripts/lib/checks.sh"

# ------------------------------------------------------------------ build
OUT="$ROOT/target/debian"
if [ "$build" = 1 ]; then
    if "$ROOT/scripts/deb.sh" >"$SCRATCH/deb.out" 2>"$SCRATCH/deb.log"; then
        how="dpkg-buildpackage in a Debian 13 root"
        grep -q '^deb: up to date' "$SCRATCH/deb.log" && how="packages up to date (same sources, toolchain and root)"
        ok "scripts/deb.sh: $how, lintian clean ($(grep -c '^O: ' "$OUT/lintian.txt" || true) overridden tags)"
    else
        fail "scripts/deb.sh builds the packages"; sed 's/^/    | /' "$SCRATCH/deb.log" | tail -n 40
        finish
    fi
fi
# The version deb.sh built: debian/changelog's + `+varnish<libvarnishapi-dev version>`.
[ -f "$OUT/version" ] || die "no $OUT/version: run make deb (or drop --no-build)"
version=$(cat "$OUT/version")
debs=()
for pkg in varnish-vmod-peer varnish-vmod-saintmode; do
    cands=("$OUT/${pkg}_${version}_"*.deb); deb=${cands[0]}
    [ -f "$deb" ] || die "no $OUT/${pkg}_${version}_*.deb: run make deb (or drop --no-build)"
    debs+=("$deb")
done

built_offline() { # deb.sh: cargo build --frozen, in a network namespace, nothing downloaded
    grep -q -- '--frozen' "$ROOT/debian/rules" || { echo "debian/rules does not build --frozen"; return 1; }
    if grep -E 'Downloading|Downloaded|Updating .* index' "$OUT/build.log"; then return 1; fi
    grep -q 'Finished .release' "$OUT/build.log" || { echo "no cargo build in $OUT/build.log"; return 1; }
}
check "the package build ran offline (cargo --frozen, no download in build.log)" built_offline
copyright_current() { python3 "$ROOT/packaging/gen-copyright.py" --check && grep -c '^Files: registry/' "$ROOT/debian/copyright"; }
check "debian/copyright names every crate Cargo.lock links into the modules (packaging/gen-copyright.py --check)" copyright_current
shipped_copyright() { # the .deb carries that file, byte for byte
    local deb d
    for deb in "${debs[@]}"; do
        d=$(basename "$deb" | cut -d_ -f1)
        dpkg-deb --fsys-tarfile "$deb" | tar -xOf - "./usr/share/doc/$d/copyright" | cmp - "$ROOT/debian/copyright" || return 1
    done
}
check "both packages ship that debian/copyright as /usr/share/doc/<package>/copyright" shipped_copyright

ensure_root check
CHECK_BASE=$BASE_ROOT
# Debian's vmoddir, as the package holds it (/usr/lib/<multiarch>/varnish/vmods).
VMODDIR=$(dpkg-deb -c "${debs[0]}" | awk '{print $6}' | sed -n 's|^\.\(/.*\)/libvmod_peer\.so$|\1|p')
[ -n "$VMODDIR" ] || die "$(basename "${debs[0]}") holds no libvmod_peer.so"

# A fresh overlay over the check root with the packages and the tests copied in.
fresh_root() {
    root_session_end
    root_session_start "$CHECK_BASE"
    mkdir -p "$MERGED/srv/vmod-rs/debs" "$MERGED/srv/vmod-rs/packaging" "$MERGED/srv/vmod-rs/scripts"
    cp "${debs[@]}" "$MERGED/srv/vmod-rs/debs/"
    cp -r "$ROOT/examples" "$MERGED/srv/vmod-rs/"
    cp -r "$ROOT/packaging/tests" "$MERGED/srv/vmod-rs/packaging/"
    cp "$ROOT/scripts/vtc-run.sh" "$MERGED/srv/vmod-rs/scripts/"
    # Throwaway root: no fsync per file, and no man-db index rebuild after every apt
    # run (`man 3 NAME` reads the page directly; the index only serves apropos).
    rm -f "$MERGED/var/lib/man-db/auto-update"
}
apt_in_root() { in_root timeout 600 apt-get -y -q -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-unsafe-io "$@"; }
install_ours() { # apt output in $SCRATCH/apt.log; fails when apt would remove anything
    apt_in_root install "${debs[@]/#"$OUT"//srv/vmod-rs/debs}" >"$SCRATCH/apt.log" 2>&1 || { cat "$SCRATCH/apt.log"; return 1; }
    if grep -q '^The following packages will be REMOVED' "$SCRATCH/apt.log"; then cat "$SCRATCH/apt.log"; return 1; fi
}
vtc() { # vtc FILE: Debian's varnishtest in the root through the one VTC runner (its macros,
    # ${root} = /srv/vmod-rs) with ${vmoddir} and ${vmod_path} = Debian's vmoddir; 120 s at most
    local file=$1
    in_root timeout 150 /srv/vmod-rs/scripts/vtc-run.sh --timeout 120 -D vmoddir="$VMODDIR" \
        -D vmod_path="$VMODDIR" -- "$file" >"$SCRATCH/vtc.log" 2>&1 && return 0
    grep -E -B3 -A3 -- '^----' "$SCRATCH/vtc.log" | head -n 30
    grep '^#' "$SCRATCH/vtc.log" | tail -n 2
    return 1
}
man_shows() { # man_shows PAGE REGEX: `man 3 PAGE` renders and contains REGEX
    local page
    page=$(in_root env MANWIDTH=80 man -P cat 3 "$1" 2>&1) || { echo "$page"; return 1; }
    grep -q "^${1^^}(3)" <<<"$page" || { echo "no ${1^^}(3) header:"; head -n 5 <<<"$page"; return 1; }
    grep -Eq "$2" <<<"$page" || { echo "man 3 $1 lacks /$2/:"; head -n 20 <<<"$page"; return 1; }
}
diversions() { in_root dpkg-divert --list | grep -F 'by varnish-vmod-saintmode' | sort; }
diverted() { # diverted yes|no: both diversions registered, or none
    local n; n=$(diversions | wc -l)
    if [ "$1" = yes ]; then [ "$n" -eq 2 ] || { echo "diversions: $(diversions)"; return 1; }
    else [ "$n" -eq 0 ] || { echo "left over: $(diversions)"; return 1; }; fi
}
# The root's files (path, type, size, mode, owner) and the checksums of the vmods and
# saintmode man pages; volatile state (apt/dpkg databases, caches, logs) left out.
snapshot() {
    in_root sh -c 'find / -xdev \( -path /proc -o -path /dev -o -path /tmp -o -path /run -o -path /srv \
            -o -path /var/cache -o -path /var/lib/apt -o -path /var/lib/dpkg -o -path /var/log \) -prune \
            -o -printf "%p %y %s %m %u %l\n" | sort
        md5sum '"$VMODDIR"'/* /usr/share/man/man3/vmod_saintmode* 2>/dev/null' > "$1"
}
same_snapshot() { diff "$1" "$2" | head -n 20; cmp -s "$1" "$2"; }
verify_varnish_modules() { # every file of varnish-modules as shipped, at its own path
    local bad; bad=$(in_root dpkg --verify varnish-modules 2>&1) || true
    [ -z "$bad" ] || { echo "$bad"; return 1; }
    in_root sh -c "cd / && sed -n 's|  *| /|p' /var/lib/dpkg/info/varnish-modules.md5sums | grep -F libvmod_saintmode.so | md5sum -c"
}
compiles_with_varnish_modules_saintmode() { # `import saintmode;` is varnish-modules' again
    printf 'vcl 4.1;\nimport saintmode;\nbackend b { .host = "127.0.0.1"; .port = "9"; }\nsub vcl_init { new sm = saintmode.saintmode(b, 5); }\n' \
        > "$MERGED/tmp/vm.vcl"
    printf 'vcl 4.1;\nimport saintmode;\nbackend b { .host = "127.0.0.1"; .port = "9"; }\nsub vcl_recv { set req.http.v = saintmode.version(); }\n' \
        > "$MERGED/tmp/ours.vcl"
    in_root varnishd -C -n /tmp/vcc -f /tmp/vm.vcl >/dev/null || return 1
    if in_root varnishd -C -n /tmp/vcc -f /tmp/ours.vcl >/dev/null 2>&1; then
        echo "saintmode.version() compiles: libvmod_saintmode.so is still ours"; return 1
    fi
}
files_gone() { # files_gone LIST: none of the files dpkg -L listed is left, except where
    local f left=()  # another package's file is back (varnish-modules' after undiverting)
    while IFS= read -r f; do
        case "$f" in /.|/) continue ;; /*) ;; *) continue ;; esac   # dpkg -L's "diverted by" notes
        [ -e "$MERGED$f" ] || [ -L "$MERGED$f" ] || continue   # files, directories, symlinks
        in_root dpkg-query -S "$f" 2>/dev/null | grep -qv '^varnish-vmod-' || left+=("$f")
    done < "$1"
    [ "${#left[@]}" -eq 0 ] || { printf 'left behind: %s\n' "${left[@]}"; return 1; }
}
not_installed() { # not_installed PKG...: not even in the config-files state
    local p s
    for p in "$@"; do
        s=$(in_root dpkg-query -W -f '${Status}' "$p" 2>/dev/null || true)
        case "$s" in ""|"unknown ok not-installed"|"deinstall ok not-installed"|"purge ok not-installed") ;;
            *) echo "$p: $s"; return 1 ;; esac
    done
}

# --------------------------------------------- 1. a fresh Debian 13 root, our packages alone
t0=$(date +%s)
fresh_root
echo "# Debian 13 root: $MERGED (overlay over $CHECK_BASE, Debian $(cat "$MERGED/etc/debian_version"))"
own_mounts() { # the session's overlay is mounted here, and not in the host's (PID 1's) namespace
    grep -qF " $MERGED " /proc/self/mountinfo || { echo "$MERGED is not mounted here"; return 1; }
    ! grep -qF " $MERGED " /proc/1/mountinfo || { echo "$MERGED is visible in PID 1's mount namespace"; return 1; }
}
check "the root's mounts live in this run's private mount namespace (gone with it, even after SIGKILL)" own_mounts
check "fresh root: no varnish installed before ours" not_installed varnish varnish-vmod-peer varnish-vmod-saintmode
check "apt-get install ./$(basename "${debs[0]}") ./$(basename "${debs[1]}") pulls Debian's varnish, removes nothing" install_ours
[ "$failed" -eq 0 ] || finish     # nothing below can work without the packages
new_pkgs=$(sed -n '/^The following NEW packages/,/^[^ ]/{/^  /p}' "$SCRATCH/apt.log" | tr -s ' \n' '  ')
echo "# apt installed $(wc -w <<<"$new_pkgs") packages:$new_pkgs" | fold -s -w 100 | sed '2,$s/^/#   /'
pulled_varnish() { tr ' ' '\n' <<<"$new_pkgs" | grep -qx varnish || { echo "varnish is not among the new packages: $new_pkgs"; return 1; }; }
check "apt pulled Debian's varnish in as a dependency" pulled_varnish
varnishd_version=$(in_root varnishd -V 2>&1 | sed -n 1p)
echo "# varnishd: $varnishd_version ($(in_root dpkg-query -W -f '${Package} ${Version}' varnish))"
provides_match() {
    local provides deps d
    provides=$(in_root dpkg-query -W -f '${Provides}' varnish)
    for deb in "${debs[@]}"; do
        deps=$(dpkg-deb -f "$deb" Depends)
        d=$(grep -Eo 'varnishabi-strict-[0-9a-f]{40}' <<<"$deps") || { echo "$(basename "$deb"): Depends: $deps"; return 1; }
        grep -qw -- "$d" <<<"$provides" || { echo "varnish Provides: $provides; $(basename "$deb") needs $d"; return 1; }
        echo "$(basename "$deb"): $d"
    done
}
check "Depends: varnishabi-strict-<40 hex> of both packages is what Debian's varnish Provides" provides_match
version_names_varnish() { # binNMU-style suffix: the varnish built against is the one apt installed
    local v; v=$(in_root dpkg-query -W -f '${Version}' varnish)
    [ "$version" = "$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' "$ROOT/debian/changelog")+varnish${v//[-:]/.}" ] \
        || { echo "package version $version, Debian's varnish $v"; return 1; }
    echo "$version"
}
check "the package version ends in +varnish<Debian's varnish version> ($version)" version_names_varnish
check "plain 'import peer; import saintmode;' in Debian's varnishd (vmod_path $VMODDIR)" \
    vtc /srv/vmod-rs/packaging/tests/install_plain_import.vtc
check "purge fan-out between two varnishd running examples/purge_fanout.vcl" \
    vtc /srv/vmod-rs/packaging/tests/deb/purge_fanout_two_varnishd.vtc
check "examples/tests/purge_fanout.vtc (peer caches and CDN API)" vtc /srv/vmod-rs/examples/tests/purge_fanout.vtc
check "examples/tests/saintmode_retry_random.vtc (retry served by the other origin)" \
    vtc /srv/vmod-rs/examples/tests/saintmode_retry_random.vtc
check "man 3 vmod_peer renders" man_shows vmod_peer 'import peer'
check "man 3 vmod_saintmode renders this project's page" man_shows vmod_saintmode 'drop-in replacement'
check "varnish-modules' libvmod_saintmode.so and vmod_saintmode(3) are diverted (dpkg-divert --list)" diverted yes

# varnish-modules installed after ours: lands on the diverted names, nothing removed.
apt_quiet() { # apt_quiet ACTION PKG...: apt-get, output shown only on failure or removals
    apt_in_root "$@" >"$SCRATCH/apt.log" 2>&1 || { cat "$SCRATCH/apt.log"; return 1; }
    if [ "$1" = install ] && grep -A3 '^The following packages will be REMOVED' "$SCRATCH/apt.log"; then return 1; fi
}
OURS=(varnish-vmod-peer varnish-vmod-saintmode)
check "apt-get install varnish-modules next to ours: nothing removed" apt_quiet install varnish-modules
check "xkey and var (varnish-modules) and our saintmode load and work in one VCL" \
    vtc /srv/vmod-rs/packaging/tests/deb/with_varnish_modules.vtc
ours_loaded() { # saintmode.version() compiles (ours), varnish-modules' copy at its diverted name
    printf 'vcl 4.1;\nimport saintmode;\nbackend b { .host = "127.0.0.1"; .port = "9"; }\nsub vcl_recv { set req.http.v = saintmode.version(); }\n' > "$MERGED/tmp/ours.vcl"
    in_root varnishd -C -n /tmp/vcc -f /tmp/ours.vcl >/dev/null || return 1
    in_root sh -c "sed -n 's|  *| /|p' /var/lib/dpkg/info/varnish-modules.md5sums | grep -F libvmod_saintmode.so | sed 's|\$|.varnish-modules|' | (cd / && md5sum -c)"
}
reinstall_them() { apt_quiet install --reinstall varnish-modules && diverted yes && ours_loaded; }
check "apt-get install --reinstall varnish-modules while diverted: its saintmode lands on the diverted name, ours stays loaded" reinstall_them
reinstall_ours() { apt_quiet install --reinstall "${debs[@]/#"$OUT"//srv/vmod-rs/debs}" && diverted yes && ours_loaded; }
check "apt-get install --reinstall of ours (upgrade path of the maintainer scripts): still diverted, ours loaded" reinstall_ours
up_from_older() { # an older build of ours (repacked as <version>~old), then this one: an upgrade
    local deb name
    in_root rm -rf /tmp/old && mkdir -p "$MERGED/tmp/old"
    for deb in "${debs[@]}"; do
        name=$(basename "$deb")
        in_root sh -c "dpkg-deb -R /srv/vmod-rs/debs/$name /tmp/old/x && sed -i 's/^Version: .*/Version: ${version}~old/' /tmp/old/x/DEBIAN/control \
            && dpkg-deb -b /tmp/old/x /tmp/old/$name >/dev/null && rm -rf /tmp/old/x" || return 1
    done
    apt_quiet install --allow-downgrades "${debs[@]/#"$OUT"//tmp/old}" || return 1
    [ "$(in_root dpkg-query -W -f '${Version}' varnish-vmod-saintmode)" = "${version}~old" ] || { echo "the older build is not installed"; return 1; }
    apt_quiet install "${debs[@]/#"$OUT"//srv/vmod-rs/debs}" || return 1
    [ "$(in_root dpkg-query -W -f '${Version}' varnish-vmod-saintmode)" = "$version" ] || { echo "not upgraded"; return 1; }
    in_root dpkg --verify "${OURS[@]}" && diverted yes && ours_loaded
}
check "downgrade to an older build of ours and upgrade back (preinst/postrm upgrade paths): still diverted, ours loaded" up_from_older
in_root dpkg -L "${OURS[@]}" > "$SCRATCH/ours.list"
check "apt-get remove ${OURS[*]}" apt_quiet remove "${OURS[@]}"
removed_clean() { files_gone "$SCRATCH/ours.list" && diverted no; }
check "after remove: none of the packages' files is left, no diversion" removed_clean
restored() { verify_varnish_modules && compiles_with_varnish_modules_saintmode; }
check "after remove: varnish-modules' saintmode is back (dpkg --verify, md5sums) and is what 'import saintmode' loads" restored
their_man_page() { ! man_shows vmod_saintmode "drop-in replacement" >/dev/null && man_shows vmod_saintmode 'saintmode'; }
check "man 3 vmod_saintmode is varnish-modules' page again" their_man_page
purged_clean() { # apt-get purge what remove left in the config-files state (postrm kept)
    local p left=()
    for p in "${OURS[@]}"; do not_installed "$p" >/dev/null || left+=("$p"); done
    echo "left in the config-files state by remove: ${left[*]:-none}"
    if [ "${#left[@]}" -gt 0 ]; then apt_quiet purge "${left[@]}" || return 1; fi
    not_installed "${OURS[@]}" || return 1
    [ ! -e "$MERGED/usr/share/doc/varnish-vmod-peer" ] && [ ! -e "$MERGED/usr/share/doc/varnish-vmod-saintmode" ] \
        || { echo "doc directories left"; return 1; }
}
check "apt-get purge after remove: neither package left, not even as config-files" purged_clean

# ----- 2. a fresh root with varnish-modules and our packages' dependencies, never ours:
# install ours, remove, install, purge; every time the root must be as in that snapshot.
fresh_root
deps_of_ours() { # the Depends of ours that are real packages (varnishabi-* are varnish's Provides)
    local deb
    for deb in "${debs[@]}"; do dpkg-deb -f "$deb" Depends; done | tr ',' '\n' \
        | sed -e 's/|.*//' -e 's/(.*)//' -e 's/[[:space:]]//g' | grep -v -e '^$' -e '^varnishabi-' | sort -u
}
mapfile -t DEPS < <(deps_of_ours)
only_varnish_modules() {
    apt_quiet install varnish-modules "${DEPS[@]}" || return 1
    in_root dpkg-query -W -f '${Status}\n' varnish-modules | grep -qx 'install ok installed' \
        || { echo "varnish-modules is not installed"; return 1; }
    not_installed "${OURS[@]}"
}
check "fresh root + apt-get install varnish-modules ${DEPS[*]}: the snapshot before ours ever ran" only_varnish_modules
snapshot "$SCRATCH/before"
check "apt-get install of ours next to varnish-modules removes nothing" install_ours
check "xkey, var and our saintmode in one VCL (varnish-modules installed first)" \
    vtc /srv/vmod-rs/packaging/tests/deb/with_varnish_modules.vtc
as_before() { # as_before ACTION: apt-get ACTION ours, then the root is as in the snapshot
    apt_quiet "$1" "${OURS[@]}" || return 1
    snapshot "$SCRATCH/after"
    same_snapshot "$SCRATCH/before" "$SCRATCH/after" && diverted no && verify_varnish_modules \
        && not_installed_after "$1"
}
not_installed_after() { [ "$1" = remove ] || not_installed "${OURS[@]}"; }
check "apt-get remove: every file as before the install (varnish-modules' saintmode restored byte for byte)" as_before remove
reinstall() { install_ours && diverted yes; }
check "install again: diverted again" reinstall
check "apt-get purge: every file as before, no diversion, no package state" as_before purge

# Someone else's diversion of libvmod_saintmode.so (here the admin's): the install stops in
# preinst with a message, changes nothing, and dpkg is not left half-done (abort-install).
SM_SO="$VMODDIR/libvmod_saintmode.so"
SM_DEB="${debs[1]/#"$OUT"//srv/vmod-rs/debs}"
foreign_diversion() {
    local rc=0
    in_root dpkg-divert --local --rename --add --divert "$SM_SO.admin" "$SM_SO" >/dev/null || return 1
    stopped_on_foreign_diversion || rc=1
    in_root dpkg-divert --local --rename --remove "$SM_SO" >/dev/null || return 1
    [ "$rc" = 0 ] && verify_varnish_modules
}
stopped_on_foreign_diversion() {
    if apt_in_root install "$SM_DEB" >"$SCRATCH/apt.log" 2>&1; then
        echo "apt-get install succeeded over a local diversion:"; cat "$SCRATCH/apt.log"; return 1
    fi
    grep -q "is already diverted by LOCAL" "$SCRATCH/apt.log" || { echo "no clear message:"; tail -n 15 "$SCRATCH/apt.log"; return 1; }
    local audit; audit=$(in_root dpkg --audit 2>&1)
    [ -z "$audit" ] || { echo "dpkg --audit: $audit"; return 1; }
    # Selected for install but not installed, no error flag (reinstreq would be "reinstreq").
    local st; st=$(in_root dpkg-query -W -f '${Status}' varnish-vmod-saintmode 2>/dev/null || true)
    case "$st" in ""|*" ok not-installed") ;; *) echo "varnish-vmod-saintmode: $st"; return 1 ;; esac
    [ "$(in_root dpkg-divert --listpackage "$SM_SO")" = LOCAL ] || { echo "the local diversion is gone: $(in_root dpkg-divert --list)"; return 1; }
    [ -z "$(in_root dpkg-divert --listpackage /usr/share/man/man3/vmod_saintmode.3.gz)" ] || { echo "the man page got diverted"; return 1; }
    in_root test -f "$SM_SO.admin" || { echo "the admin's diverted file is gone"; return 1; }
}
check "libvmod_saintmode.so diverted by the admin: install stops naming it, nothing changed, dpkg not half-configured" foreign_diversion

# The former single package varnish-vmod-rs (0.1.0, same .so and man page files,
# Conflicts: varnish-modules): a stand-in built here is replaced by ours.
old_package() {
    local d=/tmp/old-pkg
    apt_quiet remove varnish-modules || return 1
    in_root sh -c "rm -rf $d && mkdir -p $d/DEBIAN $d$VMODDIR $d/usr/share/man/man3 \
        && printf 'old peer\n' > $d$VMODDIR/libvmod_peer.so && printf 'old saintmode\n' > $d$VMODDIR/libvmod_saintmode.so \
        && printf 'old\n' | gzip -n > $d/usr/share/man/man3/vmod_peer.3.gz && printf 'old\n' | gzip -n > $d/usr/share/man/man3/vmod_saintmode.3.gz \
        && printf 'Package: varnish-vmod-rs\nVersion: 0.1.0\nArchitecture: all\nMaintainer: x <x@example.org>\nConflicts: varnish-modules\nDescription: old\n' > $d/DEBIAN/control \
        && dpkg-deb -b $d /tmp/varnish-vmod-rs_0.1.0_all.deb >/dev/null && apt-get -y -q install /tmp/varnish-vmod-rs_0.1.0_all.deb" >"$SCRATCH/apt.log" 2>&1 \
        || { cat "$SCRATCH/apt.log"; return 1; }
    apt_in_root install "${debs[@]/#"$OUT"//srv/vmod-rs/debs}" >"$SCRATCH/apt.log" 2>&1 || { cat "$SCRATCH/apt.log"; return 1; }
    not_installed varnish-vmod-rs || return 1
    in_root dpkg --verify "${OURS[@]}" || return 1
    diverted yes
}
check "varnish-vmod-rs 0.1.0 (the former single package) installed: apt replaces it with ours (Conflicts/Replaces)" old_package
root_session_end

# ------------------------------------------------ 3. the cached roots themselves (bad input)
root_session_end
t1=$(date +%s)
sub_tests() { # sub_tests PREFIX SCRIPT ARGS...: a test script's ok/FAIL lines, counted here
    local prefix=$1 p f; shift
    "$@" >"$SCRATCH/sub.log" 2>&1 || true
    grep -E '^(ok|FAIL) - |^    \| ' "$SCRATCH/sub.log" | sed "s/^\(ok\|FAIL\) - /\1 - $prefix: /"
    if read -r p _ f _ < <(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$SCRATCH/sub.log"); then
        passed=$((passed + p)) failed=$((failed + f))
    else
        fail "$prefix: $* ran to the end"; sed 's/^/    | /' "$SCRATCH/sub.log" | tail -n 20
    fi
}
# This run holds a shared lock on $CHECK_BASE (ensure_root above): roots.sh gets that root
# instead of choosing one. DEB_ROOT_MAX_AGE_HOURS=0 makes every root count as stale, as a
# root that turns 24 h old mid-run does: any ensure_root on the real cache would now wait
# for an exclusive lock this run holds shared (the old deadlock); timeout turns that into
# a FAIL instead of a hang.
DEB_ROOT_MAX_AGE_HOURS=0 sub_tests "cached roots" timeout 600 "$ROOT/packaging/tests/deb/roots.sh" "$CHECK_BASE"
sub_tests "package sources" "$ROOT/packaging/tests/deb/sources.sh"

echo "# ran in Debian 13 roots over $CHECK_BASE with $varnishd_version ($((t1 - t0)) s in the roots, $(($(date +%s) - t1)) s for roots.sh)"
finish
