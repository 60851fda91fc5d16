"""One checkpoint file: its format, the atomic write and the safe read.

:func:`save_checkpoint` writes through a temporary file, flush, fsync and
rename; :func:`read_file` checks the SHA-256 digest stored after the archive,
then loads with ``weights_only=True`` and checks the format tag. Both are the
building blocks of :mod:`tbptt.train.checkpoint.rundir`.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path
from typing import Any

import torch

from tbptt.atomic import (
    NOFOLLOW,
    fsync_directory,
    os_error_in,
    replacing,
    write_all,
    write_error,
)
from tbptt.errors import CheckpointError, NonFiniteError
from tbptt.tree import leaves

__all__ = [
    "FORMAT",
    "nonfinite_entries",
    "serialize",
    "save_checkpoint",
    "read_file",
    "fsync_directory",
]

FORMAT = "tbptt-checkpoint-1"


def nonfinite_entries(payload: Any) -> list[str]:
    """Dotted keys of the floating tensors in ``payload`` holding NaN or infinity.

    Only tensors are checked (weights, optimizer moments, hidden state): plain
    numbers in a configuration may legitimately be infinite (an unset limit).
    """
    bad = []
    for key, leaf in leaves(payload):
        if isinstance(leaf, torch.Tensor) and (leaf.is_floating_point() or leaf.is_complex()):
            if leaf.numel() and not bool(torch.isfinite(leaf).all()):
                bad.append(key)
    return bad


_DIGEST = b"\nTBPTT-SHA256 "  # then 64 hex digits and a newline: the file's last 78 bytes
_TRAILER = len(_DIGEST) + 64 + 1


def serialize(payload: dict) -> bytes:
    """The bytes of a checkpoint file: torch's archive of ``payload``, then a SHA-256 of it.

    The digest follows the archive (``torch.load`` reads past it: a zip archive is
    found from its end), so :func:`read_file` can tell a flipped bit in the tensor
    data, which ``torch.load`` does not notice, from a sound file.
    """
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **payload}, buffer)
    archive = buffer.getvalue()
    return archive + _DIGEST + hashlib.sha256(archive).hexdigest().encode("ascii") + b"\n"


def save_checkpoint(payload: dict, path: str | Path, *, check_finite: bool = True) -> Path:
    """Write ``payload`` to ``path`` via a temporary file, flush, fsync and rename.

    The payload is serialized in memory first, so torch never writes to the disk
    and a full disk is an ``OSError`` of our own write. A crash while writing
    leaves any previous file at ``path`` intact and at worst a ``.<name>.*.tmp``
    file beside it (which loaders ignore).

    Raises:
        NonFiniteError: ``check_finite`` and some floating tensor is NaN/inf (nothing written).
        CheckpointError: the file cannot be written (disk full, I/O error, permissions),
            one line naming the file and the cause; the previous file is kept.
    """
    path = Path(path)
    if check_finite and (bad := nonfinite_entries(payload)):
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise NonFiniteError(
            f"refusing to write checkpoint {path}: non-finite values in {', '.join(bad[:3])}{more}; "
            "the previous checkpoint is kept (lower the learning rate or set a gradient clip)"
        )
    with replacing(path) as tmp:
        with os.fdopen(os.open(tmp, os.O_RDWR | NOFOLLOW), "r+b", buffering=0) as f:
            try:
                data = serialize(payload)
            except RuntimeError as e:  # torch wraps the OSError of a failed write
                if (cause := os_error_in(e)) is None:
                    raise
                raise write_error(path, cause) from e
            write_all(f.fileno(), data)
    return path


def _verified(path: Path, data: bytes) -> bytes:
    """The archive part of ``data``, after checking the digest that follows it.

    A file without a digest (written by an older tbptt) is returned whole.
    """
    if len(data) < _TRAILER or data[-_TRAILER:].find(_DIGEST) != 0 or data[-1:] != b"\n":
        return data
    archive, expected = data[:-_TRAILER], data[-_TRAILER + len(_DIGEST) : -1]
    if hashlib.sha256(archive).hexdigest().encode("ascii") != expected:
        raise CheckpointError(
            f"checkpoint {path} is damaged: its SHA-256 digest does not match its contents "
            "(a flipped bit on the disk or an altered copy)"
        )
    return archive


def read_file(path: Path) -> dict:
    """The payload of the checkpoint file ``path``, read without running code from it.

    Raises:
        CheckpointError: unreadable, or not a tbptt checkpoint.
    """
    try:
        # O_NONBLOCK: a pipe under a checkpoint's name must not hang the open
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from e
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a device would never end
            raise CheckpointError(
                f"checkpoint {path} is not a regular file (a device, a pipe or a directory)"
            )
        try:
            data = f.read()
        except OSError as e:
            raise CheckpointError(f"cannot read checkpoint {path}: {e.strerror or e}") from e
    archive = _verified(path, data)
    try:
        payload = torch.load(io.BytesIO(archive), map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged or foreign file
        # Not torch's text: it advises retrying with weights_only=False, which would run
        # whatever code the file holds.
        raise CheckpointError(
            f"cannot read checkpoint {path}: not a readable tbptt checkpoint "
            f"({type(e).__name__}; damaged, or not written by tbptt train)"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a tbptt checkpoint (expected format {FORMAT})")
    return payload
