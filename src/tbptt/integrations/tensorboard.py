"""The scalars of ``metrics.jsonl`` as TensorBoard event files (``tbptt[tensorboard]``).

Every numeric field of a metrics record becomes a scalar tagged ``<event>/<field>`` at
the record's optimizer step (``step/loss``, ``step/grad_norm``, ``step/lr``,
``epoch/val_ppl``, ``epoch/train_loss``, ``epoch/tokens_per_s``, ``eval/val_ppl``, ...):
the same values as the JSON lines (TensorBoard keeps them as float32). Text and flags
are left out, and so are records without a ``step`` (the closing ``run`` record of
``tbptt compare``).

- ``tbptt train --tensorboard DIR`` writes as the run goes (:class:`MirroredMetrics`);
- ``tbptt compare --tensorboard DIR`` writes each run, when it ends, into
  ``DIR/<its run directory name>`` (``regular-35-seed0``; :func:`write_metrics_file`),
  so ``tensorboard --logdir DIR`` overlays the strategies.

Writing uses ``torch.utils.tensorboard.SummaryWriter`` (which needs the ``tensorboard``
package); reading back, :func:`read_scalars`, uses tensorboard's own ``EventAccumulator``.
"""

from __future__ import annotations

import json
from pathlib import Path

from tbptt.errors import ConfigError

__all__ = [
    "TensorBoardWriter",
    "MirroredMetrics",
    "check_available",
    "write_metrics_file",
    "read_scalars",
]

# Fields that place a record, not measure it.
_POSITION = frozenset({"event", "epoch", "step"})


def check_available() -> None:
    """Refuse (one line) when the tensorboard package is missing, before any training."""
    _summary_writer_class()


def _summary_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # torch's module imports the tensorboard package
        raise ConfigError(
            f"writing TensorBoard files needs the tensorboard package ({e}); install it with "
            "pip install 'tbptt[tensorboard]'",
            options=("output.tensorboard",),
        ) from None
    return SummaryWriter


def _summary_writer(log_dir: Path, purge_step: int | None):
    SummaryWriter = _summary_writer_class()
    try:
        return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
    except OSError as e:
        raise ConfigError(
            f"cannot write TensorBoard files into {log_dir}: {e.strerror}",
            options=("output.tensorboard",),
        ) from None


def scalars(record: dict) -> dict[str, float]:
    """``{tag: value}`` of a metrics record's numeric fields (bools and text left out)."""
    event = record.get("event", "step")
    out = {}
    for key, value in record.items():
        if key in _POSITION or isinstance(value, bool):
            continue
        if isinstance(value, str) and value in ("nan", "inf", "-inf"):  # JSON's non-finite
            value = float(value)
        if isinstance(value, (int, float)):
            out[f"{event}/{key}"] = float(value)
    return out


class TensorBoardWriter:
    """Write metrics records as scalars into ``log_dir`` (one TensorBoard run).

    ``purge_step``: a resumed run's step; events from that step on, written by the run
    before it stopped, are dropped by TensorBoard.
    """

    def __init__(self, log_dir: str | Path, *, purge_step: int | None = None):
        self.log_dir = Path(log_dir)
        self._writer = _summary_writer(self.log_dir, purge_step)

    def write(self, record: dict) -> None:
        step = record.get("step")
        if not isinstance(step, int) or isinstance(step, bool):  # placed by no step: left out
            return
        for tag, value in scalars(record).items():
            self._writer.add_scalar(tag, value, global_step=step)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class MirroredMetrics:
    """A :class:`~tbptt.train.MetricsWriter` whose records also go to TensorBoard.

    Everything else (``position()``, ``records``, ...) is the metrics writer's.
    """

    def __init__(self, metrics, board: TensorBoardWriter):
        self.metrics = metrics
        self.board = board

    def write(self, record: dict) -> None:
        self.metrics.write(record)
        self.board.write(record)
        if record.get("event") == "epoch":
            self.board.flush()

    def close(self) -> None:
        self.metrics.close()
        self.board.close()

    def __getattr__(self, name):
        return getattr(self.metrics, name)


def write_metrics_file(metrics_path: str | Path, log_dir: str | Path) -> Path:
    """Write the step and epoch records of a ``metrics.jsonl`` into ``log_dir``; returns it."""
    board = TensorBoardWriter(log_dir)
    try:
        with open(metrics_path) as f:
            for line in f:
                if line.strip():
                    board.write(json.loads(line))
    finally:
        board.close()
    return Path(log_dir)


def read_scalars(log_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """``{tag: [(step, value), ...]}`` read back with tensorboard's ``EventAccumulator``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
