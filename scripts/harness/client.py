"""Bounded waiting and a bounded HTTP client for 127.0.0.1."""
import http.client
import time


def wait_until(pred, timeout, step=0.1):
    """Polls pred() until it is truthy or timeout seconds passed; returns the last value."""
    deadline = time.monotonic() + timeout
    value = pred()
    while not value and time.monotonic() < deadline:
        time.sleep(step)
        value = pred()
    return value


def http_request(port, path, method="GET", headers=None, body=None, timeout=30):
    """(status, headers dict lower-case, seconds). Status 0 on a connection error."""
    t0 = time.monotonic()
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        r.read()
        hdrs = {k.lower(): v for k, v in r.getheaders()}
        return r.status, hdrs, time.monotonic() - t0
    except (OSError, http.client.HTTPException):
        return 0, {}, time.monotonic() - t0
    finally:
        c.close()
