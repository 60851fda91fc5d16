"""Checkpoints: written atomically, kept in rotation, loaded without running code from the file.

A checkpoint is a dict of tensors, numbers, strings, lists, tuples and dicts
only, so ``torch.load(..., weights_only=True)`` reads it: a checkpoint someone
sends you cannot run code on your machine.

Layout of a run directory written through :class:`Checkpointer`::

    DIR/checkpoint.pt                  the newest checkpoint (a hard link to the newest below)
    DIR/checkpoints/step-000000120.pt  the last ``keep`` checkpoints, by optimizer step

Every file is written to a temporary name in the same directory, flushed,
fsync'ed and renamed into place (``os.replace`` is atomic on POSIX and
Windows), so a crash at any moment leaves every earlier checkpoint intact and
never a half-written file under a checkpoint's name; a write the disk refuses
(full, I/O error) is one ``CheckpointError`` line naming the file. Each file ends
with a SHA-256 of its archive, checked before loading. :func:`latest_checkpoint`
returns the newest checkpoint that loads, skipping damaged ones (bit rot included).
A run holds :class:`RunLock` on its directory while it writes there.

A checkpoint is refused (:class:`NonFiniteError`) when any floating tensor in
it holds NaN or infinity: a run never writes poisoned weights to disk.

Modules:

- :mod:`tbptt.atomic`: writing any file of a run directory atomically;
- :mod:`~tbptt.train.checkpoint.files`: one file (format, digest, atomic write, safe read);
- :mod:`~tbptt.train.checkpoint.lock`: one run per run directory;
- :mod:`~tbptt.train.checkpoint.rundir`: a run directory (loading the newest,
  :class:`Checkpointer`, rotation, intervals);
- :mod:`~tbptt.train.checkpoint.compat`: whether a saved run may be continued;
- :mod:`~tbptt.train.checkpoint.rng`: the global random generators' states.
"""

# Fault-injection tests reach torch.save through this package (checkpoint.torch.save).
import torch  # noqa: F401

from tbptt.atomic import replacing, write_atomically
from tbptt.train.checkpoint.compat import check_compatible
from tbptt.train.checkpoint.files import FORMAT, nonfinite_entries, save_checkpoint
from tbptt.train.checkpoint.lock import RunLock
from tbptt.train.checkpoint.rng import capture_rng, restore_rng
from tbptt.train.checkpoint.rundir import (
    KEPT_DIR,
    LATEST,
    Checkpointer,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    parse_interval,
)

__all__ = [
    "FORMAT",
    "LATEST",
    "KEPT_DIR",
    "save_checkpoint",
    "load_checkpoint",
    "list_checkpoints",
    "latest_checkpoint",
    "nonfinite_entries",
    "check_compatible",
    "parse_interval",
    "Checkpointer",
    "capture_rng",
    "restore_rng",
    "RunLock",
    "replacing",
    "write_atomically",
]
