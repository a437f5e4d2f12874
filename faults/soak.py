#!/usr/bin/env python3
"""Soak test: one varnishd with both VMODs under a moderate, paced load for SECONDS, with the
peer destination going down and up and the VCL reloaded (load new, use, cold, discard old)
periodically. Samples RSS, threads and both modules' counters every 2 s into
target/soak/samples.csv, draws target/soak/soak.png, prints one verdict line per check and
ends with `N passed, M failed` (exit 1 if any failed).

  soak.py [SECONDS] [--out DIR]

Setup (127.0.0.1 only):
  * two origins (harness.Destination, scripts/harness/): o1 answers 503 for every 4th object, o2 always 200;
    each wrapped in a saintmode object (threshold 20), both in a directors.random; a 5xx is
    blacklisted for 5 s and retried (so clients still get 200 from o2);
  * one peer destination (harness.Destination, scripts/harness/), down for PEER_DOWN s every PEER_PERIOD s;
    every client PURGE is queued on two named peers: `fwd` (large queue, retries, max_age 12 s)
    and `small` (queue of 10, 3 attempts, max_age 3 s: drops and give-ups are expected);
  * a VCL reload every RELOAD_PERIOD s: vcl.load new, vcl.use new, vcl.state old cold, wait
    for the old VCL's peer queues to be empty (drain_timeout 2 s), take its final counters,
    vcl.discard old (completion is watched by the sampler);
  * paced load: GET_RATE GETs/s over 100 objects and PURGE_RATE PURGEs/s, from a few client
    threads at fixed times (no catch-up bursts beyond the schedule); the total is bounded by
    rate x duration. Every response carries the label of the VCL that handled it (x-vcl),
    so the PURGEs offered to each VCL generation are known exactly.
  * worker pools are fixed (thread_pool_min == thread_pool_max) so that the child's thread
    count only moves with what the VMODs (and Varnish's own fixed threads) do.

Verdict rules (each a PASS/FAIL line):
  child_stable      the child never restarted nor panicked.
  rss_bounded       median RSS of the last third of the samples <= median of the middle third
                    x (1 + RSS_PCT/100) + RSS_SLACK_KB. The first third is warm-up (allocator
                    arenas, storage, TLS/curl state) and is not judged. Medians of thirds are
                    insensitive to a single reload spike; a leak proportional to time or to
                    reloads shows as a steady rise between the middle and last thirds.
  threads_baseline  baseline = min of 5 thread counts taken just before the first reload (boot VCL
                    warm, traffic running). Every sample taken while only one VCL is loaded
                    (MAIN.n_vcl == 1, no discard pending) must be <= baseline + THREAD_SLACK with
                    exactly the baseline's number of peer sender threads (comm "peer-*"), and so
                    must the final count (min of 5) after the load stopped and every discard
                    completed. Samples while an old VCL waits for its discard are not judged:
                    its sender threads legitimately live until the discard event.
  reloads           every reload succeeded, and every vcl.discard completed (its PEER counters
                    gone, which the discard event does) within DISCARD_BOUND s: Varnish's idle
                    worker threads keep a reference to the last VCL they ran for up to 60 s,
                    so a discard completing 0..60 s after the command is normal.
  peer_<obj>        for every VCL generation and peer object, once drained (old generations: cold
                    and drained before discard; the last one: after the load stopped, the peer
                    is up and in_flight + queue_length == 0):
                      queued == sent + failed + expired            (nothing lost in the queue)
                      offered == queued + dropped + refused        (nothing lost on the way in)
                    where offered = PURGE responses labelled with that VCL (each PURGE is queued
                    once per object, one destination each).
  clients           every request was answered (no connection error, no PURGE without label),
                    at most 0.5% of GETs were not 200, and the generator kept its schedule
                    (>= 98% of the scheduled requests sent).
  saintmode         the module was exercised (calls > 0, expired > 0) and the live count never
                    exceeded the number of failing objects.
"""
import argparse
import csv
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support import CaseFailure, Destination, ROOT, Varnishd, http_request, wait_until  # noqa: E402

SAMPLE_EVERY = 2.0
PEER_PERIOD, PEER_DOWN = 20.0, 8.0
RELOAD_PERIOD = 30.0
GET_RATE, PURGE_RATE = 40.0, 5.0
N_OBJECTS, FAIL_EVERY = 100, 4
CLIENTS = 6
RSS_PCT, RSS_SLACK_KB = 10.0, 4096
THREAD_SLACK = 4
DISCARD_BOUND = 180
POOL = 40
PEER_OBJS = ("fwd", "small")
PEER_CTRS = ("queued", "sent", "failed", "expired", "retried", "dropped", "refused", "in_flight",
             "queue_length")
SAINT_CTRS = ("blacklisted", "calls", "refreshed", "expired", "threshold_reached", "threshold_cleared")

VCL = """vcl 4.1;
import peer from "@PEER@";
import saintmode from "@SAINT@";
import directors;

backend o1 { .host = "127.0.0.1"; .port = "@O1@"; .connect_timeout = 1s; }
backend o2 { .host = "127.0.0.1"; .port = "@O2@"; .connect_timeout = 1s; }

sub vcl_init {
    new sm1 = saintmode.saintmode(o1, 20);
    new sm2 = saintmode.saintmode(o2, 20);
    new rnd = directors.random();
    rnd.add_backend(sm1.backend(), 1);
    rnd.add_backend(sm2.backend(), 1);
    new fwd = peer.peer(queue_size = 500, max_attempts = 8, backoff = 0.2s, max_backoff = 2s,
        max_age = 12s, connect_timeout = 0.3s, timeout = 2s, drain_timeout = 2s);
    fwd.add_destination("127.0.0.1", @PP@);
    new small = peer.peer(queue_size = 10, max_attempts = 3, backoff = 0.3s, max_backoff = 1s,
        max_age = 3s, connect_timeout = 0.3s, timeout = 1s, drain_timeout = 1s);
    small.add_destination("127.0.0.1", @PP@);
}

sub vcl_recv {
    if (req.method == "PURGE") {
        if (!req.http.X-Peer-Forwarded) {
            fwd.queue_req();
            small.queue_req();
        }
        return (purge);
    }
}

sub vcl_backend_fetch {
    set bereq.backend = rnd.backend();
}

sub vcl_backend_response {
    if (beresp.status >= 500) {
        saintmode.blacklist(5s);
        return (retry);
    }
    set beresp.ttl = 1s;
    set beresp.grace = 0s;
}

sub vcl_backend_error {
    if (bereq.retries < 3) {
        saintmode.blacklist(5s);
        return (retry);
    }
}

sub vcl_deliver {
    set resp.http.x-vcl = "@LABEL@";
}

sub vcl_synth {
    set resp.http.x-vcl = "@LABEL@";
}
"""


def log(msg):
    print(f"[soak {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Load:
    """Paced client load. Slot j is sent at t0 + j / rate by worker j % CLIENTS; every
    (GET_RATE + PURGE_RATE)-th block has PURGE_RATE PURGEs."""

    def __init__(self, port, duration):
        self.port = port
        self.rate = GET_RATE + PURGE_RATE
        self.total = int(duration * self.rate)
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.offered = {}          # vcl label -> PURGEs answered by it
        self.purge_bad = {}        # status -> count (no label)
        self.get_ok = 0
        self.get_bad = {}
        self.sent = 0
        self.threads = []

    def start(self):
        self.t0 = time.monotonic() + 0.5
        for k in range(CLIENTS):
            t = threading.Thread(target=self._worker, args=(k,), daemon=True)
            t.start()
            self.threads.append(t)

    def _worker(self, k):
        block = int(self.rate)
        for j in range(k, self.total, CLIENTS):
            if self.stop.is_set():
                return
            delay = self.t0 + j / self.rate - time.monotonic()
            if delay > 0 and self.stop.wait(delay):
                return
            obj = (j * 7919) % N_OBJECTS
            is_purge = (j % block) < int(PURGE_RATE)
            if is_purge:
                status, hdrs, _ = http_request(self.port, f"/obj/{obj}", method="PURGE", timeout=15)
                label = hdrs.get("x-vcl")
                with self.lock:
                    self.sent += 1
                    if status == 200 and label:
                        self.offered[label] = self.offered.get(label, 0) + 1
                    else:
                        self.purge_bad[status] = self.purge_bad.get(status, 0) + 1
            else:
                status, _, _ = http_request(self.port, f"/obj/{obj}", timeout=15)
                with self.lock:
                    self.sent += 1
                    if status == 200:
                        self.get_ok += 1
                    else:
                        self.get_bad[status] = self.get_bad.get(status, 0) + 1

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def snapshot(self):
        with self.lock:
            return (dict(self.offered), dict(self.purge_bad), self.get_ok, dict(self.get_bad), self.sent)


def split_counters(stats, prefix, ctrs):
    """{vcl: {obj: {ctr: value}}} from PREFIX.<vcl>.<obj>.<ctr> (vcl names have no dots here)."""
    out = {}
    for k, val in stats.items():
        if not k.startswith(prefix + "."):
            continue
        parts = k.split(".")
        if len(parts) != 4 or parts[3] not in ctrs:
            continue
        out.setdefault(parts[1], {}).setdefault(parts[2], {})[parts[3]] = val
    return out


class Soak:
    def __init__(self, seconds, out_dir):
        self.seconds = seconds
        self.out = out_dir
        self.lock = threading.Lock()
        self.final = {}            # vcl label -> {obj: counters} taken when drained
        self.saint_final = {}      # vcl label -> {obj: counters} taken before it went cold
        self.reload_log = []       # dicts per reload
        self.reload_errors = []
        self.thread_checks = []    # (t, threads, peer_threads) with a single VCL loaded
        self.pending_discards = {} # vcl label -> time of vcl.discard
        self.discard_times = {}    # vcl label -> seconds until the discard completed
        self.late_discards = []
        self.active = "boot"
        self.reloads = 0
        self.peer_is_down = False
        self.stop = threading.Event()
        self.baseline_threads = None
        self.baseline_peer_threads = None
        self.max_saint_live = 0

    # ------------------------------------------------------------------ helpers
    def vcl_text(self, label):
        return (VCL.replace("@O1@", str(self.o1.port)).replace("@O2@", str(self.o2.port))
                .replace("@PP@", str(self.peer.port)).replace("@LABEL@", label))

    def child_threads(self):
        pid = self.v.child_pid()
        total = peer = 0
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                total += 1
                try:
                    with open(f"/proc/{pid}/task/{tid}/comm") as f:
                        if f.read().startswith("peer-"):
                            peer += 1
                except OSError:
                    pass
        except OSError:
            return None, None
        return total, peer

    def min_threads(self, n=5, gap=0.4):
        vals = []
        for i in range(n):
            vals.append(self.child_threads())
            if i + 1 < n:
                time.sleep(gap)
        vals = [v for v in vals if v[0] is not None]
        if not vals:
            return None, None
        return min(v[0] for v in vals), min(v[1] for v in vals)

    # ------------------------------------------------------------------ fault threads
    def flapper(self):
        t0 = time.monotonic()
        k = 0
        while not self.stop.is_set() and k < 100000:
            k += 1
            # Up for PEER_PERIOD - PEER_DOWN, then down for PEER_DOWN.
            if self.stop.wait(max(0.0, t0 + k * PEER_PERIOD - PEER_DOWN - time.monotonic())):
                break
            self.peer.down()
            self.peer_is_down = True
            self.peer_downs += 1
            if self.stop.wait(max(0.0, t0 + k * PEER_PERIOD - time.monotonic())):
                break
            self.peer.up()
            self.peer_is_down = False
        self.peer.up()
        self.peer_is_down = False

    def drained(self, label):
        segs = split_counters(self.v.stats(f"PEER.{label}.*"), "PEER", PEER_CTRS).get(label, {})
        if set(segs) != set(PEER_OBJS):
            return None
        for c in segs.values():
            if c.get("in_flight", 1) or c.get("queue_length", 1):
                return None
            if c["queued"] != c["sent"] + c["failed"] + c["expired"]:
                return None
        return segs

    def reload_once(self, idx):
        old, new = self.active, f"r{idx}"
        t0 = time.monotonic()
        rec = {"t": round(t0 - self.t_start, 1), "old": old, "new": new}
        path = self.v.write_vcl(self.vcl_text(new))
        self.v.adm("vcl.load", new, path)
        self.v.adm("vcl.use", new)
        with self.lock:
            self.active = new
        # Saintmode counters are hidden once cold: keep the old VCL's last values.
        sm = split_counters(self.v.stats(f"SAINTMODE.{old}.*"), "SAINTMODE", SAINT_CTRS).get(old, {})
        # Requests still running on the old VCL finish on it; let them, then go cold.
        time.sleep(1.0)
        self.v.adm("vcl.state", old, "cold")
        # drain_timeout is 2 s; the sender threads stop within 0.1 s of it, the rest is margin.
        segs = wait_until(lambda: self.drained(old), 20, 0.2)
        rec["drain_s"] = round(time.monotonic() - t0, 1)
        if not segs:
            # Take whatever is there, the accounting check will report it.
            segs = split_counters(self.v.stats(f"PEER.{old}.*"), "PEER", PEER_CTRS).get(old, {})
            self.reload_errors.append(f"{old}: peer queues not drained 20 s after vcl.use {new}")
        with self.lock:
            self.final[old] = segs
            self.saint_final[old] = sm
        rc, out = self.v.adm_rc("vcl.discard", old, timeout=60)
        if rc != 0:
            self.reload_errors.append(f"vcl.discard {old}: rc={rc} {out.strip()[:200]}")
        else:
            # Completion is asynchronous: an idle worker thread keeps a reference to the last
            # VCL it ran for up to 60 s (Varnish's pool), so the sampler watches for it.
            with self.lock:
                self.pending_discards[old] = time.monotonic()
        self.reload_log.append(rec)
        self.reloads += 1
        log(f"reload {old} -> {new}: drained+final in {rec['drain_s']} s, "
            f"peer {'down' if self.peer_is_down else 'up'}, discards pending {sorted(self.pending_discards)}")

    def watch_discards(self, stats):
        """Marks pending discards complete once their PEER counters are gone (removed by the
        discard event); records how long it took."""
        now = time.monotonic()
        live = {k.split(".")[1] for k in stats if k.startswith("PEER.")}
        with self.lock:
            for label, t0 in list(self.pending_discards.items()):
                if label not in live:
                    self.discard_times[label] = round(now - t0, 1)
                    del self.pending_discards[label]
                elif now - t0 > DISCARD_BOUND and label not in self.late_discards:
                    self.late_discards.append(label)
                    self.reload_errors.append(f"{label}: discard not complete {DISCARD_BOUND} s after vcl.discard")

    def reloader(self):
        # Baseline before the first reload: the boot VCL warm, traffic running.
        for idx in range(100000):
            if self.stop.wait(max(0.0, self.t_start + (idx + 1) * RELOAD_PERIOD - 3 - time.monotonic())):
                return
            if idx == 0:
                self.baseline_threads, self.baseline_peer_threads = self.min_threads()
                log(f"baseline threads {self.baseline_threads} (peer {self.baseline_peer_threads})")
            if self.stop.wait(max(0.0, self.t_start + (idx + 1) * RELOAD_PERIOD - time.monotonic())):
                return
            if self.stop.is_set() or time.monotonic() - self.t_start > self.seconds - 10:
                return
            try:
                self.reload_once(idx)
            except (CaseFailure, OSError, ValueError) as e:
                self.reload_errors.append(f"reload {idx}: {e}")
                log(f"reload {idx} failed: {e}")

    # ------------------------------------------------------------------ sampling
    def totals(self, stats):
        """Cumulative peer counters over every generation (final snapshots for the finished
        ones, live values for the others) and the active VCL's saintmode counters."""
        live = split_counters(stats, "PEER", PEER_CTRS)
        with self.lock:
            gens = dict(live)
            gens.update(self.final)
            saint_done = dict(self.saint_final)
        peer = {c: 0 for c in PEER_CTRS}
        per_obj = {o: {c: 0 for c in PEER_CTRS} for o in PEER_OBJS}
        for label, objs in gens.items():
            for o, cs in objs.items():
                for c in PEER_CTRS:
                    if c in ("in_flight", "queue_length") and label in self.final:
                        continue
                    peer[c] += cs.get(c, 0)
                    if o in per_obj:
                        per_obj[o][c] += cs.get(c, 0)
        slive = split_counters(stats, "SAINTMODE", SAINT_CTRS)
        saint = {c: 0 for c in SAINT_CTRS}
        sgens = dict(saint_done)
        for label, objs in slive.items():
            if label not in saint_done:
                sgens[label] = objs
        for label, objs in sgens.items():
            for cs in objs.values():
                for c in SAINT_CTRS:
                    if c == "blacklisted":
                        continue
                    saint[c] += cs.get(c, 0)
        # The gauge: live entries of the visible (warm) VCLs.
        saint["blacklisted"] = sum(cs.get("blacklisted", 0) for objs in slive.values() for cs in objs.values())
        # Per VCL: while a reload is under way two VCLs are warm, each with its own sm1.
        sm1 = max((objs.get("sm1", {}).get("blacklisted", 0) for objs in slive.values()), default=0)
        self.max_saint_live = max(self.max_saint_live, sm1)
        return peer, per_obj, saint

    def sample(self, writer):
        stats = self.v.stats()
        thr, pthr = self.child_threads()
        peer, per_obj, saint = self.totals(stats)
        self.watch_discards(stats)
        if (stats.get("MAIN.n_vcl") == 1 and stats.get("MAIN.n_vcl_discard") == 0 and not self.pending_discards
                and self.reloads > 0 and thr is not None):
            self.thread_checks.append((round(time.monotonic() - self.t_start, 1), thr, pthr))
        offered, purge_bad, get_ok, get_bad, sent = self.load.snapshot()
        row = {"t": round(time.monotonic() - self.t_start, 1), "rss_kb": self.v.rss_kb(),
               "threads": thr, "peer_threads": pthr, "active_vcl": self.active,
               "reloads": self.reloads, "peer_down": int(self.peer_is_down),
               "client_sent": sent, "purge_offered": sum(offered.values()), "get_ok": get_ok,
               "client_errors": sum(purge_bad.values()) + sum(get_bad.values())}
        for c in PEER_CTRS:
            row[f"peer_{c}"] = peer[c]
        for o in PEER_OBJS:
            for c in ("queued", "sent", "failed", "expired", "dropped"):
                row[f"{o}_{c}"] = per_obj[o][c]
        for c in SAINT_CTRS:
            row[f"saint_{c}"] = saint[c]
        row["n_vcl"] = stats.get("MAIN.n_vcl")
        row["n_vcl_discard"] = stats.get("MAIN.n_vcl_discard")
        if writer[0] is None:
            writer[0] = csv.DictWriter(writer[1], fieldnames=list(row))
            writer[0].writeheader()
        writer[0].writerow(row)
        writer[1].flush()
        return row

    # ------------------------------------------------------------------ run
    def run(self):
        os.makedirs(self.out, exist_ok=True)
        self.o1 = Destination(status_for=lambda p: 503 if p.startswith("/obj/") and
                              int(p.split("/")[2] or 0) % FAIL_EVERY == 0 else 200)
        self.o2 = Destination()
        self.peer = Destination()
        self.peer_downs = 0
        for d in (self.o1, self.o2, self.peer):
            d.up()
        params = ("vcl_cooldown=1", "thread_pools=2", f"thread_pool_min={POOL}",
                  f"thread_pool_max={POOL}", "max_retries=4")
        self.v = Varnishd("soak", self.vcl_text("boot"), params=params)
        rows = []
        try:
            self.child0 = self.v.child_pid()
            self.t_start = time.monotonic()
            self.load = Load(self.v.port, self.seconds)
            self.load.start()
            ts = [threading.Thread(target=self.flapper, daemon=True),
                  threading.Thread(target=self.reloader, daemon=True)]
            for t in ts:
                t.start()
            with open(os.path.join(self.out, "samples.csv"), "w", newline="") as f:
                writer = [None, f]
                n = int(self.seconds / SAMPLE_EVERY) + 1
                for i in range(n):
                    delay = self.t_start + i * SAMPLE_EVERY - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    rows.append(self.sample(writer))
                    if i % 15 == 0:
                        r = rows[-1]
                        log(f"t={r['t']}s rss={r['rss_kb']}kB threads={r['threads']} vcl={r['active_vcl']} "
                            f"peer q/s/f/e/d={r['peer_queued']}/{r['peer_sent']}/{r['peer_failed']}/"
                            f"{r['peer_expired']}/{r['peer_dropped']} saint live={r['saint_blacklisted']} "
                            f"calls={r['saint_calls']}")
                # Let the load finish its schedule (bounded), then stop it and the faults; the
                # peer stays up.
                self.load.join(10)
                self.load.stop.set()
                self.stop.set()
                self.load.join(30)
                for t in ts:
                    t.join(120)
                self.peer.up()
                # Drain the active generation with the peer up (max_age 12 s bounds it).
                label = self.active
                segs = wait_until(lambda: self.drained(label), 60, 0.5)
                if not segs:
                    segs = split_counters(self.v.stats(f"PEER.{label}.*"), "PEER", PEER_CTRS).get(label, {})
                    self.reload_errors.append(f"{label}: peer queues not drained 60 s after the load stopped")
                with self.lock:
                    self.final[label] = segs
                # Every discard completes (bounded) before the final thread count.
                wait_until(lambda: (self.watch_discards(self.v.stats()) or not self.pending_discards),
                           DISCARD_BOUND, 1.0)
                self.watch_discards(self.v.stats())
                time.sleep(2)
                self.end_threads = self.min_threads()
                rows.append(self.sample(writer))
            return self.verdicts(rows)
        finally:
            self.stop.set()
            self.load.stop.set() if hasattr(self, "load") else None
            self.v.stop()
            for d in (self.o1, self.o2, self.peer):
                d.close()

    # ------------------------------------------------------------------ verdicts
    def verdicts(self, rows):
        results = []

        def verdict(name, ok, figs):
            results.append(ok)
            print(f"{'PASS' if ok else 'FAIL'} {name}: {figs}", flush=True)

        panic = self.v.panicked()
        verdict("child_stable", self.v.child_pid() == self.child0 and not panic,
                f"child pid {self.child0} -> {self.v.child_pid()}" + (f" PANIC {panic[:300]}" if panic else ""))

        rss = [r["rss_kb"] for r in rows if r["rss_kb"]]
        third = len(rss) // 3
        if third >= 3:
            mid, last = statistics.median(rss[third:2 * third]), statistics.median(rss[2 * third:])
            bound = mid * (1 + RSS_PCT / 100) + RSS_SLACK_KB
            verdict("rss_bounded", last <= bound,
                    f"start {rss[0]} kB, max {max(rss)} kB, end {rss[-1]} kB; median middle third {mid:.0f} kB, "
                    f"last third {last:.0f} kB (bound {bound:.0f} kB = +{RSS_PCT:.0f}% +{RSS_SLACK_KB} kB)")
        else:
            verdict("rss_bounded", False, f"only {len(rss)} RSS samples")

        base = self.baseline_threads
        bad = [(t, n) for t, n, _ in self.thread_checks if base is None or n is None or n > base + THREAD_SLACK]
        peer_bad = [(t, p) for t, _, p in self.thread_checks if p != self.baseline_peer_threads]
        end_thr, end_pthr = self.end_threads
        ok = (base is not None and not bad and not peer_bad and end_thr is not None and end_thr <= base + THREAD_SLACK
              and end_pthr == self.baseline_peer_threads)
        thr_series = [r["threads"] for r in rows if r["threads"]]
        verdict("threads_baseline", ok,
                f"baseline {base} (peer {self.baseline_peer_threads}), {len(self.thread_checks)} samples with one VCL "
                f"min..max {min((n for _, n, _ in self.thread_checks), default='-')}.."
                f"{max((n for _, n, _ in self.thread_checks), default='-')}, end {end_thr} (peer {end_pthr}), "
                f"sampled start {thr_series[0] if thr_series else '-'} max {max(thr_series) if thr_series else '-'}"
                + (f"; over baseline+{THREAD_SLACK}: {bad[:5]}" if bad else "")
                + (f"; peer threads != {self.baseline_peer_threads}: {peer_bad[:5]}" if peer_bad else ""))

        expected = max(1, int(self.seconds // RELOAD_PERIOD) - 1)
        dts = sorted(self.discard_times.values())
        verdict("reloads", not self.reload_errors and self.reloads >= expected and
                len(self.discard_times) == self.reloads,
                f"{self.reloads} reloads (expected >= {expected}), {len(dts)} discards completed "
                f"(median {round(statistics.median(dts), 1) if dts else '-'} s, max {dts[-1] if dts else '-'} s, "
                f"bound {DISCARD_BOUND} s), peer down {self.peer_downs} times, "
                f"max drain {max((r['drain_s'] for r in self.reload_log), default='-')} s"
                + (f"; errors: {self.reload_errors[:4]}" if self.reload_errors else ""))

        offered, purge_bad, get_ok, get_bad, sent = self.load.snapshot()
        for obj in PEER_OBJS:
            problems = []
            tot = {c: 0 for c in PEER_CTRS}
            for label in sorted(set(self.final) | set(offered)):
                c = self.final.get(label, {}).get(obj)
                off = offered.get(label, 0)
                if c is None:
                    problems.append(f"{label}: no final counters (offered {off})")
                    continue
                for k in PEER_CTRS:
                    tot[k] += c.get(k, 0)
                if c["queued"] != c["sent"] + c["failed"] + c["expired"]:
                    problems.append(f"{label}: queued {c['queued']} != sent+failed+expired "
                                    f"{c['sent']}+{c['failed']}+{c['expired']}")
                if off != c["queued"] + c["dropped"] + c["refused"]:
                    problems.append(f"{label}: offered {off} != queued+dropped+refused "
                                    f"{c['queued']}+{c['dropped']}+{c['refused']}")
            verdict(f"peer_{obj}", not problems,
                    f"{len(self.final)} generations, offered {sum(offered.values())}, queued {tot['queued']}, "
                    f"sent {tot['sent']}, failed {tot['failed']}, expired {tot['expired']}, retried {tot['retried']}, "
                    f"dropped {tot['dropped']}, refused {tot['refused']}"
                    + (f"; {len(problems)} violations: {problems[:4]}" if problems else ""))

        n_get = get_ok + sum(get_bad.values())
        bad_get = sum(v for k, v in get_bad.items() if k != 0)
        conn_err = get_bad.get(0, 0) + sum(purge_bad.values())
        verdict("clients", conn_err == 0 and bad_get <= 0.005 * max(1, n_get)
                and sent >= 0.98 * self.load.total,
                f"{sent}/{self.load.total} requests sent ({n_get} GET, {sum(offered.values()) + sum(purge_bad.values())} "
                f"PURGE), GET 200 {get_ok}, GET other {dict((k, v) for k, v in get_bad.items() if k)}, "
                f"unanswered/unlabelled {conn_err} {purge_bad or ''}")

        last = rows[-1]
        failing = N_OBJECTS // FAIL_EVERY
        verdict("saintmode", last["saint_calls"] > 0 and last["saint_expired"] > 0 and self.max_saint_live <= failing,
                f"calls {last['saint_calls']}, refreshed {last['saint_refreshed']}, expired {last['saint_expired']}, "
                f"threshold reached/cleared {last['saint_threshold_reached']}/{last['saint_threshold_cleared']}, "
                f"max live on sm1 {self.max_saint_live} (<= {failing} failing objects), end live {last['saint_blacklisted']}")
        return results


def plot(out_dir):
    """Draws soak.png from samples.csv; returns the path or an error string."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        return f"no matplotlib ({e})"
    with open(os.path.join(out_dir, "samples.csv")) as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return "no samples"

    def col(name, scale=1.0):
        return [float(r[name]) * scale if r[name] not in ("", "None") else float("nan") for r in rows]

    # The last row is the final sample, taken after the load stopped and the queues drained:
    # drawn as a marker, not joined to the run by a line.
    t = col("t")
    run, end = slice(0, max(1, len(t) - 1)), len(t) - 1
    fig, ax = plt.subplots(4, 1, figsize=(12, 13), sharex=True)
    down = col("peer_down")
    reloads = col("reloads")
    for a in ax:
        for i in range(1, len(t) - 1):
            if down[i]:
                a.axvspan(t[i - 1], t[i], color="0.88", lw=0)
            if reloads[i] > reloads[i - 1]:
                a.axvline(t[i], color="tab:purple", lw=0.8, alpha=0.6)
        a.grid(True, alpha=0.3)

    def draw(a, name, scale=1.0, **kw):
        y = col(name, scale)
        line, = a.plot(t[run], y[run], **kw)
        a.plot([t[end]], [y[end]], marker="o", color=line.get_color(), ls="none")
        return line

    draw(ax[0], "rss_kb", 1 / 1024, color="tab:blue")
    ax[0].set_ylabel("child RSS (MiB)")
    ax[0].set_title("varnishd soak: grey = peer down, purple = VCL reload, dot = final sample (drained)")
    l1 = draw(ax[1], "threads", color="tab:green", label="child threads (left)")
    ax[1].set_ylabel("child threads")
    a2 = ax[1].twinx()
    l2 = draw(a2, "peer_threads", color="tab:orange", ls="--", label="peer-* sender threads (right)")
    pmax = max((v for v in col("peer_threads") if v == v), default=2)
    a2.set_ylim(0, pmax * 3)
    a2.set_ylabel("peer-* threads", color="tab:orange")
    ax[1].legend(handles=[l1, l2], loc="upper left")
    for c, colr in (("queued", "black"), ("sent", "tab:green"), ("failed", "tab:red"),
                    ("expired", "tab:orange"), ("dropped", "tab:gray")):
        draw(ax[2], f"peer_{c}", label=c, color=colr)
    ax[2].set_ylabel("peer counters\n(cumulative, all VCLs)")
    ax[2].legend(loc="upper left", ncol=5)
    l3 = draw(ax[3], "saint_blacklisted", color="tab:red", label="blacklisted (live, warm VCLs; left)")
    ax[3].set_ylabel("saintmode blacklisted")
    a3 = ax[3].twinx()
    l4 = draw(a3, "saint_calls", color="tab:blue", lw=1, label="calls (cumulative; right)")
    a3.set_ylabel("saintmode calls", color="tab:blue")
    ax[3].legend(handles=[l3, l4], loc="upper left")
    ax[3].set_xlabel("seconds")
    fig.tight_layout()
    path = os.path.join(out_dir, "soak.png")
    fig.savefig(path, dpi=80)
    return path


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("seconds", nargs="?", type=int, default=600)
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "soak"))
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args()
    if args.plot_only:
        print(plot(args.out))
        return 0
    seconds = max(60, min(args.seconds, 7200))
    log(f"{seconds} s: GET {GET_RATE}/s + PURGE {PURGE_RATE}/s, peer down {PEER_DOWN} s every {PEER_PERIOD} s, "
        f"reload every {RELOAD_PERIOD} s; output in {args.out}")
    try:
        results = Soak(seconds, args.out).run()
    except CaseFailure as e:
        print(f"FAIL setup: {e}")
        results = [False]
    png = plot(args.out)
    log(f"samples: {os.path.join(args.out, 'samples.csv')}, plot: {png}")
    passed = sum(1 for r in results if r)
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
