#!/usr/bin/env python3
"""The three figures of issue 12 (architecture), printed with how each is computed.

  python3 scripts/arch_figures.py [--repo DIR]

Non-test Rust: the .rs files git tracks under <member>/src/ of the workspace members
(vmod-build, vmod-rt, peer, saintmode), without *_tests.rs files and without the items
marked #[cfg(test)] (a test module's whole body); "code lines" leave out blank lines and
comment-only lines (//, ///, //!).

  1. entry-point share: code lines of the files that define an `extern "C" fn NAME` (the
     entry points and callbacks Varnish or libcurl call) / all code lines (target <= 30 %);
  2. longest non-test file: the most lines (all lines, #[cfg(test)] items left out) of one
     file (target <= 600);
  3. duplicated blocks between peer/src and saintmode/src: rows of `duplicates --most 200`
     (six or more lines, same or same shape) with one side in each (target 0).
"""
import argparse
import os
import re
import subprocess
import sys

MEMBERS = ("vmod-build", "vmod-rt", "peer", "saintmode")
# A definition (`extern "C" fn name(`), not a function pointer type (`extern "C" fn(`).
ENTRY = re.compile(r'\bextern\s+"C"\s+fn\s+\w+')


def strip_cfg_test(text):
    """The lines of `text` without the items marked `#[cfg(test)]`. The code is rustfmt-formatted
    (`make lint` checks it), so an item ends on its own line when that line ends with `;`, else
    at the first later line that is `}` (or `};`) at the item's indentation."""
    lines = text.splitlines()
    out = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != "#[cfg(test)]":
            out.append(lines[i])
            i += 1
            continue
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        i += 1
        while i < len(lines) and lines[i].strip().startswith("#["):  # more attributes
            i += 1
        if i < len(lines) and lines[i].rstrip().endswith(";"):
            i += 1
            continue
        while i < len(lines) and lines[i].rstrip() not in (indent + "}", indent + "};"):
            i += 1
        i += 1
    return out


def code_lines(lines):
    return sum(1 for ln in lines if ln.strip() and not ln.strip().startswith("//"))


def rust_files(repo):
    out = subprocess.run(["git", "-C", repo, "ls-files", *(f"{m}/src/*.rs" for m in MEMBERS)],
                         capture_output=True, text=True, check=True).stdout.split()
    return sorted(f for f in out if not f.endswith("_tests.rs"))


def cross_duplicates(repo):
    out = subprocess.run(["duplicates", "--repo", repo, "--most", "200", "--seconds", "120"],
                         capture_output=True, text=True).stdout
    rows = []
    for line in out.splitlines():
        sides = re.findall(r"(\S+):\d+-\d+", line)
        if len(sides) == 2 and {s.split("/")[0] for s in sides} == {"peer", "saintmode"} \
                and all(s.split("/")[1] == "src" for s in sides):
            rows.append(line)
    return rows, out.splitlines()[0] if out else "duplicates printed nothing"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    a = ap.parse_args()
    total = entry = 0
    sizes = []
    entry_files = []
    for f in rust_files(a.repo):
        with open(os.path.join(a.repo, f)) as fh:
            text = fh.read()
        kept = strip_cfg_test(text)
        n = code_lines(kept)
        total += n
        if ENTRY.search("\n".join(kept)):
            entry += n
            entry_files.append(f"{f} ({n})")
        sizes.append((len(kept), f))
    print(f"1. entry-point share: {entry} / {total} code lines = {100.0 * entry / max(total, 1):.1f} % "
          f"(target <= 30 %)")
    print(f"   files with extern \"C\" fn: {', '.join(entry_files)}")
    sizes.sort(reverse=True)
    print(f"2. longest non-test Rust file: {sizes[0][1]}, {sizes[0][0]} lines (target <= 600); next: "
          + ", ".join(f"{f} {n}" for n, f in sizes[1:4]))
    rows, head = cross_duplicates(a.repo)
    print(f"3. duplicated blocks between peer/src and saintmode/src: {len(rows)} (target 0)")
    print(f"   duplicates --repo . --most 200: {head}")
    for r in rows:
        print(f"   {r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
