"""Corpora: locate, download, verify and decode text.

The Time Machine is downloaded once from the Dive into Deep Learning data
host, verified by SHA-1 and cached. Where it is cached:

1. ``data_dir`` passed by the caller (the CLI's ``--data DIR``), else
2. the environment variable ``TBPTT_DATA_DIR``, else
3. ``$XDG_CACHE_HOME/tbptt`` (``~/.cache/tbptt``).

Any text file can be used instead of The Time Machine: UTF-8, or any encoding
its byte-order mark names (UTF-8, UTF-16 or UTF-32 with a BOM). A directory
given as data is a corpus, never a cache: ``train.txt`` / ``valid.txt`` /
``test.txt`` (the PTB and WikiText layout, :func:`corpus_files`), or documents.
:func:`strip_gutenberg` removes a Project Gutenberg header and licence footer.
"""

from __future__ import annotations

import codecs
import errno
import hashlib
import http.client
import logging
import os
import re
import secrets
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tbptt.errors import DataError

__all__ = [
    "TIME_MACHINE",
    "RemoteFile",
    "default_data_dir",
    "fetch",
    "read_text",
    "load_corpus",
    "corpus_files",
    "is_time_machine",
    "strip_gutenberg",
    "SPLIT_FILES",
    "absent",
]

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


def _remove_stale_parts(directory: Path, name: str, older_than: float) -> None:
    """Delete ``.part`` files of ``name`` untouched for ``older_than`` seconds.

    A download that is still running writes to its ``.part`` file at least every
    ``timeout`` seconds and gives up after ``deadline``, so a file older than both
    was left by a download that was killed; a younger one may be another process's.
    """
    now = time.time()
    for part in directory.glob(f".{name}.*.part"):
        try:
            if now - part.stat().st_mtime > older_than:
                part.unlink()
                log.info("removed stale partial download %s", part)
        except OSError:  # gone meanwhile, or a read-only cache: harmless either way
            pass


def _create_part(directory: Path, name: str) -> tuple[int, Path]:
    """Create a new, empty ``.part`` file beside the target and open it for writing.

    Mode 0o666 lets the umask decide the permissions, as a plain ``open()`` would;
    ``tempfile.mkstemp`` would make the cached file 0600.
    """
    for _ in range(100):
        path = directory / f".{name}.{secrets.token_hex(4)}.part"
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(directory))


def fetch(
    remote: RemoteFile = TIME_MACHINE,
    data_dir: str | Path | None = None,
    *,
    timeout: float = 30.0,
    deadline: float = 300.0,
) -> Path:
    """Return the path of a verified local copy of ``remote``, downloading it if needed.

    The download goes to a temporary file in the same directory and is renamed
    into place only after its checksum matches, so an interrupted or corrupted
    download never becomes the cached file. ``timeout`` bounds each wait on the
    server (connecting, each read); ``deadline`` bounds the whole download, so a
    server that trickles bytes is cut off too. Reading stops as soon as more than
    ``remote.size`` bytes arrive. Partial downloads older than ``timeout +
    deadline`` seconds (left by a killed process) are deleted.

    Raises:
        DataError: the cached copy is corrupt, or the file cannot be downloaded.
    """
    directory = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    target = directory / remote.name
    if directory.is_dir():
        _remove_stale_parts(directory, remote.name, older_than=timeout + deadline)
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
        fd, tmp = _create_part(directory, remote.name)
    except OSError as e:
        raise DataError(f"cannot write to data directory {directory}: {e.strerror}") from e
    log.info("downloading %s to %s", remote.url, target)
    give_up_at = time.monotonic() + deadline
    try:
        with (
            os.fdopen(fd, "wb") as out,
            urllib.request.urlopen(remote.url, timeout=timeout) as resp,
        ):
            have = 0
            while True:
                if time.monotonic() > give_up_at:
                    raise DataError(
                        f"download of {remote.url} did not finish within {deadline:g} s "
                        f"({have} of {remote.size or '?'} bytes arrived); retry, or copy "
                        f"{remote.name} into {directory} (or pass your own file)",
                        options=("data.path",),
                    )
                # read1: at most one read from the socket, so a trickle cannot hold
                # the loop (and the deadline check) for a whole block.
                want = min(1 << 16, remote.size + 1 - have) if remote.size else 1 << 16
                block = resp.read1(want)
                if not block:
                    break
                out.write(block)
                have += len(block)
                if remote.size and have > remote.size:
                    raise DataError(
                        f"download of {remote.url} sent more than the expected {remote.size} "
                        f"bytes, so it is not the pinned file; retry later, or copy "
                        f"{remote.name} into {directory} (or pass your own file)",
                        options=("data.path",),
                    )
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


# Byte-order marks, longest first (UTF-32's little-endian mark starts with UTF-16's).
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32"),
    (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32"),
    (codecs.BOM_UTF8, "utf-8", "UTF-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16"),
    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"),
)


def _decode_marked(path: Path, raw: bytes) -> str | None:
    """The text of a file that starts with a byte-order mark (None: no mark)."""
    for bom, codec, name in _BOMS:
        if raw.startswith(bom):
            try:
                return raw[len(bom) :].decode(codec)
            except UnicodeDecodeError as e:
                raise DataError(
                    f"data file {path} starts with a {name} byte-order mark but is not valid "
                    f"{name} (invalid bytes at offset {e.start + len(bom)}); convert it to UTF-8"
                ) from e
    return None


def absent(path: str | Path) -> str:
    """Why ``path``, which ``Path.exists()`` calls absent, cannot be read: ``"does not
    exist"``, or what is wrong with the symbolic link in its place (a loop, a missing target)."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symbolic link that leads back to itself (a loop)"
        if os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return f"is a symbolic link to {target}, which does not exist"
        if e.errno not in (errno.ENOENT, errno.ENOTDIR):
            return f"cannot be read ({e.strerror})"
    return "does not exist"


def read_text(path: str | Path) -> str:
    """Read a text file (UTF-8, or the encoding its byte-order mark names), refusing missing,
    empty and binary files with a clear message. Line ends are kept as they are."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"data file {path} {absent(path)}; pass an existing UTF-8 text file")
    if path.is_dir():
        raise DataError(f"{path} is a directory; pass a UTF-8 text file")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from e
    marked = _decode_marked(path, raw)
    if marked is not None:
        if not marked.strip():
            raise DataError(f"data file {path} is empty; pass a file with text in it")
        return marked
    if not raw.strip():
        raise DataError(f"data file {path} is empty; pass a file with text in it")
    if b"\x00" in raw:
        raise DataError(
            f"data file {path} looks binary (it contains NUL bytes); pass UTF-8 text "
            "(UTF-16 and UTF-32 files need their byte-order mark)"
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"data file {path} is not UTF-8 text (invalid byte at offset {e.start}); "
            "convert it to UTF-8 or pass another file"
        ) from e


def is_time_machine(path: str | Path) -> bool:
    """Whether ``path`` is The Time Machine as tbptt downloads it (same size and SHA-1)."""
    path = Path(path).expanduser()
    try:
        return (
            path.is_file()
            and path.stat().st_size == TIME_MACHINE.size
            and (sha1_of(path) == TIME_MACHINE.sha1)
        )
    except OSError:
        return False


# The file names of a corpus directory (the layout of PTB, WikiText and PyTorch's example).
SPLIT_FILES = {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"}


def corpus_files(directory: str | Path) -> dict[str, Path] | None:
    """``{"train": ..., "valid": ..., "test": ...}`` of a corpus directory (``test``
    only when there is a ``test.txt``), or None when ``directory`` holds no ``train.txt``.

    Raises:
        DataError: a ``train.txt`` without a ``valid.txt``.
    """
    directory = Path(directory).expanduser()
    if not (directory / SPLIT_FILES["train"]).is_file():
        return None
    found = {k: directory / name for k, name in SPLIT_FILES.items() if (directory / name).is_file()}
    if "valid" not in found:
        raise DataError(
            f"{directory} has a train.txt but no valid.txt; a corpus directory holds "
            "train.txt and valid.txt (and test.txt), as PTB and WikiText do"
        )
    return found


_GUTENBERG_START = re.compile(
    r"^[ \t]*\*{3}[ \t]*START OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK[^\n]*\n?",
    re.IGNORECASE | re.MULTILINE,
)
_GUTENBERG_END = re.compile(
    r"^[ \t]*(?:\*{3}[ \t]*END OF (?:THE|THIS) PROJECT GUTENBERG E-?BOOK"
    r"|End of (?:the )?Project Gutenberg(?:'s)? E-?(?:Book|text))",
    re.IGNORECASE | re.MULTILINE,
)


def strip_gutenberg(text: str, *, name: str = "the text") -> str:
    """The body of a Project Gutenberg e-book: the text between the ``*** START OF THE
    PROJECT GUTENBERG EBOOK ... ***`` line and the first ``*** END OF ...`` (or "End of
    the Project Gutenberg EBook") line, without the blank lines around it, ending with
    one line end. A text with neither marker is refused (it is no Gutenberg file).

    Raises:
        DataError: no start and no end marker in ``text``.
    """
    start = _GUTENBERG_START.search(text)
    body_from = start.end() if start else 0
    end = _GUTENBERG_END.search(text, body_from)
    if start is None and end is None:
        raise DataError(
            f"{name} has no Project Gutenberg header or footer (no line '*** START OF THE "
            "PROJECT GUTENBERG EBOOK' or '*** END OF ...'); drop the Gutenberg stripping"
        )
    body = text[body_from : end.start() if end else len(text)]
    body = body.replace("\r\n", "\n").strip("\n")
    if not body.strip():
        raise DataError(f"{name} has no text between its Project Gutenberg header and footer")
    return body + "\n"


def load_corpus(
    data: str | Path | None = None, *, cache_dir: str | Path | None = None
) -> tuple[str, Path]:
    """Return ``(text, path)`` for ``data``.

    ``data`` may be a text file (read as it is) or ``None`` (The Time Machine, cached in
    ``cache_dir``, default :func:`default_data_dir`). A directory is refused: it is a
    corpus (see :func:`corpus_files`, or documents), never a download cache.
    """
    if data is not None:
        p = Path(data).expanduser()
        if p.is_dir():
            raise DataError(
                f"{p} is a directory; pass a text file, a directory holding train.txt and "
                "valid.txt (test.txt optional), or a directory of documents; The Time Machine "
                "is cached under $TBPTT_DATA_DIR (or the cache directory you give)",
                options=("data.path",),
            )
        return read_text(p), p
    path = fetch(TIME_MACHINE, cache_dir)
    return read_text(path), path
