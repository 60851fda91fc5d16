"""Resuming ``tbptt train`` runs (the configuration a resumed run continues with, and what
it may not change) and stopping them cleanly on a signal.

A run directory holds the run's checkpoints (with its configuration and the length
and digest of the metrics written so far) and its ``metrics.jsonl``; ``--resume DIR`` takes the
configuration from the newest valid checkpoint, checks that the data and the
settings are the run's own, and continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from pathlib import Path

from tbptt.cli.common import FLAG_KEYS, run_config_from_args
from tbptt.data.dataset import TextData
from tbptt.errors import CheckpointError, ConfigError
from tbptt.train import RunConfig
from tbptt.train.checkpoint import latest_checkpoint, write_atomically
from tbptt.train.metrics import file_sha256


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
    fix = "restore the file, or start a new run with another --out"
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
            "restore the file or start a new run with another --out"
        )
    write_atomically(path, b"".join(line + b"\n" for line in kept))


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


def check_same_data(found: tuple[Path, dict], data, digest: str) -> None:
    """Refuse to resume a checkpoint on another vocabulary or other data (by digest)."""
    path, payload = found
    vocab = payload.get("vocab")
    if isinstance(data, TextData) and vocab is not None and list(vocab) != list(data.vocab.itos):
        raise CheckpointError(
            f"the checkpoint {path} has another vocabulary ({len(vocab)} tokens there, "
            f"{len(data.vocab)} here); resume with the same --data, --tokens and --normalize, "
            "or use another --out"
        )
    if payload.get("data_sha1", digest) != digest:
        raise CheckpointError(
            f"the checkpoint {path} was trained on other data (same shape, different values); "
            "resume with the same --data file, or use another --out"
        )


def configure(args, out: Path) -> tuple[RunConfig, tuple[Path, dict] | None]:
    """The run's configuration (before the data fills in the model's sizes) and the
    checkpoint to continue (None: a fresh run).

    A fresh run, or ``--out DIR``: the defaults with the given flags. ``--resume DIR``: the
    run's saved configuration with the given flags.
    """
    found = find_run(out, resume=bool(args.resume), other_out=args.out)
    if found is not None and args.resume:
        return run_config_from_args(args, base=saved_config(found)), found
    return run_config_from_args(args), found


def saved_config(found: tuple[Path, dict]) -> RunConfig:
    path, payload = found
    if "config" not in payload or "trainer" not in payload:
        raise CheckpointError(f"{path} is not a checkpoint of tbptt train; use another --out")
    return RunConfig.from_dict(payload["config"])


def check_continues(config: RunConfig, found: tuple[Path, dict], *, resume: bool, out: Path):
    """One comparison with the saved run: refuse any change a resumed run may not make."""
    saved = saved_config(found)
    diffs = config.differences(saved)
    if not diffs:
        return
    if resume:
        key = diffs[0].split(" ")[0]
        raise CheckpointError(
            f"--resume {out}: {_flag(key)} {_value(config, key)} differs from the run's "
            f"{_value(saved, key)!r}; drop the flag to continue the run as it was, or start "
            "a new run with --out"
        )
    more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
    raise CheckpointError(
        f"the checkpoint {found[0]} belongs to another run: {'; '.join(diffs[:3])}{more}; "
        "resume with the same settings (or --resume DIR), or use another --out"
    )


def _value(config: RunConfig, key: str):
    section, name = key.split(".")
    return getattr(getattr(config, section), name)


def _flag(key: str) -> str:
    """The command-line flag of a dotted configuration key (``train.lr`` -> ``--lr``)."""
    dest = next((d for d, k in FLAG_KEYS.items() if k == key), None)
    return "--" + dest.replace("_", "-") if dest else key
