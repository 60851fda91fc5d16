"""Metrics as JSON lines: one object per line, written as it comes, readable by any script.

A long run writes millions of step lines, so neither the writer nor a checkpoint
holds them all: :class:`MetricsWriter` keeps the epoch (and other non-step)
records and, given ``tail``, only the newest step records in memory, and counts
the bytes it wrote and their SHA-256 (:meth:`MetricsWriter.position`), which is
what a checkpoint stores so that a resumed run can cut the file back to that point
and check it. :func:`read_metrics` with ``max_steps`` reads a file of any length
in bounded memory (every non-step record, the step records thinned evenly).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any

from tbptt.atomic import NOFOLLOW, write_all, write_error

__all__ = ["MetricsWriter", "read_metrics", "file_sha256"]


def _clean(value: Any) -> Any:
    # JSON has no NaN or infinity: write them as strings a reader can still parse.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def file_sha256(path: str | Path, length: int | None = None) -> tuple[int, Any]:
    """``(bytes read, sha256 object)`` of the first ``length`` bytes of ``path`` (all: None)."""
    digest, read = hashlib.sha256(), 0
    with open(path, "rb") as f:
        while length is None or read < length:
            chunk = f.read(1 << 20 if length is None else min(1 << 20, length - read))
            if not chunk:
                break
            digest.update(chunk)
            read += len(chunk)
    return read, digest


class MetricsWriter:
    """Append records to a JSON-lines file (or keep them in memory when ``path`` is None).

    Args:
        path: the file; None keeps the records in memory only.
        append: continue an existing file (a resumed run) instead of starting it afresh.
        tail: keep only the newest ``tail`` step records in :attr:`records` (about
            that many; non-step records are always kept). None: keep every record.

    Raises:
        CheckpointError: the file cannot be opened or written (disk full, I/O error,
            permissions), one line naming it. A line the disk refused is cut off
            again, so the file ends with a whole line.
    """

    def __init__(self, path: str | Path | None, *, append: bool = False, tail: int | None = None):
        self.path = Path(path) if path is not None else None
        self.records: list[dict] = []
        self.tail = tail
        self._steps = 0  # step records in self.records
        self._fd: int | None = None
        self.size, self._digest = 0, hashlib.sha256()
        if self.path is None:
            return
        try:
            if append and self.path.is_file():
                self.size, self._digest = file_sha256(self.path)
            flags = os.O_WRONLY | os.O_CREAT | NOFOLLOW | (os.O_APPEND if append else os.O_TRUNC)
            self._fd = os.open(self.path, flags, 0o666)  # the umask decides
        except OSError as e:
            raise write_error(self.path, e) from e

    def write(self, record: dict) -> None:
        record = {k: _clean(v) for k, v in record.items()}
        self._keep(record)
        if self._fd is None:
            return
        line = (json.dumps(record) + "\n").encode("utf-8")
        try:
            write_all(self._fd, line)
        except OSError as e:
            with contextlib.suppress(OSError):  # no half line: the file ends where it did
                os.ftruncate(self._fd, self.size)
            raise write_error(self.path, e) from e
        self.size += len(line)
        self._digest.update(line)

    def _keep(self, record: dict) -> None:
        self.records.append(record)
        if record.get("event") != "step":
            return
        self._steps += 1
        if self.tail is not None and self._steps > 2 * self.tail:  # amortized: drop in bulk
            drop = self._steps - self.tail
            kept = []
            for r in self.records:
                if drop and r.get("event") == "step":
                    drop -= 1
                    continue
                kept.append(r)
            self.records, self._steps = kept, self.tail

    def position(self, *, sync: bool = True) -> dict:
        """``{"bytes": n, "sha256": hex}`` of what the file holds so far (fsync'ed first).

        A checkpoint stores it; :func:`tbptt.cli.resume.restore_metrics` cuts the file
        back to ``n`` bytes and checks their digest.
        """
        if sync and self._fd is not None:
            try:
                os.fsync(self._fd)
            except OSError as e:
                raise write_error(self.path, e) from e
        return {"bytes": self.size, "sha256": self._digest.hexdigest()}

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)


def read_metrics(path: str | Path, *, max_steps: int | None = None) -> list[dict]:
    """The records of a JSON-lines metrics file.

    ``max_steps``: keep at most about that many step records, evenly spaced (every
    2nd, 4th, ... as the file grows), and every other record; memory stays bounded
    however long the file is. None: every record.
    """
    records: list[dict] = []
    stride, seen, kept = 1, 0, 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            record = json.loads(line)
            if max_steps is None or record.get("event") != "step":
                records.append(record)
                continue
            seen += 1
            if (seen - 1) % stride:
                continue
            records.append(record)
            kept += 1
            if kept > max_steps:  # twice as sparse from here on, and so far
                stride *= 2
                thinned, i = [], 0
                for r in records:
                    if r.get("event") == "step":
                        i += 1
                        if (i - 1) % 2:
                            continue
                    thinned.append(r)
                records, kept = thinned, (kept + 1) // 2
    return records
