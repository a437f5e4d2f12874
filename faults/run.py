#!/usr/bin/env python3
"""The fault suite: each case drives a real varnishd with both VMODs through a fault and checks
counts and invariants. Prints one verdict line per case (`PASS <case>: figures` or
`FAIL <case>: why; figures`) and ends with `N passed, M failed`.

  run.py [--fast] [--only NAME[,NAME]]

--fast: fewer requests/cycles and no timing assertions (latency is reported, not judged).
"""
import argparse
import os
import random
import signal
import subprocess
import sys
import threading
import time
import traceback

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support import (CaseFailure, Destination, ROOT, Varnishd, check, http_request, parallel,  # noqa: E402
                     percentile, wait_until)
from harness import PortHold  # noqa: E402  (support put scripts/ on the path)

FAST = False
FIG = {}


def fig(**kw):
    FIG.update(kw)


def peer_counts(v, vcl, obj):
    s = v.stats(f"PEER.{vcl}.{obj}.*")
    p = f"PEER.{vcl}.{obj}."
    return {k[len(p):]: val for k, val in s.items() if k.startswith(p)}


def accounting(c, attempts=None):
    """The peer accounting identities; returns a list of violations."""
    bad = []
    finished = c["sent"] + c["failed"] + c["expired"]
    if c["queued"] != finished + c["in_flight"] + c["queue_length"]:
        bad.append(f"queued {c['queued']} != sent+failed+expired+in_flight+queue_length "
                   f"{finished}+{c['in_flight']}+{c['queue_length']}")
    if attempts is not None and attempts != c["queued"] + c["dropped"] + c["refused"]:
        bad.append(f"offered {attempts} != queued+dropped+refused "
                   f"{c['queued']}+{c['dropped']}+{c['refused']}")
    return bad


# --------------------------------------------------------------------------- (a) flapping

FLAP_VCL = """vcl 4.1;
import peer from "@PEER@";
backend be none;
sub vcl_init {
    # Retries for as long as it takes: every request must end as sent.
    new steady = peer.peer(queue_size = 5000, max_attempts = 1000, backoff = 0.05s,
        max_backoff = 0.3s, max_age = 600s, connect_timeout = 0.5s, timeout = 2s);
    steady.add_destination("127.0.0.1", @PORT@);
    # Small queue, short life: drops and expiries/failures must be counted, never lost.
    new small = peer.peer(queue_size = 20, max_attempts = 3, backoff = 0.2s,
        max_backoff = 0.4s, max_age = 1s, connect_timeout = 0.3s, timeout = 1s);
    small.add_destination("127.0.0.1", @PORT@);
}
sub vcl_recv {
    if (req.url ~ "^/q/") {
        steady.queue_req();
        small.queue_req();
    }
    return (synth(200));
}
sub vcl_synth {
    set resp.http.pending = steady.pending() + small.pending();
}
"""


def case_flapping():
    n_req = 300 if FAST else 3000
    flap_for = 12 if FAST else 60
    half = 1.5 if FAST else 2.5
    dest = Destination()
    v = Varnishd("flap", FLAP_VCL.replace("@PORT@", str(dest.port)))
    try:
        dest.up()
        stop = threading.Event()
        flips = [0]

        def flapper():
            end = time.monotonic() + flap_for
            while time.monotonic() < end and not stop.is_set():
                dest.down()
                flips[0] += 1
                if stop.wait(half):
                    break
                dest.up()
                if stop.wait(half):
                    break
            dest.up()

        t = threading.Thread(target=flapper, daemon=True)
        t.start()
        # Clients spread over the flapping period.
        gap = flap_for * 0.8 / n_req
        t0 = time.monotonic()

        def client(i):
            # Pace the offered load over the flapping window.
            delay = t0 + i * gap - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            return http_request(v.port, f"/q/{i}", method="PURGE", timeout=30)[0]

        statuses = parallel(8, client, list(range(n_req)), timeout=flap_for + 120)
        t.join(flap_for + 30)
        stop.set()
        dest.up()
        answered = sum(1 for s in statuses if s == 200)
        drained = wait_until(lambda: (v.get("/pending")[1].get("pending") == "0"), 120, 0.5)
        st = peer_counts(v, "boot", "steady")
        sm = peer_counts(v, "boot", "small")
        fig(requests=n_req, answered=answered, flips=flips[0], drained=bool(drained),
            steady=f"q{st['queued']}/s{st['sent']}/f{st['failed']}/x{st['expired']}/d{st['dropped']}/r{st['retried']}",
            small=f"q{sm['queued']}/s{sm['sent']}/f{sm['failed']}/x{sm['expired']}/d{sm['dropped']}/r{sm['retried']}",
            dest_received=dest.count("/q/"))
        check(answered == n_req, f"{n_req - answered} client requests not answered 200")
        check(drained, "queues did not drain to 0 within 120 s after the peer came back")
        bad = accounting(st, n_req) + accounting(sm, n_req)
        check(not bad, "; ".join(bad))
        check(st["queue_length"] == 0 and st["in_flight"] == 0, "steady: gauges not 0 after drain")
        check(st["sent"] == n_req, f"steady: sent {st['sent']} != {n_req} (infinite retries, long max_age)")
        check(st["retried"] > 0, "steady: no retry although the peer flapped")
        check(dest.count("/q/") >= st["sent"] + sm["sent"], "destination saw fewer requests than counted sent")
        check(not v.panicked(), "child panicked")
    finally:
        v.stop()
        dest.close()


# --------------------------------------------------------------------------- (b) blackhole

BLACKHOLE_VCL = """vcl 4.1;
import peer from "@PEER@";
backend be none;
sub vcl_init {
    new hole = peer.peer(queue_size = 100000, concurrency = 2, max_attempts = 2, backoff = 0.1s,
        max_backoff = 0.1s, max_age = 5s, connect_timeout = 0.3s, timeout = 0.3s);
    hole.add_destination("127.0.0.1", @PORT@);
}
sub vcl_recv {
    if (req.url ~ "^/q/") {
        hole.queue_req();
    }
    return (synth(200));
}
sub vcl_synth {
    set resp.http.pending = hole.pending();
}
"""


def case_blackhole():
    n_req = 200 if FAST else 1000
    dest = Destination()
    dest.up(mode="blackhole")
    v = Varnishd("hole", BLACKHOLE_VCL.replace("@PORT@", str(dest.port)))
    try:
        def get(path):
            return http_request(v.port, path, method="PURGE", timeout=30)

        base = parallel(4, lambda i: get(f"/base/{i}"), list(range(n_req)), timeout=120)
        loaded = parallel(4, lambda i: get(f"/q/{i}"), list(range(n_req)), timeout=120)
        lat_base = [r[2] for r in base if r and r[0] == 200]
        lat_hole = [r[2] for r in loaded if r and r[0] == 200]
        answered = len(lat_hole)
        # Timeouts fire: within 2 attempts x 0.5 s each request ends as failed.
        c0 = peer_counts(v, "boot", "hole")
        fired = wait_until(lambda: peer_counts(v, "boot", "hole")["failed"] > 0, 30)
        # Whatever the timeouts did not end yet expires after max_age (5 s).
        drained = wait_until(lambda: v.get("/pending")[1].get("pending") == "0", 120, 0.5)
        c = peer_counts(v, "boot", "hole")
        main = v.stats("MAIN.sess_drop*")
        p50b, p99b = percentile(lat_base, 50) * 1e3, percentile(lat_base, 99) * 1e3
        p50, p99 = percentile(lat_hole, 50) * 1e3, percentile(lat_hole, 99) * 1e3
        fig(requests=n_req, answered=answered, base_p50_ms=round(p50b, 2), base_p99_ms=round(p99b, 2),
            hole_p50_ms=round(p50, 2), hole_p99_ms=round(p99, 2),
            pending_after_clients=c0["queue_length"] + c0["in_flight"],
            queued=c["queued"], failed=c["failed"], expired=c["expired"], retried=c["retried"], sent=c["sent"],
            sess_dropped=main.get("MAIN.sess_dropped"))
        check(answered == n_req, f"{n_req - answered} client requests not answered")
        check(fired, "no request failed within 30 s: timeouts did not fire")
        check(c["retried"] > 0, "no retry counted")
        check(drained, "queue did not drain (timeouts should end every request)")
        check(c["sent"] == 0, "sent > 0 to a blackhole")
        bad = accounting(c, n_req)
        check(not bad, "; ".join(bad))
        check(c["failed"] > 0, "no request failed: timeouts did not fire")
        check(c["failed"] + c["expired"] == n_req, "not every request ended as failed/expired")
        if not FAST:
            # A worker that waited for the peer would take >= 0.3 s (the timeout).
            check(p99 < 250, f"client p99 {p99:.1f} ms >= 250 ms with a blackholed peer")
    finally:
        v.stop()
        dest.close()


# --------------------------------------------------------------------------- (c) reloads

RELOAD_VCL = """vcl 4.1;
import peer from "@PEER@";
import saintmode from "@SAINT@";
backend origin { .host = "127.0.0.1"; .port = "@OPORT@"; }
sub vcl_init {
    # A dead destination: requests stay queued (retrying) when the VCL goes cold.
    new dead = peer.peer(queue_size = 1000, max_attempts = 1000, backoff = 0.1s, max_backoff = 0.2s,
        connect_timeout = 0.2s, timeout = 0.5s, drain_timeout = 0.3s);
    dead.add_destination("127.0.0.1", @DPORT@);
    new live = peer.peer(drain_timeout = 0.3s);
    live.add_destination("127.0.0.1", @OPORT@);
    # The default peer keeps its default drain_timeout (5 s; peer.set_drain_timeout() could
    # lower it, not used here so that the default is exercised): it forwards to the live origin
    # so that its queue is empty by the time its VCL is discarded.
    peer.set("127.0.0.1", @OPORT@);
    new sm = saintmode.saintmode(origin, 50);
}
sub vcl_recv {
    if (req.url ~ "^/q/") {
        dead.queue_req();
        live.queue_req();
        peer.queue_req();
        return (synth(200));
    }
    return (pass);
}
sub vcl_backend_fetch {
    set bereq.backend = sm.backend();
}
sub vcl_backend_response {
    if (beresp.status >= 500) {
        saintmode.blacklist(5s);
        return (abandon);
    }
}
"""


def case_reloads():
    cycles = 20 if FAST else 200
    origin = Destination(status_for=lambda p: 500 if p.startswith("/bad/") else 200)
    origin.up()
    dead = PortHold()  # nothing ever listens there: connections are refused
    vcl = RELOAD_VCL.replace("@OPORT@", str(origin.port)).replace("@DPORT@", str(dead.port))
    try:
        v = Varnishd("reload", vcl, params=("vcl_cooldown=1",))
    except BaseException:
        dead.close()
        origin.close()
        raise
    try:
        child0 = v.child_pid()

        def traffic(k):
            ok = 0
            for i in range(8):
                ok += http_request(v.port, f"/q/{k}/{i}", method="PURGE")[0] == 200
                ok += http_request(v.port, f"/ok/{k}/{i}")[0] == 200
                http_request(v.port, f"/bad/{k}/{i}")
            return ok

        # Baseline: one VCL, warmed up by one round of traffic.
        bad_traffic = 16 - traffic("warm")
        time.sleep(1)
        base = (v.threads(), v.rss_kb())
        samples = []
        # A VCL is discarded LAG cycles after it stopped being active: by then it is cold and
        # the 0.3 s drain of its named peers is over, so vcl.discard does not wait
        # on it and the cycle rate stays at the VCL compiler's. Its queues are still non-empty
        # when it goes cold (checked below), so the drain does give up requests.
        lag = 3
        labels = ["boot"]
        for k in range(cycles):
            label = f"r{k}"
            v.load_use(label, vcl)
            labels.append(label)
            ok = traffic(k)
            bad_traffic += 16 - ok
            pending = v.stat(f"PEER.{label}.dead.queue_length", 0) + v.stat(f"PEER.{label}.dead.in_flight", 0)
            check(pending > 0, f"cycle {k}: the dead peer's queue is empty, the reload would not test a non-empty queue")
            if len(labels) > lag:
                v.adm("vcl.discard", labels.pop(0))
            samples.append((k, v.threads(), v.rss_kb(), v.stat("MAIN.n_vcl_discard", 0)))
        for old in labels[:-1]:
            v.adm("vcl.discard", old)
        t_disc = time.monotonic()
        gone = wait_until(lambda: v.stat("MAIN.n_vcl_discard", 1) == 0, 180, 0.5)
        fig(discard_settled_s=round(time.monotonic() - t_disc, 1))
        # Threads and RSS after the last discards settled.
        time.sleep(2)
        end_threads, end_rss = v.threads(), v.rss_kb()
        max_threads = max(s[1] for s in samples)
        vcls = [ln for ln in v.adm("vcl.list").splitlines() if ln.strip()]
        fig(cycles=cycles, requests=cycles * 24, bad_answers=bad_traffic,
            threads_before=base[0], threads_after=end_threads, threads_max=max_threads,
            rss_kb_before=base[1], rss_kb_after=end_rss, vcls_left=len(vcls),
            n_vcl_discard=v.stat("MAIN.n_vcl_discard"))
        check(v.child_pid() == child0, "the child restarted during the reloads")
        check(not v.panicked(), "child panicked: " + v.panicked()[:300])
        check(bad_traffic == 0, f"{bad_traffic} requests not answered 200 during reloads")
        if not gone:
            listing = " / ".join(" ".join(ln.split()) for ln in v.adm("vcl.list").splitlines() if ln.strip())
            check(False, f"MAIN.n_vcl_discard = {v.stat('MAIN.n_vcl_discard')} after 180 s; vcl.list: {listing}")
        check(len(vcls) == 1, f"{len(vcls)} VCLs left in vcl.list, expected only the active one")
        # Bounded: back to the one-VCL baseline (a few threads of slack).
        check(end_threads <= base[0] + 8, f"threads {base[0]} -> {end_threads}: sender threads leak")
        # RSS: generous bound (allocator caches, VCL .so mappings), but not growing with cycles.
        check(end_rss <= base[1] + 64 * 1024 + cycles * 100,
              f"RSS {base[1]} kB -> {end_rss} kB after {cycles} cycles")
        leftover = [k for k in v.stats("PEER.*") if not k.startswith(f"PEER.r{cycles - 1}.")]
        check(not leftover, f"counters of discarded VCLs remain: {leftover[:4]}")
        sleft = [k for k in v.stats("SAINTMODE.*") if not k.startswith(f"SAINTMODE.r{cycles - 1}.")]
        check(not sleft, f"saintmode counters of discarded VCLs remain: {sleft[:4]}")
    finally:
        v.stop()
        origin.close()
        dead.close()


# --------------------------------------------------------------------------- (d) kill -9

KILL_VCL = """vcl 4.1;
import peer from "@PEER@";
import saintmode from "@SAINT@";
backend origin { .host = "127.0.0.1"; .port = "@OPORT@"; }
sub vcl_init {
    new fwd = peer.peer(max_attempts = 20, backoff = 0.1s, max_backoff = 0.5s);
    fwd.add_destination("127.0.0.1", @PPORT@);
    new sm = saintmode.saintmode(origin, 10);
}
sub vcl_recv {
    if (req.method == "PURGE") {
        fwd.queue_req();
        return (synth(200));
    }
    return (pass);
}
sub vcl_backend_fetch {
    set bereq.backend = sm.backend();
}
sub vcl_backend_response {
    if (beresp.status >= 500) {
        saintmode.blacklist(30s);
        return (abandon);
    }
}
sub vcl_deliver {
    set resp.http.sm-count = sm.blacklist_count();
}
"""


def case_kill_child():
    origin = Destination(status_for=lambda p: 500 if p.startswith("/bad") else 200)
    target = Destination()
    origin.up()
    target.up()
    v = Varnishd("kill", KILL_VCL.replace("@OPORT@", str(origin.port)).replace("@PPORT@", str(target.port)))
    try:
        def works(tag):
            s1 = v.get(f"/page-{tag}")[0]
            v.get(f"/bad-{tag}")
            s2, h, _ = v.get(f"/page2-{tag}")
            s3 = http_request(v.port, f"/fwd-{tag}", method="PURGE")[0]
            got = wait_until(lambda: target.count(f"/fwd-{tag}") == 1, 30)
            return s1 == 200 and s2 == 200 and s3 == 200 and got, h.get("sm-count")

        ok0, cnt0 = works("before")
        check(ok0 and cnt0 == "1", f"modules do not work before the kill (count {cnt0})")
        old = v.child_pid()
        starts0 = v.stat("MGT.child_start", 0)
        os.kill(old, signal.SIGKILL)
        restarted = wait_until(lambda: v.child_pid() not in (None, old) and v.stat("MGT.child_start", 0) > starts0, 60, 0.2)
        check(restarted, "the manager did not restart the child within 60 s")
        up = wait_until(lambda: v.get("/ping")[0] == 200, 60, 0.5)
        check(up, "no answer after the restart")
        ok1, cnt1 = works("after")
        fig(old_child=old, new_child=v.child_pid(), child_died=v.stat("MGT.child_died"),
            count_before=cnt0, count_after=cnt1, forwarded=target.count("/fwd-"),
            saintmode_calls=v.stat("SAINTMODE.boot.sm.calls"), peer_sent=v.stat("PEER.boot.fwd.sent"))
        check(ok1, "modules do not work after the restart")
        # The new child has a fresh (empty) denylist: the one failure after restart.
        check(cnt1 == "1", f"denylist count after restart {cnt1}, expected 1")
        check(v.stat("PEER.boot.fwd.sent") == 1, "peer counters after restart: sent != 1")
    finally:
        v.stop()
        origin.close()
        target.close()


# --------------------------------------------------------------------------- (e) saintmode

SAINT_VCL = """vcl 4.1;
import std;
import saintmode from "@SAINT@";
backend origin { .host = "127.0.0.1"; .port = "@OPORT@"; }
sub vcl_init {
    new sm = saintmode.saintmode(origin, 1000000);
}
sub vcl_recv {
    if (req.url == "/count") {
        return (synth(200));
    }
    return (pass);
}
sub vcl_pass {
    set req.http.healthy-before = sm.is_healthy();
}
sub vcl_backend_fetch {
    set bereq.backend = sm.backend();
}
sub vcl_backend_response {
    if (beresp.status >= 500) {
        saintmode.blacklist(std.duration(bereq.http.ttl, 1s));
        return (abandon);
    }
}
sub vcl_deliver {
    set resp.http.healthy-before = req.http.healthy-before;
}
sub vcl_synth {
    set resp.http.count = sm.blacklist_count();
    set resp.http.healthy = sm.is_healthy();
    set resp.http.healthy-before = req.http.healthy-before;
}
"""


def case_saintmode_concurrency():
    per_thread = 150 if FAST else 1500
    n_threads = 12
    n_long = 8
    origin = Destination(status_for=lambda p: 200 if p.startswith("/ok/") else 500)
    origin.up()
    v = Varnishd("saint", SAINT_VCL.replace("@OPORT@", str(origin.port)), params=("thread_pool_min=50",))
    try:
        rng = random.Random(6)
        jobs = []
        for t in range(n_threads * per_thread):
            r = rng.random()
            if r < 0.3:
                jobs.append((f"/long/{rng.randrange(n_long)}", "300s"))
            elif r < 0.7:
                # Racing expiries: 10..200 ms, a few objects shared by every thread.
                jobs.append((f"/short/{rng.randrange(16)}", f"{rng.randrange(10, 200)}ms"))
            else:
                jobs.append((f"/ok/{rng.randrange(64)}", "1s"))

        def fetch(job):
            path, ttl = job
            s, h, _ = http_request(v.port, path, headers={"ttl": ttl}, timeout=60)
            return path, s, h.get("healthy-before")

        t0 = time.monotonic()
        res = parallel(n_threads, fetch, jobs, timeout=300)
        took = time.monotonic() - t0
        unfinished = sum(1 for r in res if r is None)
        ok_fail = sum(1 for r in res if r and r[0].startswith("/ok/") and r[1] != 200)
        bad_ok = sum(1 for r in res if r and not r[0].startswith("/ok/") and r[1] == 200)
        # A /long object, once listed, is never fetched again: at most one origin fetch per
        # concurrent wave; its health said "false" before each later fetch.
        long_fetches = origin.count("/long/")
        short_fetches = origin.count("/short/")
        time.sleep(0.5)  # every short entry has expired
        _, h, _ = v.get("/count")
        count = int(h.get("count", -1))
        s = v.stats("SAINTMODE.boot.sm.*")
        g = lambda n: s.get(f"SAINTMODE.boot.sm.{n}")
        fig(requests=len(jobs), threads=n_threads, seconds=round(took, 1), long_fetches=long_fetches,
            short_fetches=short_fetches, calls=g("calls"), refreshed=g("refreshed"), expired=g("expired"),
            blacklisted=g("blacklisted"), live_count=count)
        check(unfinished == 0, f"{unfinished} requests did not finish within 300 s (deadlock?)")
        check(ok_fail == 0, f"{ok_fail} requests to healthy objects failed")
        check(bad_ok == 0, f"{bad_ok} failing objects answered 200")
        check(g("calls") == long_fetches + short_fetches,
              f"calls {g('calls')} != origin 5xx fetches {long_fetches + short_fetches}")
        check(count == n_long, f"live count {count} != {n_long} long-lived objects")
        check(g("blacklisted") == n_long, f"blacklisted gauge {g('blacklisted')} != {n_long}")
        # Every call either added an entry or refreshed one; every added entry is live or expired.
        added = g("calls") - g("refreshed")
        check(added == g("expired") + g("blacklisted"),
              f"calls-refreshed {added} != expired+blacklisted {g('expired') + g('blacklisted')} "
              f"(an entry added without being counted, or expired twice)")
        for k in range(n_long):
            _, h, _ = v.get(f"/long/{k}")
            check(h.get("healthy-before") == "false", f"/long/{k} listed but is_healthy() is not false")
        check(long_fetches == origin.count("/long/"), "a listed object reached the origin")
        _, h, _ = v.get("/short/0", headers={"ttl": "10ms"})
        check(h.get("healthy-before") == "true", "/short/0 expired but is_healthy() is not true")
        rc, _ = v.adm_rc("backend.list")
        check(rc == 0, "backend.list does not answer")
        check(not v.panicked(), "child panicked")
    finally:
        v.stop()
        origin.close()


# --------------------------------------------------------------------------- bad input VTCs


def run_vtcs(prefix):
    vtcs = sorted(f for f in os.listdir(os.path.join(ROOT, "faults")) if f.startswith(prefix) and f.endswith(".vtc"))
    check(vtcs, "no faults/bad_input_catalogue_*.vtc")
    failed = []
    for f in vtcs:
        # scripts/vtc-run.sh defines the macros (${vmod_peer}, ${vmod_saintmode}, ${root}...).
        out = subprocess.run([os.path.join(ROOT, "scripts/vtc-run.sh"), "--so", os.path.join(ROOT, "target/release"),
                              "--timeout", "120", "--", "-q",
                              os.path.join(ROOT, "faults", f)], capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            failed.append(f)
            tail = (out.stdout + out.stderr).strip().splitlines()[-15:]
            sys.stderr.write(f"--- {f} failed:\n" + "\n".join(tail) + "\n")
    fig(vtcs=len(vtcs), failed=",".join(failed) or "none")
    check(not failed, f"{len(failed)} VTC(s) failed")


def case_bad_input_catalogue():
    run_vtcs("bad_input_catalogue_")


def case_regressions():
    """Reproducers of bugs the fault suite found in the modules, kept once fixed."""
    run_vtcs("regression_")


CASES = [
    ("bad_input_catalogue", case_bad_input_catalogue, True),
    ("peer_flapping", case_flapping, True),
    ("blackholed_peer", case_blackhole, True),
    ("saintmode_concurrency", case_saintmode_concurrency, True),
    ("kill_child", case_kill_child, True),
    ("vcl_reloads", case_reloads, True),
    ("regressions", case_regressions, True),
]


def main():
    global FAST
    ap = argparse.ArgumentParser()
    ap.add_argument("--fast", action="store_true")
    ap.add_argument("--only")
    args = ap.parse_args()
    FAST = args.fast
    only = set(args.only.split(",")) if args.only else None
    passed = failed = 0
    for name, fn, in_fast in CASES:
        if only and name not in only:
            continue
        if FAST and not in_fast and not only:
            continue
        FIG.clear()
        t0 = time.monotonic()
        try:
            fn()
            verdict, why = "PASS", ""
        except CaseFailure as e:
            verdict, why = "FAIL", str(e)
        except Exception as e:  # a harness error is a failure too, with its trace
            verdict, why = "FAIL", f"harness error: {e!r}"
            traceback.print_exc()
        figs = " ".join(f"{k}={v}" for k, v in FIG.items())
        took = time.monotonic() - t0
        print(f"{verdict} {name} ({took:.1f}s){': ' + why if why else ''}{' | ' if figs else ''}{figs}", flush=True)
        if verdict == "PASS":
            passed += 1
        else:
            failed += 1
    print(f"{passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
