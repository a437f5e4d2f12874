#!/usr/bin/env bash
# Three caches on 127.0.0.1, each the peer of the two others (demo/cluster.vcl), in
# front of one demo origin.
#   scripts/demo-cluster.sh           run until Ctrl-C, printing what to try
#   scripts/demo-cluster.sh --smoke   a PURGE at each node empties all three; exit 0 if so
set -euo pipefail
STACK_NAME=demo-cluster
# shellcheck source=lib/stack.sh
. "$(dirname "$0")/lib/stack.sh"
stack_require "$PROFILE_DIR/libvmod_peer.so"
PEER_SO="$PROFILE_DIR/libvmod_peer.so"

start_server ORIGIN origin python3 "$ROOT/demo/origin.py" --name origin
# Each node's VCL names the two others' ports: the nodes start on a boot VCL, then load theirs.
P1=$(start_varnish n1 "" -i node1); P2=$(start_varnish n2 "" -i node2); P3=$(start_varnish n3 "" -i node3)
PORTS=("" "$P1" "$P2" "$P3")
for n in 1 2 3; do
    others=()
    for m in 1 2 3; do [ "$m" != "$n" ] && others+=("${PORTS[$m]}"); done
    sed -e "s|@PEER_VMOD@|$PEER_SO|; s|@ORIGIN@|$ORIGIN|" \
        -e "s|@PEER1@|${others[0]}|; s|@PEER2@|${others[1]}|" "$ROOT/demo/cluster.vcl" > "$RUN/n$n.vcl"
    harness load "$RUN/n$n" cluster "$RUN/n$n.vcl" || stack_die "node$n: $RUN/n$n.vcl does not load"
done
for p in "$ORIGIN" "$P1" "$P2" "$P3"; do wait_http "$p"; done

SITE="www.demo.test"
get() { curl -s -H "Host: $SITE" -D - -o /dev/null "http://127.0.0.1:$1$2" | grep -i '^X-Cache:' | tr -d ' \r' | cut -d: -f2; }
purges() { varnishstat -n "$RUN/n$1/n" -1 -f MAIN.n_purges 2>/dev/null | awk '{print $2+0}'; }

if [ "$MODE" = interactive ]; then
    cat <<EOT

Three-node cluster running (Ctrl-C stops it): node1 :$P1, node2 :$P2, node3 :$P3
Try:
  for p in $P1 $P2 $P3; do curl -s -H 'Host: $SITE' -o /dev/null -D - http://127.0.0.1:\$p/obj | grep X-Cache; done
      caches /obj on every node (run twice: HIT everywhere).
  curl -s -X PURGE -H 'Host: $SITE' http://127.0.0.1:$P2/obj -o /dev/null -w '%{http_code}\n'
      purges node2 and, in the background, node1 and node3: run the GET loop again (MISS x3).
  kill \$(cat $RUN/n3/pid); curl -X PURGE -H 'Host: $SITE' http://127.0.0.1:$P1/obj
      node3 is down: node2 is purged, node1 retries node3 (varnishstat -n $RUN/n1/n -1 -f 'PEER.*').
EOT
    while true; do sleep 3600; done
fi

fail=0
for n in 1 2 3; do
    for p in "$P1" "$P2" "$P3"; do get "$p" /obj >/dev/null; done
    before=("" "$(purges 1)" "$(purges 2)" "$(purges 3)")
    curl -s -o /dev/null -X PURGE -H "Host: $SITE" "http://127.0.0.1:${PORTS[$n]}/obj"
    ok=1
    for m in 1 2 3; do
        for _ in $(seq 1 100); do [ "$(purges "$m")" -gt "${before[$m]}" ] && break; sleep 0.1; done
        [ "$(purges "$m")" -eq $(( ${before[$m]} + 1 )) ] || ok=0
    done
    for p in "$P1" "$P2" "$P3"; do [ "$(get "$p" /obj)" = MISS ] || ok=0; done
    if [ "$ok" = 1 ]; then
        echo "demo-cluster: PURGE at node$n purged all three nodes once each       ok"
    else
        echo "demo-cluster: PURGE at node$n purged all three nodes once each       FAILED"; fail=1
    fi
done
[ "$fail" = 0 ] && echo "demo-cluster: all steps held" || { echo "demo-cluster: FAILED" >&2; exit 1; }
