#!/usr/bin/env python3
"""Offline tests of scripts/bootstrap.sh's source selection against a Debian mirror on loopback.

Each test lays out a small archive as Debian's (a signed InRelease, dists/trixie/main/source/
Sources.xz, pool/main/v/varnish/...) with its own throwaway signing key, serves it on
127.0.0.1 on a port the OS assigns, removes or corrupts files, and runs
`bootstrap.sh --fetch-only` with an empty cache: it asserts which candidate bootstrap picks,
or the message it stops with. The tarballs are tiny stand-ins with the real names and
layout (orig tree, debian/patches/series), so checksums and patch application are real.
"""

import functools
import hashlib
import http.server
import io
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import unittest
from email.utils import formatdate

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from harness import PortHold  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BOOTSTRAP = os.path.join(ROOT, "scripts", "bootstrap.sh")
POOL = "pool/main/v/varnish"
ORIG = "varnish_7.7.0.orig.tar.xz"
U1 = "varnish_7.7.0-3+deb13u1.debian.tar.xz"
U2 = "varnish_7.7.0-3+deb13u2.debian.tar.xz"
PATCH_OK = """--- a/lib/vcs.c
+++ b/lib/vcs.c
@@ -1 +1 @@
-const char *vcs = "NOGIT";
+const char *vcs = "%s";
"""
PATCH_BROKEN = """--- a/lib/vcs.c
+++ b/lib/vcs.c
@@ -1 +1 @@
-const char *vcs = "SOMETHING ELSE";
+const char *vcs = "x";
"""


def tar_xz(members):
    """Bytes of a .tar.xz holding {path: text}."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for path, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            info.mtime = 1700000000
            tar.addfile(info, io.BytesIO(data))
    return lzma.compress(raw.getvalue())


def orig_tarball():
    return tar_xz({"varnish-7.7.0/lib/vcs.c": 'const char *vcs = "NOGIT";\n',
                   "varnish-7.7.0/README.rst": "Varnish Cache\n"})


def debian_tarball(revision, patch=None):
    patch = patch if patch is not None else PATCH_OK % revision
    return tar_xz({"debian/changelog": f"varnish ({revision}) trixie; urgency=medium\n",
                   "debian/patches/series": "# Debian's patches\nset_vcs_version\n",
                   "debian/patches/set_vcs_version": patch})


def sha256(data):
    return hashlib.sha256(data).hexdigest()


class Mirror:
    """A Debian-like archive in a temporary directory, served on 127.0.0.1."""

    def __init__(self, tmp, gnupghome, keyring):
        self.base = os.path.join(tmp, "www")
        self.gnupghome = gnupghome
        self.keyring = keyring
        self.pool = os.path.join(self.base, "debian", POOL)
        os.makedirs(self.pool)
        self.files = {}  # name -> bytes the index describes
        handler = functools.partial(QuietHandler, directory=self.base)
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/debian"

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def publish(self, revision, files, serve=None, sign_with=None):
        """Index `revision` with `files` ({name: bytes}); serve `serve` (default: the same)."""
        serve = files if serve is None else serve
        for name, data in serve.items():
            with open(os.path.join(self.pool, name), "wb") as out:
                out.write(data)
        sums = "".join(f" {sha256(d)} {len(d)} {n}\n" for n, d in files.items())
        paragraph = (f"Package: varnish\nBinary: varnish, libvarnishapi3, libvarnishapi-dev\n"
                     f"Version: {revision}\nDirectory: {POOL}\nChecksums-Sha256:\n{sums}"
                     "Section: web\n\n")
        # Older revisions before and after: bootstrap must pick the newest version, neither
        # the first paragraph nor the last.
        def stale(version):
            return (f"Package: varnish\nVersion: {version}\nDirectory: {POOL}\nChecksums-Sha256:\n"
                    f" {'0' * 64} 1 varnish_{version}.debian.tar.xz\n\n")
        plain = (stale("7.7.0-2") + paragraph + stale("7.6.1-1")).encode()
        sources = lzma.compress(plain)
        dists = os.path.join(self.base, "debian", "dists", "trixie")
        os.makedirs(os.path.join(dists, "main", "source"), exist_ok=True)
        with open(os.path.join(dists, "main", "source", "Sources.xz"), "wb") as out:
            out.write(sources)
        release = (f"Origin: Debian\nLabel: Debian\nSuite: stable\nCodename: trixie\n"
                   f"Date: {formatdate(usegmt=True)}\nArchitectures: amd64\nComponents: main\n"
                   f"SHA256:\n {sha256(plain)} {len(plain)} main/source/Sources\n"
                   f" {sha256(sources)} {len(sources)} main/source/Sources.xz\n")
        gnupghome = sign_with or self.gnupghome
        subprocess.run(["gpg", "--batch", "--yes", "--homedir", gnupghome, "--clearsign",
                        "-o", os.path.join(dists, "InRelease")],
                       input=release.encode(), check=True, capture_output=True)


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the mirror; records raw request paths; answers 503 for names in `failing`."""

    requests = []
    failing = set()

    def do_GET(self):
        QuietHandler.requests.append(self.path)
        if os.path.basename(self.path).replace("%2b", "+") in QuietHandler.failing:
            self.send_error(503, "Service Unavailable")
            return
        super().do_GET()

    def log_message(self, *args):
        pass


def make_key(home):
    os.makedirs(home, mode=0o700)
    subprocess.run(["gpg", "--batch", "--homedir", home, "--passphrase", "",
                    "--quick-gen-key", "offline mirror test <test@invalid>", "ed25519", "sign", "1d"],
                   check=True, capture_output=True)


class BootstrapSelection(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.keys = tempfile.mkdtemp(prefix="bootstrap-keys.")
        cls.gnupghome = os.path.join(cls.keys, "archive")
        cls.other_gnupghome = os.path.join(cls.keys, "other")
        make_key(cls.gnupghome)
        make_key(cls.other_gnupghome)
        cls.keyring = os.path.join(cls.keys, "archive.gpg")
        with open(cls.keyring, "wb") as out:
            out.write(subprocess.run(["gpg", "--batch", "--homedir", cls.gnupghome, "--export"],
                                     check=True, capture_output=True).stdout)

    @classmethod
    def tearDownClass(cls):
        for home in (cls.gnupghome, cls.other_gnupghome):
            subprocess.run(["gpgconf", "--homedir", home, "--kill", "gpg-agent"], capture_output=True)
        shutil.rmtree(cls.keys, ignore_errors=True)

    def setUp(self):
        QuietHandler.requests.clear()
        QuietHandler.failing.clear()
        self.tmp = tempfile.mkdtemp(prefix="bootstrap-mirror.")
        self.mirror = Mirror(self.tmp, self.gnupghome, self.keyring)
        self.orig = orig_tarball()
        self.u1 = debian_tarball("7.7.0-3+deb13u1")
        self.u2 = debian_tarball("7.7.0-3+deb13u2")
        self.pinned = os.path.join(self.tmp, "pinned.sha256")
        self.pin(self.u1)

    def tearDown(self):
        self.mirror.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def pin(self, data, name=U1):
        with open(self.pinned, "w") as out:
            out.write(f"# test pins\n{sha256(data)}  {name}\n")

    def bootstrap(self, mirror_url=None, extra_env=None, args=("--fetch-only",)):
        env = dict(os.environ, XDG_CACHE_HOME=os.path.join(self.tmp, "cache"),
                   DEBIAN_MIRROR=mirror_url or self.mirror.url, DEBIAN_KEYRING=self.keyring,
                   VARNISH_PINNED_PATCHES=self.pinned, VARNISH_SUITE="trixie")
        env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1"
        for name in ("VARNISH_PREFIX", "BOOTSTRAP_REQUIRE_DEBIAN", "http_proxy", "HTTP_PROXY"):
            env.pop(name, None)
        env.update(extra_env or {})
        proc = subprocess.run(["bash", BOOTSTRAP, *args], env=env, capture_output=True,
                              text=True, timeout=180)
        return proc.returncode, proc.stdout.strip(), proc.stderr

    def assertSelected(self, result, label):
        rc, out, err = result
        self.assertEqual(rc, 0, err)
        self.assertEqual(out, f"selected: {label}", err)

    def assertStops(self, result, *fragments):
        rc, out, err = result
        self.assertNotEqual(rc, 0, f"bootstrap went on: {out}\n{err}")
        self.assertNotIn("selected:", out)
        last = [line for line in err.splitlines() if "ERROR" in line]
        self.assertTrue(last, err)
        for fragment in fragments:
            self.assertIn(fragment, last[-1], err)

    # ------------------------------------------------------------------ choices
    def test_newest_revision_complete_is_used(self):
        self.mirror.publish("7.7.0-3+deb13u2", {ORIG: self.orig, U2: self.u2}, {ORIG: self.orig, U2: self.u2, U1: self.u1})
        self.assertSelected(self.bootstrap(), "Debian 7.7.0-3+deb13u2 (named by the trixie index)")
        # Pool URLs escape "+" as Debian's do.
        self.assertIn(f"/debian/{POOL}/varnish_7.7.0-3%2bdeb13u2.debian.tar.xz", QuietHandler.requests)

    def test_newest_patch_tarball_missing_falls_back_to_pinned_revision(self):
        self.mirror.publish("7.7.0-3+deb13u2", {ORIG: self.orig, U2: self.u2}, {ORIG: self.orig, U1: self.u1})
        result = self.bootstrap()
        self.assertSelected(result, "Debian 7.7.0-3+deb13u1 (pinned in pinned.sha256)")
        self.assertIn(f"{U2}: HTTP 404", result[2])

    def test_newest_patches_not_applying_fall_back_to_pinned_revision(self):
        broken = debian_tarball("7.7.0-3+deb13u2", PATCH_BROKEN)
        self.mirror.publish("7.7.0-3+deb13u2", {ORIG: self.orig, U2: broken}, {ORIG: self.orig, U2: broken, U1: self.u1})
        result = self.bootstrap()
        self.assertSelected(result, "Debian 7.7.0-3+deb13u1 (pinned in pinned.sha256)")
        self.assertIn(f"Debian patch set_vcs_version from {U2} does not apply", result[2])

    def test_no_patch_tarball_at_all_builds_upstream_with_a_warning(self):
        self.mirror.publish("7.7.0-3+deb13u2", {ORIG: self.orig, U2: self.u2}, {ORIG: self.orig})
        result = self.bootstrap()
        self.assertSelected(result, "upstream Varnish 7.7.0 (orig tarball alone, no Debian patches)")
        self.assertIn(f"{U1}: HTTP 404", result[2])
        self.assertIn("will NOT load into Debian's own varnishd", result[2])

    def test_pin_for_another_upstream_version_is_skipped(self):
        other = "varnish_7.6.0-1+deb13u1.debian.tar.xz"
        self.pin(self.u1, name=other)
        self.mirror.publish("7.7.0-3+deb13u2", {ORIG: self.orig, U2: self.u2}, {ORIG: self.orig, other: self.u1})
        result = self.bootstrap()
        self.assertSelected(result, "upstream Varnish 7.7.0 (orig tarball alone, no Debian patches)")
        self.assertIn(f"pinned {other} is for another upstream version than 7.7.0: skipped", result[2])
        self.assertNotIn(f"/debian/{POOL}/{other.replace('+', '%2b')}", QuietHandler.requests)

    # ------------------------------------------------------------------ stops
    def test_no_patch_tarball_with_debian_required_stops(self):
        self.mirror.publish("7.7.0-3+deb13u2", {ORIG: self.orig, U2: self.u2}, {ORIG: self.orig})
        self.assertStops(self.bootstrap(extra_env={"BOOTSTRAP_REQUIRE_DEBIAN": "1"}),
                         "no Debian patch tarball of Varnish 7.7.0 can be downloaded")

    def test_mirror_error_other_than_404_stops_instead_of_downgrading(self):
        self.mirror.publish("7.7.0-3+deb13u2", {ORIG: self.orig, U2: self.u2}, {ORIG: self.orig, U2: self.u2, U1: self.u1})
        QuietHandler.failing.add(U2)
        self.assertStops(self.bootstrap(), U2, "HTTP 503")

    def test_orig_checksum_mismatch_stops_naming_the_file(self):
        tampered = tar_xz({"varnish-7.7.0/lib/vcs.c": "tampered\n"})
        self.mirror.publish("7.7.0-3+deb13u2", {ORIG: self.orig, U2: self.u2}, {ORIG: tampered, U2: self.u2})
        self.assertStops(self.bootstrap(), ORIG, "checksum mismatch", sha256(self.orig))

    def test_pinned_patch_checksum_mismatch_stops_naming_the_file(self):
        self.pin(b"not what the mirror serves")
        self.mirror.publish("7.7.0-3+deb13u2", {ORIG: self.orig, U2: self.u2}, {ORIG: self.orig, U1: self.u1})
        self.assertStops(self.bootstrap(), U1, "checksum mismatch")

    def test_orig_missing_stops_naming_the_file(self):
        self.mirror.publish("7.7.0-3+deb13u2", {ORIG: self.orig, U2: self.u2}, {U2: self.u2})
        self.assertStops(self.bootstrap(), ORIG, "HTTP 404")

    def test_mirror_unreachable_stops_naming_the_mirror(self):
        # A held port nothing listens on: connections are refused, and no other
        # process can take the port while the test holds it.
        with PortHold() as hole:
            url = f"http://127.0.0.1:{hole.port}/debian"
            self.assertStops(self.bootstrap(url), f"apt-get update from {url} failed")

    def test_index_signed_by_another_key_stops(self):
        self.mirror.publish("7.7.0-3+deb13u2", {ORIG: self.orig, U2: self.u2}, sign_with=self.other_gnupghome)
        self.assertStops(self.bootstrap(), f"apt-get update from {self.mirror.url} failed")


    # ------------------------------------------------------------ VARNISH_PREFIX
    def fake_prefix(self, version):
        prefix = os.path.join(self.tmp, "varnish")
        os.makedirs(os.path.join(prefix, "sbin"))
        os.makedirs(os.path.join(prefix, "lib", "pkgconfig"))
        with open(os.path.join(prefix, "sbin", "varnishd"), "w") as out:
            out.write("#!/bin/sh\necho 'varnishd (varnish-%s)'\n" % version)
        os.chmod(os.path.join(prefix, "sbin", "varnishd"), 0o755)
        with open(os.path.join(prefix, "lib", "pkgconfig", "varnishapi.pc"), "w") as out:
            out.write(f"prefix={prefix}\nName: VarnishAPI\nDescription: Varnish API\n"
                      f"Version: {version}\nLibs: -L${{prefix}}/lib -lvarnishapi\n")
        return prefix

    def test_installed_varnish_prefix_is_used_as_is_without_the_mirror(self):
        prefix = self.fake_prefix("7.7.0")
        before = sorted(os.walk(prefix))
        with PortHold() as hole:  # no mirror at all: nothing may be downloaded
            rc, out, err = self.bootstrap(f"http://127.0.0.1:{hole.port}/debian",
                                          {"VARNISH_PREFIX": prefix}, args=())
        self.assertEqual((rc, out), (0, prefix), err)
        self.assertEqual(sorted(os.walk(prefix)), before)

    def test_varnish_prefix_with_an_unsupported_version_stops(self):
        prefix = self.fake_prefix("7.1.1")
        self.assertStops(self.bootstrap(extra_env={"VARNISH_PREFIX": prefix}, args=()),
                         f"VARNISH_PREFIX={prefix} holds Varnish '7.1.1'")

    def test_foreign_directory_is_never_built_over(self):
        self.mirror.publish("7.7.0-3+deb13u2", {ORIG: self.orig, U2: self.u2})
        prefix = os.path.join(self.tmp, "mine")
        os.makedirs(prefix)
        with open(os.path.join(prefix, "keep.txt"), "w") as out:
            out.write("not Varnish\n")
        self.assertStops(self.bootstrap(extra_env={"VARNISH_PREFIX": prefix}, args=()),
                         "was not made by bootstrap: refusing to build over it")
        self.assertEqual(os.listdir(prefix), ["keep.txt"])


if __name__ == "__main__":
    for tool in ("gpg", "apt-get", "curl", "xz"):
        if shutil.which(tool) is None:
            sys.exit(f"bootstrap_mirror: {tool} not found (scripts/bootstrap.sh installs it)")
    unittest.main(verbosity=2)
