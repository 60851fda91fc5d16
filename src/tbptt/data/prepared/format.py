"""The prepared directory's files and their checks.

::

    prepared/
      tokens.bin   (N,) token ids, raw little-endian uint8 / uint16 / uint32 (by vocabulary size)
      starts.bin   (N,) bool, one byte per token, 1 where a document starts (documents only)
      meta.json    format and version, dtype, N and the split, the vocabulary, the
                   training / validation token counts by id, each .bin file's size and
                   SHA-256, the options and the source it was prepared from

:func:`read_meta` checks ``meta.json`` and the sizes of the .bin files;
:func:`verify` their SHA-256 (read with plain reads, so the check does not map the
file into the process's memory).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from tbptt.errors import DataError

__all__ = [
    "FORMAT",
    "VERSION",
    "META",
    "TOKENS",
    "STARTS",
    "file_dtype",
    "is_prepared",
    "read_meta",
    "verify",
]

FORMAT = "tbptt-prepared"
VERSION = 1
META, TOKENS, STARTS = "meta.json", "tokens.bin", "starts.bin"
_AGAIN = "prepare it again with tbptt prepare"
_REQUIRED = {
    "kind": str,
    "level": str,
    "normalize": str,
    "eos": bool,
    "dtype": str,
    "tokens": int,
    "train_tokens": int,
    "valid_tokens": int,
    "documents": int,
    "files": dict,
    "vocab": list,
    "train_counts": list,
    "valid_counts": list,
}


def file_dtype(vocab_size: int) -> np.dtype:
    """The on-disk type of the ids 0 .. vocab_size - 1: uint8, uint16 or uint32."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise DataError(f"a vocabulary of {vocab_size} tokens does not fit 32-bit ids")


def is_prepared(path: str | Path) -> bool:
    """Whether ``path`` is a directory with a ``meta.json`` or a ``tokens.bin``: a preparation,
    sound or not (:func:`read_meta` says which), never to be read as documents."""
    path = Path(path).expanduser()
    return path.is_dir() and ((path / META).is_file() or (path / TOKENS).is_file())


def read_meta(path: str | Path) -> dict:
    """``path/meta.json``, checked: format, version, fields, and the .bin files' sizes (a
    series' fields and sizes: by :func:`~tbptt.data.prepared.series.load_series`).

    Raises:
        DataError: one line naming what is missing, damaged or of another version.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataError(f"prepared directory {path} does not exist; make it with tbptt prepare")
    if not (path / META).is_file():
        raise DataError(
            f"{path} has no {META}, so it is not a prepared corpus (or its preparation did "
            f"not finish); {_AGAIN}"
        )
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
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
    if not isinstance(meta.get("files"), dict):
        raise DataError(f"{path / META} lacks or mangles files; {_AGAIN}")
    if meta.get("kind") == "series":  # checked by tbptt.data.prepared.series when loaded
        return meta
    wrong = [
        key
        for key, kind in _REQUIRED.items()
        if not isinstance(meta.get(key), kind) or (kind is int and isinstance(meta.get(key), bool))
    ]
    if wrong:
        raise DataError(f"{path / META} lacks or mangles {', '.join(wrong)}; {_AGAIN}")
    vocab_size = len(meta["vocab"])
    if (
        meta["dtype"] != file_dtype(vocab_size).name
        or meta["train_tokens"] + meta["valid_tokens"] != meta["tokens"]
        or meta["train_tokens"] < 2
        or len(meta["train_counts"]) != vocab_size
        or len(meta["valid_counts"]) != vocab_size
    ):
        raise DataError(f"{path / META} contradicts itself (sizes, dtype or counts); {_AGAIN}")
    names = [TOKENS, STARTS] if meta["kind"] == "docs" else [TOKENS]
    itemsize = {TOKENS: np.dtype(meta["dtype"]).itemsize, STARTS: 1}
    for name in names:
        described = meta["files"].get(name)
        if not isinstance(described, dict) or not isinstance(described.get("sha256"), str):
            raise DataError(f"{path / META} does not describe {name}; {_AGAIN}")
        file = path / name
        if not file.is_file():
            raise DataError(f"{file} is missing; {_AGAIN}")
        expected = meta["tokens"] * itemsize[name]
        have = file.stat().st_size
        if have != expected:
            raise DataError(
                f"{file} has {have:,} bytes, expected {expected:,} ({meta['tokens']:,} tokens of "
                f"{itemsize[name]} byte(s)): it is truncated or from another preparation; {_AGAIN}"
            )
    return meta


def sha256_of(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        while block := f.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def verify(path: str | Path, meta: dict) -> None:
    """Check every .bin file against the SHA-256 ``meta`` records for it.

    Raises:
        DataError: a file's digest differs (damaged, or changed after it was prepared).
    """
    path = Path(path).expanduser()
    for name, described in meta["files"].items():
        try:
            got = sha256_of(path / name)
        except OSError as e:
            raise DataError(f"cannot read {path / name}: {e.strerror}") from e
        if got != described["sha256"]:
            raise DataError(
                f"{path / name} has SHA-256 {got[:16]}..., but {META} records "
                f"{described['sha256'][:16]}...: the file was damaged or changed after it was "
                f"prepared; {_AGAIN}"
            )
