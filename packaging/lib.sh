# Shared helpers for scripts/install.sh, scripts/deb.sh and their checks.
# Sourced (not executed); expects `set -euo pipefail` and $ME (the caller's name).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# The VMODs this workspace builds: crate directory = VMOD name.
VMODS=(peer saintmode)

log() { printf '%s: %s\n' "$ME" "$*" >&2; }
die() { printf '%s: ERROR: %s\n' "$ME" "$*" >&2; exit 1; }

# Makes the Varnish the project builds against visible through pkg-config: the
# caller's environment first, else target/varnish-env.sh written by `make bootstrap`.
ensure_varnish_env() {
    if ! pkg-config --exists varnishapi 2>/dev/null && [ -f "$ROOT/target/varnish-env.sh" ]; then
        # shellcheck disable=SC1091
        . "$ROOT/target/varnish-env.sh"
    fi
    command -v pkg-config >/dev/null || die "pkg-config not found: run \`make bootstrap\`"
    pkg-config --exists varnishapi 2>/dev/null \
        || die "varnishapi not found by pkg-config: run \`make bootstrap\` then \`. target/varnish-env.sh\` (or set PKG_CONFIG_PATH)"
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
    grep -q "^\.TH \"VMOD_${name^^}\" 3" "$out/vmod_$name.3" \
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

# The ABI of the Varnish headers in use, as Debian's dh_varnishabi reads it:
# `<VRT_MAJOR>.<VRT_MINOR>|<VMOD_ABI_Version string>`. pkg-config has no variable for it.
headers_abi() {
    local cflags
    cflags=$(pkg-config --cflags-only-I varnishapi)
    # shellcheck disable=SC2086
    printf '#include "vdef.h"\n#include "vrt.h"\n#include "vmod_abi.h"\nVERSION=<VRT_MAJOR_VERSION.VRT_MINOR_VERSION>\nVMOD_ABI=<VMOD_ABI_Version>\n' \
        | cpp -P $cflags - 2>/dev/null \
        | python3 -c '
import re, sys
text = sys.stdin.read()
v = re.search(r"VERSION=<([0-9U. ]+)>", text)
a = re.search(r"VMOD_ABI=<\"([^\"]*)\">", text)
if not (v and a):
    sys.exit("cannot read VRT_MAJOR_VERSION/VMOD_ABI_Version from the varnishapi headers")
print("%s|%s" % (re.sub(r"[U ]", "", v.group(1)), a.group(1)))'
}

workspace_version() {
    python3 -c '
import sys, tomllib
with open(sys.argv[1], "rb") as f:
    print(tomllib.load(f)["workspace"]["package"]["version"])' "$ROOT/Cargo.toml" \
        || die "cannot read [workspace.package] version from $ROOT/Cargo.toml"
}

# run_vtcs VMODDIR: every packaging/tests/*.vtc through varnishtest with ${vmoddir} set;
# on failure prints the failing step (`----` lines of the log) and returns 1.
run_vtcs() {
    local out
    if out=$(varnishtest -t 30 -D vmoddir="$1" "$ROOT"/packaging/tests/*.vtc 2>&1); then
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
