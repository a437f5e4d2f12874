#!/usr/bin/env python3
"""peer_p99_ratio from the open-loop runs of bench/run.sh (bench/openloop output, one JSON per line
with "label" nocall|call|nocall2, "rep", "attempt").

  p99.py line JSON                              one run in words, for the log
  p99.py verdict P99.jsonl ATTEMPT LOW HIGH     prints "true|false REASON"
  p99.py figure  P99.jsonl ATTEMPT LOW HIGH CAPACITY RATE DURATION CONNS BLOCK
                                                prints the figure definition (figures.jsonl line)

Per rep: p99(call) / p99(nocall) is a sample, p99(nocall2) / p99(nocall) the A/A control (two
identical fronts). A rep is one open-loop run taking the three fronts in turns of short blocks. The
attempt is valid when the A/A median is inside LOW..HIGH (a p99 is far noisier than a throughput:
the band is wider than the throughput A/A's) and the generator kept up in every run: completed >=
95 % of the schedule, no errors, its own send lag p99 <= 25 % of the p99 measured.
"""
import json
import statistics
import sys


def per_rep(rows, attempt):
    by = {}
    for r in rows:
        if r.get("attempt") == attempt:
            by.setdefault(r["rep"], {})[r["label"]] = r
    return [by[k] for k in sorted(by)]


def rep_problems(rep):
    """Why a rep cannot be used: the generator did not run the schedule, or lagged."""
    problems = []
    for r in (rep.get("nocall", {}), rep.get("call", {}), rep.get("nocall2", {})):
        if r.get("scheduled") and (r.get("completed", 0) < 0.95 * r["scheduled"] or r.get("errors")):
            problems.append(f"{r.get('label')} #{r.get('rep')}: {r.get('completed')}/{r['scheduled']} "
                            f"completed, {r.get('errors')} errors")
        # The generator's own lateness (send time - max(slot, previous answer)) must stay small
        # next to the tail it reports, or the p99 is the generator's, not the server's.
        if r.get("p99_us") and (r.get("gen_lag_p99_us") or 0) > 0.25 * r["p99_us"]:
            problems.append(f"{r.get('label')} #{r.get('rep')}: generator lag p99 {r['gen_lag_p99_us']} us "
                            f"> 25 % of the p99 {r['p99_us']} us")
    return problems


def analyse(path, attempt, lo, hi):
    """Samples and A/A of an attempt; it is valid when the generator kept up in every run (a
    server's errors or a short schedule invalidate it too) and the A/A median is inside
    LOW..HIGH."""
    rows = [json.loads(x) for x in open(path) if x.strip()]
    reps = per_rep(rows, attempt)
    samples, aa, problems = [], [], []
    for rep in reps:
        n, c, n2 = rep.get("nocall", {}), rep.get("call", {}), rep.get("nocall2", {})
        problems.extend(rep_problems(rep))
        if n.get("p99_us") and c.get("p99_us"):
            samples.append(c["p99_us"] / n["p99_us"])
        if n.get("p99_us") and n2.get("p99_us"):
            aa.append(n2["p99_us"] / n["p99_us"])
    aa_med = statistics.median(aa) if aa else None
    if aa_med is None or not samples:
        why = "no complete rep"
    elif problems:
        why = "the generator did not keep up: " + "; ".join(problems[:3])
    elif not lo <= aa_med <= hi:
        why = f"p99 A/A median {aa_med:.3f} outside {lo} .. {hi}"
    else:
        why = ""
    return reps, samples, aa, aa_med, why


def main(argv):
    if argv[0] == "line":  # one run, for the log
        r = json.loads(argv[1])
        print(f"p99 {r.get('p99_us')} us, p50 {r.get('p50_us')} us, {r.get('completed')}/{r.get('scheduled')} done "
              f"at {r.get('rate')} req/s, errors {r.get('errors')}, generator lag p99 {r.get('gen_lag_p99_us')} us")
        return
    cmd, path, attempt, lo, hi = argv[0], argv[1], int(argv[2]), float(argv[3]), float(argv[4])
    reps, samples, aa, aa_med, why = analyse(path, attempt, lo, hi)
    if cmd == "verdict":
        print("false " + why if why else f"true p99 A/A median {aa_med:.3f}")
        return
    cap, rate, dur, conns, block = argv[5:10]
    fig = {"figure": "peer_p99_ratio", "kind": "samples", "unit": "ratio", "target": "<= 1.1",
           "samples": [round(s, 4) for s in samples], "reason": why or "no samples",
           "extra": {"aa": {"label": "nocall2/nocall", "median": None if aa_med is None else round(aa_med, 4),
                            "samples": [round(a, 4) for a in aa], "band": f"{lo} {hi}", "attempts": attempt},
                     "capacity_rps": float(cap), "rate": float(rate), "duration_s": float(dur),
                     "p99_us": {lab: [r.get(lab, {}).get("p99_us") for r in reps] for lab in ("nocall", "call", "nocall2")},
                     "p50_us": {lab: [r.get(lab, {}).get("p50_us") for r in reps] for lab in ("nocall", "call", "nocall2")},
                     "generator_lag_p99_us": max((r.get(lab, {}).get("gen_lag_p99_us") or 0)
                                                 for r in reps for lab in ("nocall", "call", "nocall2")) if reps else None,
                     "conns_per_front": int(conns), "block_s": float(block),
                     "method": "bench/openloop at a fixed rate (latency from each request's scheduled time), "
                               "front with peer.queue_req() to a fast destination vs the same VCL without the call; "
                               "each run takes the three fronts (nocall, call, nocall2) in turns of short blocks, one "
                               "front alone at the full rate per block, percentiles pooled per front"}}
    if samples:
        fig["valid"] = not why
        if why:
            fig["invalid_reason"] = why
    print(json.dumps(fig))


if __name__ == "__main__":
    main(sys.argv[1:])
