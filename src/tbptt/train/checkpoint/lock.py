"""One run per run directory: an exclusive lock on ``DIR/.lock``.

Two processes writing one run directory corrupt it (both open ``metrics.jsonl``
for writing; one's rotation deletes the other's checkpoint mid-write). A run
therefore holds an advisory lock (``flock``) on ``DIR/.lock`` for as long as it
writes there, with its process id written inside so that a second run can say
who holds it. The kernel releases the lock when the process exits, however it
exits (kill -9 included): a lock is never stale, and the file itself is never
deleted (deleting it would let two processes lock two different files).
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from tbptt.errors import CheckpointError

__all__ = ["LOCK", "RunLock"]

LOCK = ".lock"

try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not protected from each other there
    fcntl = None


class RunLock:
    """The exclusive lock of a run directory, held from :meth:`acquire` to :meth:`release`.

    Use it as a context manager::

        with RunLock(out):
            ...  # write the run

    Raises (from ``acquire``):
        CheckpointError: another process holds the directory (one line naming the
            directory and that process), or the lock file cannot be created.
    """

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
        self.path = self.directory / LOCK
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        if self._fd is not None:
            return self
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise CheckpointError(
                f"cannot lock run directory {self.directory}: {e.strerror or e}"
            ) from e
        if fcntl is None:
            self._fd = fd
            return self
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise CheckpointError(
                    f"cannot lock run directory {self.directory}: {e.strerror or e}"
                ) from e
            who = f"process {holder}" if holder else "another process"
            raise CheckpointError(
                f"run directory {self.directory} is in use by {who} (it holds "
                f"{self.path}); wait for that run to end or stop it, or use another --out"
            ) from None
        try:  # who holds it, for the message above; the lock itself is the flock
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # a full disk: the lock holds all the same, the message says "another process"
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
