#!/usr/bin/env python3
"""Send exactly N HTTP/1.1 GET requests with distinct URLs, fast, over keep-alive connections.

Used where wrk (which runs for a duration, not a count) does not fit: populating N saintmode
blacklist entries (/bl/<run>/<i>) and queueing N requests of an exact size for the memory figures.

  hammer.py --port P --count N --prefix /bl/x/ [--conns 4] [--depth 32] [--size 1024]

Requests are pipelined `--depth` at a time on each connection (Varnish answers them in order).
--size pads each request with an X-Pad header so that the whole request (request line and
headers) is exactly that many bytes. Prints one JSON line: {"sent": N, "ok": n2xx, "other": n, "seconds": t}.
"""
import argparse
import json
import multiprocessing as mp
import socket
import time


def build(prefix, i, host, size):
    head = f"GET {prefix}{i} HTTP/1.1\r\nHost: {host}\r\n"
    if size:
        base = len(head) + len("X-Pad: \r\n") + 2
        pad = size - base
        if pad < 1:
            raise SystemExit(f"--size {size} too small for {prefix}{i}")
        head += "X-Pad: " + "p" * pad + "\r\n"
    req = head + "\r\n"
    return req.encode()


def read_responses(sock, buf, n):
    """Read n complete responses; return (buf_rest, ok, other)."""
    ok = other = 0
    while n:
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            chunk = sock.recv(262144)
            if not chunk:
                raise ConnectionError("connection closed by server")
            buf += chunk
            continue
        head = buf[:end].decode("latin-1")
        status = int(head.split(" ", 2)[1])
        clen = 0
        chunked = False
        for line in head.split("\r\n")[1:]:
            k, _, v = line.partition(":")
            k = k.strip().lower()
            if k == "content-length":
                clen = int(v.strip())
            elif k == "transfer-encoding" and "chunked" in v.lower():
                chunked = True
        if chunked:
            raise SystemExit("chunked responses are not supported by hammer.py")
        total = end + 4 + clen
        while len(buf) < total:
            chunk = sock.recv(262144)
            if not chunk:
                raise ConnectionError("connection closed by server")
            buf += chunk
        buf = buf[total:]
        if 200 <= status < 300:
            ok += 1
        else:
            other += 1
        n -= 1
    return buf, ok, other


def worker(args, lo, hi, q):
    try:
        q.put(run(args, lo, hi))
    except Exception as e:  # report, never hang the parent
        q.put((0, hi - lo, f"{type(e).__name__}: {e}"))


def run(args, lo, hi):
    host = f"127.0.0.1:{args.port}"
    sock = socket.create_connection(("127.0.0.1", args.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    buf = b""
    ok = other = 0
    i = lo
    while i < hi:
        j = min(hi, i + args.depth)
        sock.sendall(b"".join(build(args.prefix, k, host, args.size) for k in range(i, j)))
        buf, o, x = read_responses(sock, buf, j - i)
        ok += o
        other += x
        i = j
    sock.close()
    return ok, other, None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--prefix", default="/x/")
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--conns", type=int, default=4)
    ap.add_argument("--depth", type=int, default=32)
    ap.add_argument("--size", type=int, default=0)
    args = ap.parse_args()
    t0 = time.monotonic()
    q = mp.Queue()
    procs = []
    n = args.count
    per = (n + args.conns - 1) // args.conns
    for c in range(args.conns):
        lo = args.start + c * per
        hi = min(args.start + n, lo + per)
        if lo >= hi:
            break
        p = mp.Process(target=worker, args=(args, lo, hi, q))
        p.start()
        procs.append(p)
    ok = other = 0
    errors = []
    for _ in procs:
        o, x, err = q.get()
        ok += o
        other += x
        if err:
            errors.append(err)
    for p in procs:
        p.join()
    out = {"sent": n, "ok": ok, "other": other, "seconds": round(time.monotonic() - t0, 3)}
    if errors:
        out["errors"] = errors[:3]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
