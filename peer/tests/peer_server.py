#!/usr/bin/env python3
"""A destination for the peer VTC tests: answers every request (any method) and appends
it to a JSON-lines log with the headers in order, duplicates kept, bytes preserved
(latin-1 round trip), so that a test can check exactly what the VMOD sent.

  peer_server.py --port-file F --log F [--port N] [--status 200] [--cert C --key K]
                 [--listen-when FILE | --refuse] [--answers JSON]

Binds 127.0.0.1 (port 0: any free port), writes the port number to --port-file once it
listens, serves HTTP/1.1 with keep-alive, or HTTPS with --cert/--key.
With --listen-when, the port is written as soon as it is bound, and the server only starts
listening once FILE exists (polled for at most 120 s): until then connections to the port
are refused, a "down" destination that comes up on the same port without the port ever
being free for another process to take. With --refuse, the port is written once bound and
never listened on: a dead destination (connections refused) for as long as the process runs
(at most 600 s), which no other process can take over.
With --answers '[[429, [["Retry-After", "2"]]], [200, []]]', the Nth request gets the Nth
status and headers of the list, later ones --status. Each log record carries "t", the
CLOCK_MONOTONIC time (seconds, comparable between processes) at which the request was read.
"""
import argparse
import base64
import json
import os
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--status", type=int, default=200)
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--listen-when")
    ap.add_argument("--refuse", action="store_true")
    ap.add_argument("--answers", default="[]")
    args = ap.parse_args()
    lock = threading.Lock()
    answers = json.loads(args.answers)
    count = [0]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def __getattr__(self, name):
            if name.startswith("do_"):
                return self.handle_any
            raise AttributeError(name)

        def handle_any(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            record = {
                "method": self.command,
                "path": self.path,
                "version": self.request_version,
                # http.client decodes header lines as latin-1: encoding back gives the bytes.
                "headers": [[k, v] for k, v in self.headers.raw_items()],
                "body_b64": base64.b64encode(body).decode(),
                "conn": "%s:%d" % self.client_address,
                "t": time.monotonic(),
            }
            with lock:
                n = count[0]
                count[0] += 1
                with open(args.log, "a", encoding="latin-1") as f:
                    f.write(json.dumps(record) + "\n")
            status, headers = answers[n] if n < len(answers) else (args.status, [])
            payload = b"ok\n"
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler, bind_and_activate=False)
    server.server_bind()
    if args.refuse:
        write_port(args.port_file, server.server_address[1])
        time.sleep(600)
        return
    if args.listen_when:
        write_port(args.port_file, server.server_address[1])
        deadline = time.monotonic() + 120
        while not os.path.exists(args.listen_when):
            if time.monotonic() > deadline:
                raise SystemExit(f"peer_server: {args.listen_when} did not appear within 120 s")
            time.sleep(0.05)
    server.server_activate()
    if args.cert:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.cert, args.key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    if not args.listen_when:
        write_port(args.port_file, server.server_address[1])
    server.serve_forever()


def write_port(path, port):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.rename(tmp, path)


if __name__ == "__main__":
    main()
