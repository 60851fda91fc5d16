"""One run per run directory: an exclusive lock on ``DIR/.lock``.

Two processes writing one run directory corrupt it (both open ``metrics.jsonl``
for writing; one's rotation deletes the other's checkpoint mid-write). A run
therefore holds an advisory lock (``flock``) on ``DIR/.lock`` for as long as it
writes there, with its process id written inside so that a second run can say
who holds it. The kernel releases the lock when the process exits, however it
exits (kill -9 included): a lock is never stale, and the file itself is never
deleted (deleting it would let two processes lock two different files).

A run writes only inside its directory: the lock file is opened without following a
symbolic link (``O_NOFOLLOW``), and a directory holding a symbolic link that leads out
of it (``DIR/.lock``, ``DIR/metrics.jsonl``, ``DIR/checkpoints`` -> elsewhere) is
refused before the run writes anything (:func:`links_leaving`): a link planted there
would otherwise make the run truncate or overwrite a file outside.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from tbptt.errors import CheckpointError
from tbptt.train.checkpoint.rundir import KEPT_DIR

__all__ = ["LOCK", "RunLock", "links_leaving"]

LOCK = ".lock"
_OPEN = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


try:
    import fcntl
except ImportError:  # Windows: no flock; runs are not protected from each other there
    fcntl = None


def links_leaving(directory: str | Path) -> list[str]:
    """The entries of a run directory (and of its ``checkpoints`` folder) that are symbolic
    links leading out of it (dangling ones too: writing through them creates the file
    elsewhere), as ``"name -> target"``."""
    directory = Path(directory)
    root = os.path.realpath(directory)
    found = []
    for folder in (directory, directory / KEPT_DIR):  # where a run writes
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if not entry.is_symlink():
                continue
            target = os.path.realpath(entry.path)
            if os.path.commonpath([root, target]) != root:
                try:
                    shown = os.readlink(entry.path)
                except OSError:
                    shown = target
                found.append(f"{os.path.relpath(entry.path, directory)} -> {shown}")
    return sorted(found)


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
        except OSError as e:
            raise CheckpointError(
                f"cannot lock run directory {self.directory}: {e.strerror or e}"
            ) from e
        if links := links_leaving(self.directory):
            raise CheckpointError(
                f"run directory {self.directory} holds symbolic links that lead out of it "
                f"({'; '.join(links[:3])}); a run writes only inside its directory: remove "
                "them, or use another run directory"
            )
        try:
            fd = os.open(self.path, _OPEN, 0o666)  # the umask decides, as for every file
        except OSError as e:
            if os.path.islink(self.path):
                raise CheckpointError(
                    f"{self.path} is a symbolic link; a run never writes through one: remove "
                    "it, or use another run directory"
                ) from None
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
                f"{self.path}); wait for that run to end or stop it, or use another run directory"
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
