"""Unit tests of the harness (scripts/harness/): a port it hands out is really listened on, a
held "down" port refuses connections and cannot be taken, stopping leaves no process.

  python3 -m unittest discover -s scripts/tests -p 'test_harness.py'     (make test-harness)

The varnishd tests need varnishd on PATH (eval "$(make -s env)") and are skipped without it.
"""
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

SCRIPTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, SCRIPTS)
from harness import Destination, HarnessError, PortHold, Varnishd, http_request, wait_until  # noqa: E402
from harness.varnishd import _alive  # noqa: E402

HAVE_VARNISHD = shutil.which("varnishd") is not None and shutil.which("varnishadm") is not None
CLI = [sys.executable, "-m", "harness"]
CLI_ENV = dict(os.environ, PYTHONPATH=SCRIPTS)


def connect(port):
    """'ok' when a TCP connection to 127.0.0.1:port succeeds, else the errno name."""
    s = socket.socket()
    s.settimeout(5)
    try:
        s.connect(("127.0.0.1", port))
        return "ok"
    except ConnectionRefusedError:
        return "refused"
    except OSError as e:
        return type(e).__name__
    finally:
        s.close()


def plain_bind(port):
    """Can another socket (SO_REUSEADDR, as servers set it) bind and listen on the port?"""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
        s.listen(1)
        return True
    except OSError:
        return False
    finally:
        s.close()


class PortHoldTest(unittest.TestCase):
    def test_held_port_refuses_and_cannot_be_taken(self):
        with PortHold() as hold:
            self.assertGreater(hold.port, 0)
            self.assertEqual(connect(hold.port), "refused")
            self.assertFalse(plain_bind(hold.port), "another socket took a held port")

    def test_listener_on_held_port_accepts_then_refuses_when_closed(self):
        with PortHold() as hold:
            lst = hold.listener()
            self.assertEqual(connect(hold.port), "ok")
            lst.close()
            self.assertEqual(connect(hold.port), "refused")
            # Up again on the same port, at once.
            lst = hold.listener()
            self.assertEqual(connect(hold.port), "ok")
            lst.close()

    def test_port_is_free_after_close(self):
        hold = PortHold()
        port = hold.port
        hold.close()
        self.assertTrue(plain_bind(port))


class DestinationTest(unittest.TestCase):
    def test_up_down_up_on_one_port(self):
        d = Destination(status_for=lambda p: 204 if p == "/x" else 200)
        try:
            self.assertEqual(connect(d.port), "refused")
            d.up()
            self.assertEqual(http_request(d.port, "/x", timeout=5)[0], 204)
            self.assertEqual(d.count("/x"), 1)
            d.down()
            self.assertEqual(connect(d.port), "refused")
            d.up()
            self.assertEqual(http_request(d.port, "/y", timeout=5)[0], 200)
        finally:
            d.close()
        self.assertEqual(connect(d.port), "refused")

    def test_blackhole_accepts_and_never_answers(self):
        d = Destination()
        try:
            d.up(mode="blackhole")
            status, _, took = http_request(d.port, "/", timeout=0.5)
            self.assertEqual(status, 0)
            self.assertGreaterEqual(took, 0.4)
        finally:
            d.close()


class ReserveCliTest(unittest.TestCase):
    def test_reserve_prints_a_refusing_port_and_ends_on_term(self):
        p = subprocess.Popen(CLI + ["reserve"], stdout=subprocess.PIPE, text=True, env=CLI_ENV)
        try:
            port = int(p.stdout.readline())
            self.assertEqual(connect(port), "refused")
            self.assertFalse(plain_bind(port))
        finally:
            p.send_signal(signal.SIGTERM)
            self.assertEqual(p.wait(10), 0)
            p.stdout.close()
        self.assertTrue(plain_bind(port), "port still held after the holder ended")

    def test_reserve_ends_with_its_parent(self):
        # A shell starts the holder and exits at once: the holder must not outlive it.
        sh = subprocess.run(["sh", "-c", f"{sys.executable} -m harness reserve & echo $!; sleep 1"],
                            capture_output=True, text=True, env=CLI_ENV, timeout=30)
        pid = int(sh.stdout.split()[-1])
        self.assertTrue(wait_until(lambda: not _alive(pid), 10), "reserve outlived its parent")


@unittest.skipUnless(HAVE_VARNISHD, "varnishd not on PATH")
class VarnishdTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="harness-test-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_port_listened_vcl_loaded_and_stop_leaves_no_process(self):
        v = Varnishd("t", workdir=os.path.join(self.tmp, "t"))
        try:
            self.assertEqual(connect(v.port), "ok")
            # The boot VCL has no backend: 503 from varnishd itself.
            self.assertEqual(v.get("/", timeout=10)[0], 503)
            v.load_use("real", 'vcl 4.1;\nbackend default none;\nsub vcl_recv { return (synth(204)); }\n')
            self.assertEqual(v.get("/", timeout=10)[0], 204)
            child = v.child_pid()
            self.assertIsNotNone(child)
        finally:
            v.stop()
        self.assertFalse(_alive(v.mgr_pid), "manager alive after stop")
        self.assertFalse(_alive(child), "child alive after stop")
        self.assertEqual(connect(v.port), "refused")

    def test_failed_start_says_why(self):
        bad = os.path.join(self.tmp, "bad.vcl")
        with open(bad, "w") as f:
            f.write("vcl 4.1;\nthis is not VCL\n")
        with self.assertRaises(HarnessError) as e:
            Varnishd("bad", vcl_file=bad, workdir=os.path.join(self.tmp, "bad"))
        self.assertIn("varnishd did not start", str(e.exception))

    def test_cli_start_wrapped_runs_varnishd_under_the_command_and_child_names_its_child(self):
        d = os.path.join(self.tmp, "w")
        out = subprocess.run(CLI + ["start", d, "--wrap", "env HARNESS_WRAPPED='a b'"],
                             capture_output=True, text=True, env=CLI_ENV, timeout=180)
        self.assertEqual(out.returncode, 0, out.stderr)
        try:
            child = subprocess.run(CLI + ["child", d], capture_output=True, text=True, env=CLI_ENV,
                                   timeout=60)
            self.assertEqual(child.returncode, 0, child.stderr)
            with open(f"/proc/{int(child.stdout)}/environ", "rb") as f:
                self.assertIn(b"HARNESS_WRAPPED=a b\0", f.read())
        finally:
            subprocess.run(CLI + ["stop", d], capture_output=True, env=CLI_ENV, timeout=60)

    def test_cli_start_prints_listened_port_and_stop_ends_it(self):
        d = os.path.join(self.tmp, "c")
        out = subprocess.run(CLI + ["start", d, "--cpus", "0", "--", "-p", "vcc_allow_inline_c=off"],
                             capture_output=True, text=True, env=CLI_ENV, timeout=180)
        self.assertEqual(out.returncode, 0, out.stderr)
        port = int(out.stdout)
        with open(os.path.join(d, "pid")) as f:
            mgr = int(f.read())
        try:
            self.assertEqual(connect(port), "ok")
            self.assertEqual(os.sched_getaffinity(mgr), {0})
            vcl = os.path.join(self.tmp, "c.vcl")
            with open(vcl, "w") as f:
                f.write('vcl 4.1;\nbackend default none;\nsub vcl_recv { return (synth(204)); }\n')
            load = subprocess.run(CLI + ["load", d, "l1", vcl], capture_output=True, text=True, env=CLI_ENV,
                                  timeout=120)
            self.assertEqual(load.returncode, 0, load.stderr)
            self.assertEqual(http_request(port, "/", timeout=10)[0], 204)
        finally:
            stop = subprocess.run(CLI + ["stop", d], capture_output=True, text=True, env=CLI_ENV, timeout=60)
        self.assertEqual(stop.returncode, 0, stop.stderr)
        self.assertFalse(_alive(mgr))
        self.assertEqual(connect(port), "refused")


if __name__ == "__main__":
    unittest.main()
