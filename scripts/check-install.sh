#!/usr/bin/env bash
# Tests scripts/install.sh: builds the modules (cargo, incremental), installs them into
# scratch DESTDIRs and checks the result, including a varnishtest run that loads them
# with plain `import peer;` / `import saintmode;` through vmod_path.
#
#   scripts/check-install.sh [--release|--debug] [--no-build]   (default --release)
#
# Prints one `ok`/`FAIL` line per check and `N passed, M failed` last; exits 1 on failure.
set -euo pipefail
ME=check-install
# shellcheck source=../packaging/lib.sh
. "$(cd "$(dirname "$0")/.." && pwd)/packaging/lib.sh"

profile=release build=1
for arg in "$@"; do
    case "$arg" in
        --release) profile=release ;;
        --debug) profile=debug ;;
        --no-build) build=0 ;;
        *) die "unknown argument: $arg (usage: $0 [--release|--debug] [--no-build])" ;;
    esac
done

ensure_varnish_env
for tool in varnishtest man; do
    command -v "$tool" >/dev/null || die "$tool not found (PATH=$PATH)"
done
if [ "$build" = 1 ]; then
    flag=(); [ "$profile" = release ] && flag=(--release)
    log "cargo build ${flag[*]} --workspace --locked"
    (cd "$ROOT" && cargo build "${flag[@]}" --workspace --locked --quiet) \
        || die "cargo build failed: the tree does not build, nothing to install"
fi
artifacts=$(artifact_dir "$profile")
require_artifacts "$artifacts" "$profile"

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/check-install.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
# shellcheck source=lib/checks.sh
. "$ROOT/scripts/lib/checks.sh"

install_to() { # install_to DESTDIR [VAR=value...]
    local dest=$1; shift
    env DESTDIR="$dest" "$@" "$ROOT/scripts/install.sh" --"$profile"
}

vprefix=$(varnish_var prefix); vprefix=${vprefix%/}
vmoddir=$(varnish_var vmoddir); vmoddir=${vmoddir%/}
D1=$SCRATCH/dest
expected() { # the files an install into $1 with prefix $2 and vmoddir $3 must create
    local dest=$1 prefix=$2 vdir=$3 name
    for name in "${VMODS[@]}"; do
        echo "$dest$vdir/libvmod_$name.so"
        echo "$dest$prefix/share/man/man3/vmod_$name.3"
    done
    echo "$dest$prefix/share/doc/vmod-rs/README.md"
    echo "$dest$prefix/share/doc/vmod-rs/LICENSE"
}
all_present() { local f; while read -r f; do [ -f "$f" ] || { echo "missing: $f"; return 1; }; done; }
only_expected() { # nothing else than the expected files was created
    diff <(expected "$@" | sort) <(find "$1" -type f | sort)
}

# ---------------------------------------------------------------- default install
check "install.sh into DESTDIR (default prefix $vprefix)" install_to "$D1"
check "both .so in DESTDIR+vmoddir, man pages in man3, README/LICENSE in share/doc/vmod-rs" \
    all_present < <(expected "$D1" "$vprefix" "$vmoddir")
check "install.sh creates nothing else" only_expected "$D1" "$vprefix" "$vmoddir"
same_so() { local n; for n in "${VMODS[@]}"; do cmp "$artifacts/libvmod_$n.so" "$D1$vmoddir/libvmod_$n.so" || return 1; done; }
check "installed .so files are the $profile build artifacts" same_so
exports() { local n; for n in "${VMODS[@]}"; do nm -D --defined-only "$D1$vmoddir/libvmod_$n.so" | grep -qw "Vmod_${n}_Data" || { echo "libvmod_$n.so does not export Vmod_${n}_Data"; return 1; }; done; }
check "each .so exports its Vmod_<name>_Data descriptor" exports

# ---------------------------------------------------------------- idempotence
sums() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
sums "$D1" > "$SCRATCH/sums1"
again() { install_to "$D1" && sums "$D1" | diff "$SCRATCH/sums1" -; }
check "a second install succeeds and changes nothing" again

# ---------------------------------------------------------------- man pages
th_line() { local n; for n in "${VMODS[@]}"; do grep -q "^\.TH \"VMOD_${n^^}\" \"\?3" "$D1$vprefix/share/man/man3/vmod_$n.3" || { echo "vmod_$n.3: no .TH \"VMOD_${n^^}\" 3 line"; return 1; }; done; }
check "man pages have a .TH VMOD_<NAME> 3 header" th_line
renders() {
    local n page
    for n in "${VMODS[@]}"; do
        page=$(MANWIDTH=80 man -l "$D1$vprefix/share/man/man3/vmod_$n.3" 2>&1) || { echo "$page"; return 1; }
        grep -q "^VMOD_${n^^}(3)" <<<"$page" || { echo "man -l vmod_$n.3: no VMOD_${n^^}(3) header"; echo "$page" | head; return 1; }
        grep -Eq "vmod_$n +- " <<<"$page" || { echo "man -l vmod_$n.3: no NAME line"; return 1; }
        grep -q "import $n" <<<"$page" || { echo "man -l vmod_$n.3: no SYNOPSIS with 'import $n'"; return 1; }
    done
}
check "man -l renders both pages (NAME, SYNOPSIS)" renders
by_name() { local n; for n in "${VMODS[@]}"; do MANPATH="$D1$vprefix/share/man" man -w "vmod_$n" | grep -q "man3/vmod_$n.3" || return 1; done; }
check "man finds vmod_peer(3)/vmod_saintmode(3) by name under the installed MANPATH" by_name

# ---------------------------------------------------------------- plain import
check "varnishtest packaging/tests/*.vtc: plain import peer/saintmode via vmod_path=DESTDIR vmoddir" run_vtcs "$D1$vmoddir"

# ---------------------------------------------------------------- PREFIX
D2=$SCRATCH/dest-prefix P=/opt/vmod-rs-check
case "$vmoddir" in
    "$vprefix"/*) p_vmoddir="$P/${vmoddir#"$vprefix"/}" ;;
    *) p_vmoddir=$vmoddir ;;
esac
check "install.sh with PREFIX=$P" install_to "$D2" PREFIX="$P"
check "PREFIX re-roots vmoddir to $p_vmoddir, man/doc under $P/share" \
    all_present < <(expected "$D2" "$P" "$p_vmoddir")
check "PREFIX install creates nothing else" only_expected "$D2" "$P" "$p_vmoddir"
check "varnishtest against the PREFIX install" run_vtcs "$D2$p_vmoddir"
D3=$SCRATCH/dest-vmoddir
check "VMODDIR overrides the module directory" \
    bash -c 'DESTDIR="$1" VMODDIR=/srv/vmods "$2" --'"$profile"' && test -f "$1/srv/vmods/libvmod_peer.so"' _ "$D3" "$ROOT/scripts/install.sh"

# ---------------------------------------------------------------- errors
expect_error() { # expect_error PATTERN COMMAND...: fails with a message matching PATTERN
    local pat=$1; shift
    if "$@" >"$SCRATCH/err" 2>&1; then echo "succeeded, expected a failure"; return 1; fi
    grep -q -- "$pat" "$SCRATCH/err" || { echo "message does not match /$pat/:"; cat "$SCRATCH/err"; return 1; }
}
check "missing build artifacts: clear error naming the cargo command" \
    expect_error "not found: build first with .cargo build" env CARGO_TARGET_DIR="$SCRATCH/empty" DESTDIR="$SCRATCH/d4" "$ROOT/scripts/install.sh"
mkdir -p "$SCRATCH/stale/$profile"
for n in "${VMODS[@]}"; do # each name holds another module: built from another vmod.vcc
    cp "$artifacts/libvmod_${VMODS[0]}.so" "$SCRATCH/stale/$profile/libvmod_$n.so"
done
check "a .so built from another vmod.vcc is refused as stale" \
    expect_error "was not built from the current ${VMODS[1]}/vmod.vcc" env CARGO_TARGET_DIR="$SCRATCH/stale" DESTDIR="$SCRATCH/d6" "$ROOT/scripts/install.sh" --"$profile"
mkdir -p "$SCRATCH/unimpl/$profile"
printf 'extern void vmod_not_implemented(void);\nvoid f(void) { vmod_not_implemented(); }\n' > "$SCRATCH/unimpl.c"
for n in "${VMODS[@]}"; do
    cc -shared -fPIC -o "$SCRATCH/unimpl/$profile/libvmod_$n.so" "$SCRATCH/unimpl.c"
done
check "a .so referencing an unimplemented vmod_* function is refused" \
    expect_error "cannot load: it references vmod_not_implemented" env CARGO_TARGET_DIR="$SCRATCH/unimpl" DESTDIR="$SCRATCH/d7" "$ROOT/scripts/install.sh" --"$profile"
check "relative PREFIX is refused" \
    expect_error "PREFIX must be an absolute path" env PREFIX=relative DESTDIR="$SCRATCH/d5" "$ROOT/scripts/install.sh" --"$profile"
check "unknown option: usage, exit 2" \
    bash -c '"$1" --bogus 2>/dev/null; test $? -eq 2' _ "$ROOT/scripts/install.sh"
mkdir -p "$SCRATCH/ro"; touch "$SCRATCH/ro/x"
if [ "$(id -u)" -ne 0 ]; then
    chmod 0555 "$SCRATCH/ro"
    check "unwritable destination: clear error" \
        expect_error "cannot create\|cannot install" env DESTDIR="$SCRATCH/ro" "$ROOT/scripts/install.sh" --"$profile"
    chmod 0755 "$SCRATCH/ro"
else
    # root ignores directory permissions: use a path through a regular file instead.
    check "unwritable destination: clear error" \
        expect_error "cannot create" env DESTDIR="$SCRATCH/ro/x" "$ROOT/scripts/install.sh" --"$profile"
fi

finish
