#!/usr/bin/env bash
# Writes OUTDIR/vmod_<name>.3 for every VMOD from its vmod.vcc (vmodtool RST + rst2man),
# refusing a module in ARTIFACTS that was built from another vmod.vcc. Called by
# debian/rules inside the Debian build root.
#
#   packaging/gen-man.sh OUTDIR ARTIFACTS
set -euo pipefail
ME=gen-man
# shellcheck source=lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

[ "$#" -eq 2 ] || die "usage: $0 OUTDIR ARTIFACTS"
out=$1 artifacts=$2
[ -d "$out" ] || die "$out is not a directory"
ensure_varnish_env
for name in "${VMODS[@]}"; do
    [ -f "$artifacts/libvmod_$name.so" ] || die "$artifacts/libvmod_$name.so not found: build first"
    gen_man "$name" "$out" "$artifacts/libvmod_$name.so"
    log "wrote $out/vmod_$name.3"
done
