#!/usr/bin/env python3
"""The one extractor of the VCL examples in a vmod.vcc (the indented block after a line
ending in "::"), used by each module's doc-example VTC to prove the user documentation
compiles and loads.

  vcc_examples.py VMOD_VCC OUTDIR [--complete] [--so VMOD_SO]   -> OUTDIR/ex<N>.vcl, prints N

--complete: only the complete examples (those starting with `vcl 4.x;`), written as they are
(their plain `import <module>;` resolves through vmod_path).
Otherwise every example; a complete one is written as it is, a snippet gets what it needs to
load alone: `vcl 4.1`, `import std`, `import <module> from VMOD_SO` (its own plain import is
dropped), a backend, an ACL for every `~ name` it tests without defining it, and
`new x = <module>.<object>()` for every object it calls a method of (`$Method`) without creating.
"""
import argparse
import os
import re
import textwrap


def examples(text):
    """Every non-empty indented block after a line ending in "::", dedented."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].rstrip().endswith("::"):
            block = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i][:1] in (" ", "\t")):
                block.append(lines[i])
                i += 1
            code = textwrap.dedent("\n".join(block)).strip()
            if code:
                yield code
        else:
            i += 1


def is_complete(code):
    return re.match(r"vcl\s+4\.\d+\s*;", code) is not None


def standalone(code, vcc, so):
    """A snippet wrapped so that it loads on its own (see the module docstring)."""
    module = re.search(r"^\$Module\s+(\w+)", vcc, re.M).group(1)
    objects = re.findall(r"^\$Object\s+(\w+)\(", vcc, re.M)
    methods = re.findall(r"^\$Method\s+\w+\s+\.(\w+)\(", vcc, re.M)
    code = re.sub(r"^\s*import %s;\s*$" % module, "", code, flags=re.M)
    created = set(re.findall(r"\bnew\s+(\w+)\s*=", code))
    used = set()
    if methods:
        used = set(re.findall(r"\b(\w+)\.(?:%s)\(" % "|".join(methods), code))
    missing = sorted(used - created - {module})
    vcl = 'vcl 4.1;\nimport std;\nimport %s from "%s";\nbackend be none;\n' % (module, so)
    for acl in sorted(set(re.findall(r"~\s*(\w+)\b", code))):
        if not re.search(r"\bacl\s+%s\b" % acl, code):
            vcl += 'acl %s { "127.0.0.1"; }\n' % acl
    if missing and objects:
        vcl += "sub vcl_init {\n%s}\n" % "".join(
            "    new %s = %s.%s();\n" % (o, module, objects[0]) for o in missing)
    return vcl + code + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("vcc")
    ap.add_argument("outdir")
    ap.add_argument("--complete", action="store_true")
    ap.add_argument("--so", help="the module's .so, for snippets")
    args = ap.parse_args()
    vcc = open(args.vcc).read()
    count = 0
    for code in examples(vcc):
        if is_complete(code):
            vcl = code + "\n"
        elif args.complete:
            continue
        else:
            if not args.so:
                ap.error("--so is needed for snippets (or use --complete)")
            vcl = standalone(code, vcc, args.so)
        count += 1
        with open(os.path.join(args.outdir, "ex%d.vcl" % count), "w") as f:
            f.write(vcl)
    print(count)


if __name__ == "__main__":
    main()
