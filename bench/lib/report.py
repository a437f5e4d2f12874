#!/usr/bin/env python3
"""Turn a run's raw measurements into target/bench/results.json and a table.

  report.py RUN_DIR OUT_DIR

RUN_DIR holds what bench/run.sh recorded:
  runs.jsonl     one wrk run per line: {"group", "rep", "label", "rps", "requests", "non2xx", "socket_errors"}
  figures.jsonl  one figure definition per line (the last one for a name wins):
                 {"figure", "kind": "ratio", "group", "num", "den", "target", "note"?}
                     -> per rep: rps(num) / rps(den) of the same group and rep
                 {"figure", "kind": "samples", "samples": [...], "unit", "target", "extra"?, "value"?}
                     -> median of the samples, or "value" when given (bytes: total growth / count)
                 {"figure", "kind": "null", "reason", "target"?}
  meta.json      machine and run facts copied into details
Writes OUT_DIR/results.json (one key per figure = median, plus "details") and OUT_DIR/results.md
(the table as Markdown), and prints the table.
"""
import json
import os
import statistics
import sys


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
    if value is None or not target:
        return None
    op, _, num = target.partition(" ")
    num = float(num)
    return value >= num if op == ">=" else value <= num if op == "<=" else None


def fmt(v, unit):
    if v is None:
        return "null"
    if unit == "bytes":
        return f"{v:.0f}"
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.0f}"


def main():
    run_dir, out_dir = sys.argv[1], sys.argv[2]
    runs = load_jsonl(os.path.join(run_dir, "runs.jsonl"))
    defs = {}
    for d in load_jsonl(os.path.join(run_dir, "figures.jsonl")):
        defs.pop(d["figure"], None)
        defs[d["figure"]] = d
    with open(os.path.join(run_dir, "meta.json")) as f:
        meta = json.load(f)

    by = {}
    for r in runs:
        by.setdefault((r["group"], r["label"]), {})[r["rep"]] = r

    results = {}
    figs = {}
    for name, d in defs.items():
        det = {"target": d.get("target"), "unit": d.get("unit", "ratio")}
        if d.get("note"):
            det["note"] = d["note"]
        value = None
        if d["kind"] == "ratio":
            num = by.get((d["group"], d["num"]), {})
            den = by.get((d["group"], d["den"]), {})
            reps = sorted(set(num) & set(den))
            samples = []
            for rep in reps:
                a, b = num[rep]["rps"], den[rep]["rps"]
                if a is not None and b:
                    samples.append(a / b)
            det["a"] = {"label": d["num"], "rps": [num[r]["rps"] for r in reps],
                        "non2xx": sum(num[r].get("non2xx", 0) for r in reps),
                        "socket_errors": sum(num[r].get("socket_errors", 0) for r in reps)}
            det["b"] = {"label": d["den"], "rps": [den[r]["rps"] for r in reps],
                        "non2xx": sum(den[r].get("non2xx", 0) for r in reps),
                        "socket_errors": sum(den[r].get("socket_errors", 0) for r in reps)}
            if not samples:
                det["reason"] = d.get("reason") or "no paired measurements"
        elif d["kind"] == "samples":
            samples = [s for s in d.get("samples", []) if s is not None]
            if not samples:
                det["reason"] = d.get("reason") or "no samples"
        else:
            samples = []
            det["reason"] = d.get("reason", "not measured")
        if d.get("extra"):
            det.update(d["extra"])
        if samples:
            value = statistics.median(samples)
            if d.get("value") is not None:  # e.g. total growth / total count, samples per chunk
                value = d["value"]
            det.update({"samples": [round(s, 4) for s in samples], "median": round(value, 4),
                        "min": round(min(samples), 4), "max": round(max(samples), 4)})
            value = round(value, 4)
        det["met"] = target_met(d.get("target"), value)
        results[name] = value
        figs[name] = det

    results["details"] = dict(meta, figures=figs)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")

    header = ["figure", "value", "min..max", "n", "target", "met", "note"]
    rows = []
    for name, det in figs.items():
        unit = det["unit"]
        v = results[name]
        spread = (f"{fmt(det['min'], unit)}..{fmt(det['max'], unit)}" if "min" in det else "-")
        met = {True: "yes", False: "NO", None: "-"}[det["met"]]
        note = det.get("reason") or det.get("note") or ""
        if len(note) > 90:  # the full text is in results.json
            note = note[:87] + "..."
        if unit == "bytes" and v is not None:
            note = (f"bytes; {note}" if note else "bytes")
        rows.append([name, fmt(v, unit), spread, str(len(det.get("samples", []))),
                     det.get("target") or "-", met, note])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()
    print(line(header))
    print(line(["-" * w for w in widths]))
    for r in rows:
        print(line(r))
    print()
    print(f"{meta.get('cpu_count')} CPUs ({meta.get('cpu_model')}), {meta.get('varnish_version')}, "
          f"{meta.get('date')}; wrk {meta.get('config', {}).get('wrk')}")
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write("| " + " | ".join(header) + " |\n")
        f.write("|" + "|".join("---" for _ in header) + "|\n")
        for r in rows:
            f.write("| " + " | ".join(c.replace("|", "/") for c in r) + " |\n")
        f.write(f"\n{meta.get('cpu_count')} CPUs ({meta.get('cpu_model')}), {meta.get('varnish_version')}, "
                f"{meta.get('date')}. Reproduce: `{meta.get('command')}`.\n")


if __name__ == "__main__":
    main()
