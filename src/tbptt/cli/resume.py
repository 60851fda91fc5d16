"""Resuming ``tbptt train`` runs and stopping them cleanly on a signal.

A run directory holds the run's checkpoints (with its configuration and the metrics
lines written so far) and its ``metrics.jsonl``; ``--resume DIR`` takes the
configuration from the newest valid checkpoint, checks that the data and the
settings are the run's own, and continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

from tbptt.errors import CheckpointError, ConfigError
from tbptt.train.checkpoint import latest_checkpoint


def find_run(out: Path, *, resume: bool, other_out: str | None = None):
    """``(path, payload)`` of the checkpoint a run in ``out`` continues from, or None.

    ``resume`` (``--resume DIR``): the directory must hold a checkpoint. Otherwise
    (``--out DIR``) an existing checkpoint means the run continues (when the settings
    are the run's own; the caller compares them).
    """
    if not resume:
        return latest_checkpoint(out) if out.is_dir() else None
    if other_out and Path(other_out) != out:
        raise ConfigError(
            f"--resume {out} and --out {other_out} name different directories; "
            "a resumed run writes into its own directory, drop --out"
        )
    if not out.is_dir():
        raise CheckpointError(
            f"--resume {out}: no such run directory; pass the --out directory of a run"
        )
    found = latest_checkpoint(out)
    if found is None:
        raise CheckpointError(
            f"--resume {out}: the directory holds no checkpoint to resume from; "
            "pass the --out directory of a run that wrote one"
        )
    return found


def restore_metrics(path: Path, payload: dict) -> None:
    """Put ``path`` back to the lines it had when the checkpoint was written.

    Lines written after it (by the run that was interrupted) are written again by
    the resumed run, so none is missing and none appears twice. The checkpoint
    holds the lines themselves, so a damaged or deleted metrics file is rebuilt.
    """
    lines = payload.get("metrics")
    if lines is not None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        os.replace(tmp, path)
        return
    _truncate_metrics(path, payload.get("metrics_lines"))


def _truncate_metrics(path: Path, lines: int | None) -> None:
    """Cut ``path`` back to its first ``lines`` lines (checkpoints that hold only the count)."""
    if lines is None:
        return
    raw = path.read_bytes() if path.is_file() else b""
    kept = raw.split(b"\n")[:lines]
    if len(kept) < lines or (lines and not raw.startswith(b"\n".join(kept) + b"\n")):
        raise CheckpointError(
            f"{path} has fewer lines than the {lines} written before the checkpoint; "
            "restore the file or start a new run with another --out"
        )
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(b"".join(line + b"\n" for line in kept))
    os.replace(tmp, path)


class Stopped(Exception):
    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.name = signal.Signals(signum).name


class StopRequest:
    """SIGINT / SIGTERM set a flag; the training loop stops at the next window boundary.

    A second signal aborts at once (no checkpoint beyond the last one written).
    """

    def __init__(self):
        self.signum = 0

    def _handler(self, signum, frame):
        if self.signum:
            raise KeyboardInterrupt
        self.signum = signum
        print(
            f"\ntbptt train: {signal.Signals(signum).name} received, stopping after this window "
            "(send it again to abort without a checkpoint)",
            file=sys.stderr,
            flush=True,
        )

    def check(self) -> None:
        if self.signum:
            raise Stopped(self.signum)

    @contextlib.contextmanager
    def installed(self):
        previous = {}
        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, self._handler)
        except ValueError:  # not the main thread: leave signals to the caller
            pass
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
