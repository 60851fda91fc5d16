"""Writing files so that a failure never leaves a damaged one.

Every file of a run (``config.json``, checkpoints, ``summary.json``,
``predictions.csv``, plots) is written to a temporary name in its own directory,
flushed, fsync'ed and renamed over the real name (``os.replace`` is atomic), so
the real name holds the old file or the new one, never a 0-byte or half-written
one. A write the operating system refuses (a full disk, an I/O error, no
permission) becomes one :class:`~tbptt.errors.CheckpointError` line naming the
file and the cause::

    cannot write runs/x/config.json: No space left on device

Temporary names start with a dot and end in ``.tmp`` (before the file's own
suffix, for writers that pick the format from it): ``.config.json.ab12cd.tmp``,
``.curves.png.ab12cd.tmp.png``. Loaders ignore them; :func:`remove_debris` deletes
those a killed process left behind. A temporary file is created afresh (``O_EXCL``),
never through a symbolic link (``O_NOFOLLOW``, also when it is opened again), with the
permissions the user's umask gives, as any file the user's programs write.

Prepared token directories (``tbptt prepare``, in the data layer) are written with
the same functions, so they live here, below every layer that writes files.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from tbptt.errors import CheckpointError

__all__ = [
    "replacing",
    "write_atomically",
    "write_all",
    "write_error",
    "os_error_in",
    "fsync_directory",
    "remove_debris",
    "NOFOLLOW",
]


def os_error_in(error: BaseException) -> OSError | None:
    """The ``OSError`` that ``error`` is or wraps (torch wraps a failed write in a ``RuntimeError``)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OSError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def write_error(path: str | Path, error: OSError) -> CheckpointError:
    """One line naming the file and the operating system's reason."""
    return CheckpointError(f"cannot write {path}: {error.strerror or error}")


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (not every platform lets a directory be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a write may be partial)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


# Flags of a temporary file: created here and now (never an existing file), never through a
# symbolic link; the mode 0o666 is cut by the user's umask, as a plain open() would be.
_CREATE = (
    os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)
# Reopening a temporary file by name: never through a link put there meanwhile.
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def _create_temporary(path: Path, suffix: str) -> Path:
    """A new, empty file beside ``path`` named ``.<name>.<random>.tmp[suffix]``."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            os.close(os.open(tmp, _CREATE, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(path.parent))


@contextlib.contextmanager
def replacing(path: str | Path, *, keep_suffix: bool = False) -> Iterator[Path]:
    """A temporary path in ``path``'s directory; on success it is fsync'ed and renamed to ``path``.

    The caller writes the new file to the yielded path (``keep_suffix``: the name
    ends in ``path``'s suffix, for writers that choose a format from it); open it with
    :data:`NOFOLLOW` among the flags. The file is created empty with the permissions the
    user's umask gives (``0o666 & ~umask``, as a plain ``open()``). On any exception
    the temporary file is removed and ``path`` is left as it was; an ``OSError`` (also
    one wrapped in another exception) becomes a ``CheckpointError``.
    """
    path = Path(path)
    suffix = ".tmp" + (path.suffix if keep_suffix else "")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _create_temporary(path, suffix)
    except OSError as e:
        raise write_error(path, e) from e
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY | NOFOLLOW)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if (cause := os_error_in(e)) is not None and not isinstance(e, CheckpointError):
            raise write_error(path, cause) from e
        raise
    fsync_directory(path.parent)


def write_atomically(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (text is UTF-8) to ``path`` through :func:`replacing`; returns ``path``.

    Raises:
        CheckpointError: the file cannot be written; ``path`` is left as it was.
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    with replacing(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | NOFOLLOW)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
    return Path(path)


def remove_debris(directory: str | Path, names: tuple[str, ...]) -> None:
    """Delete the temporary files that killed writes of ``names`` left in ``directory``.

    Call it only while holding the directory's lock: another run's write in progress
    would otherwise lose its temporary file.
    """
    directory = Path(directory)
    for name in names:
        for stale in directory.glob(f".{name}.*.tmp*"):
            with contextlib.suppress(OSError):
                stale.unlink()
