#!/usr/bin/env bash
# Puts varnish-modules' C saintmode (Debian trixie's binary package) into the benchmark's
# cache, where saintmode/tests/vtc.rs looks for it to run the compat_*.vtc files against
# both modules. Reuses bench/lib/tools.sh (the private apt configuration derived from this
# machine's own apt sources), so the cache is shared with `make bench`.
#
# Usage: saintmode/tests/support/fetch-c-saintmode.sh   (prints the path of the .so)
set -euo pipefail
BENCH_CACHE="${BENCH_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vmod-rs/bench}"
mkdir -p "$BENCH_CACHE"
log() { printf 'fetch-c-saintmode: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../../../bench/lib/tools.sh
. "$here/../../../bench/lib/tools.sh"
ensure_c_saintmode || die "C saintmode unavailable: $C_SAINTMODE_ERR"
echo "$C_SAINTMODE_SO"
