#!/usr/bin/env python3
"""A peer that accepts connections, reads whatever arrives and never answers.

Requests sent to it stay in flight until the sender gives up, so a peer VMOD's queue behind it
keeps what was queued: what the memory figure needs. Prints the port it listens on (127.0.0.1)
on stdout, then serves until killed.
"""
import selectors
import socket
import sys

port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", port))
srv.listen(1024)
srv.setblocking(False)
print(srv.getsockname()[1], flush=True)
sel = selectors.DefaultSelector()
sel.register(srv, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        s = key.fileobj
        if s is srv:
            try:
                c, _ = srv.accept()
            except BlockingIOError:
                continue
            c.setblocking(False)
            sel.register(c, selectors.EVENT_READ)
        else:
            try:
                data = s.recv(65536)
            except (BlockingIOError, ConnectionError):
                data = b"x"
            if not data:
                sel.unregister(s)
                s.close()
