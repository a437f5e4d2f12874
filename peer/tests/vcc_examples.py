#!/usr/bin/env python3
"""Turns every VCL example of vmod.vcc (the indented block after a line ending in "::")
into a loadable VCL file, so that docs_examples_compile.vtc can prove they compile.

  vcc_examples.py VMOD_VCC VMOD_SO OUTDIR   -> OUTDIR/ex<N>.vcl, prints N

Each example gets its own file with `vcl 4.1`, `import peer from VMOD_SO`, `import std`,
a backend, and `new x = peer.peer()` for every object it uses without creating it.
"""
import os
import re
import sys


def examples(text):
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].rstrip().endswith("::"):
            block = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith("    ")):
                block.append(lines[i][4:])
                i += 1
            code = "\n".join(block).strip()
            if code:
                yield code
        else:
            i += 1


def main():
    vcc, so, out = sys.argv[1:4]
    count = 0
    for n, code in enumerate(examples(open(vcc).read()), 1):
        code = re.sub(r"^\s*import peer;\s*$", "", code, flags=re.M)
        created = set(re.findall(r"\bnew\s+(\w+)\s*=", code))
        used = set(re.findall(r"\b(\w+)\.(?:queue_req|queue_req_body|pending|add_destination|set_header|unset_header)\(", code))
        missing = sorted(used - created - {"peer"})
        init = "".join("    new %s = peer.peer();\n" % o for o in missing)
        vcl = 'vcl 4.1;\nimport std;\nimport peer from "%s";\nbackend be none;\n' % so
        # Snippets check the client against the ACL the module description defines.
        if re.search(r"~\s*purgers\b", code) and not re.search(r"\bacl\s+purgers\b", code):
            vcl += 'acl purgers { "127.0.0.1"; }\n'
        if init:
            vcl += "sub vcl_init {\n%s}\n" % init
        vcl += code + "\n"
        with open(os.path.join(out, "ex%d.vcl" % n), "w") as f:
            f.write(vcl)
        count = n
    print(count)


if __name__ == "__main__":
    main()
