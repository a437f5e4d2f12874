#!/usr/bin/env python3
"""Run one load generator and bill the CPU it caused: the measured varnishd child (utime+stime from
/proc/<pid>/stat, and per thread name from /proc/<pid>/task/*/stat) and the load generator itself.

  measure.py [--pid CHILD] [--timeout S] [--append FILE --tag K=V ...] -- wrk -t2 -c16 -d1s URL
  measure.py snap PID          one snapshot as JSON: total ticks, ticks and schedstat ns per thread name

Prints one JSON line: {"rps", "requests", "non2xx", "socket_errors", "gen_cpu_s", "child_ticks",
"threads": {comm: ticks}, "child_cpu_us_per_req", "gen_cpu_us_per_req", "clk_tck"}. Thread names are
grouped with their trailing digits stripped. With --append, the record (plus the tags) is appended
to FILE and only "RPS CHILD_CPU_US_PER_REQ" is printed. Thread names are (cache-worker, peer-0.0-default -> as is). The load
generator's CPU time comes from os.wait4() (its own rusage), so it is exact and costs nothing.
"""
import json
import os
import re
import subprocess
import sys
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")


def stat_ticks(path):
    """utime + stime (fields 14 and 15) of a /proc stat file, or None when the task is gone."""
    try:
        with open(path) as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rfind(")") + 2:].split()  # comm may hold spaces and parentheses
    return int(rest[11]) + int(rest[12])


def sched_ns(path):
    """CPU time in ns from a /proc schedstat file (exact, where stat counts 10 ms ticks), or None."""
    try:
        with open(path) as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def snapshot(pid):
    """{"total": ticks of the whole process, "threads": {tid: (comm, ticks, schedstat ns)}}"""
    total = stat_ticks(f"/proc/{pid}/stat")
    threads = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tids = []
    for tid in tids:
        t = stat_ticks(f"/proc/{pid}/task/{tid}/stat")
        if t is None:
            continue
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:
            continue
        threads[tid] = (comm, t, sched_ns(f"/proc/{pid}/task/{tid}/schedstat"))
    return {"total": total, "threads": threads}


def group_name(comm):
    # Varnish names its threads "cache-worker", "cache-acceptor"...; peer senders "peer-<lane>.<n>-<name>".
    return comm if comm.startswith("peer-") else re.sub(r"\d+$", "", comm)


def delta(a, b, field=1):
    """Ticks (field 1) or schedstat ns (field 2) per thread-name group between two snapshots
    (threads born in between count from 0)."""
    out = {}
    for tid, cur in b["threads"].items():
        prev = a["threads"].get(tid, (cur[0], 0, 0))
        if cur[field] is None or prev[field] is None:
            continue
        g = group_name(cur[0])
        out[g] = out.get(g, 0) + (cur[field] - prev[field])
    return {k: v for k, v in sorted(out.items()) if v}


def parse_wrk(text):
    def grab(pattern, conv=float):
        m = re.search(pattern, text, re.M)
        return conv(m.group(1)) if m else None

    sockerr = 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        sockerr = sum(int(x) for x in m.groups())
    return {
        "rps": grab(r"^Requests/sec:\s+([\d.]+)"),
        "requests": grab(r"^\s*(\d+) requests in", int) or 0,
        "non2xx": grab(r"Non-2xx or 3xx responses:\s+(\d+)", int) or 0,
        "socket_errors": sockerr,
    }


def main():
    args = sys.argv[1:]
    if args and args[0] == "snap":
        s = snapshot(int(args[1]))
        empty = {"threads": {}}
        print(json.dumps({"total": s["total"], "threads": delta(empty, s), "threads_ns": delta(empty, s, 2)}))
        return
    pid, timeout, append, tags = None, 120.0, None, {}
    while args and args[0] != "--":
        if args[0] == "--pid":
            pid = int(args[1]) if args[1] else None
            args = args[2:]
        elif args[0] == "--append":
            append = args[1]
            args = args[2:]
        elif args[0] == "--tag":
            k, _, v = args[1].partition("=")
            tags[k] = int(v) if v.isdigit() else v
            args = args[2:]
        elif args[0] == "--timeout":
            timeout = float(args[1])
            args = args[2:]
        else:
            raise SystemExit(f"measure.py: unknown option {args[0]}")
    cmd = args[1:]
    before = snapshot(pid) if pid else None
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    out = b""
    os.set_blocking(proc.stdout.fileno(), False)
    status = rusage = None
    while True:
        try:
            chunk = proc.stdout.read()
            if chunk:
                out += chunk
        except BlockingIOError:
            pass
        wpid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
        if wpid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            _, status, rusage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    try:
        rest = proc.stdout.read()
        out += rest or b""
    except BlockingIOError:
        pass
    after = snapshot(pid) if pid else None
    text = out.decode(errors="replace")
    rec = parse_wrk(text)
    rec["gen_cpu_s"] = round(rusage.ru_utime + rusage.ru_stime, 4)
    rec["clk_tck"] = CLK_TCK
    n = rec["requests"]
    rec["gen_cpu_us_per_req"] = round(rec["gen_cpu_s"] * 1e6 / n, 3) if n else None
    if before and after and before["total"] is not None and after["total"] is not None:
        ticks = after["total"] - before["total"]
        rec["child_ticks"] = ticks
        rec["threads"] = delta(before, after)
        rec["child_cpu_us_per_req"] = round(ticks * 1e6 / CLK_TCK / n, 3) if n else None
        # The same from the threads' schedstat run time: exact where a slow run is a few ticks.
        ns = sum(delta(before, after, 2).values())
        rec["child_cpu_us_per_req_schedstat"] = round(ns / 1e3 / n, 3) if n and ns else None
    if rec["rps"] is None:
        rec["error"] = text.strip().splitlines()[-1][:200] if text.strip() else f"exit status {status}"
    rec.update(tags)
    if append:  # one python start per run instead of three: the harness only needs two numbers back
        with open(append, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(rec["rps"] or 0, rec.get("child_cpu_us_per_req"))
    else:
        print(json.dumps(rec))


if __name__ == "__main__":
    main()
