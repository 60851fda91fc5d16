"""Corpora: locate, download, verify and decode text.

The Time Machine is downloaded once from the Dive into Deep Learning data
host, verified by SHA-1 and cached. Where it is cached:

1. ``data_dir`` passed by the caller (the CLI's ``--data DIR``), else
2. the environment variable ``TBPTT_DATA_DIR``, else
3. ``$XDG_CACHE_HOME/tbptt`` (``~/.cache/tbptt``).

Any UTF-8 text file can be used instead of The Time Machine.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tbptt.errors import DataError

__all__ = ["TIME_MACHINE", "RemoteFile", "default_data_dir", "fetch", "read_text", "load_corpus"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteFile:
    """A file on the web, named and pinned by its SHA-1."""

    name: str
    url: str
    sha1: str
    size: int


TIME_MACHINE = RemoteFile(
    name="timemachine.txt",
    url="http://d2l-data.s3-accelerate.amazonaws.com/timemachine.txt",
    sha1="090b5e7e70c295757f55df93cb0a180b9691891a",
    size=178_979,
)


def default_data_dir() -> Path:
    """The directory corpora are cached in (see the module docstring)."""
    env = os.environ.get("TBPTT_DATA_DIR")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "tbptt"


def sha1_of(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(remote: RemoteFile = TIME_MACHINE, data_dir: str | Path | None = None) -> Path:
    """Return the path of a verified local copy of ``remote``, downloading it if needed.

    The download goes to a temporary file in the same directory and is renamed
    into place only after its checksum matches, so an interrupted or corrupted
    download never becomes the cached file.

    Raises:
        DataError: the cached copy is corrupt, or the file cannot be downloaded.
    """
    directory = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    target = directory / remote.name
    if target.is_file():
        got = sha1_of(target)
        if got != remote.sha1:
            raise DataError(
                f"{target} has SHA-1 {got}, expected {remote.sha1}; "
                f"delete it so tbptt downloads a fresh copy, or pass your own file",
                options=("data.path",),
            )
        return target
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{remote.name}.", suffix=".part", dir=directory)
    except OSError as e:
        raise DataError(f"cannot write to data directory {directory}: {e.strerror}") from e
    log.info("downloading %s to %s", remote.url, target)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(remote.url, timeout=30) as resp:
            while block := resp.read(1 << 16):
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
        have = tmp.stat().st_size
        if remote.size and have != remote.size:
            raise DataError(
                f"download of {remote.url} stopped after {have} of {remote.size} bytes; "
                f"retry, or download it yourself into {directory}"
            )
        got = sha1_of(tmp)
        if got != remote.sha1:
            raise DataError(
                f"downloaded {remote.url} has SHA-1 {got}, expected {remote.sha1}; "
                f"retry, or download it yourself into {directory}"
            )
        os.replace(tmp, target)
    except DataError:
        raise
    except (
        urllib.error.URLError,
        OSError,
        TimeoutError,
        http.client.HTTPException,
        ValueError,
    ) as e:
        # HTTPException: the connection closed early (IncompleteRead); ValueError: a bad URL.
        reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or type(e).__name__
        if isinstance(e, http.client.IncompleteRead):
            reason = f"connection closed after {len(e.partial)} bytes"
        raise DataError(
            f"cannot download {remote.url} ({reason}); without internet, copy {remote.name} "
            f"into {directory} (or set TBPTT_DATA_DIR, or pass your own file)",
            options=("data.path",),
        ) from e
    finally:
        tmp.unlink(missing_ok=True)
    return target


def read_text(path: str | Path) -> str:
    """Read a UTF-8 text file, refusing missing, empty and binary files with a clear message."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"data file {path} does not exist; pass an existing UTF-8 text file")
    if path.is_dir():
        raise DataError(f"{path} is a directory; pass a UTF-8 text file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from e
    if not raw.strip():
        raise DataError(f"data file {path} is empty; pass a file with text in it")
    if b"\x00" in raw:
        raise DataError(f"data file {path} looks binary (it contains NUL bytes); pass UTF-8 text")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(
            f"data file {path} is not UTF-8 text (invalid byte at offset {e.start}); "
            "convert it to UTF-8 or pass another file"
        ) from e


def load_corpus(data: str | Path | None = None) -> tuple[str, Path]:
    """Return ``(text, path)`` for ``data``.

    ``data`` may be a text file (used as it is), a directory (The Time Machine
    is cached there), or ``None`` (The Time Machine in the default cache).
    """
    if data is not None:
        p = Path(data).expanduser()
        if not p.is_dir():
            return read_text(p), p
        path = fetch(TIME_MACHINE, p)
    else:
        path = fetch(TIME_MACHINE)
    return read_text(path), path
