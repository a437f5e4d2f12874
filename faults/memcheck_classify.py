#!/usr/bin/env python3
"""Splits AddressSanitizer/LeakSanitizer logs (ASAN_OPTIONS=log_path=DIR/asan:log_exe_name=1,
one file per process) into reports and attributes each one:

  ours   a frame of the report is in libvmod_peer / libvmod_saintmode (their Rust code and the
         crates linked into them: module name, crate path or demangled symbol);
  noise  every other report: varnishd itself (its child's and manager's exit-time leaks), the
         VCL compiler (gcc, cc1, as, ld) run by the manager.

  memcheck_classify.py LOGDIR [--vtc NAME]   prints "ours=N noise=M" and the reports of ours;
  memcheck_classify.py LOGDIR --summary      one line per noise origin (top frame), for the report.
"""
import os
import re
import sys

# Module names (unsymbolized frames), source paths, and crate names in legacy (vmod_peer::)
# or v0 (..20vmod_peer_..., ..9vmod_peer...) mangled symbols.
OURS = re.compile(r"libvmod_peer|libvmod_saintmode|vmod_peer::|vmod_saintmode::|vmod_rt::|"
                  r"\d(vmod_peer|vmod_saintmode|vmod_rt)|/peer/src/|/saintmode/src/|/vmod-rt/src/|"
                  r"/vmod-build/src/|"
                  r"\.cargo/registry/")
# A report starts with "Direct leak", "Indirect leak" or "==<exe>==<pid>==ERROR: ..." (the exe
# part only with log_exe_name=1).
SPLIT = re.compile(r"^(?=Direct leak|Indirect leak|==[^\n]*==ERROR: AddressSanitizer)", re.M)


def reports(logdir):
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(logdir) for f in fs if f.startswith("asan."))
    for path in files:
        name = os.path.relpath(path, logdir)
        with open(path, errors="replace") as f:
            text = f.read()
        # "asan.<exe>.<pid>"
        parts = os.path.basename(path).split(".")
        exe = parts[1] if len(parts) >= 3 else "?"
        for block in SPLIT.split(text):
            block = block.strip()
            if not block:
                continue
            first = block.splitlines()[0]
            if not (first.startswith("Direct leak") or first.startswith("Indirect leak")
                    or "ERROR: AddressSanitizer" in first):
                continue
            kind = block.splitlines()[0]
            frames = [ln.strip() for ln in block.splitlines() if re.match(r"\s*#\d+ ", ln)]
            yield exe, name, kind, frames, block


def top_frame(frames):
    for fr in frames:
        if "libsanitizer" in fr or "asan_" in fr or "__interceptor" in fr:
            continue
        m = re.search(r" in (\S+)", fr)
        if m:
            return m.group(1)
        m = re.search(r"\(([^)+]+)", fr)
        return m.group(1) if m else fr
    return "?"


def main():
    logdir = sys.argv[1]
    ours, noise = [], {}
    for exe, name, kind, frames, block in reports(logdir):
        if any(OURS.search(fr) for fr in frames):
            ours.append((name, block))
        else:
            m = re.match(r"(Direct leak|Indirect leak) of (\d+) byte", kind)
            what = m.group(1) if m else kind.split("==ERROR: ")[-1][:60]
            key = f"{exe}: {what} from {top_frame(frames)}"
            n, b = noise.get(key, (0, 0))
            noise[key] = (n + 1, b + (int(m.group(2)) if m else 0))
    if "--summary" in sys.argv:
        for k, (n, b) in sorted(noise.items(), key=lambda kv: (kv[0].split(":")[0], -kv[1][1])):
            print(f"  {n:4d} x {k} ({b} bytes)")
        return 0
    print(f"ours={len(ours)} noise={sum(n for n, _ in noise.values())}")
    for name, block in ours:
        print(f"--- {name}\n{block[:3000]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
