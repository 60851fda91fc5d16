"""Writing a prepared directory: atomically, and removing nothing but what ``prepare`` wrote.

A preparation is written into a hidden directory beside the target, ``.DIR.<hex>.tmp``,
which the writing process holds an exclusive ``flock`` on until it ends; every file in it
is created afresh (``O_CREAT | O_EXCL | O_NOFOLLOW``, with the user's umask), ``meta.json``
last but the marker (:data:`~tbptt.data.prepared.format.MARKER`, the names of the files
written), then the directory is renamed to ``DIR``: ``DIR`` holds a whole preparation or
none.

What ``prepare`` may remove, and nothing else:

- an earlier preparation in ``DIR`` (``overwrite``), when its marker verifies
  (:func:`~tbptt.data.prepared.format.written_files`: the directory holds only the files
  the marker names). It is renamed aside, the new one takes its place, and the files the
  marker names are unlinked, then the empty directory; a file that appeared there
  meanwhile keeps the old directory (``.DIR.<hex>.old``), with a warning. A ``DIR`` that
  holds anything else (the input, a file of the user's) is refused, ``overwrite`` or not;
- its own debris: a ``.DIR.<hex>.tmp`` or ``.old`` directory that no process holds (a
  ``prepare`` killed before it finished) loses the format's files and is removed when the
  next ``prepare`` writes ``DIR``; one still held is another ``prepare`` at work.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from tbptt.atomic import fsync_directory, os_error_in, write_all, write_error
from tbptt.data.prepared.format import MARKER, META, WRITTEN, marker_text, written_files
from tbptt.errors import DataError

try:
    import fcntl
except ImportError:  # Windows: no flock; debris is then left for the user to remove
    fcntl = None

__all__ = ["OutputExists", "Writer", "check_target", "write_prepared", "remove_debris"]

log = logging.getLogger(__name__)

_CREATE = (
    os.O_WRONLY
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_CLOEXEC", 0)
)
_SHOWN = 3  # foreign names a message lists


class OutputExists(DataError):
    """The output directory holds an earlier preparation, which ``overwrite`` replaces.

    ``out``: that directory (a front end names its own flag for ``overwrite``)."""

    def __init__(self, out: Path):
        super().__init__(
            f"{out} already holds a prepared corpus; choose another output directory, or "
            "replace it (overwrite=True)",
            options=("prepare.overwrite",),
        )
        self.out = out


def _create(path: Path) -> int:
    """A new file at ``path`` (never an existing one, never through a link), mode 0o666 &
    ~umask as a plain ``open()`` gives."""
    return os.open(path, _CREATE, 0o666)


class Writer:
    """Appends arrays to a new file and hashes what it writes."""

    def __init__(self, path: Path):
        self.path = path
        self.file = os.fdopen(_create(path), "wb")
        self.sha256 = hashlib.sha256()
        self.bytes = 0

    def write(self, array: np.ndarray) -> None:
        data = array.tobytes()
        self.file.write(data)
        self.sha256.update(data)
        self.bytes += len(data)

    def close(self) -> dict:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        return {"bytes": self.bytes, "sha256": self.sha256.hexdigest()}


def _write_new(path: Path, text: str) -> None:
    fd = _create(path)
    try:
        write_all(fd, text.encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)


# -- which output prepare may write, and what it may remove there ------------------------


def _inside(child: Path, parent: Path) -> bool:
    """Whether ``child`` is ``parent`` or lies under it (links resolved)."""
    try:
        child, parent = child.expanduser().resolve(), parent.resolve()
    except (OSError, RuntimeError):  # a link loop: it cannot be the input
        return False
    return child == parent or parent in child.parents


def check_target(out: Path, overwrite: bool, source: Path | None = None) -> list[str]:
    """Refuse an ``out`` that ``prepare`` may not write; return the names of the files it may
    remove there (empty: ``out`` is new or an empty directory).

    Raises:
        OutputExists: ``out`` holds an earlier preparation and not ``overwrite``.
        DataError: ``out`` is a link or a file, holds the input ``source``, or holds
            anything ``prepare`` did not write (its marker does not verify).
    """
    if out.is_symlink():
        raise DataError(
            f"{out} is a symbolic link; give the directory itself as the output directory"
        )
    if not out.exists():
        return []
    if not out.is_dir():
        raise DataError(f"{out} exists and is not a directory; choose another output directory")
    try:
        entries = sorted(os.scandir(out), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"cannot read the output directory {out}: {e.strerror}") from None
    if not entries:
        return []
    if source is not None and _inside(Path(source), out):
        raise DataError(
            f"{out} holds the input {source}; choose another output directory (prepare never "
            "writes where its input is)"
        )
    names = written_files(out)
    if names is not None:
        if not overwrite:
            raise OutputExists(out)
        return names
    ours = {*WRITTEN, MARKER}
    foreign = [
        e.name for e in entries if e.name not in ours or not e.is_file(follow_symlinks=False)
    ]
    if not foreign:
        raise DataError(
            f"{out} holds files named like a preparation but no marker of tbptt prepare (a "
            "preparation by an older tbptt, or files it did not write), and prepare removes "
            "only files it wrote; delete them yourself, or choose another output directory"
        )
    shown = ", ".join(foreign[:_SHOWN]) + (
        f" and {len(foreign) - _SHOWN} more" if len(foreign) > _SHOWN else ""
    )
    raise DataError(
        f"{out} exists and is not an empty directory: it holds {shown}, which prepare did not "
        "write (and never removes); choose a new or empty output directory"
    )


def _remove_written(directory: Path, names) -> None:
    """Unlink ``names`` (the format's files) and the marker from ``directory``, then the
    directory if nothing else is left in it; whatever else is there is kept, with a warning."""
    for name in {*names, MARKER}:
        assert name in WRITTEN or name == MARKER, name  # never a name read from a file
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):
            os.unlink(directory / name)
    try:
        directory.rmdir()
    except FileNotFoundError:
        pass
    except OSError:
        log.warning(
            "kept %s: it holds files tbptt prepare did not write (look at them, then delete it)",
            directory,
        )


@contextlib.contextmanager
def _held(directory: Path, *, wait: bool) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``directory`` for the block; yields whether it was
    obtained (``wait``: block until it is). Without flock (Windows): never obtained."""
    if fcntl is None:
        yield False
        return
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | os.O_NOFOLLOW)
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError:
            yield False  # another prepare holds it: at work, not debris
            return
        yield True
    finally:
        os.close(fd)  # releases the flock


def remove_debris(out: Path) -> None:
    """Remove what killed preparations of ``out`` left beside it (see the module docstring)."""
    pattern = re.compile(rf"\.{re.escape(out.name)}\.[0-9a-f]{{8}}\.(?:tmp|old)")
    try:
        entries = list(os.scandir(out.parent))
    except OSError:
        return
    for entry in entries:
        if not pattern.fullmatch(entry.name) or not entry.is_dir(follow_symlinks=False):
            continue
        with _held(Path(entry.path), wait=False) as ours:
            if ours:
                log.info("removing %s, left by a tbptt prepare that was stopped", entry.path)
                _remove_written(Path(entry.path), WRITTEN)


def _install(tmp: Path, out: Path, overwrite: bool, source: Path | None) -> None:
    """Rename the finished ``tmp`` directory to ``out`` (an earlier preparation there, with
    ``overwrite``, is moved aside first and its files removed after)."""
    names = check_target(out, overwrite, source)  # again: another process may have written
    old = None
    if names:
        old = out.with_name(f".{out.name}.{secrets.token_hex(4)}.old")
        os.replace(out, old)
    elif out.exists():
        out.rmdir()  # empty
    os.replace(tmp, out)
    fsync_directory(out.parent)
    if old is not None:
        _remove_written(old, names)


def write_prepared(
    out: Path, overwrite: bool, fill: Callable[[Path], dict], source: Path | None = None
) -> dict:
    """Write a prepared directory atomically: ``fill(tmp)`` writes the data files into a
    fresh temporary directory beside ``out`` (with :class:`Writer`) and returns the
    metadata, which is written last, then the marker; the directory then replaces ``out``
    (see :func:`check_target`; ``source``: the input, which ``out`` must not hold).
    Nothing is left behind on failure, and debris of killed preparations is removed."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_debris(out)
        tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
        tmp.mkdir()
    except OSError as e:
        raise write_error(out, e) from e
    with _held(tmp, wait=True):  # until it is renamed: the next prepare sees work, not debris
        try:
            meta = fill(tmp)
            _write_new(tmp / META, json.dumps(meta, indent=1) + "\n")
            names = sorted(e.name for e in os.scandir(tmp))
            assert set(names) <= set(WRITTEN), names
            _write_new(tmp / MARKER, marker_text(names))
            fsync_directory(tmp)
            _install(tmp, out, overwrite, source)
        except BaseException as e:
            if tmp.exists():
                _remove_written(tmp, WRITTEN)
            if (cause := os_error_in(e)) is not None and not isinstance(e, DataError):
                raise write_error(out, cause) from e
            raise
    return meta
