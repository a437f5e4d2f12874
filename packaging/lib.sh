# shellcheck shell=bash disable=SC2034  # globals (BASE_ROOT, IN_ROOT_ENV, ...) are for the sourcing script
# Shared helpers for scripts/install.sh, scripts/deb.sh and their checks.
# Sourced (not executed); expects `set -euo pipefail` and $ME (the caller's name).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The VMODs this workspace builds: crate directory = VMOD name.
VMODS=(peer saintmode)

log() { printf '%s: %s\n' "$ME" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$ME" "$*" >&2; exit 1; }

# shellcheck source=../scripts/lib/varnish.sh
. "$ROOT/scripts/lib/varnish.sh"

# Makes the Varnish the project builds against visible through pkg-config: the caller's
# environment first, else target/varnish-env.sh written by `make bootstrap`.
ensure_varnish_env() {
    use_varnish_env "$ROOT" "$ME" api
}

varnish_var() {
    local v
    v=$(pkg-config --variable="$1" varnishapi) || die "pkg-config --variable=$1 varnishapi failed"
    [ -n "$v" ] || die "varnishapi.pc has no \`$1\` variable"
    printf '%s\n' "$v"
}

# Directory holding the cdylibs of a cargo profile (respects CARGO_TARGET_DIR).
artifact_dir() {
    local target="${CARGO_TARGET_DIR:-$ROOT/target}"
    case "$target" in /*) ;; *) target="$ROOT/$target" ;; esac
    printf '%s/%s\n' "$target" "$1"
}

# Fails with the command to run when a built module is missing.
require_artifacts() {
    local dir=$1 profile=$2 name flag=""
    [ "$profile" = release ] && flag=" --release"
    for name in "${VMODS[@]}"; do
        [ -f "$dir/libvmod_$name.so" ] \
            || die "$dir/libvmod_$name.so not found: build first with \`cargo build$flag --workspace --locked\` (or \`make ${profile/debug/build}\`)"
    done
}

# gen_man NAME OUTDIR [SO]: writes OUTDIR/vmod_NAME.3 from NAME/vmod.vcc (vmodtool RST +
# rst2man). With SO, also fails when SO was built from another vmod.vcc interface
# (vmodtool's file_id, a hash of the $-stanzas, differs): a stale build.
# vmodtool runs from a scratch directory (it drops vmod_vcs_version.txt in its cwd) on a
# relative path, so the page names `NAME/vmod.vcc`, not this machine's checkout path.
# (Its scratch directory is `manwork`, not `work`: a caller's EXIT trap may remove `$work`.)
gen_man() {
    local name=$1 out=$2 so=${3:-} vmodtool manwork vcc_id so_id
    command -v rst2man >/dev/null || die "rst2man not found: install python3-docutils (make bootstrap does)"
    vmodtool=$(varnish_var vmodtool)
    [ -f "$vmodtool" ] || die "vmodtool $vmodtool (from varnishapi.pc) does not exist"
    [ -f "$ROOT/$name/vmod.vcc" ] || die "$ROOT/$name/vmod.vcc not found"
    manwork=$(mktemp -d "${TMPDIR:-/tmp}/vmod-man.XXXXXX")
    ln -s "$ROOT/$name" "$manwork/$name"
    if ! (cd "$manwork" && python3 "$vmodtool" -o "$manwork/vcc_if" -w "$manwork" "$name/vmod.vcc") >"$manwork/log" 2>&1; then
        cat "$manwork/log" >&2
        rm -rf "$manwork"
        die "vmodtool failed on $name/vmod.vcc (output above)"
    fi
    if [ -n "$so" ]; then
        vcc_id=$(sed -n 's/^[[:space:]]*\.file_id =[[:space:]]*"\([0-9a-f]*\)".*/\1/p' "$manwork/vcc_if.c")
        so_id=$(so_abi "$so" | cut -d'|' -f4)
        if [ -z "$vcc_id" ] || [ "$vcc_id" != "$so_id" ]; then
            rm -rf "$manwork"
            die "$so was not built from the current $name/vmod.vcc (file_id ${so_id:-?} vs ${vcc_id:-?}): rebuild first (make release)"
        fi
    fi
    if ! rst2man --exit-status=3 "$manwork/vmod_$name.man.rst" >"$out/vmod_$name.3" 2>"$manwork/log"; then
        cat "$manwork/log" >&2
        rm -rf "$manwork"
        die "rst2man failed on vmod_$name.man.rst generated from $name/vmod.vcc (output above)"
    fi
    rm -rf "$manwork"
    grep -q "^\.TH \"VMOD_${name^^}\" \"\?3" "$out/vmod_$name.3" \
        || die "generated man page $out/vmod_$name.3 lacks a '.TH \"VMOD_${name^^}\" 3' line"
}

# The VMOD JSON spec embedded in a built module, as
# `<abi string>|<vrt major>|<vrt minor>|<file_id>`
# (major.minor 0.0 means `$ABI strict`: only a varnishd with the same ABI string loads it).
so_abi() {
    python3 - "$1" <<'EOF'
import json, sys
data = open(sys.argv[1], "rb").read()
start = data.find(b"VMOD_JSON_SPEC\x02")
if start < 0:
    sys.exit("no VMOD_JSON_SPEC in " + sys.argv[1])
end = data.index(b"\x03", start)
spec = json.loads(data[start + 15:end].decode())
vmod = next(e for e in spec if e[0] == "$VMOD")
print("%s|%s|%s|%s" % (vmod[5], vmod[6], vmod[7], vmod[4]))
EOF
}

workspace_version() {
    python3 -c '
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(tomllib.load(f)["workspace"]["package"]["version"])' "$ROOT/Cargo.toml" \
        || die "cannot read [workspace.package] version from $ROOT/Cargo.toml"
}

# run_vtcs VMODDIR: every packaging/tests/*.vtc through the one VTC runner
# (scripts/vtc-run.sh: the macros every VTC gets) with ${vmoddir} set; on failure prints
# the failing step (`----` lines of the log) and returns 1.
run_vtcs() {
    local out
    if out=$("$ROOT/scripts/vtc-run.sh" --timeout 30 -D vmoddir="$1" -- "$ROOT"/packaging/tests/*.vtc 2>&1); then
        return 0
    fi
    grep -A8 -- '^----' <<<"$out" | head -n 25
    grep '^#' <<<"$out" | tail -n 3
    return 1
}

# require_loadable SO...: refuses modules that reference `vmod_*` functions nothing
# defines (vmod.vcc declares them, the Rust code does not implement them yet): the link
# succeeds, but varnishd's dlopen() fails with "undefined symbol".
require_loadable() {
    local so missing
    for so in "$@"; do
        missing=$(nm -D --undefined-only "$so" | awk '$1 == "U" && $2 ~ /^vmod_/ {print $2}' | tr '\n' ' ')
        [ -z "$missing" ] \
            || die "$(basename "$so") cannot load: it references ${missing% } but does not define them (declared in vmod.vcc, not implemented in Rust)"
    done
}

# private_mounts ARGS...: re-runs the calling script (with ARGS) in a mount namespace of
# its own with private propagation, once (children inherit it). Every mount a root
# session makes (overlay, /proc, /dev, toolchain, registry, target dir) then exists only
# in that namespace and dies with its last process, even after a SIGKILL: no mount is
# ever left on the host, and deleting a dead session's directory later cannot reach
# through a bind into the host's cargo registry or /dev.
private_mounts() {
    [ -z "${VMOD_RS_PRIVATE_MOUNTS:-}" ] || return 0
    command -v unshare >/dev/null || die "unshare (util-linux) not found"
    export VMOD_RS_PRIVATE_MOUNTS=1
    exec unshare --mount --propagation private --kill-child=TERM -- "$0" "$@"
}

# ------------------------------------------------------------------ Debian 13 roots
# scripts/deb.sh and scripts/check-deb.sh work in Debian 13 roots made with mmdebstrap
# and cached in $DEB_CACHE, one directory per kind:
#   build  the Build-Depends of debian/control, build-essential and lintian;
#   check  a minimal root with man-db, apt lists kept and varnish + varnish-modules
#          downloaded (not installed), so that `apt-get install ./x.deb` resolves fast.
# A root is used only when its stamp (written last, after a sanity check) matches its
# recipe and is younger than DEB_ROOT_MAX_AGE_HOURS (default 24: Debian point releases
# change varnish's strict ABI id); otherwise it is rebuilt next to the old one and
# swapped in. Work happens in a throwaway overlay (root_session_start), never in the
# cached root itself.

DEB_SUITE=trixie
DEB_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/vmod-rs/debian13"
DEB_ROOT_MAX_AGE_HOURS=${DEB_ROOT_MAX_AGE_HOURS:-24}

# The packages of a root kind, comma-separated (mmdebstrap --include).
root_packages() {
    case "$1" in
        build)
            # Build-Depends of debian/control without versions or comments.
            local bd
            bd=$(sed -n '/^Build-Depends:/,/^[A-Z]/p' "$ROOT/debian/control" | grep -v '^#' \
                | sed -e 's/^Build-Depends://' -e '/^[A-Z]/d' | tr ',' '\n' \
                | sed -e 's/(.*)//' -e 's/^[[:space:]]*//' -e 's/[[:space:]]*$//' | grep -v '^$' \
                | sed 's/^debhelper-compat$/debhelper/' | sort -u | paste -sd,)
            [ -n "$bd" ] || die "no Build-Depends found in $ROOT/debian/control"
            printf 'build-essential,fakeroot,lintian,%s\n' "$bd"
            ;;
        check) printf 'man-db\n' ;;
        *) die "unknown root kind '$1'" ;;
    esac
}

# security_uri: the Debian security archive this machine's apt configuration uses (the
# URI of its first *-security suite), so that no registry host is written into the
# repository. Prints nothing when there is none.
security_uri() {
    local f
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk 'BEGIN{RS=""; FS="\n"}
             { u=""; s=""
               for (i=1;i<=NF;i++) {
                 if ($i ~ /^URIs:/) { u=$i; sub(/^URIs:[ \t]*/,"",u) }
                 if ($i ~ /^Suites:/) { s=$i } }
               if (s ~ /-security/ && u != "") { split(u,a," "); print a[1]; exit } }' "$f"
    done | sed -n 1p
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        awk '$1 == "deb" { for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) { if ($(i+1) ~ /-security$/) { print $i; exit } break } }' "$f"
    done | sed -n 1p
}

# root_sources MIRROR [SECURITY]: the apt source lines of a root (one per line): the
# suite and its -updates from MIRROR, and -security from SECURITY when given (Debian
# ships varnish fixes there first; a root without them could build against an ABI that
# updated systems no longer have).
root_sources() {
    printf 'deb %s %s main\n' "$1" "$DEB_SUITE" "$1" "$DEB_SUITE-updates"
    [ -z "${2:-}" ] || printf 'deb %s %s main\n' "$2" "$DEB_SUITE-security"
}

# What a root is made from: a change here rebuilds it.
root_recipe() { # root_recipe SOURCES KIND
    printf 'suite=%s sources=%s variant=apt packages=%s recipe=3\n' "$DEB_SUITE" "$(paste -sd';' <<<"$1")" "$(root_packages "$2")"
}

# root_sane KIND DIR: a cheap check that DIR is a complete root of that kind.
root_sane() {
    local kind=$1 dir=$2 p
    [ -x "$dir/usr/bin/apt-get" ] && [ -x "$dir/usr/bin/dpkg" ] || { echo "no apt/dpkg in $dir"; return 1; }
    chroot "$dir" /bin/true || { echo "chroot $dir /bin/true fails"; return 1; }
    [ -z "$(chroot "$dir" dpkg --audit 2>&1)" ] || { echo "dpkg --audit in $dir: $(chroot "$dir" dpkg --audit 2>&1 | head -n 3)"; return 1; }
    for p in $(root_packages "$kind" | tr ',' ' '); do
        chroot "$dir" dpkg-query -W -f '${Status}\n' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || { echo "package $p not installed in $dir"; return 1; }
    done
    case "$kind" in
        build) [ -f "$dir/usr/include/varnish/vmod_abi.h" ] || { echo "no vmod_abi.h in $dir"; return 1; } ;;
        check)
            ! chroot "$dir" dpkg-query -W varnish >/dev/null 2>&1 || { echo "varnish is already installed in $dir"; return 1; }
            compgen -G "$dir/var/cache/apt/archives/varnish_*.deb" >/dev/null \
                && compgen -G "$dir/var/cache/apt/archives/varnish-modules_*.deb" >/dev/null \
                || { echo "varnish/varnish-modules not downloaded in $dir"; return 1; }
            ;;
    esac
}

# remove_tree DIR: rm -rf, but never through a live mount point.
remove_tree() {
    local dir=$1
    [ -e "$dir" ] || return 0
    if findmnt -rn -o TARGET | awk -v d="$dir" 'index($0, d "/") == 1 || $0 == d' | grep -q .; then
        unmount_under "$dir"
    fi
    if findmnt -rn -o TARGET | awk -v d="$dir" 'index($0, d "/") == 1 || $0 == d' | grep -q .; then
        die "refusing to delete $dir: mounts remain under it ($(findmnt -rn -o TARGET | grep -F "$dir" | head -n 3 | tr '\n' ' '))"
    fi
    rm -rf --one-file-system "$dir"
}

# unmount_under DIR: unmounts everything mounted at or below DIR, deepest first.
unmount_under() {
    local dir=$1 m i
    for i in 1 2 3; do
        mapfile -t mounts < <(findmnt -rn -o TARGET | awk -v d="$dir" 'index($0, d "/") == 1 || $0 == d' | sort -r)
        [ "${#mounts[@]}" -eq 0 ] && return 0
        for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || true; done
        [ "$i" -lt 3 ] || for m in "${mounts[@]}"; do umount -l "$m" 2>/dev/null || true; done
    done
}

# make_root KIND DEST MIRROR: runs mmdebstrap; on failure names the download that failed.
make_root() { # make_root KIND DEST SOURCES (apt source lines, one per line)
    local kind=$1 dest=$2 sources=$3 log="$DEB_CACHE/$1.mmdebstrap.log" args=() mirrors=()
    args=(--variant=apt --include="$(root_packages "$kind")")
    if [ "$kind" = check ]; then
        # Keep the lists and the downloaded varnish/varnish-modules packages.
        args+=(--skip=cleanup/apt/lists --skip=cleanup/apt/cache
               --customize-hook='chroot "$1" apt-get install --download-only -y -q varnish varnish-modules')
    fi
    mapfile -t mirrors <<<"$sources"
    log "making the Debian 13 $kind root with mmdebstrap ($(paste -sd';' <<<"$sources"); log: $log)"
    if ! timeout 1200 mmdebstrap "${args[@]}" "$DEB_SUITE" "$dest" "${mirrors[@]}" >"$log" 2>&1; then
        local failed
        # apt's own words: "E: Failed to fetch <url>  <reason>" names the download.
        failed=$(grep -E "^E: (Failed|Unable) to fetch" "$log" | sed -n '1,3p' || true)
        [ -n "$failed" ] || failed=$(grep -E -A1 "^Err:" "$log" | sed -n '1,4p' || true)
        remove_tree "$dest"
        if [ -n "$failed" ]; then
            die "mmdebstrap could not download from the Debian archive: $(tr '\n' ' ' <<<"$failed")"
        fi
        die "mmdebstrap failed for the $kind root (last lines of $log): $(tail -n 5 "$log" | tr '\n' ' ')"
    fi
}

# root_stale KIND DIR STAMP RECIPE: prints why the cached root must be remade; nothing
# when it can be used.
root_stale() {
    local kind=$1 dir=$2 stamp=$3 recipe=$4 age why
    if [ ! -f "$stamp" ] || [ ! -d "$dir" ]; then
        echo "no cached root"
    elif [ "$(sed -n 1p "$stamp")" != "$recipe" ]; then
        echo "its recipe changed"
    else
        age=$(( ($(date +%s) - $(stat -c %Y "$stamp")) / 3600 ))
        if [ "$age" -ge "$DEB_ROOT_MAX_AGE_HOURS" ]; then
            echo "it is ${age}h old (DEB_ROOT_MAX_AGE_HOURS=$DEB_ROOT_MAX_AGE_HOURS)"
        elif ! why=$(root_sane "$kind" "$dir"); then
            echo "it is broken: $why"
        fi
    fi
}

# ensure_root KIND: sets BASE_ROOT to a fresh, sane cached root of KIND, making it when
# missing, stale or broken. Holds a shared lock on it for the rest of the caller's life
# (so: call it directly, never in a command substitution); remaking it takes the lock
# exclusively, so a root is never replaced under a running build or check.
BASE_ROOT=""
ensure_root() {
    local kind=$1 dir="$DEB_CACHE/$1" stamp="$DEB_CACHE/$1.stamp" mirror sources recipe why fd
    command -v mmdebstrap >/dev/null || { log "installing mmdebstrap on this machine"; ensure_debs mmdebstrap || die "cannot install mmdebstrap (apt-get install mmdebstrap)"; }
    # DEB_MIRROR (or scripts/lib/debian.sh's DEBIAN_MIRROR) replaces the mirrors of the
    # machine's apt sources (tests use an unreachable one); the security archive comes
    # only from those sources.
    if [ -n "${DEB_MIRROR:-${DEBIAN_MIRROR:-}}" ]; then
        sources=$(root_sources "${DEB_MIRROR:-$DEBIAN_MIRROR}")
    else
        mirror=$(mirror_uri)
        [ -n "$mirror" ] || die "no Debian mirror found in this machine's apt sources (/etc/apt/sources.list*); set DEB_MIRROR"
        sources=$(root_sources "$mirror" "$(security_uri)")
    fi
    recipe=$(root_recipe "$sources" "$kind")
    mkdir -p "$DEB_CACHE"
    exec {fd}>"$DEB_CACHE/$kind.lock"
    flock -w 1800 -s "$fd" || die "timed out waiting for $DEB_CACHE/$kind.lock (another run is remaking that root?)"
    why=$(root_stale "$kind" "$dir" "$stamp" "$recipe")
    if [ -n "$why" ]; then
        flock -w 1800 -x "$fd" || die "timed out waiting for $DEB_CACHE/$kind.lock: another run is using the $kind root"
        # Another run may have remade it while this one waited.
        why=$(root_stale "$kind" "$dir" "$stamp" "$recipe")
    fi
    if [ -n "$why" ]; then
        log "(re)making the $kind root $dir: $why"
        rm -f "$stamp"
        remove_tree "$dir.new"
        make_root "$kind" "$dir.new" "$sources"
        why=$(root_sane "$kind" "$dir.new") || { remove_tree "$dir.new"; die "the new $kind root fails its sanity check: $why"; }
        remove_tree "$dir"
        mv "$dir.new" "$dir"
        # Objects compiled against the old root's headers are not reused.
        # (cargo-target: the one directory all checkouts shared before cargo-targets/.)
        if [ "$kind" = build ]; then remove_tree "$DEB_CACHE/cargo-targets"; remove_tree "$DEB_CACHE/cargo-target"; fi
        printf '%s\nmade %s\n' "$recipe" "$(date -u +%FT%TZ)" > "$stamp"
    fi
    flock -s "$fd"
    BASE_ROOT=$dir
}

# source_files DIR: the files of a checkout sent into a build root, NUL-separated and
# relative to DIR: what git tracks plus untracked, not ignored files (local edits
# included, target/ excluded); outside git, every file but target/.
source_files() {
    if git -C "$1" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        (cd "$1" && git ls-files -z -co --exclude-standard | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done)
    else
        (cd "$1" && find . -path ./target -prune -o -type f -printf '%P\0')
    fi
}

# copy_sources DIR DEST: copies source_files DIR into DEST with every mtime set to now
# (tar --touch). cargo decides what to rebuild by comparing source mtimes with the last
# build's: a tree copied with its own, older mtimes over a target dir last used by newer
# sources would be taken as already built, and the package would ship the other code.
copy_sources() {
    mkdir -p "$2"
    (source_files "$1" | (cd "$1" && tar --null -T - -cf -)) | tar --touch -xf - -C "$2"
}

# deb_target_cache DIR: the cargo target dir kept between package builds of the checkout
# at DIR (one per checkout, keyed on its absolute path: checkouts never share objects).
deb_target_cache() {
    local abs
    abs=$(cd "$1" && pwd -P)
    printf '%s/cargo-targets/%s\n' "$DEB_CACHE" "$(printf '%s' "$abs" | sha256sum | cut -c1-16)"
}

# root_session_start BASE: a throwaway overlay over BASE with /proc and /dev, in
# $SESSION/merged. Sets SESSION and MERGED; root_session_end undoes everything
# (callers put it in their EXIT trap).
SESSION="" MERGED=""
root_session_start() {
    local base=$1 d
    mkdir -p "$DEB_CACHE/run"
    # Sessions of processes that died without cleaning up: unmount, then delete.
    for d in "$DEB_CACHE"/run/*; do
        [ -d "$d" ] || continue
        if [ -f "$d/pid" ] && kill -0 "$(cat "$d/pid")" 2>/dev/null; then continue; fi
        remove_tree "$d"
    done
    SESSION=$(mktemp -d "$DEB_CACHE/run/session.XXXXXX")
    echo "$$" > "$SESSION/pid"
    MERGED="$SESSION/merged"
    mkdir -p "$SESSION/rw" "$MERGED"
    # The overlay's writable layer in memory (a session writes a few hundred MB at most,
    # thrown away at its end); DEB_SESSION_TMPFS=0 keeps it on disk.
    if [ "${DEB_SESSION_TMPFS:-1}" = 1 ]; then
        mount -t tmpfs -o mode=0755 tmpfs "$SESSION/rw" || die "cannot mount a tmpfs at $SESSION/rw"
    fi
    mkdir -p "$SESSION/rw/upper" "$SESSION/rw/work"
    mount -t overlay overlay -o "lowerdir=$base,upperdir=$SESSION/rw/upper,workdir=$SESSION/rw/work" "$MERGED" \
        || die "cannot mount an overlay over $base (overlayfs missing? are you root?)"
    mount -t proc proc "$MERGED/proc" || die "cannot mount /proc in $MERGED"
    # Read-only: device I/O still works, but an `rm -rf` that reaches it while mounted
    # fails with EROFS instead of deleting the host's device nodes.
    mount --bind /dev "$MERGED/dev" || die "cannot bind /dev into $MERGED"
    mount -o remount,bind,ro "$MERGED/dev" || die "cannot make /dev read-only in $MERGED"
    # The host's resolver (apt and cargo download from inside). mmdebstrap writes no
    # /etc/hosts: without `localhost`, varnishd cannot resolve its default -T address.
    cp -L /etc/resolv.conf "$MERGED/etc/resolv.conf" 2>/dev/null || true
    [ -s "$MERGED/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' > "$MERGED/etc/hosts"
}

root_session_end() {
    [ -n "$SESSION" ] || return 0
    remove_tree "$SESSION"
    SESSION="" MERGED=""
}

# bind_into SRC DEST [ro]: bind-mounts SRC at DEST inside the session root.
bind_into() {
    local src=$1 dest="$MERGED$2"
    mkdir -p "$dest"
    mount --bind "$src" "$dest" || die "cannot bind $src into the root at $2"
    if [ "${3:-}" = ro ]; then
        mount -o remount,bind,ro "$dest" || die "cannot make $2 read-only in the root"
    fi
}

# in_root CMD...: runs CMD in the session root with a clean environment plus the
# variables named in IN_ROOT_ENV (NAME=VALUE words).
IN_ROOT_ENV=()
in_root() {
    chroot "$MERGED" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "${IN_ROOT_ENV[@]}" "$@"
}
