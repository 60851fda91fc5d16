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

:func:`cgroup_headroom` is what the process's control group still lets it
allocate (``memory.max`` minus ``memory.current`` under cgroup v2,
``memory.limit_in_bytes`` minus ``memory.usage_in_bytes`` under v1): inside a
container the machine's ``MemAvailable`` can be far more than the process may use,
and crossing the group's limit kills the process with no message.
"""

from __future__ import annotations

import ctypes
import gc
import math
import os
import threading
import weakref

__all__ = ["PeakMemory", "SavedTensorBytes", "cgroup_headroom", "release_memory", "rss_bytes"]

UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a number near 2**63


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii") as f:
            text = f.read().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= UNLIMITED else value


def _cgroup_dirs(root: str, proc: str) -> list[tuple[str, str, str]]:
    """(directory, limit file, usage file) of this process's memory cgroup, v2 then v1."""
    out = []
    try:
        with open(proc, encoding="ascii") as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # cgroup v2: one unified hierarchy
            out.append((os.path.join(root, path.lstrip("/")), "memory.max", "memory.current"))
        elif "memory" in controllers.split(","):
            out.append(
                (
                    os.path.join(root, "memory", path.lstrip("/")),
                    "memory.limit_in_bytes",
                    "memory.usage_in_bytes",
                )
            )
    return out


def cgroup_headroom(root: str = "/sys/fs/cgroup", proc: str = "/proc/self/cgroup") -> int | None:
    """Bytes this process's memory cgroup still allows (limit minus usage), or None when
    no limit is set or none can be read. The tightest of the group and its parents.
    (``root``, ``proc``: where the hierarchy and the process's membership are read.)"""
    best = None
    for directory, limit_file, usage_file in _cgroup_dirs(root, proc):
        d = directory
        while d.startswith(root) and len(d) >= len(root):
            limit = _read_int(os.path.join(d, limit_file))
            if limit is not None:
                usage = _read_int(os.path.join(d, usage_file)) or 0
                room = max(0, limit - usage)
                best = room if best is None else min(best, room)
            if d == root:
                break
            d = os.path.dirname(d)
    return best


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
