"""Peak memory of one run inside a long-lived process.

``ru_maxrss`` is the process's peak resident size: it only ever grows, so once
one run has used a lot of memory it says nothing about the next. Instead
:class:`PeakMemory` samples the resident set size (``/proc/self/statm``, Linux)
from a background thread every few milliseconds and reports the highest sample
minus the level at the start: the extra memory the code inside the ``with``
block needed at its worst moment. Between runs :func:`release_memory` hands
freed heap pages back to the system so the next baseline is not inflated.
Peaks shorter than the sampling interval can be missed; where ``/proc`` does not
exist the result is NaN.
"""

from __future__ import annotations

import ctypes
import gc
import math
import os
import threading
import weakref

__all__ = ["PeakMemory", "SavedTensorBytes", "release_memory", "rss_bytes"]


def rss_bytes() -> int | None:
    """Resident set size of this process in bytes (None where /proc is missing)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def release_memory() -> None:
    # Return freed heap pages to the system so the next run's baseline is not inflated
    # by what the previous run left in the allocator's free lists (glibc only). Tensors die
    # by reference counting; a young-generation collection catches stray cycles cheaply
    # (a full one costs about a second with torch loaded).
    gc.collect(1)
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Highest resident set size seen by a sampling thread, above the level at start (MiB)."""

    def __init__(self, interval: float):
        self.interval = interval
        self.start = rss_bytes()
        self.peak = self.start
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(self.interval):
            rss = rss_bytes()
            if rss is not None and rss > self.peak:
                self.peak = rss

    def __enter__(self) -> PeakMemory:
        if self.start is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        if self._thread.is_alive():
            self._thread.join()
        rss = rss_bytes()
        if rss is not None and self.peak is not None:
            self.peak = max(self.peak, rss)

    @property
    def megabytes(self) -> float:
        if self.start is None:
            return math.nan
        return (self.peak - self.start) / 2**20


class SavedTensorBytes:
    """Peak bytes of the tensors autograd holds for backward (saved-tensor hooks).

    Use as ``with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):``;
    unlike the resident set size it counts exactly what the graph keeps alive.

    Each saved tensor is wrapped in a holder whose finalizer subtracts its bytes
    when autograd drops it, so ``peak`` is the high-water mark over forward and
    backward, including the segments a checkpoint recomputes during backward.
    """

    class _Holder:
        __slots__ = ("tensor", "__weakref__")

        def __init__(self, tensor):
            self.tensor = tensor

    def __init__(self):
        self.live = self.peak = 0

    def pack(self, tensor):
        holder = self._Holder(tensor)
        n = tensor.untyped_storage().nbytes()
        self.live += n
        self.peak = max(self.peak, self.live)
        weakref.finalize(holder, self._free, n)
        return holder

    def _free(self, n):
        self.live -= n

    @staticmethod
    def unpack(holder):
        return holder.tensor
