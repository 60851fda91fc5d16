"""What a run continues from: the configuration a checkpoint was written with, the check that
the data is the same, and the metrics file put back to where the checkpoint left it."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from tbptt.atomic import write_atomically
from tbptt.data.dataset import Dataset
from tbptt.data.kinds import applied_options
from tbptt.data.tokenize import vocab_difference
from tbptt.errors import CheckpointError, TbpttError
from tbptt.train import RunConfig
from tbptt.train.metrics import file_sha256

__all__ = ["saved_config", "as_recorded", "check_same_data", "restore_metrics"]


def saved_config(found: tuple[Path, dict]) -> RunConfig:
    """The configuration a checkpoint was written with, its data section as its kind reads
    it (a run saved before options were recorded by kind compares as it would be today).

    Raises:
        CheckpointError: the file is not a checkpoint of a tbptt run.
    """
    path, payload = found
    if "config" not in payload or "trainer" not in payload:
        raise CheckpointError(f"{path} is not a checkpoint of a tbptt run; use another directory")
    config = RunConfig.from_dict(payload["config"])
    # Output paths come from the command line (or the caller), never from a file.
    config = config.replace(output={"tensorboard": None})
    if "highway" not in payload["config"].get("model", {}):  # saved before the highway existed
        config = config.replace(model={"highway": 0})
    return as_recorded(config)


def as_recorded(config: RunConfig) -> RunConfig:
    """``config`` with its data section as its kind reads it (text defaults fixed, options
    the kind ignores at their defaults): how a run records it, and compares it."""
    try:
        data, _ = applied_options(config.data.resolved())
    except TbpttError:  # the data cannot be read as it was: loading it says why
        return config
    return dataclasses.replace(config, data=data)


def check_same_data(found: tuple[Path, dict], data: Dataset, identity: str | None = None) -> None:
    """Refuse to continue a checkpoint on another vocabulary or other data.

    The data's identity (:meth:`tbptt.data.Dataset.identity`) is the same for a text and
    its preparation, a CSV and its prepared series. Checkpoints written before identities
    hold an older digest (``data_sha1``), compared as it was.
    """
    from tbptt.data.config import data_digest

    path, payload = found
    vocab, mine = payload.get("vocab"), data.vocabulary()
    if vocab is not None and mine is not None and list(vocab) != mine:
        raise CheckpointError(
            f"the checkpoint {path} has another vocabulary ({vocab_difference(vocab, mine)}); "
            "continue it on the same data, tokens and normalization, or use another directory",
            options=("data.path", "data.tokens", "data.normalize"),
        )
    if "data_identity" in payload:
        same = payload["data_identity"] == (identity or data.identity())
    else:
        same = payload.get("data_sha1") in (None, data_digest(data))
    if not same:
        raise CheckpointError(
            f"the checkpoint {path} was trained on other data (same shape, different values); "
            "continue it on the same data (or its preparation), or use another directory",
            options=("data.path",),
        )


def restore_metrics(path: Path, payload: dict) -> None:
    """Put ``path`` back to what it held when the checkpoint was written.

    The checkpoint holds the file's length and the SHA-256 of those bytes
    (``metrics_position``): the file is cut back to that length, so the lines an
    interrupted run wrote after the checkpoint are written again by the resumed run
    and none is missing or appears twice. A file shorter than that, or whose first
    bytes differ, is refused (the run's history is gone; it cannot be rebuilt).
    Checkpoints of older versions hold the lines themselves (``metrics``) or their
    count (``metrics_lines``).

    Raises:
        CheckpointError: the file is missing, shorter or different, or cannot be written.
    """
    position = payload.get("metrics_position")
    if position is not None:
        _cut_metrics(path, int(position["bytes"]), str(position["sha256"]))
        return
    lines = payload.get("metrics")
    if lines is not None:
        write_atomically(path, "".join(line + "\n" for line in lines))
        return
    _truncate_metrics(path, payload.get("metrics_lines"))


def _cut_metrics(path: Path, length: int, sha256: str) -> None:
    fix = "restore the file, or start a new run in another directory"
    try:
        size = path.stat().st_size if path.is_file() else 0
        if size < length:
            raise CheckpointError(
                f"{path} holds {size} bytes, fewer than the {length} written before the "
                f"checkpoint; {fix}"
            )
        _, digest = file_sha256(path, length)
        if digest.hexdigest() != sha256:
            raise CheckpointError(
                f"{path} differs from the file the checkpoint was written with (its first "
                f"{length} bytes have another SHA-256); {fix}"
            )
        if size > length:  # the lines written after the checkpoint
            os.truncate(path, length)
    except OSError as e:
        raise CheckpointError(f"cannot restore {path}: {e.strerror or e}") from e


def _truncate_metrics(path: Path, lines: int | None) -> None:
    """Cut ``path`` back to its first ``lines`` lines (checkpoints that hold only the count)."""
    if lines is None:
        return
    raw = path.read_bytes() if path.is_file() else b""
    kept = raw.split(b"\n")[:lines]
    if len(kept) < lines or (lines and not raw.startswith(b"\n".join(kept) + b"\n")):
        raise CheckpointError(
            f"{path} has fewer lines than the {lines} written before the checkpoint; "
            "restore the file or start a new run in another directory"
        )
    write_atomically(path, b"".join(line + b"\n" for line in kept))
