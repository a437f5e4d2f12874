# shellcheck shell=bash disable=SC2034  # passed/failed are read by the sourcing script
# Sourced by the install and package checks (scripts/check-install.sh, scripts/check-deb.sh,
# packaging/tests/deb/*.sh): one `ok - ...` / `FAIL - ...` line per check, `N passed, M failed`
# last (the line CI reads). $ME names the caller in finish's complaint.

passed=0 failed=0
ok()   { passed=$((passed + 1)); echo "ok - $*"; }
fail() { failed=$((failed + 1)); echo "FAIL - $*"; }
# check DESCRIPTION COMMAND...: runs COMMAND (output in $SCRATCH/out), shows its last 30
# lines on failure.
check() {
    local desc=$1; shift
    if "$@" >"$SCRATCH/out" 2>&1; then ok "$desc"; else fail "$desc"; sed 's/^/    | /' "$SCRATCH/out" | tail -n 30; fi
}
# finish: the closing line; exits 0 when every check passed, else 1.
finish() {
    echo "$passed passed, $failed failed"
    [ "$failed" -eq 0 ] || { echo "${ME:-check}: $failed check(s) failed (see FAIL lines above)" >&2; exit 1; }
    exit 0
}
