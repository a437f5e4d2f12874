#!/usr/bin/env python3
"""Demo origin: answers every GET with a small page naming itself and counting hits.

URLs under --fail-prefix get a 500, so saintmode has something to blacklist.
Usage: origin.py [--port P] --name NAME [--fail-prefix /flaky/]
Prints the port it listens on (127.0.0.1; by default one the OS assigns) as its first line.
"""
import argparse
import http.server
import itertools
import threading


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--name", required=True)
    ap.add_argument("--fail-prefix", default=None)
    args = ap.parse_args()
    hits = itertools.count(1)
    lock = threading.Lock()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            with lock:
                n = next(hits)
            failing = args.fail_prefix and self.path.startswith(args.fail_prefix)
            status = 500 if failing else 200
            body = f"{args.name}: {self.path} (hit {n})\n".encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Origin", args.name)
            self.send_header("X-Origin-Hit", str(n))
            self.send_header("Cache-Control", "max-age=300")
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, fmt, *a):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
