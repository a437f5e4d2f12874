"""The one test harness of this repository: varnishd instances, HTTP destinations and reserved
ports on 127.0.0.1, every port chosen by the OS and held by its owner from the start (no
bind-release-hope). Used by the demos (scripts/lib/stack.sh), the fault suite and soak
(faults/), and the benchmarks (bench/run.sh), from Python directly or through the CLI
(`python3 -m harness --help`, shell wrappers in scripts/lib/harness.sh).
"""
from .client import http_request, wait_until
from .destination import Destination
from .errors import HarnessError
from .ports import PortHold
from .varnishd import Varnishd, stop_instances

__all__ = ["Destination", "HarnessError", "PortHold", "Varnishd", "http_request", "stop_instances",
           "wait_until"]
