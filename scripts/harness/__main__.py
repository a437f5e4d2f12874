"""Command line of the harness, for shell scripts (wrapped by scripts/lib/harness.sh).

  python3 -m harness start DIR [--vcl FILE] [--storage S] [--cpus LIST] [--env NAME=VALUE]...
                           [--wrap "CMD ARG..."] [--start-timeout S] [-- VARNISHD_ARG...]
      starts varnishd in DIR (see harness/varnishd.py for its files) on a port the OS
      assigns, prints that port; on failure prints why and exits 1 (varnishd's output is
      in DIR/log); what follows `--` is given to varnishd; --wrap runs varnishd under a
      command (e.g. valgrind), split as a shell would
  python3 -m harness child DIR               prints the pid of the instance's child process
  python3 -m harness load DIR LABEL FILE     vcl.load FILE as LABEL, then vcl.use it
  python3 -m harness stop DIR...             stops those instances (TERM, then KILL after
                                             15 s); no process of theirs is left
  python3 -m harness reserve                 holds a port nothing listens on (connections are
                                             refused), prints it, and keeps it until killed
                                             or until its parent process exits
"""
import argparse
import ctypes
import os
import shlex
import signal
import sys
import time

from .errors import HarnessError
from .ports import PortHold
from .varnishd import Varnishd, stop_instances


def _cpus(text):
    cpus = set()
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def cmd_start(a):
    env = {}
    for kv in a.env:
        name, sep, value = kv.partition("=")
        if not sep:
            raise HarnessError(f"--env {kv}: expected NAME=VALUE")
        env[name] = value
    name = os.path.basename(os.path.normpath(a.dir))
    v = Varnishd(name, vcl_file=a.vcl, storage=a.storage, args=a.args, workdir=a.dir,
                 cpus=_cpus(a.cpus) if a.cpus else None, env=env, wrap=shlex.split(a.wrap),
                 start_timeout=a.start_timeout)
    print(v.port, flush=True)


def cmd_child(a):
    pid = Varnishd.attach(a.dir).child_pid()
    if pid is None:
        raise HarnessError(f"{a.dir}: no child process")
    print(pid, flush=True)


def cmd_load(a):
    Varnishd.attach(a.dir).load_use(a.label, vcl_file=a.file)


def cmd_stop(a):
    stop_instances([Varnishd.attach(d) for d in a.dirs])


def _exit_with_parent():
    """Ends this process when its parent does (PR_SET_PDEATHSIG), so that a hold never
    outlives the script that asked for it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def cmd_reserve(_a):
    parent = os.getppid()
    _exit_with_parent()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with PortHold() as hold:
        print(hold.port, flush=True)
        # The parent may have exited before prctl took effect: check now and then.
        while os.getppid() == parent:
            time.sleep(1)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m harness", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start", help="start varnishd in DIR, print its port")
    s.add_argument("dir")
    s.add_argument("--vcl", help="VCL file (default: a boot VCL answering 503)")
    s.add_argument("--storage", default="malloc,64m")
    s.add_argument("--cpus", help="CPU list for varnishd, as taskset -c takes it")
    s.add_argument("--env", action="append", default=[], help="NAME=VALUE for varnishd")
    s.add_argument("--wrap", default="", help="command varnishd runs under (e.g. valgrind ...)")
    s.add_argument("--start-timeout", type=float, default=120, help="seconds (default 120)")
    s.set_defaults(fn=cmd_start)
    s = sub.add_parser("load", help="vcl.load FILE as LABEL and vcl.use it")
    s.add_argument("dir")
    s.add_argument("label")
    s.add_argument("file")
    s.set_defaults(fn=cmd_load)
    s = sub.add_parser("stop", help="stop the instances in DIR...")
    s.add_argument("dirs", nargs="+")
    s.set_defaults(fn=cmd_stop)
    s = sub.add_parser("child", help="print the pid of the child process of DIR's instance")
    s.add_argument("dir")
    s.set_defaults(fn=cmd_child)
    s = sub.add_parser("reserve", help="hold a port nothing listens on; print it")
    s.set_defaults(fn=cmd_reserve)
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after the first `--` goes to varnishd (argparse would take its options).
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    a = ap.parse_args(argv)
    a.args = extra
    try:
        a.fn(a)
    except HarnessError as e:
        print(f"harness {a.cmd}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
