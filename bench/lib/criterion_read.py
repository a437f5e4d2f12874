#!/usr/bin/env python3
"""Read criterion's results for named benchmark IDs and write them as bench figure definitions.

  criterion_read.py CRITERION_DIR [--since EPOCH] [--missing REASON] [--target ID=TARGET ...] ID...
  criterion_read.py --lines LOG [--missing REASON] [--target ID=TARGET ...] ID...

With --lines, the figures come from `bench-figure {json}` lines that the project's own
micro-benchmarks print (peer/benches, saintmode/benches: median with their spread), read
from the cargo bench log LOG instead of a criterion tree.

For each ID, finds the benchmark whose directory name or `benchmark.json` full_id/title is ID
(`CRITERION_DIR/<ID>/new/` or, inside a group, `CRITERION_DIR/<group>/<ID>/new/`), and prints one
JSON line in the format of bench/run.sh's figures.jsonl:

  {"figure": ID, "kind": "estimate", "unit": "ns", "target": ..., "value": median point estimate,
   "ci": [lower, upper] (the median's confidence interval), "min": ..., "max": ... (fastest and slowest
   per-iteration time among the samples, sample.json times/iters), "extra": {...}}

or {"figure": ID, "kind": "null", "reason": ...} when it is missing, older than --since (a stale
result of an earlier `cargo bench`), or unreadable. Times are criterion's nanoseconds.
"""
import json
import os
import sys


def find_bench_dirs(root):
    """{id: directory holding new/} for every benchmark under root."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if os.path.basename(dirpath) != "new" or "estimates.json" not in filenames:
            continue
        bench_dir = os.path.dirname(dirpath)
        names = {os.path.basename(bench_dir), os.path.relpath(bench_dir, root)}
        try:
            with open(os.path.join(dirpath, "benchmark.json")) as f:
                meta = json.load(f)
            names.update(v for k, v in meta.items() if k in ("full_id", "title", "function_id") and v)
        except (OSError, ValueError):
            pass
        for n in names:
            found.setdefault(n, bench_dir)
    return found


def read_one(bench_dir, since=None):
    """The figure fields for one benchmark directory; raises ValueError with the reason."""
    new = os.path.join(bench_dir, "new")
    est_path = os.path.join(new, "estimates.json")
    if since is not None and os.path.getmtime(est_path) < since:
        raise ValueError(f"stale: {est_path} predates this run's cargo bench")
    with open(est_path) as f:
        est = json.load(f)
    try:
        med = est["median"]
        value = float(med["point_estimate"])
        ci = [float(med["confidence_interval"]["lower_bound"]), float(med["confidence_interval"]["upper_bound"])]
    except (KeyError, TypeError) as e:
        raise ValueError(f"{est_path}: no median estimate ({e})") from None
    out = {"value": value, "ci": ci, "min": None, "max": None,
           "extra": {"mean": est.get("mean", {}).get("point_estimate"),
                     "median_abs_dev": (est.get("median_abs_dev") or {}).get("point_estimate"),
                     "confidence_level": med["confidence_interval"].get("confidence_level")}}
    try:
        with open(os.path.join(new, "sample.json")) as f:
            sample = json.load(f)
        per_iter = [t / i for t, i in zip(sample["times"], sample["iters"]) if i]
        if per_iter:
            out["min"], out["max"] = min(per_iter), max(per_iter)
            out["extra"]["samples"] = len(per_iter)
            out["extra"]["sampling_mode"] = sample.get("sampling_mode")
    except (OSError, ValueError, KeyError, TypeError) as e:
        out["extra"]["spread_reason"] = f"sample.json unreadable: {e}"
    return out


def figures(root, ids, since=None, missing=None, targets=None):
    targets = targets or {}
    dirs = find_bench_dirs(root) if os.path.isdir(root) else {}
    for bid in ids:
        fig = {"figure": bid, "target": targets.get(bid, "")}
        if bid not in dirs:
            fig.update(kind="null", reason=missing or f"no criterion benchmark with ID {bid} under {root}")
        else:
            try:
                fig.update(kind="estimate", unit="ns", **read_one(dirs[bid], since))
                fig["extra"]["source"] = os.path.relpath(dirs[bid], root)
            except (OSError, ValueError) as e:
                fig.update(kind="null", reason=str(e))
        yield fig


def figures_from_lines(lines, ids, missing=None, targets=None):
    """Figures from `bench-figure {json}` lines: value (median), min, max, unit, spread."""
    targets = targets or {}
    seen = {}
    for line in lines:
        if not line.startswith("bench-figure "):
            continue
        try:
            d = json.loads(line[len("bench-figure "):])
            seen[d["figure"]] = d
        except (ValueError, KeyError, TypeError):
            continue
    for bid in ids:
        fig = {"figure": bid, "target": targets.get(bid, "")}
        d = seen.get(bid)
        if d is None:
            fig.update(kind="null", reason=missing or f"no bench-figure line for {bid} in the cargo bench log")
        else:
            fig.update(kind="estimate", unit=d.get("unit", "ns"), value=float(d["value"]), ci=None,
                       min=d.get("min"), max=d.get("max"),
                       extra={"spread": d.get("spread"), "samples": d.get("samples")})
        yield fig


def main(argv):
    root, since, missing, targets, ids, lines = None, None, None, {}, [], None
    it = iter(argv)
    for a in it:
        if a == "--lines":
            lines = next(it)
        elif a == "--since":
            since = float(next(it))
        elif a == "--missing":
            missing = next(it)
        elif a == "--target":
            k, _, v = next(it).partition("=")
            targets[k] = v
        elif root is None:
            root = a
        else:
            ids.append(a)
    if lines is not None:
        # No criterion tree with --lines: every positional argument is an ID.
        ids = ([root] if root is not None else []) + ids
        try:
            with open(lines, errors="replace") as f:
                text = f.read().splitlines()
        except OSError as e:
            text, missing = [], missing or f"cannot read {lines}: {e}"
        for fig in figures_from_lines(text, ids, missing, targets):
            print(json.dumps(fig))
        return
    if root is None or not ids:
        raise SystemExit(__doc__)
    for fig in figures(root, ids, since, missing, targets):
        print(json.dumps(fig))


if __name__ == "__main__":
    main(sys.argv[1:])
