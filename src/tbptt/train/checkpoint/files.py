"""One checkpoint file: its format, the atomic write and the safe read.

:func:`save_checkpoint` writes through a temporary file, flush, fsync and
rename; :func:`read_file` loads with ``weights_only=True`` and checks the
format tag. Both are the building blocks of :mod:`tbptt.train.checkpoint.rundir`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from tbptt.errors import CheckpointError, NonFiniteError
from tbptt.tree import leaves

__all__ = ["FORMAT", "nonfinite_entries", "save_checkpoint", "read_file", "fsync_directory"]

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


def fsync_directory(directory: Path) -> None:
    # Make the rename itself durable; not every platform lets a directory be opened.
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


def save_checkpoint(payload: dict, path: str | Path, *, check_finite: bool = True) -> Path:
    """Write ``payload`` to ``path`` via a temporary file, flush, fsync and rename.

    A crash while writing leaves any previous file at ``path`` intact and at
    worst a ``.<name>.*.tmp`` file beside it (which loaders ignore).

    Raises:
        NonFiniteError: ``check_finite`` and some floating tensor is NaN/inf (nothing written).
        CheckpointError: the file cannot be written (disk full, permissions).
    """
    path = Path(path)
    if check_finite and (bad := nonfinite_entries(payload)):
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise NonFiniteError(
            f"refusing to write checkpoint {path}: non-finite values in {', '.join(bad[:3])}{more}; "
            "the previous checkpoint is kept (lower the learning rate or set a gradient clip)"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}") from e
    try:
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a checkpoint is an ordinary output
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}") from e
        raise
    fsync_directory(path.parent)
    return path


def read_file(path: Path) -> dict:
    """The payload of the checkpoint file ``path``, read without running code from it.

    Raises:
        CheckpointError: unreadable, or not a tbptt checkpoint.
    """
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged or foreign file
        text = str(e).strip()
        first = text.splitlines()[0] if text else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first}") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a tbptt checkpoint (expected format {FORMAT})")
    return payload
