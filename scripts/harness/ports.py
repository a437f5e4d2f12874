"""Ports the OS assigns and their owner keeps: never released between choosing and using.

A `PortHold` is a TCP socket bound to 127.0.0.1 with SO_REUSEPORT and never listening: a
connection to its port is refused (a "down" destination), the OS never hands the port to
another bind(port 0) nor uses it as the local port of an outgoing connection, and a socket
that does not set SO_REUSEPORT (varnishd, another test) cannot bind it. `listener()` opens a
listening socket on the held port (SO_REUSEPORT too, from this process): the destination is
up; closing that socket takes it down again while the port stays held.
"""
import socket


def _reuseport_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Without SO_REUSEADDR on purpose: a SO_REUSEADDR socket elsewhere could bind a port
    # whose only holder does not listen.
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    return s


class PortHold:
    """A port on 127.0.0.1 reserved for as long as this object is open."""

    def __init__(self):
        self._sock = _reuseport_socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]

    def listener(self, backlog=512):
        """A new socket listening on the held port (the caller closes it)."""
        if self._sock is None:
            raise ValueError("port hold already closed")
        s = _reuseport_socket()
        try:
            s.bind(("127.0.0.1", self.port))
            s.listen(backlog)
        except OSError:
            s.close()
            raise
        return s

    def close(self):
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
