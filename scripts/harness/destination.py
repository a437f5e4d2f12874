"""An HTTP/1.1 destination on 127.0.0.1 that can be up, down (connections refused) or
blackholed (accepted, never read), on one port held from creation to close()."""
import socket
import threading

from .ports import PortHold


class Destination:
    """An HTTP/1.1 server on 127.0.0.1:port that can go down (listener and every connection
    closed, the port still held so that connections are refused), come back up on the same
    port, or blackhole (accept, never read). Starts down; `close()` releases the port.

    `status_for(path)` picks the answer status; `received` counts requests by path."""

    def __init__(self, status_for=None):
        self._hold = PortHold()
        self.port = self._hold.port
        self.status_for = status_for or (lambda path: 200)
        self.lock = threading.Lock()
        self.received = {}
        self.total = 0
        self.listener = None
        self.conns = []
        self.mode = "down"
        self.accept_thread = None

    def count(self, prefix=""):
        with self.lock:
            return sum(v for k, v in self.received.items() if k.startswith(prefix))

    def up(self, mode="serve"):
        if self.listener is not None:
            return
        s = self._hold.listener()
        self.listener = s
        self.mode = mode
        self.accept_thread = threading.Thread(target=self._accept, args=(s,), daemon=True)
        self.accept_thread.start()

    def down(self):
        s, self.listener = self.listener, None
        if s is not None:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        with self.lock:
            conns, self.conns = self.conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        if self.accept_thread is not None:
            self.accept_thread.join(5)
            self.accept_thread = None

    def close(self):
        """Down, and the port released."""
        self.down()
        self._hold.close()

    def _accept(self, s):
        while True:
            try:
                c, _ = s.accept()
            except OSError:
                return
            if self.listener is not s:
                c.close()
                return
            with self.lock:
                self.conns.append(c)
            if self.mode == "serve":
                threading.Thread(target=self._serve, args=(c,), daemon=True).start()
            # blackhole: keep the socket open, never read nor answer.

    def _serve(self, c):
        buf = b""
        c.settimeout(60)
        try:
            while True:
                while b"\r\n\r\n" not in buf:
                    data = c.recv(65536)
                    if not data:
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.split(b"\r\n")
                parts = lines[0].split(b" ")
                path = parts[1].decode("latin-1") if len(parts) > 1 else ""
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value.strip() or 0)
                while len(buf) < length:
                    data = c.recv(65536)
                    if not data:
                        return
                    buf += data
                buf = buf[length:]
                status = self.status_for(path)
                with self.lock:
                    self.received[path] = self.received.get(path, 0) + 1
                    self.total += 1
                c.sendall(b"HTTP/1.1 %d X\r\nContent-Length: 2\r\n\r\nok" % status)
        except OSError:
            return
        finally:
            c.close()
