"""What the fault suite and soak add to the harness (scripts/harness/): the VMOD paths, their
varnishd flavour (`@PEER@`/`@SAINT@` in VCL texts, unreferenced subs allowed, the run's
$FAULTS_TMP), verdict helpers and a bounded thread pool.

Everything binds 127.0.0.1 only. Every wait has a deadline; every loop a count.
"""
import os
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import harness  # noqa: E402
from harness import Destination, HarnessError, http_request, wait_until  # noqa: E402,F401

PEER_SO = os.environ.get("VMOD_PEER", os.path.join(ROOT, "target/release/libvmod_peer.so"))
SAINT_SO = os.environ.get("VMOD_SAINTMODE", os.path.join(ROOT, "target/release/libvmod_saintmode.so"))

# A case fails on a false check() and on anything the harness could not do.
CaseFailure = HarnessError


def check(cond, what):
    if not cond:
        raise CaseFailure(what)


def percentile(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


class Varnishd(harness.Varnishd):
    """A harness varnishd whose VCL texts name the modules as @PEER@ and @SAINT@."""

    def __init__(self, name, vcl, params=()):
        workdir = tempfile.mkdtemp(prefix=f"faults-{name}-", dir=os.environ.get("FAULTS_TMP"))
        super().__init__(name, vcl, params=("vcc_feature=-err_unref", *params), workdir=workdir)

    def write_vcl(self, text):
        return super().write_vcl(text.replace("@PEER@", PEER_SO).replace("@SAINT@", SAINT_SO))


def parallel(n_threads, fn, items, timeout):
    """Runs fn(item) over items on n_threads threads; returns the results (None when a call
    did not finish before timeout)."""
    results = [None] * len(items)
    lock = threading.Lock()
    idx = [0]

    def worker():
        while True:
            with lock:
                i = idx[0]
                idx[0] += 1
            if i >= len(items):
                return
            results[i] = fn(items[i])

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(n_threads)]
    for t in ts:
        t.start()
    deadline = time.monotonic() + timeout
    for t in ts:
        t.join(max(0.0, deadline - time.monotonic()))
    return results
