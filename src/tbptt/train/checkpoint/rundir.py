"""A run directory's checkpoints: finding and loading the newest, when to write, rotation.

The layout (see :mod:`tbptt.train.checkpoint`) is ``DIR/checkpoint.pt``, a
hard link to the newest of ``DIR/checkpoints/step-<step>.pt``.
:func:`latest_checkpoint` and :func:`load_checkpoint` skip damaged files;
:class:`Checkpointer` writes and prunes them at the intervals
:func:`parse_interval` reads.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from tbptt.atomic import NOFOLLOW, fsync_directory, remove_debris, write_error
from tbptt.errors import CheckpointError, ConfigError
from tbptt.train.checkpoint.files import read_file, save_checkpoint

__all__ = [
    "LATEST",
    "KEPT_DIR",
    "load_checkpoint",
    "list_checkpoints",
    "latest_checkpoint",
    "parse_interval",
    "Checkpointer",
]

log = logging.getLogger(__name__)

LATEST = "checkpoint.pt"
KEPT_DIR = "checkpoints"
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | NOFOLLOW
_STEP_FILE = re.compile(r"^step-(\d+)\.pt$")


# -- a run directory's checkpoints -----------------------------------------------------


def _kept(directory: Path) -> list[tuple[int, Path]]:
    folder = directory / KEPT_DIR
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        if m := _STEP_FILE.match(p.name):
            found.append((int(m.group(1)), p))
    return sorted(found, reverse=True)


def list_checkpoints(directory: str | Path) -> list[Path]:
    """The checkpoint files of a run directory, newest first (``checkpoint.pt`` last:
    it is a link to the newest kept file, or the only file of a directory written
    without rotation)."""
    directory = Path(directory)
    paths = [p for _, p in _kept(directory)]
    if (directory / LATEST).is_file():
        paths.append(directory / LATEST)
    return paths


def latest_checkpoint(directory: str | Path) -> tuple[Path, dict] | None:
    """``(path, payload)`` of the newest checkpoint in ``directory`` that loads, or None.

    Damaged files (unreadable, or whose digest does not match: bit rot) are skipped,
    each with one logged warning, in favour of older ones. ``checkpoint.pt`` is a
    hard link to the newest step file: when that file is damaged, so is the link,
    and it is skipped without being read (and reported) a second time.

    Raises:
        CheckpointError: there are checkpoint files but none of them loads.
    """
    errors = []
    damaged: set[tuple[int, int]] = set()
    for path in list_checkpoints(directory):
        try:
            st = path.stat()
        except OSError:
            continue  # pruned by a run that finished meanwhile
        if (st.st_dev, st.st_ino) in damaged:
            continue  # the same file under another name: already reported
        try:
            return path, read_file(path)
        except CheckpointError as e:
            log.warning("skipping damaged checkpoint: %s", e)
            errors.append(str(e))
            damaged.add((st.st_dev, st.st_ino))
    if errors:
        raise CheckpointError(f"no checkpoint in {directory} loads; the newest: {errors[0]}")
    return None


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint file, or the newest valid checkpoint of a run directory.

    Loading never unpickles arbitrary objects (``weights_only=True``).

    Raises:
        CheckpointError: missing, unreadable, or not a tbptt checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise CheckpointError(
                f"{path} holds no checkpoint; pass a run directory written by tbptt train "
                "or a .pt file"
            )
        return found[1]
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist; pass a run directory or a .pt file"
        )
    return read_file(path)


# -- when to write, and rotation -------------------------------------------------------

_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|steps?)?\s*$", re.IGNORECASE)


def parse_interval(text: str) -> tuple[int, float]:
    """``"200"`` / ``"200steps"`` -> (200, 0); ``"30s"``, ``"10m"``, ``"1h"`` -> (0, seconds);
    ``"0"``, ``"off"``, ``"epoch"`` -> (0, 0): no checkpoints between epoch ends.

    Raises:
        ConfigError: anything else.
    """
    t = str(text).strip().lower()
    if t in ("off", "epoch", "none", ""):
        return 0, 0.0
    m = _INTERVAL.match(t)
    if not m:
        raise ConfigError(
            f"checkpoint interval {text!r} is not understood; expected N (optimizer steps), "
            "Ns, Nm or Nh (seconds, minutes, hours), or 'epoch'"
        )
    value, unit = float(m.group(1)), (m.group(2) or "steps").lower()
    if unit.startswith("step"):
        if value != int(value):
            raise ConfigError(f"checkpoint interval {text!r}: a step count must be a whole number")
        return int(value), 0.0
    seconds = value * {"s": 1.0, "m": 60.0, "h": 3600.0}[unit]
    return 0, seconds


class Checkpointer:
    """Writes a run's checkpoints into ``directory`` and keeps the last ``keep``.

    Args:
        directory: the run directory (see :mod:`tbptt.train.checkpoint` for the layout).
        every_steps: write when this many optimizer steps passed since the last write (0: off).
        every_seconds: write when this much wall-clock time passed (0: off).
        keep: how many step files to keep (>= 1); older ones are deleted.
        clock: seconds, monotonic (injectable for tests).

    ``due(step)`` says whether an interval has elapsed; ``save(payload, step)``
    writes. The caller decides when (after an optimizer step, at an epoch end,
    on a signal): the trainer's state is only consistent between windows.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        every_steps: int = 0,
        every_seconds: float = 0.0,
        keep: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ):
        if keep < 1:
            raise ConfigError(f"keep at least 1 checkpoint, got {keep}")
        if every_steps < 0 or not every_seconds >= 0:
            raise ConfigError("checkpoint intervals must be >= 0 (0 = off)")
        self.directory = Path(directory)
        self.every_steps, self.every_seconds, self.keep = every_steps, every_seconds, keep
        self.clock = clock
        self.last_step: int | None = None
        self.last_time = clock()
        self.last_path: Path | None = None

    def due(self, step: int) -> bool:
        """True when ``every_steps`` steps or ``every_seconds`` seconds passed since the last write."""
        since = step - (self.last_step if self.last_step is not None else 0)
        if self.every_steps and since >= self.every_steps:
            return True
        return bool(self.every_seconds) and self.clock() - self.last_time >= self.every_seconds

    def mark(self, step: int) -> None:
        """Count ``step`` as written (e.g. the step a resumed run starts from)."""
        self.last_step, self.last_time = step, self.clock()

    def save(self, payload: dict, step: int) -> Path:
        """Write ``payload`` as the checkpoint of optimizer step ``step``; returns ``checkpoint.pt``.

        The step file is written atomically first, then ``checkpoint.pt`` is
        pointed at it (atomically), then files beyond ``keep`` are deleted.
        """
        kept = save_checkpoint(payload, self.directory / KEPT_DIR / f"step-{step:09d}.pt")
        latest = self.directory / LATEST
        _link_atomically(kept, latest)
        self._prune()
        self.mark(step)
        self.last_path = latest
        return latest

    def _prune(self) -> None:
        for _, path in _kept(self.directory)[self.keep :]:
            try:
                path.unlink(missing_ok=True)
            except OSError as e:
                raise CheckpointError(
                    f"cannot delete old checkpoint {path}: {e.strerror or e}"
                ) from e
        # Temporary files of writes that a crash interrupted (ours only, by name). The run
        # holds the directory's lock (tbptt.train.checkpoint.lock), so no other run is
        # writing one of them now.
        remove_debris(self.directory / KEPT_DIR, ("step-*",))
        remove_debris(self.directory, (LATEST,))


def _link_atomically(source: Path, target: Path) -> None:
    """Make ``target`` the same file as ``source`` (hard link; a copy where links fail), atomically."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(source, tmp)
        except OSError:
            os.close(os.open(tmp, _NEW_FILE, 0o666))  # our own new file, not a planted link
            shutil.copyfile(source, tmp)
            fd = os.open(tmp, os.O_RDONLY | NOFOLLOW)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise write_error(target, e) from e
    fsync_directory(target.parent)
