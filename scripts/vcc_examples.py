#!/usr/bin/env python3
"""The one extractor of the VCL examples in a vmod.vcc (the indented block after a line
ending in "::"), used by each module's doc-example VTC to prove the user documentation
compiles and loads.

  vcc_examples.py VMOD_VCC OUTDIR [--complete] [--so VMOD_SO]   -> OUTDIR/ex<N>.vcl, prints N
  vcc_examples.py --md FILE.md OUTDIR --peer-so P --saintmode-so S -> OUTDIR/<FILE>-<N>.vcl

--md: every ```vcl block of a Markdown file (README.md, a migration guide) is a whole VCL file
as a user would copy it: it only gets its `import` lines pointed at the built modules,
`vcl 4.1;` if it has none, and a backend for every one it names without declaring. A block
right after the line `<!-- vcl: not compiled -->` (Varnish 3 syntax, for comparison) is
skipped.
Every example, in either mode, is refused (exit with a message) when it teaches an unsafe use:
request data concatenated into what a peer sends without peer.json_string()/url_component(),
or PURGE forwarded without an ACL check.

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
import sys
import textwrap

SKIP = "<!-- vcl: not compiled -->"


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


def markdown(md, out, peer_so, saintmode_so):
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("vcc")
    ap.add_argument("outdir")
    ap.add_argument("--complete", action="store_true")
    ap.add_argument("--so", help="the module's .so, for snippets")
    ap.add_argument("--md", action="store_true", help="VMOD_VCC is a Markdown file")
    ap.add_argument("--peer-so")
    ap.add_argument("--saintmode-so")
    args = ap.parse_args()
    if args.md:
        if not (args.peer_so and args.saintmode_so):
            ap.error("--md needs --peer-so and --saintmode-so")
        markdown(args.vcc, args.outdir, args.peer_so, args.saintmode_so)
        return
    vcc = open(args.vcc).read()
    count = 0
    for n, code in enumerate(examples(vcc), 1):
        why = unsafe_use(code)
        if why:
            sys.exit("%s: example %d teaches an unsafe use: %s" % (args.vcc, n, why))
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
