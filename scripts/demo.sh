#!/usr/bin/env bash
# Local demo stack on 127.0.0.1: two demo origins, a peer cache, and a front cache
# that loads both VMODs from the build tree.
#   scripts/demo.sh           run in the foreground until Ctrl-C, printing what to try
#   scripts/demo.sh --smoke   run a scripted scenario and exit 0 only if every step held
# Expects varnishd on PATH (eval "$(make -s env)") and a release build (make release).
set -euo pipefail

STACK_NAME=demo
# shellcheck source=lib/stack.sh
. "$(dirname "$0")/lib/stack.sh"
stack_require "$PROFILE_DIR/libvmod_peer.so" "$PROFILE_DIR/libvmod_saintmode.so"
PEER_SO="$PROFILE_DIR/libvmod_peer.so"
SAINT_SO="$PROFILE_DIR/libvmod_saintmode.so"

start_server ORIGIN_A origin-a python3 "$ROOT/demo/origin.py" --name origin-a
start_server ORIGIN_B origin-b python3 "$ROOT/demo/origin.py" --name origin-b --fail-prefix /flaky/

render() {
    sed -e "s|@PEER_VMOD@|$PEER_SO|; s|@SAINTMODE_VMOD@|$SAINT_SO|" \
        -e "s|@ORIGIN_A@|$ORIGIN_A|; s|@ORIGIN_B@|$ORIGIN_B|; s|@PEER_PORT@|${PEER_PORT:-}|" "$1" > "$2"
}
# The peer cache first: the front's VCL names its port.
render "$ROOT/demo/peer.vcl" "$RUN/peer.vcl"
PEER_PORT=$(start_varnish peer "$RUN/peer.vcl" -p vcc_allow_inline_c=off)
render "$ROOT/demo/front.vcl" "$RUN/front.vcl"
FRONT_PORT=$(start_varnish front "$RUN/front.vcl" -p vcc_allow_inline_c=off)

for p in "$ORIGIN_A" "$ORIGIN_B" "$PEER_PORT" "$FRONT_PORT"; do wait_http "$p"; done

FRONT="http://127.0.0.1:$FRONT_PORT"
PEER="http://127.0.0.1:$PEER_PORT"
# Caches hash on Host + URL and a forwarded PURGE keeps the client's Host, so every
# request here names the same site, as clients of a real cache cluster do.
SITE="www.demo.test"

if [ "$MODE" = interactive ]; then
    cat <<EOT

Demo stack running (Ctrl-C stops everything):
  front cache  $FRONT   (peer + saintmode loaded from $PROFILE_DIR)
  peer cache   $PEER
  origin-a     http://127.0.0.1:$ORIGIN_A   (healthy)
  origin-b     http://127.0.0.1:$ORIGIN_B   (answers 500 under /flaky/)

Try:
  curl -si $FRONT/hello | grep -E 'X-Origin|X-Cache'
      served by origin-b (first in the fallback director), then HIT on the second call.
  curl -si $FRONT/flaky/1 | grep -E '^HTTP|X-Origin'
      origin-b answers 500: saintmode blacklists it for this object for 20 s and the retry
      is served by origin-a (200).
  curl -s $FRONT/saintmode-status
      saintmode.status() as JSON: sm_b has 1 blacklisted object.
  curl -si -H 'Host: $SITE' $PEER/page | grep X-Cache   (twice)
      the peer cache caches /page (MISS, then HIT).
  curl -si -H 'Host: $SITE' -X PURGE $FRONT/page; curl -si -H 'Host: $SITE' $PEER/page | grep X-Cache
      the PURGE at the front is forwarded in the background by peer.queue_req():
      the peer's copy is gone (MISS again).
  varnishstat -n $RUN/front/n -1 | grep -iE 'peer|saintmode'
  varnishlog -n $RUN/front/n -g request -q 'ReqMethod eq "PURGE"'
EOT
    while true; do sleep 3600; done
fi

# ------------------------------------------------------------------ smoke run
fail=0
step() { printf 'demo-smoke: %-62s ' "$1"; }
ok() { echo "ok"; }
bad() { echo "FAILED ($1)"; fail=1; }

hdr() { grep -i "^$1:" | head -n1 | cut -d: -f2- | tr -d ' \r'; }

step "front serves /hello from origin-b"
origin=$(curl -s -D - -o /dev/null "$FRONT/hello" | hdr X-Origin)
[ "$origin" = origin-b ] && ok || bad "X-Origin=$origin"

step "failing URL is blacklisted and served by origin-a"
resp=$(curl -s -D - -o /dev/null "$FRONT/flaky/1")
status=$(echo "$resp" | head -n1 | awk '{print $2}')
origin=$(echo "$resp" | hdr X-Origin)
[ "$status" = 200 ] && [ "$origin" = origin-a ] && ok || bad "status=$status X-Origin=$origin"

step "saintmode.status() shows one entry for sm_b"
curl -s "$FRONT/saintmode-status" > "$RUN/status.json"
if python3 - "$RUN/status.json" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
counts = {o["name"]: o["count"] for o in doc["saintmode"]}
sys.exit(0 if counts.get("sm_b") == 1 and counts.get("sm_a") == 0 else 1)
PY
then ok; else bad "$(cat "$RUN/status.json")"; fi

step "peer cache holds /page (MISS then HIT)"
c1=$(curl -s -H "Host: $SITE" -D - -o /dev/null "$PEER/page" | hdr X-Cache)
c2=$(curl -s -H "Host: $SITE" -D - -o /dev/null "$PEER/page" | hdr X-Cache)
[ "$c1" = MISS ] && [ "$c2" = HIT ] && ok || bad "$c1 $c2"

step "PURGE at the front answers at once"
st=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $SITE" -X PURGE "$FRONT/page")
[ "$st" = 200 ] && ok || bad "status $st"

step "the purge reaches the peer cache (n_purges, then MISS)"
purged=0
for _ in $(seq 1 100); do
    n=$(varnishstat -n "$RUN/peer/n" -1 -f MAIN.n_purges 2>/dev/null | awk '{print $2}')
    [ "${n:-0}" -ge 1 ] && { purged=1; break; }
    sleep 0.1
done
c3=$(curl -s -H "Host: $SITE" -D - -o /dev/null "$PEER/page" | hdr X-Cache)
[ "$purged" = 1 ] && [ "$c3" = MISS ] && ok || bad "n_purges=${n:-?} X-Cache=$c3"

step "peer.pending() drains to 0"
pending=x
for _ in $(seq 1 100); do
    pending=$(curl -s -D - -o /dev/null "$FRONT/hello" | hdr X-Peer-Pending)
    [ "$pending" = 0 ] && break
    sleep 0.1
done
[ "$pending" = 0 ] && ok || bad "pending=$pending"

if [ "$fail" = 0 ]; then
    echo "demo-smoke: all steps held"
else
    echo "demo-smoke: FAILED" >&2
    exit 1
fi
