"""varnishd instances on ports the OS assigns: `-a 127.0.0.1:0 -T 127.0.0.1:0`, the real
listen port read back with `varnishadm debug.listen_address`. varnishd binds its listen socket
before it answers, so the port is never free between choosing and using.

An instance lives in its own directory D: D/n (varnishd's -n), D/pid (the manager's pid),
D/log (varnishd's output when starting), D/port (the listen port), D/boot.vcl (when started
without a VCL: every request answered 503 until `load_use`).
"""
import json
import os
import signal
import subprocess
import tempfile
import time

from .client import http_request, wait_until
from .errors import HarnessError

BOOT_VCL = "vcl 4.1;\nbackend default none;\n"


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            # A zombie (state Z) has exited: only its parent's wait() is left.
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


class Varnishd:
    """One varnishd (manager + child) in its own directory, started at construction.

    vcl: VCL text (written to the directory), vcl_file: a VCL file; neither: a boot VCL.
    params: `-p` values; args: more varnishd arguments; cpus: CPU numbers the manager and its
    child may run on (sched_setaffinity before exec, like `taskset -c`); env: extra
    environment of varnishd; workdir: the directory (made when missing; default: a new one
    under $HARNESS_TMP or the system's temporary directory); wrap: a command varnishd runs
    under (e.g. valgrind and its options), its pid being varnishd's."""

    def __init__(self, name, vcl=None, *, vcl_file=None, params=(), args=(), storage="malloc,64m",
                 workdir=None, cpus=None, env=None, start_timeout=120, wrap=()):
        self.name = name
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix=f"varnishd-{name}-", dir=os.environ.get("HARNESS_TMP"))
        os.makedirs(workdir, exist_ok=True)
        self.dir = workdir
        self.n = os.path.join(self.dir, "n")
        self.vcl_count = 0
        if vcl_file is None:
            vcl_file = self.write_vcl(vcl) if vcl is not None else self._write("boot.vcl", BOOT_VCL)
        cmd = [*wrap, "varnishd", "-n", self.n, "-a", "127.0.0.1:0", "-T", "127.0.0.1:0",
               "-f", vcl_file, "-P", os.path.join(self.dir, "pid"), "-s", storage]
        if os.getuid() == 0:
            cmd += ["-j", "none"]
        for p in params:
            cmd += ["-p", p]
        cmd += list(args)
        full_env = dict(os.environ, **(env or {}))
        preexec = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
        log_path = os.path.join(self.dir, "log")
        with open(log_path, "w") as log:
            try:
                rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    env=full_env, preexec_fn=preexec, timeout=start_timeout).returncode
            except (OSError, subprocess.TimeoutExpired) as e:
                rc, log_extra = None, repr(e)
            else:
                log_extra = ""
        if rc != 0:
            with open(log_path) as f:
                out = (f.read() + log_extra).strip()
            raise HarnessError(f"varnishd did not start: {out}"[:600])
        with open(os.path.join(self.dir, "pid")) as f:
            self.mgr_pid = int(f.read().strip())
        self.port = self.listen_port()
        if self.port is None:
            self.stop()
            raise HarnessError(f"varnishd {name}: no listen address from debug.listen_address")
        self._write("port", f"{self.port}\n")

    @classmethod
    def attach(cls, workdir):
        """The instance already running in `workdir` (started by another process)."""
        v = cls.__new__(cls)
        v.name = os.path.basename(os.path.normpath(workdir))
        v.dir = workdir
        v.n = os.path.join(workdir, "n")
        v.vcl_count = len([f for f in os.listdir(workdir) if f.startswith("v") and f.endswith(".vcl")])
        try:
            with open(os.path.join(workdir, "pid")) as f:
                v.mgr_pid = int(f.read().strip())
        except (OSError, ValueError):
            v.mgr_pid = None
        try:
            with open(os.path.join(workdir, "port")) as f:
                v.port = int(f.read().strip())
        except (OSError, ValueError):
            v.port = None
        return v

    def _write(self, name, text):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def write_vcl(self, text):
        self.vcl_count += 1
        return self._write(f"v{self.vcl_count}.vcl", text)

    def listen_port(self):
        """The first listen address's port (debug.listen_address), None when there is none."""
        rc, out = self.adm_rc("debug.listen_address")
        for line in out.splitlines():
            fields = line.split()
            if rc == 0 and fields and fields[-1].isdigit():
                return int(fields[-1])
        return None

    def adm(self, *args, ok=True, timeout=60):
        rc, out = self.adm_rc(*args, timeout=timeout)
        if ok and rc != 0:
            raise HarnessError(f"varnishadm {' '.join(args)}: rc={rc} {out.strip()[:400]}")
        return out

    def adm_rc(self, *args, timeout=60):
        out = subprocess.run(["varnishadm", "-n", self.n, "-t", "30", *args],
                             capture_output=True, text=True, timeout=timeout)
        return out.returncode, out.stdout

    def load_use(self, label, vcl=None, vcl_file=None):
        """Loads a VCL (text or file) under `label` and makes it the active one."""
        path = vcl_file or self.write_vcl(vcl)
        self.adm("vcl.load", label, path)
        self.adm("vcl.use", label)

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
        kids = _children(self.mgr_pid) if self.mgr_pid else []
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

    def get(self, path, headers=None, method="GET", timeout=30):
        return http_request(self.port, path, method=method, headers=headers, timeout=timeout)

    def stop(self, timeout=15):
        stop_instances([self], timeout)


def stop_instances(instances, timeout=15):
    """SIGTERM to every manager at once, then waits up to `timeout` seconds for them and their
    children; what is still alive then gets SIGKILL. Leaves no process of these instances."""
    pids = []
    for v in instances:
        if not v.mgr_pid or not _alive(v.mgr_pid):
            continue
        pids += [v.mgr_pid] + _children(v.mgr_pid)
        try:
            os.kill(v.mgr_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    if not wait_until(lambda: not any(_alive(p) for p in pids), timeout):
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not wait_until(lambda: not any(_alive(p) for p in pids), 10):
            raise HarnessError(f"processes {[p for p in pids if _alive(p)]} survive SIGKILL")
