#!/usr/bin/env bash
# Regenerates docs/vmod_<name>.rst (the VCL reference) from each crate's vmod.vcc with
# Varnish's vmodtool, the same source the man pages come from.
#   scripts/gen-docs.sh          rewrite docs/
#   scripts/gen-docs.sh --check  exit 1 when docs/ is not what vmod.vcc generates
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VMODTOOL=$(pkg-config --variable=vmodtool varnishapi) \
    || { echo "gen-docs: varnishapi not found: eval \"\$(make -s env)\"" >&2; exit 1; }
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
mkdir -p "$ROOT/docs"
status=0
for name in peer saintmode; do
    mkdir -p "$TMP/$name"
    # Run from the root with a relative path: the generated header names its source.
    (cd "$ROOT" && python3 "$VMODTOOL" -o "$TMP/$name/vcc_if" -w "$TMP/$name" "$name/vmod.vcc" >/dev/null)
    out="$ROOT/docs/vmod_$name.rst"
    if [ "${1:-}" = "--check" ]; then
        if ! diff -u "$out" "$TMP/$name/vmod_$name.rst" >/dev/null 2>&1; then
            echo "gen-docs: docs/vmod_$name.rst is out of date with $name/vmod.vcc: run scripts/gen-docs.sh" >&2
            status=1
        fi
    else
        cp "$TMP/$name/vmod_$name.rst" "$out"
    fi
done
exit $status
