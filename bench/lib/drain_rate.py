#!/usr/bin/env python3
"""Rate at which a peer sender drained its backlog.

  drain_rate.py FILE     FILE: lines "unix_time sent_counter [queue_length]" sampled during the drain

Prints "RATE TOTAL": requests/s over the 10 %..90 % part of the backlog (leaves out the requests
that were held when the drain started, and the tail), or "null TOTAL" when the backlog was too
small or too quick to time.
"""
import sys

pts = [tuple(map(float, line.split()[:2])) for line in open(sys.argv[1]) if line.strip()]
if len(pts) < 2:
    print("null 0")
    sys.exit()
c0, c1 = pts[0][1], pts[-1][1]
total = c1 - c0


def t_at(frac):
    goal = c0 + frac * total
    for (ta, ca), (tb, cb) in zip(pts, pts[1:]):
        if cb >= goal:
            return ta + (tb - ta) * ((goal - ca) / (cb - ca) if cb > ca else 0)
    return pts[-1][0]


t10, t90 = t_at(0.1), t_at(0.9)
ok = total >= 2000 and t90 - t10 >= 0.2
print(round(0.8 * total / (t90 - t10), 1) if ok else "null", int(total))
