"""Checkpoints: written atomically, loaded without running code from the file.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts only, so
``torch.load(..., weights_only=True)`` reads it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

from tbptt.errors import CheckpointError

__all__ = ["FORMAT", "save_checkpoint", "load_checkpoint"]

FORMAT = "tbptt-checkpoint-1"


def save_checkpoint(payload: dict, path: str | Path) -> Path:
    """Write ``payload`` to ``path`` via a temporary file, fsync and rename.

    A crash while writing leaves any previous file at ``path`` intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": FORMAT, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: missing, unreadable, or not a tbptt checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; pass a run directory or a .pt file"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first}") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a tbptt checkpoint (expected format {FORMAT})")
    return payload
