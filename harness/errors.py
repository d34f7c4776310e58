"""The harness's one error: a process or engine could not be fetched, started or probed."""


class HarnessError(RuntimeError):
    """A process or engine the harness started did not come up, answer or stop in time."""
