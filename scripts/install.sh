#!/usr/bin/env bash
# Installs the built VMODs, their man pages and docs. Does not build: run
# `make release` (or `cargo build --release --workspace --locked`) first.
#
#   scripts/install.sh [--release|--debug]      (default --release)
#
# What goes where (PREFIX defaults to the prefix of the Varnish found by pkg-config):
#   libvmod_peer.so, libvmod_saintmode.so  -> VMODDIR
#   vmod_peer.3, vmod_saintmode.3          -> MANDIR/man3     (MANDIR=PREFIX/share/man)
#   README.md, LICENSE                     -> DOCDIR          (DOCDIR=PREFIX/share/doc/vmod-rs)
# VMODDIR is `pkg-config --variable=vmoddir varnishapi`, where varnishd looks for
# `import peer;` by default. When PREFIX is given and that directory lies under the
# varnishapi prefix, the part below the prefix is kept and re-rooted under PREFIX
# (e.g. /usr/lib/x86_64-linux-gnu/varnish/vmods -> $PREFIX/lib/x86_64-linux-gnu/varnish/vmods);
# varnishd then needs `-p vmod_path=` to find the modules. A vmoddir outside the
# varnishapi prefix is kept as is. VMODDIR, MANDIR and DOCDIR may also be set directly.
# DESTDIR (staged installs, packaging) is prepended to every path.
# Idempotent: re-running replaces the files with the same content.
set -euo pipefail
ME=install
# shellcheck source=../packaging/lib.sh
. "$(cd "$(dirname "$0")/.." && pwd)/packaging/lib.sh"

usage() { sed -n '2,18s/^# \{0,1\}//p' "$0" >&2; exit 2; }

profile=release
for arg in "$@"; do
    case "$arg" in
        --release) profile=release ;;
        --debug) profile=debug ;;
        -h|--help) usage ;;
        *) log "unknown argument: $arg"; usage ;;
    esac
done

ensure_varnish_env
artifacts=$(artifact_dir "$profile")
require_artifacts "$artifacts" "$profile"
for name in "${VMODS[@]}"; do require_loadable "$artifacts/libvmod_$name.so"; done

vprefix=$(varnish_var prefix); vprefix=${vprefix%/}
sys_vmoddir=$(varnish_var vmoddir); sys_vmoddir=${sys_vmoddir%/}
DESTDIR=${DESTDIR:-}
[ -z "$DESTDIR" ] || case "$DESTDIR" in /*) ;; *) DESTDIR="$PWD/$DESTDIR" ;; esac
DESTDIR=${DESTDIR%/}

if [ -n "${PREFIX:-}" ]; then
    case "$PREFIX" in /*) ;; *) die "PREFIX must be an absolute path, got '$PREFIX'" ;; esac
    PREFIX=${PREFIX%/}
    if [ -z "${VMODDIR:-}" ]; then
        case "$sys_vmoddir" in
            "$vprefix"/*) VMODDIR="$PREFIX/${sys_vmoddir#"$vprefix"/}" ;;
            *) VMODDIR=$sys_vmoddir
               log "note: vmoddir $sys_vmoddir is outside the varnishapi prefix $vprefix: installing the modules there, PREFIX only moves man pages and docs (set VMODDIR to override)" ;;
        esac
    fi
else
    PREFIX=$vprefix
fi
VMODDIR=${VMODDIR:-$sys_vmoddir}
MANDIR=${MANDIR:-$PREFIX/share/man}
DOCDIR=${DOCDIR:-$PREFIX/share/doc/vmod-rs}
for v in VMODDIR MANDIR DOCDIR; do
    case "${!v}" in /*) ;; *) die "$v must be an absolute path, got '${!v}'" ;; esac
done

work=$(mktemp -d "${TMPDIR:-/tmp}/vmod-install.XXXXXX")
trap 'rm -rf "$work"' EXIT
for name in "${VMODS[@]}"; do
    gen_man "$name" "$work" "$artifacts/libvmod_$name.so"
done

put() { # put MODE DIR FILE...
    local mode=$1 dir=$2; shift 2
    install -d -m 0755 "$DESTDIR$dir" 2>"$work/err" \
        || die "cannot create $DESTDIR$dir ($(cat "$work/err")): run as a user who may write there, or set DESTDIR/PREFIX"
    install -m "$mode" "$@" "$DESTDIR$dir/" 2>"$work/err" \
        || die "cannot install into $DESTDIR$dir ($(cat "$work/err")): run as a user who may write there, or set DESTDIR/PREFIX"
    local f
    for f in "$@"; do echo "  $DESTDIR$dir/$(basename "$f")" >&2; done
}

log "installing ($profile build, Varnish $(pkg-config --modversion varnishapi) at $vprefix)"
sos=(); mans=()
for name in "${VMODS[@]}"; do
    sos+=("$artifacts/libvmod_$name.so")
    mans+=("$work/vmod_$name.3")
done
put 0755 "$VMODDIR" "${sos[@]}"
put 0644 "$MANDIR/man3" "${mans[@]}"
put 0644 "$DOCDIR" "$ROOT/README.md" "$ROOT/LICENSE"

if [ "$VMODDIR" != "$sys_vmoddir" ]; then
    log "note: varnishd looks in $sys_vmoddir by default; start it with -p vmod_path=$VMODDIR (or $sys_vmoddir:$VMODDIR) for plain \`import peer;\`"
fi
log "done"
