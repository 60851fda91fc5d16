"""Resuming ``tbptt train`` runs and stopping them cleanly on a signal.

A run directory holds the run's checkpoints (with the command line and the metrics
lines written so far) and its ``metrics.jsonl``; ``--resume DIR`` rebuilds the
command line from the newest valid checkpoint, checks that the data and the
settings are the run's own, and continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sys
from pathlib import Path

import torch

from tbptt.errors import CheckpointError, ConfigError
from tbptt.train.checkpoint import check_compatible, latest_checkpoint

# Flags a resumed run may change without changing what was computed so far; every
# other saved flag is taken from the run (and refused if given with another value).
RESUME_MAY_CHANGE = frozenset(
    {
        "epochs",
        "nonfinite",
        "device",
        "threads",
        "no_progress",
        "checkpoint_every",
        "keep_checkpoints",
        "prefix",
        "sample_length",
        "temperature",
        "data",  # the same text may have moved: its digest is checked instead
    }
)
# Keys of the resolved configuration (config.json) a resumed run may change.
RESOLVED_MAY_CHANGE = ("data.path", "train.epochs", "train.nonfinite", "train.device")


def saved_arguments(args) -> dict:
    """The command line as plain data (saved in every checkpoint, so --resume can rebuild it)."""
    plain = (str, int, float, bool, type(None))
    return {
        k: v for k, v in vars(args).items() if isinstance(v, plain) and k not in ("resume", "verb")
    }


def resume_arguments(args, *, given: set[str], known: set[str]):
    """``args`` for ``--resume DIR``: the run's saved flags, overridden only where allowed.

    ``given``: the flags given on this command line (explicitly, whatever their value);
    ``known``: every flag this version has (a saved flag it lacks is ignored).
    """
    directory = Path(args.resume)
    if args.out and Path(args.out) != directory:
        raise ConfigError(
            f"--resume {directory} and --out {args.out} name different directories; "
            "a resumed run writes into its own directory, drop --out"
        )
    if not directory.is_dir():
        raise CheckpointError(
            f"--resume {directory}: no such run directory; pass the --out directory of a run"
        )
    found = latest_checkpoint(directory)
    if found is None:
        raise CheckpointError(
            f"--resume {directory}: the directory holds no checkpoint to resume from; "
            "pass the --out directory of a run that wrote one"
        )
    saved = found[1].get("args") or {}
    for key, value in saved.items():
        if key in ("command", "out") or key not in known:  # a flag this version lacks
            continue
        if key not in given:
            setattr(args, key, value)
        elif getattr(args, key) != value and key not in RESUME_MAY_CHANGE:
            flag = "--" + key.replace("_", "-")
            raise CheckpointError(
                f"--resume {directory}: {flag} {getattr(args, key)} differs from the run's {value!r}; "
                "drop the flag to continue the run as it was, or start a new run with --out"
            )
    args.out = str(directory)
    return args


def data_digest(data) -> str:
    """SHA-1 of the vocabulary and the token streams: the run's text, whatever its path."""

    h = hashlib.sha1("\x00".join(data.vocab.itos).encode("utf-8", "surrogatepass"))
    for part in (data.train, data.valid):
        h.update(part.to(torch.int64).cpu().numpy().tobytes())
    return h.hexdigest()


def resumable(out: Path, args, resolved: dict, vocab: list, data_sha1: str):
    """``(path, payload)`` of the checkpoint to continue in ``out``, or None for a fresh run.

    A checkpoint of another run (model, vocabulary, data or options) is refused
    with one line naming the difference.
    """
    found = latest_checkpoint(out)
    if found is None:
        if getattr(args, "resume", None):
            raise CheckpointError(f"--resume {out}: no checkpoint to resume from")
        return None
    path, payload = found
    if "resolved" not in payload or "trainer" not in payload:
        raise CheckpointError(f"{path} is not a checkpoint of tbptt train; use another --out")
    source = f"the checkpoint {path}"
    if list(payload.get("vocab", vocab)) != list(vocab):
        saved = payload["vocab"]
        raise CheckpointError(
            f"{source} has another vocabulary ({len(saved)} tokens there, {len(vocab)} here); "
            "resume with the same --data, --tokens and --normalize, or use another --out"
        )
    check_compatible(payload["resolved"], resolved, ignore=RESOLVED_MAY_CHANGE, source=source)
    if payload.get("data_sha1", data_sha1) != data_sha1:
        raise CheckpointError(
            f"{source} was trained on another text (same vocabulary, different tokens); "
            "resume with the same --data file, or use another --out"
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
