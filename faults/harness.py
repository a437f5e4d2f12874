"""Helpers for the fault suite: a varnishd instance driven through varnishadm/varnishstat, a
controllable HTTP destination on loopback (up, down, blackholed), and a bounded HTTP client.

Everything binds 127.0.0.1 only. Every wait has a deadline; every loop a count.
"""
import http.client
import json
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_SO = os.environ.get("VMOD_PEER", os.path.join(ROOT, "target/release/libvmod_peer.so"))
SAINT_SO = os.environ.get("VMOD_SAINTMODE", os.path.join(ROOT, "target/release/libvmod_saintmode.so"))


class CaseFailure(Exception):
    pass


def check(cond, what):
    if not cond:
        raise CaseFailure(what)


def wait_until(pred, timeout, step=0.1):
    """Polls pred() until it is truthy or timeout seconds passed; returns the last value."""
    deadline = time.monotonic() + timeout
    value = pred()
    while not value and time.monotonic() < deadline:
        time.sleep(step)
        value = pred()
    return value


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def percentile(values, p):
    if not values:
        return float("nan")
    v = sorted(values)
    k = min(len(v) - 1, max(0, int(round(p / 100.0 * (len(v) - 1)))))
    return v[k]


# --------------------------------------------------------------------------- varnishd


class Varnishd:
    """One varnishd (manager + child) in its own working directory."""

    def __init__(self, name, vcl, params=(), workdir=None):
        self.dir = workdir or tempfile.mkdtemp(prefix=f"faults-{name}-", dir=os.environ.get("FAULTS_TMP"))
        self.n = os.path.join(self.dir, "n")
        self.vcl_count = 0
        vcl_file = self.write_vcl(vcl)
        args = ["varnishd", "-n", self.n, "-a", "127.0.0.1:0", "-T", "127.0.0.1:0",
                "-f", vcl_file, "-P", os.path.join(self.dir, "pid"), "-s", "malloc,64m",
                "-p", "vcc_feature=-err_unref"]
        if os.getuid() == 0:
            args += ["-j", "none"]
        for p in params:
            args += ["-p", p]
        out = subprocess.run(args, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise CaseFailure(f"varnishd did not start: {out.stdout} {out.stderr}".strip()[:600])
        with open(os.path.join(self.dir, "pid")) as f:
            self.mgr_pid = int(f.read().strip())
        addr = self.adm("debug.listen_address").split("\n")[0].split()
        self.port = int(addr[-1])

    def write_vcl(self, text):
        self.vcl_count += 1
        path = os.path.join(self.dir, f"v{self.vcl_count}.vcl")
        text = text.replace("@PEER@", PEER_SO).replace("@SAINT@", SAINT_SO)
        with open(path, "w") as f:
            f.write(text)
        return path

    def adm(self, *args, ok=True, timeout=60):
        out = subprocess.run(["varnishadm", "-n", self.n, "-t", "30", *args],
                             capture_output=True, text=True, timeout=timeout)
        if ok and out.returncode != 0:
            raise CaseFailure(f"varnishadm {' '.join(args)}: rc={out.returncode} {out.stdout.strip()[:400]}")
        return out.stdout

    def adm_rc(self, *args, timeout=60):
        out = subprocess.run(["varnishadm", "-n", self.n, "-t", "30", *args],
                             capture_output=True, text=True, timeout=timeout)
        return out.returncode, out.stdout

    def stats(self, pattern=None):
        args = ["varnishstat", "-n", self.n, "-1", "-j"]
        if pattern:
            args += ["-f", pattern]
        out = subprocess.run(args, capture_output=True, text=True, timeout=30)
        data = json.loads(out.stdout or "{}")
        counters = data.get("counters", data)
        return {k: v["value"] for k, v in counters.items() if isinstance(v, dict) and "value" in v}

    def stat(self, name, default=None):
        return self.stats(name).get(name, default)

    def child_pid(self):
        try:
            with open(f"/proc/{self.mgr_pid}/task/{self.mgr_pid}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            return None
        for k in kids:
            try:
                with open(f"/proc/{k}/comm") as f:
                    if f.read().strip().startswith("cache"):
                        return k
            except OSError:
                pass
        return kids[0] if kids else None

    def proc_status(self, field):
        pid = self.child_pid()
        if pid is None:
            return None
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(field + ":"):
                        return int(line.split()[1])
        except OSError:
            return None
        return None

    def rss_kb(self):
        return self.proc_status("VmRSS")

    def threads(self):
        return self.proc_status("Threads")

    def panicked(self):
        """The panic message, or '' when the child has not panicked."""
        rc, out = self.adm_rc("panic.show")
        # CLI status 300 with "Child has not panicked or panic has been cleared".
        if "has not panicked" in out or (rc != 0 and "Panic" not in out):
            return ""
        return out.strip()

    def load_use(self, label, vcl):
        path = self.write_vcl(vcl)
        self.adm("vcl.load", label, path)
        self.adm("vcl.use", label)

    def get(self, path, headers=None, method="GET", timeout=30):
        return http_request(self.port, path, method=method, headers=headers, timeout=timeout)

    def stop(self):
        try:
            os.kill(self.mgr_pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        alive = lambda: os.path.exists(f"/proc/{self.mgr_pid}")
        if not wait_until(lambda: not alive(), 15):
            try:
                os.kill(self.mgr_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def http_request(port, path, method="GET", headers=None, body=None, timeout=30):
    """(status, headers dict lower-case, seconds). Status 0 on a connection error."""
    t0 = time.monotonic()
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        c.close()
        return r.status, hdrs, time.monotonic() - t0
    except (OSError, http.client.HTTPException):
        return 0, {}, time.monotonic() - t0


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


# --------------------------------------------------------------------------- destination


class Destination:
    """An HTTP/1.1 server on 127.0.0.1:port that can go down (listener and every connection
    closed), come back up on the same port, or blackhole (accept, never read).

    `status_for(path)` picks the answer status; `received` counts requests by path prefix."""

    def __init__(self, port=None, status_for=None):
        self.port = port or free_port()
        self.status_for = status_for or (lambda path: 200)
        self.lock = threading.Lock()
        self.received = {}
        self.total = 0
        self.listener = None
        self.conns = []
        self.mode = "down"
        self.accept_thread = None

    def count(self, prefix=""):
        with self.lock:
            return sum(v for k, v in self.received.items() if k.startswith(prefix))

    def up(self, mode="serve"):
        if self.listener is not None:
            return
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for _ in range(100):
            try:
                s.bind(("127.0.0.1", self.port))
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise CaseFailure(f"cannot bind 127.0.0.1:{self.port}")
        s.listen(512)
        self.listener = s
        self.mode = mode
        self.accept_thread = threading.Thread(target=self._accept, args=(s,), daemon=True)
        self.accept_thread.start()

    def down(self):
        s, self.listener = self.listener, None
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        if self.accept_thread is not None:
            self.accept_thread.join(5)
            self.accept_thread = None

    def _accept(self, s):
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            if self.listener is not s:
                c.close()
                return
            with self.lock:
                self.conns.append(c)
            if self.mode == "serve":
                threading.Thread(target=self._serve, args=(c,), daemon=True).start()
            # blackhole: keep the socket open, never read nor answer.

    def _serve(self, c):
        buf = b""
        c.settimeout(60)
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = c.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.split(b"\r\n")
                parts = lines[0].split(b" ")
                path = parts[1].decode("latin-1") if len(parts) > 1 else ""
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip() or 0)
                while len(buf) < length:
                    data = c.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[length:]
                status = self.status_for(path)
                with self.lock:
                    self.received[path] = self.received.get(path, 0) + 1
                    self.total += 1
                c.sendall(b"HTTP/1.1 %d X\r\nContent-Length: 2\r\n\r\nok" % status)
        except OSError:
            return
        finally:
            c.close()
