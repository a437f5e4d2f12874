#!/usr/bin/env python3
"""Turn a run's raw measurements into target/bench/results.json and a table; regenerate the README's.

  report.py RUN_DIR OUT_DIR                  results.json + results.md in OUT_DIR, table on stdout
  report.py --readme README.md RESULTS.json  replace the table between the README's bench markers
  report.py --aa RUNS.jsonl GROUP ATTEMPT A B LOW HIGH
                                             print "MEDIAN VALID" of the A/A ratios A/B of one attempt

RUN_DIR holds what bench/run.sh recorded:
  runs.jsonl     one load run per line: {"group", "rep", "attempt", "label", "rps", "requests", "non2xx",
                 "socket_errors", "child_cpu_us_per_req", "threads": {name: ticks}, "clk_tck", ...}
  groups.jsonl   one A/A verdict per alternation group: {"group", "attempts", "aa_label", "aa_medians",
                 "band", "valid"}; a group's figures use the runs of its last attempt only
  figures.jsonl  one figure definition per line (the last one for a name wins):
                 {"figure", "kind": "ratio", "group", "num", "den", "target", "note"?}
                     -> per rep: rps(num) / rps(den) of the same group, attempt and rep
                 {"figure", "kind": "samples", "samples": [...], "unit", "target", "extra"?, "value"?,
                  "valid"?, "invalid_reason"?}
                     -> median of the samples, or "value" when given (bytes: total growth / count)
                 {"figure", "kind": "estimate", "unit": "ns", "value", "ci", "min", "max", "target"}
                     -> criterion's median point estimate (bench/lib/criterion_read.py)
                 {"figure", "kind": "null", "reason", "target"?}
  pins.jsonl     CPU affinity of every varnishd started (taskset -p of manager and child)
  meta.json      machine and run facts copied into details
results.json: one key per figure (its number, or null), plus "details" (per figure: samples, spread,
target, met, valid and why not, CPU time per request of A and B, the A/A of its group).
"""
import json
import os
import statistics
import sys

KEYS = ["noise_control_aa", "peer_queue_req_ns", "peer_overhead_fast", "peer_overhead_slow",
        "peer_overhead_down", "peer_sender_cpu_ratio", "peer_p99_ratio", "peer_drain_ratio",
        "peer_bytes_per_queued_request", "saintmode_check_ns_0", "saintmode_check_ns_100000",
        *(f"saintmode_lookup_{n}" for n in (0, 1000, 10000, 100000)),
        *(f"c_saintmode_lookup_{n}" for n in (0, 1000, 10000, 100000)),
        "saintmode_bytes_per_entry", "c_saintmode_bytes_per_entry", "blocking_anchor_slow"]
BEGIN, END = "<!-- bench-table:begin (bench/lib/report.py) -->", "<!-- bench-table:end -->"


def load_jsonl(path):
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    out.append(json.loads(line))
    return out


def target_met(target, value):
    """">= 0.97", "<= 1331" or a range "0.97 .. 1.03"; None when there is no target or no value."""
    if value is None or not target:
        return None
    if ".." in target:
        lo, hi = (float(x) for x in target.split(".."))
        return lo <= value <= hi
    op, _, num = target.partition(" ")
    num = float(num)
    return value >= num if op == ">=" else value <= num if op == "<=" else None


def last_attempts(runs, groups):
    last = {g["group"]: g["attempts"] for g in groups}
    for r in runs:
        last.setdefault(r["group"], 0)
        if r["group"] not in {g["group"] for g in groups}:
            last[r["group"]] = max(last[r["group"]], r.get("attempt", 1))
    return last


def ratios(runs, group, attempt, num, den):
    """(per-rep ratios, the A runs, the B runs) of one attempt of a group."""
    by = {}
    for r in runs:
        if r["group"] == group and r.get("attempt", 1) == attempt:
            by.setdefault(r["label"], {})[r["rep"]] = r
    a, b = by.get(num, {}), by.get(den, {})
    reps = sorted(set(a) & set(b))
    out = [a[i]["rps"] / b[i]["rps"] for i in reps if a[i].get("rps") is not None and b[i].get("rps")]
    return out, [a[i] for i in reps], [b[i] for i in reps]


def aa_verdict(argv):
    runs_path, group, attempt, num, den, lo, hi = argv
    rs, _, _ = ratios(load_jsonl(runs_path), group, int(attempt), num, den)
    if not rs:
        print("null false")
        return
    m = statistics.median(rs)
    print(f"{m:.4f} {'true' if float(lo) <= m <= float(hi) else 'false'}")


def med(xs):
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 3) if xs else None


def cpu_summary(rs):
    """Median CPU microseconds per request of the serving child, in total and per thread name."""
    total = med([r.get("child_cpu_us_per_req") for r in rs])
    per = {}
    for r in rs:
        n, tck = r.get("requests"), r.get("clk_tck") or 100
        for name, ticks in (r.get("threads") or {}).items():
            if n:
                per.setdefault(name, []).append(ticks * 1e6 / tck / n)
    return {"child_us_per_req": total, "threads_us_per_req": {k: med(v) for k, v in sorted(per.items())}}


def build(run_dir):
    runs = load_jsonl(os.path.join(run_dir, "runs.jsonl"))
    groups = load_jsonl(os.path.join(run_dir, "groups.jsonl"))
    gmap = {g["group"]: g for g in groups}
    last = last_attempts(runs, groups)
    defs = {}
    for d in load_jsonl(os.path.join(run_dir, "figures.jsonl")):
        defs.pop(d["figure"], None)
        defs[d["figure"]] = d
    meta = {}
    if os.path.exists(os.path.join(run_dir, "meta.json")):
        with open(os.path.join(run_dir, "meta.json")) as f:
            meta = json.load(f)
    meta["pinning"] = load_jsonl(os.path.join(run_dir, "pins.jsonl"))
    meta["groups"] = groups

    results, figs = {}, {}
    for name, d in defs.items():
        det = {"target": d.get("target") or None, "unit": d.get("unit", "ratio")}
        if d.get("note"):
            det["note"] = d["note"]
        # valid: True/False when an A/A gate applies (throughput groups, the p99 control), None when
        # the figure is not gated (CPU, memory, criterion figures, the drain rate).
        value, samples, valid, why = None, [], None, None
        if d["kind"] == "ratio":
            g = d["group"]
            samples, a, b = ratios(runs, g, last.get(g, 1), d["num"], d["den"])
            for side, label, rs in (("a", d["num"], a), ("b", d["den"], b)):
                det[side] = {"label": label, "rps": [r["rps"] for r in rs],
                             "non2xx": sum(r.get("non2xx", 0) for r in rs),
                             "socket_errors": sum(r.get("socket_errors", 0) for r in rs),
                             "cpu": cpu_summary(rs)}
            ca, cb = det["a"]["cpu"]["child_us_per_req"], det["b"]["cpu"]["child_us_per_req"]
            det["cpu_us_per_req"] = {"a": ca, "b": cb, "ratio": round(ca / cb, 3) if ca and cb else None}
            gv = gmap.get(g)
            if gv:
                valid = True
                det["aa"] = {"label": gv["aa_label"], "median": gv["aa_medians"][-1] if gv["aa_medians"] else None,
                             "attempts": gv["attempts"], "medians": gv["aa_medians"], "band": gv["band"]}
                if not gv["valid"]:
                    valid = False
                    why = (f"A/A median {gv['aa_medians'][-1]} of group {g} outside {gv['band']} "
                           f"after {gv['attempts']} attempt(s)")
            if not samples:
                det["reason"] = d.get("reason") or "no paired measurements"
        elif d["kind"] == "samples":
            samples = [s for s in d.get("samples", []) if s is not None]
            if not samples:
                det["reason"] = d.get("reason") or "no samples"
        elif d["kind"] == "estimate":
            value = round(d["value"], 2)
            det.update({"median": value, "ci": None if d.get("ci") is None else [round(x, 2) for x in d["ci"]],
                        "min": None if d.get("min") is None else round(d["min"], 2),
                        "max": None if d.get("max") is None else round(d["max"], 2)})
        else:
            det["reason"] = d.get("reason", "not measured")
        if d.get("valid") is not None:
            valid, why = d["valid"], d.get("invalid_reason") or (None if d["valid"] else "invalid")
        if d.get("extra"):
            det.update(d["extra"])
        if samples:
            value = statistics.median(samples)
            if d.get("value") is not None:  # e.g. total growth / total count, samples per chunk
                value = d["value"]
            det.update({"samples": [round(s, 4) for s in samples], "median": round(value, 4),
                        "min": round(min(samples), 4), "max": round(max(samples), 4)})
            value = round(value, 4)
        if name == "noise_control_aa" and value is not None and not target_met(d.get("target") or "0.97 .. 1.03", value):
            valid, why = False, why or "A/A median outside 0.97 .. 1.03"
        det["valid"] = valid if value is not None else None
        if why and value is not None:
            det["invalid_reason"] = why
        det["met"] = target_met(d.get("target"), value) if valid is not False else None
        results[name] = value
        figs[name] = det
    for k in KEYS:  # every key of the issue is present, null with a reason when its section did not run
        if k not in results:
            results[k] = None
            figs[k] = {"target": None, "unit": "ratio", "valid": None, "met": None,
                       "reason": "not measured: its section was not run (BENCH_ONLY) or did not finish"}
    ordered = {k: results[k] for k in KEYS}
    ordered.update({k: v for k, v in results.items() if k not in ordered})
    meta["valid"] = all(f.get("valid") is not False for f in figs.values())
    ordered["details"] = dict(meta, figures={k: figs[k] for k in ordered})
    return ordered


def fmt(v, unit):
    if v is None:
        return "null"
    if unit in ("bytes", "ns"):
        return f"{v:.0f}" if v >= 100 else f"{v:.1f}"
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"


def table(results):
    """The table (Markdown rows) of results.json, and the footer line."""
    det = results["details"]
    header = ["figure", "value", "spread", "n", "CPU us/req A / B", "A/A", "target", "met", "valid", "note"]
    rows = []
    for name, f in det["figures"].items():
        unit, v = f["unit"], results.get(name)
        if "ci" in f:
            parts = []
            if f["ci"] is not None:
                parts.append(f"CI {fmt(f['ci'][0], unit)}..{fmt(f['ci'][1], unit)}")
            if f.get("min") is not None:
                parts.append(f"{f.get('spread') or 'min..max'} {fmt(f['min'], unit)}..{fmt(f['max'], unit)}")
            spread = "; ".join(parts) or "-"
            n = str(f.get("samples", "-"))
        else:
            spread = f"{fmt(f['min'], unit)}..{fmt(f['max'], unit)}" if "min" in f else "-"
            n = str(len(f.get("samples", [])))
        cpu = f.get("cpu_us_per_req") or {}
        cpu_s = f"{cpu['a']:.1f} / {cpu['b']:.1f}" if cpu.get("a") and cpu.get("b") else "-"
        aa = f.get("aa", {}).get("median")
        aa_s = "-" if aa is None else f"{aa:.3f}" + (f" ({f['aa']['attempts']} att.)" if f["aa"]["attempts"] > 1 else "")
        met = {True: "yes", False: "NO", None: "-"}[f.get("met")]
        valid = {True: "yes", False: "NO", None: "-"}[f.get("valid")]
        note = f.get("invalid_reason") or f.get("reason") or f.get("note") or ""
        if len(note) > 90:  # the full text is in results.json
            note = note[:87] + "..."
        if unit in ("bytes", "ns") and v is not None:
            note = f"{unit}; {note}" if note else unit
        rows.append([name, fmt(v, unit), spread, n, cpu_s, aa_s, f.get("target") or "-", met, valid, note])
    foot = (f"{det.get('cpu_count')} CPUs ({det.get('cpu_model')}), {det.get('varnish_version')}, "
            f"{det.get('date')}, load average {det.get('loadavg', '?')}; {det.get('pin_summary', '')}; "
            f"wrk {det.get('config', {}).get('wrk')}. Reproduce: `{det.get('command')}`.")
    return header, rows, foot


def markdown(results):
    header, rows, foot = table(results)
    out = "| " + " | ".join(header) + " |\n" + "|" + "|".join("---" for _ in header) + "|\n"
    out += "".join("| " + " | ".join(c.replace("|", "/") for c in r) + " |\n" for r in rows)
    return out + "\n" + foot + "\n"


def print_table(results):
    header, rows, foot = table(results)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    print(line(header))
    print(line(["-" * w for w in widths]))
    for r in rows:
        print(line(r))
    print()
    print(foot)


def splice_readme(readme, results_path):
    with open(results_path) as f:
        results = json.load(f)
    with open(readme) as f:
        text = f.read()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"report.py: {readme} has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    with open(readme, "w") as f:
        f.write(head + BEGIN + "\n" + markdown(results) + END + tail)


def main(argv):
    if argv and argv[0] == "--aa":
        return aa_verdict(argv[1:])
    if argv and argv[0] == "--readme":
        return splice_readme(argv[1], argv[2])
    run_dir, out_dir = argv
    results = build(run_dir)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(markdown(results))
    print_table(results)


if __name__ == "__main__":
    main(sys.argv[1:])
