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
never a half-written file under a checkpoint's name. :func:`latest_checkpoint`
returns the newest checkpoint that loads, skipping damaged ones.

A checkpoint is refused (:class:`NonFiniteError`) when any floating tensor in
it holds NaN or infinity: a run never writes poisoned weights to disk.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tbptt.errors import CheckpointError, ConfigError, NonFiniteError
from tbptt.tree import leaves

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
]

log = logging.getLogger(__name__)

FORMAT = "tbptt-checkpoint-1"
LATEST = "checkpoint.pt"
KEPT_DIR = "checkpoints"
_STEP_FILE = re.compile(r"^step-(\d+)\.pt$")


# -- writing and reading one file ------------------------------------------------------


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


def _fsync_directory(directory: Path) -> None:
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
    _fsync_directory(path.parent)
    return path


def _read(path: Path) -> dict:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a damaged or foreign file
        text = str(e).strip()
        first = text.splitlines()[0] if text else type(e).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: {first}") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a tbptt checkpoint (expected format {FORMAT})")
    return payload


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
    return _read(path)


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

    Damaged files are skipped (with a logged warning) in favour of older ones.

    Raises:
        CheckpointError: there are checkpoint files but none of them loads.
    """
    errors = []
    for path in list_checkpoints(directory):
        try:
            return path, _read(path)
        except CheckpointError as e:
            log.warning("skipping damaged checkpoint: %s", e)
            errors.append(str(e))
    if errors:
        raise CheckpointError(f"no checkpoint in {directory} loads; the newest: {errors[0]}")
    return None


# -- compatibility ---------------------------------------------------------------------


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(_flatten(v, key))
        else:
            out[key] = v
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b or a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or (a != a and b != b)  # NaN equals NaN here
    return a == b


def check_compatible(
    saved: dict, current: dict, *, ignore: tuple[str, ...] = (), source: str = "the checkpoint"
) -> None:
    """Refuse to continue a run whose configuration differs from the saved one.

    ``saved`` and ``current`` are nested dicts (``{"model": {...}, "train": {...}}``),
    compared key by key after flattening to dotted keys (``model.hidden_size``).
    Keys in ``ignore`` (dotted, or a prefix ending in ``.``) may differ. A key
    present on one side only is not compared: it is an option one version of
    tbptt has and the other lacks (new options default to the old behaviour).

    Raises:
        CheckpointError: one line naming every differing key and both values.
    """
    a, b = _flatten(saved), _flatten(current)

    def ignored(key: str) -> bool:
        return any(key == i or (i.endswith(".") and key.startswith(i)) for i in ignore)

    missing = object()
    diffs: list[str] = []
    for key in sorted(set(a) | set(b)):
        if ignored(key):
            continue
        x, y = a.get(key, missing), b.get(key, missing)
        if x is missing or y is missing:
            log.info("%s: %s is set on one side only; not compared", source, key)
        elif not _same(x, y):
            diffs.append(f"{key} is {x!r} there but {y!r} here")
    if diffs:
        more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise CheckpointError(
            f"{source} belongs to another run: {'; '.join(diffs[:3])}{more}; "
            "resume with the same settings, or start a new run in another directory"
        )


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
        directory: the run directory (see the module docstring for the layout).
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
            path.unlink(missing_ok=True)
        # Temporary files of writes that a crash interrupted (ours only, by name).
        folder = self.directory / KEPT_DIR
        for stale in [*folder.glob(".step-*.tmp"), *self.directory.glob(f".{LATEST}.*.tmp")]:
            stale.unlink(missing_ok=True)


def _link_atomically(source: Path, target: Path) -> None:
    """Make ``target`` the same file as ``source`` (hard link; a copy where links fail), atomically."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(source, tmp)
        except OSError:
            shutil.copyfile(source, tmp)
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {target}: {e.strerror or e}") from e
    _fsync_directory(target.parent)


# -- random generators -----------------------------------------------------------------


def capture_rng() -> dict:
    """The state of every global random generator a run may draw from, as plain data.

    torch's CPU generator (dropout, initialisation), every CUDA device's
    generator where CUDA is available, Python's ``random`` and NumPy's legacy
    global generator (stored as tensors and tuples, so ``weights_only`` loading
    reads them). Generators a run owns (the strategy's) are saved by their owner.
    """
    import random

    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    try:
        import numpy as np
    except ImportError:  # numpy is a dependency, but the run does not need it
        return state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state["numpy"] = {
        "kind": str(kind),
        "keys": torch.from_numpy(keys.astype("int64")),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached_gaussian": float(cached),
    }
    return state


def restore_rng(state: dict) -> None:
    """Put back what :func:`capture_rng` returned (generators it did not save are left alone)."""
    import random

    if "torch" in state:
        torch.set_rng_state(state["torch"])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((version, tuple(internal), gauss))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    if "numpy" in state:
        import numpy as np

        s = state["numpy"]
        keys = s["keys"].numpy().astype("uint32")
        np.random.set_state((s["kind"], keys, s["pos"], s["has_gauss"], s["cached_gaussian"]))
