#!/usr/bin/env python3
"""Turns every VCL example of vmod.vcc (the indented block after a line ending in "::"),
or every ```vcl block of a Markdown file (README.md, the migration guide), into a loadable
VCL file, so that docs_examples_compile.vtc can prove they compile.

  vcc_examples.py VMOD_VCC VMOD_SO OUTDIR                  -> OUTDIR/ex<N>.vcl, prints N
  vcc_examples.py --md FILE.md PEER_SO SAINTMODE_SO OUTDIR -> OUTDIR/<FILE>-<N>.vcl, prints N

Each vmod.vcc example gets its own file with `vcl 4.1`, `import peer from VMOD_SO`,
`import std`, a backend, and `new x = peer.peer()` for every object it uses without creating
it. A Markdown block is a whole VCL file as a user would copy it: it only gets its `import`
lines pointed at the built modules, `vcl 4.1;` if it has none, and a backend for every one it
names without declaring (a user has their own). A block right after the line
`<!-- vcl: not compiled -->` (Varnish 3 syntax, for comparison) is skipped.
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


SKIP = "<!-- vcl: not compiled -->"


def markdown_blocks(text):
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "```vcl":
            skip = i > 0 and lines[i - 1].strip() == SKIP
            block = []
            i += 1
            while i < len(lines) and lines[i].strip() != "```":
                block.append(lines[i])
                i += 1
            if not skip:
                yield "\n".join(block)
        i += 1


def unsafe_use(code):
    """What a documented example must not teach: request data concatenated into what a peer
    sends without json_string()/url_component(), or PURGE fanned out without an ACL check."""
    wrapped = re.sub(r"peer\.(?:json_string|url_component)\([^()]*\)", "X", code)
    for call in re.finditer(r"queue_req(?:_body)?\(([^;]*)\);", wrapped):
        if re.search(r"\b(?:req|bereq)\.(?:url|http\.\w+)", call.group(1)):
            return "request data not wrapped in peer.json_string()/url_component(): " + call.group(0)
    if '"PURGE"' in code and "queue_req" in code and not re.search(r"client\.ip\s*!?~", code):
        return "PURGE is forwarded without an ACL check (client.ip ~ acl)"
    return None


def markdown(md, peer_so, saintmode_so, out):
    stem = os.path.splitext(os.path.basename(md))[0]
    count = 0
    for code in markdown_blocks(open(md).read()):
        why = unsafe_use(code)
        if why:
            sys.exit("%s: an example teaches an unsafe use: %s" % (md, why))
        code = re.sub(r"^(\s*)import peer;", r'\1import peer from "%s";' % peer_so, code, flags=re.M)
        code = re.sub(
            r"^(\s*)import saintmode;", r'\1import saintmode from "%s";' % saintmode_so, code, flags=re.M
        )
        head = "" if re.match(r"\s*vcl\s+4", code) else "vcl 4.1;\n"
        declared = set(re.findall(r"\bbackend\s+(\w+)\s*\{", code))
        named = re.findall(r"saintmode\.saintmode\(\s*(\w+)", code)
        missing = [b for b in dict.fromkeys(named) if b not in declared]
        backends = "".join('backend %s { .host = "127.0.0.1"; .port = "8080"; }\n' % b for b in missing)
        if not declared and not missing:
            backends = "backend be none;\n"
        # The backends go after the imports (and the vcl line) of the block.
        lines = code.splitlines()
        cut = 0
        for n, line in enumerate(lines):
            if re.match(r"\s*(vcl\s+4|import\s)", line):
                cut = n + 1
        vcl = head + "\n".join(lines[:cut]) + "\n" + backends + "\n".join(lines[cut:]) + "\n"
        count += 1
        with open(os.path.join(out, "%s-%d.vcl" % (stem, count)), "w") as f:
            f.write(vcl)
    print(count)


def main():
    if sys.argv[1] == "--md":
        markdown(*sys.argv[2:6])
        return
    vcc, so, out = sys.argv[1:4]
    count = 0
    for n, code in enumerate(examples(open(vcc).read()), 1):
        why = unsafe_use(code)
        if why:
            sys.exit("%s: example %d teaches an unsafe use: %s" % (vcc, n, why))
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
