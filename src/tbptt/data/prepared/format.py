"""The prepared directory's files and their checks.

::

    prepared/
      tokens.bin       (N,) token ids, raw little-endian uint8 / uint16 / uint32 (by vocabulary size)
      starts.bin       (N,) bool, one byte per token, 1 where a document starts (documents only)
      meta.json        format and version, dtype, N and the split, the vocabulary and its
                       SHA-256, the training / validation token counts by id, each .bin
                       file's size and SHA-256, the options and the source it was prepared from
      .tbptt-prepared  the marker: the names of the files ``prepare`` wrote there, the only
                       files it may ever remove (:func:`written_files`)

Every file here is data, never a path or a size to trust: :func:`read_meta` checks the
whole of ``meta.json`` against its schema (types, ranges, the sums of the counts, the
vocabulary's digest) and the .bin files it names, which must be the files of the format,
regular files (never a link, a device or a pipe) of the recorded sizes; :func:`verify`
checks their SHA-256 (read with plain reads of at most the recorded size, so the check
does not map the file into the process's memory and ends on any file).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import math
import os
import re
import stat
from pathlib import Path

import numpy as np

from tbptt.data.documents import DOC
from tbptt.data.tokenize import NORMALIZERS, TOKENIZERS, UNK
from tbptt.errors import DataError

__all__ = [
    "FORMAT",
    "VERSION",
    "META",
    "TOKENS",
    "STARTS",
    "INPUTS",
    "TARGETS",
    "MARKER",
    "WRITTEN",
    "file_dtype",
    "is_prepared",
    "read_meta",
    "verify",
    "vocab_sha256",
    "open_regular",
    "written_files",
]

FORMAT = "tbptt-prepared"
VERSION = 2  # 2: the marker file and the vocabulary's SHA-256
META, TOKENS, STARTS = "meta.json", "tokens.bin", "starts.bin"
INPUTS, TARGETS = "inputs.bin", "targets.bin"  # a time series (tbptt.data.prepared.series)
MASK = "mask.bin"  # a time series: 1 where a row's loss counts (no filled target, no warm-up)
MARKER = ".tbptt-prepared"
WRITTEN = (
    META,
    TOKENS,
    STARTS,
    INPUTS,
    TARGETS,
    MASK,
)  # every file prepare may write, but the marker
_AGAIN = "prepare it again with tbptt prepare"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_MARKER_BYTES = 4096  # a marker is a short list of names: anything longer is not one
_TEXT_FIELDS = {
    "kind": str,
    "level": str,
    "normalize": str,
    "eos": bool,
    "valid_fraction": (int, float),
    "min_freq": int,
    "max_vocab": int,
    "dtype": str,
    "tokens": int,
    "train_tokens": int,
    "valid_tokens": int,
    "documents": int,
    "source": dict,
    "skipped": list,
    "files": dict,
    "vocab": list,
    "vocab_sha256": str,
    "train_counts": list,
    "valid_counts": list,
}


def file_dtype(vocab_size: int) -> np.dtype:
    """The on-disk type of the ids 0 .. vocab_size - 1: uint8, uint16 or uint32."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise DataError(f"a vocabulary of {vocab_size} tokens does not fit 32-bit ids")


def vocab_sha256(itos: list[str]) -> str:
    """SHA-256 of a vocabulary (its JSON, ASCII-escaped: the same bytes on every platform)."""
    return hashlib.sha256(json.dumps(itos).encode("ascii")).hexdigest()


# -- reading a file of the directory, never through a link ---------------------------------

_READ_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)  # a pipe under a file's name must not block the open
    | getattr(os, "O_CLOEXEC", 0)
)


def open_regular(file: Path) -> int:
    """A descriptor of ``file`` for reading, which must be a regular file of its directory:
    a symbolic link is not followed, and a device, a pipe or a directory is refused.

    Raises:
        DataError: missing, a link, not a regular file, or unreadable (one line).
    """
    try:
        fd = os.open(file, _READ_FLAGS)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise DataError(f"{file} is missing; {_AGAIN}") from None
        if e.errno == errno.ELOOP or os.path.islink(file):
            raise DataError(
                f"{file} is a symbolic link; a prepared directory's files are its own regular "
                f"files, never links to elsewhere; {_AGAIN}"
            ) from None
        raise DataError(f"cannot read {file}: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise DataError(f"{file} is not a regular file (a device, a pipe or a directory); {_AGAIN}")
    return fd


def _read_small(file: Path, limit: int) -> bytes | None:
    """The bytes of the regular file ``file`` when it has at most ``limit`` of them, else None
    (also for a missing, linked or unreadable file)."""
    try:
        fd = open_regular(file)
    except DataError:
        return None
    try:
        return data if len(data := os.read(fd, limit + 1)) <= limit else None
    except OSError:
        return None
    finally:
        os.close(fd)


# -- the marker: which files prepare wrote -------------------------------------------------


def marker_text(names: list[str]) -> str:
    """The marker's content for a directory where ``prepare`` wrote ``names``."""
    return json.dumps({"format": FORMAT, "version": VERSION, "files": sorted(names)}) + "\n"


def written_files(path: str | Path) -> list[str] | None:
    """The names of the files ``prepare`` wrote in the directory ``path``, from its marker,
    verified: the marker is a regular file in the format ``prepare`` writes, it names only
    files of the format, and the directory holds nothing else (each of them a regular
    file). None when any of that fails: then ``path`` is not ``prepare``'s to remove."""
    path = Path(path)
    raw = _read_small(path / MARKER, _MARKER_BYTES)
    try:
        marker = json.loads(raw) if raw is not None else None
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if (
        not isinstance(marker, dict)
        or marker.get("format") != FORMAT
        or not isinstance(names := marker.get("files"), list)
        or not all(isinstance(n, str) and n in WRITTEN for n in names)
    ):
        return None
    try:
        entries = list(os.scandir(path))
    except OSError:
        return None
    for entry in entries:
        if entry.name != MARKER and entry.name not in names:
            return None
        if not entry.is_file(follow_symlinks=False):
            return None
    return sorted(set(names))


def is_prepared(path: str | Path) -> bool:
    """Whether ``path`` is a directory ``tbptt prepare`` wrote: it holds the marker, a
    ``tokens.bin`` or a ``meta.json`` in the format, sound or not (:func:`read_meta` says
    which); never to be read as documents."""
    path = Path(path).expanduser()
    if not path.is_dir():
        return False
    if os.path.lexists(path / MARKER) or os.path.lexists(path / TOKENS):
        return True
    head = _read_small(path / META, 1 << 16) or b""  # json.dump writes "format" first
    return bool(re.match(rb'\s*\{\s*"format"\s*:\s*"' + FORMAT.encode() + rb'"', head))


# -- meta.json's schema ------------------------------------------------------------------


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def file_problems(files: dict, names: dict[str, int]) -> list[str]:
    """Problems with ``files`` (meta.json's), which must describe exactly ``names`` (name ->
    size in bytes): each a dict of its ``bytes`` and its ``sha256``."""
    problems = []
    if set(files) != set(names):
        listed = ", ".join(repr(str(n)[:40]) for n in sorted(map(str, files))) or "none"
        problems.append(f"lists the files {listed}, expected {', '.join(sorted(names))}")
        return problems
    for name, size in names.items():
        d = files[name]
        if not isinstance(d, dict) or not isinstance(d.get("sha256"), str):
            problems.append(f"does not describe {name}")
        elif not _HEX64.fullmatch(d["sha256"]):
            problems.append(f"records no SHA-256 for {name}")
        elif not _is_int(d.get("bytes")) or d["bytes"] != size:
            problems.append(f"records {d.get('bytes')!r} bytes for {name}, expected {size:,}")
    return problems


def expected_files(meta: dict) -> dict[str, int]:
    """The data files a checked ``meta`` names, with their sizes in bytes."""
    if meta["kind"] == "series":
        from tbptt.data.prepared.series import series_files

        return series_files(meta)
    n, itemsize = meta["tokens"], np.dtype(meta["dtype"]).itemsize
    return {TOKENS: n * itemsize, **({STARTS: n} if meta["kind"] == "docs" else {})}


def _counts_problems(meta: dict, key: str, total: int, size: int) -> list[str]:
    counts = meta[key]
    if len(counts) != size:
        return [f"has {len(counts):,} {key}, expected one per token of the vocabulary ({size:,})"]
    if not all(_is_int(c) and c >= 0 for c in counts):
        return [f"has {key} that are not counts (negative, or not whole numbers)"]
    if sum(counts) != total:
        return [f"has {key} summing to {sum(counts):,}, expected {total:,}"]
    return []


def text_problems(meta: dict) -> list[str]:
    """What is wrong with the ``meta.json`` of a text or documents preparation (empty: sound)."""
    wrong = [
        key
        for key, kind in _TEXT_FIELDS.items()
        if not isinstance(meta.get(key), kind) or (kind is not bool and isinstance(meta[key], bool))
    ]
    if wrong:
        return [f"lacks or mangles {', '.join(wrong)}"]
    problems = []
    for key, allowed in (
        ("kind", ("text", "docs")),
        ("level", TOKENIZERS),
        ("normalize", NORMALIZERS),
        ("dtype", ("uint8", "uint16", "uint32")),
    ):
        if meta[key] not in allowed:
            problems.append(f"has {key} {meta[key][:40]!r}, expected one of {', '.join(allowed)}")
    for key in ("tokens", "train_tokens", "valid_tokens", "documents", "min_freq", "max_vocab"):
        if meta[key] < 0:
            problems.append(f"has a negative {key}")
    if not (math.isfinite(meta["valid_fraction"]) and 0 <= meta["valid_fraction"] < 1):
        problems.append(f"has valid_fraction {meta['valid_fraction']!r}, expected one in [0, 1)")
    vocab = meta["vocab"]
    if not vocab or not all(isinstance(t, str) for t in vocab):
        problems.append("has a vocabulary entry that is not a string")
    elif vocab[0] != UNK or len(set(vocab)) != len(vocab):
        problems.append(f"has a vocabulary that does not start with {UNK} or repeats a token")
    elif meta["kind"] == "docs" and DOC not in vocab:
        problems.append(f"has a documents vocabulary without {DOC}")
    elif vocab_sha256(vocab) != meta["vocab_sha256"]:
        problems.append(
            "has a vocabulary whose SHA-256 is not the one recorded (the file was damaged "
            "or edited after it was prepared)"
        )
    if problems:
        return problems
    if meta["dtype"] != file_dtype(len(vocab)).name:
        problems.append(f"has dtype {meta['dtype']} for a vocabulary of {len(vocab):,} tokens")
    if meta["train_tokens"] + meta["valid_tokens"] != meta["tokens"] or meta["train_tokens"] < 2:
        problems.append(
            f"splits {meta['tokens']:,} tokens into {meta['train_tokens']:,} training and "
            f"{meta['valid_tokens']:,} validation ones"
        )
    problems += _counts_problems(meta, "train_counts", meta["train_tokens"], len(vocab))
    problems += _counts_problems(meta, "valid_counts", meta["valid_tokens"], len(vocab))
    docs = meta["documents"]
    if (meta["kind"] == "text" and docs) or (
        meta["kind"] == "docs" and not 1 <= docs <= meta["tokens"]
    ):
        problems.append(f"has {docs:,} documents for kind {meta['kind']!r}")
    if not problems:
        problems += file_problems(meta["files"], expected_files(meta))
    return problems


def _check_files(path: Path, names: dict[str, int]) -> None:
    """Each of ``names`` is a regular file of ``path`` of its size (name -> bytes)."""
    for name, expected in names.items():
        file = path / name
        fd = open_regular(file)
        try:
            have = os.fstat(fd).st_size
        finally:
            os.close(fd)
        if have != expected:
            raise DataError(
                f"{file} has {have:,} bytes, expected {expected:,}: it is truncated or from "
                f"another preparation; {_AGAIN}"
            )


def read_meta(path: str | Path) -> dict:
    """``path/meta.json``, checked against its schema (every field; a series' by
    :func:`~tbptt.data.prepared.series.series_problems`), and the files it names: the
    format's own, regular files of the recorded sizes.

    Raises:
        DataError: one line naming what is missing, damaged, contradictory or of another
            version.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataError(f"prepared directory {path} does not exist; make it with tbptt prepare")
    if not os.path.lexists(path / META):
        raise DataError(
            f"{path} has no {META}, so it is not a prepared corpus (or its preparation did "
            f"not finish); {_AGAIN}"
        )
    fd = open_regular(path / META)
    try:
        with os.fdopen(fd, "rb") as f:
            meta = json.loads(f.read().decode("utf-8"), parse_constant=_no_constant)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{path / META} cannot be read ({e}); {_AGAIN}") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(
            f"{path / META} is not a tbptt preparation (no format {FORMAT!r}); {_AGAIN}"
        )
    if meta.get("version") != VERSION:
        raise DataError(
            f"{path} was prepared in format version {meta.get('version')!r}; this tbptt reads "
            f"version {VERSION}: {_AGAIN}"
        )
    if meta.get("kind") == "series":
        from tbptt.data.prepared.series import series_problems

        problems = series_problems(meta)
    elif meta.get("kind") in ("text", "docs"):
        problems = text_problems(meta)
    else:
        problems = [f"has kind {str(meta.get('kind'))[:40]!r}, expected text, docs or series"]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise DataError(f"{path / META} {'; '.join(problems[:3])}{more}; {_AGAIN}")
    _check_files(path, expected_files(meta))
    return meta


def _no_constant(name: str):
    raise ValueError(f"{name} is not a number JSON allows")


def sha256_of(file: Path, size: int) -> str:
    """SHA-256 of the regular file ``file``, which must hold ``size`` bytes (it is read to
    at most one byte more: a file that grows, or a device, cannot hold the check)."""
    digest = hashlib.sha256()
    fd = open_regular(file)
    with contextlib.closing(os.fdopen(fd, "rb")) as f:
        left = size
        while left > 0 and (block := f.read(min(left, 1 << 22))):
            digest.update(block)
            left -= len(block)
        if left or f.read(1):
            raise DataError(
                f"{file} changed size while it was read; it is not the file {META} describes; "
                f"{_AGAIN}"
            )
    return digest.hexdigest()


def verify(path: str | Path, meta: dict) -> None:
    """Check every data file against the SHA-256 ``meta`` (from :func:`read_meta`) records for it.

    Raises:
        DataError: a file's digest differs (damaged, or changed after it was prepared).
    """
    path = Path(path).expanduser()
    for name, size in expected_files(meta).items():  # the format's names, never meta's
        try:
            got = sha256_of(path / name, size)
        except OSError as e:
            raise DataError(f"cannot read {path / name}: {e.strerror}") from e
        recorded = meta["files"][name]["sha256"]
        if got != recorded:
            raise DataError(
                f"{path / name} has SHA-256 {got[:16]}..., but {META} records "
                f"{recorded[:16]}...: the file was damaged or changed after it was "
                f"prepared; {_AGAIN}"
            )
