"""The harness's one exception: something it was asked to start, reach or stop did not work."""


class HarnessError(Exception):
    pass
