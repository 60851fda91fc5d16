"""Stopping a run cleanly: SIGINT / SIGTERM end it at the next window boundary."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable

__all__ = ["Stopped", "StopRequest"]


class Stopped(Exception):
    """A signal asked the run to stop; it stopped at a window boundary, checkpointed."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


class StopRequest:
    """SIGINT / SIGTERM set a flag; the training loop stops at the next window boundary.

    A second signal aborts at once (``KeyboardInterrupt``: no checkpoint beyond the last
    one written). ``say(line)`` is told when a first signal arrives.
    """

    def __init__(self, say: Callable[[str], None] | None = None):
        self.signum = 0
        self._say = say

    def _handler(self, signum, frame):
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum
        if self._say is not None:
            self._say(
                f"{signal.Signals(signum).name} received, stopping after this window "
                "(send it again to abort without a checkpoint)"
            )

    @contextlib.contextmanager
    def installed(self):
        previous = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._handler)
        except ValueError:  # not the main thread: leave signals to the caller
            pass
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
