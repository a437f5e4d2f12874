#!/usr/bin/env bash
# The fault suite (issue 6): peer flapping, blackholed peer, VCL reload cycles, kill -9 of the
# child, saintmode under concurrency, and the bad-input catalogue VTCs. Every case prints a
# verdict line with its figures; the last line is "N passed, M failed"; exit 1 if any failed.
#
#   scripts/faults.sh [--fast] [--only case[,case]]
#
# --fast: the cases sized to run in about a minute on 2 cores, with no timing thresholds (only
# counts and invariants with generous waits): what `make test` runs.
# Only 127.0.0.1 is used. Needs varnishd (target/varnish-env.sh), python3, the release build.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
# shellcheck source=../scripts/lib/varnish.sh
. "$ROOT/scripts/lib/varnish.sh"
use_varnish_env "$ROOT" faults
cargo build --release --workspace --locked -q
export FAULTS_TMP="${FAULTS_TMP:-$(mktemp -d "${TMPDIR:-/tmp}/faults.XXXXXX")}"
trap 'rm -rf "$FAULTS_TMP"' EXIT
# Each case stops its own varnishd; the time limit is a last resort against a hang.
timeout --signal=TERM --kill-after=30 3600 python3 faults/run.py "$@"
