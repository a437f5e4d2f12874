#!/usr/bin/env bash
# Compiles every examples/*.vcl with `varnishd -C` (plain `import peer;` /
# `import saintmode;` through vmod_path) and runs examples/tests/*.vtc (through
# scripts/vtc-run.sh, which defines their macros), which load the examples into a varnishd
# and exercise them. Last line: "N passed, M failed".
#   scripts/check-examples.sh [--release|--debug]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PROFILE=release
[ "${1:-}" = "--debug" ] && PROFILE=debug
ART="$ROOT/target/$PROFILE"
for so in libvmod_peer.so libvmod_saintmode.so; do
    [ -f "$ART/$so" ] || { echo "check-examples: $ART/$so missing: run make $PROFILE" >&2; exit 1; }
done
VMODDIR=$(pkg-config --variable=vmoddir varnishapi)
VMOD_PATH="$ART:$VMODDIR"
TMP=$(mktemp -d); trap 'rm -rf "$TMP"' EXIT
passed=0; failed=0
for vcl in "$ROOT"/examples/*.vcl; do
    name=$(basename "$vcl")
    if varnishd -C -n "$TMP/n" -p vmod_path="$VMOD_PATH" -f "$vcl" >/dev/null 2>"$TMP/err"; then
        echo "ok      compile $name"; passed=$((passed+1))
    else
        echo "FAILED  compile $name"; sed 's/^/    /' "$TMP/err"; failed=$((failed+1))
    fi
done
for vtc in "$ROOT"/examples/tests/*.vtc; do
    name=$(basename "$vtc")
    if "$ROOT/scripts/vtc-run.sh" --so "$ART" --timeout 120 "$vtc" >"$TMP/out" 2>&1; then
        echo "ok      vtc $name"; passed=$((passed+1))
    else
        echo "FAILED  vtc $name"
        grep -E '^----|^\*  ' "$TMP/out" | head -20 | sed 's/^/    /'
        failed=$((failed+1))
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
