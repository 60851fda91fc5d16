"""A run: one training in its own directory, from its first step to its outputs, resumable.

:class:`Run` owns the run directory's whole life::

    DIR/.lock              held while the run writes here (a second run is refused)
    DIR/config.json        the configuration, the dataset and where it ran
    DIR/metrics.jsonl      a JSON line per step and per epoch
    DIR/checkpoint.pt      the newest checkpoint (DIR/checkpoints/: the last few)
    DIR/curves.png, DIR/summary.json, and the data's own outputs (a sample, predictions)

Checkpoints are written on a schedule (every N steps or seconds, each epoch, the
end); SIGINT / SIGTERM stop the run at the next window boundary with a checkpoint.
Running the same run again -- the same directory, model, data and configuration --
continues from the newest valid checkpoint and ends bit for bit where an
uninterrupted run would (weights, metrics lines). A refusal before the first
checkpoint of a new run leaves nothing behind. ``tbptt train`` is this object
behind flags; your script gets the same guarantees::

    run = Run("runs/mine", model=StatefulModule(MyCell()), data=StreamDataset(train, valid),
              config=RunConfig(train=TrainConfig(strategy="randomized:20", epochs=3)),
              objective=PerStepLoss(my_loss))
    result = run.fit()            # again after a crash: continues where it stopped
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn
from tqdm import tqdm

from tbptt.atomic import remove_debris
from tbptt.data.dataset import Dataset
from tbptt.data.kinds import applied_options
from tbptt.data.tokenize import vocab_difference
from tbptt.errors import CheckpointError, TbpttError
from tbptt.integrations.tensorboard import MirroredMetrics, TensorBoardWriter
from tbptt.run.outputs import ran_on, write_outputs
from tbptt.run.signals import Stopped, StopRequest
from tbptt.train import MetricsWriter, Objective, RunConfig, Trainer
from tbptt.train.build import build_objective
from tbptt.train.checkpoint import (
    LATEST,
    Checkpointer,
    RunLock,
    latest_checkpoint,
    parse_interval,
    write_atomically,
)
from tbptt.train.metrics import file_sha256
from tbptt.truncation import Strategy, parse_strategy

__all__ = ["Run", "RunResult", "RUN_FILES", "restore_metrics", "saved_config"]

log = logging.getLogger(__name__)

# A long run writes millions of step lines: in memory the metrics writer keeps the epoch
# records and this many of the newest step records.
METRICS_TAIL = 1000
# A run that skipped more than this share of its optimizer steps for non-finite values
# (train.nonfinite = "skip") did not train: it ends with code 2, its outputs written.
MAX_SKIPPED_SHARE = 0.5
# With no progress bar, a line at least this often (seconds) says the run is alive.
ALIVE_SECONDS = 30.0
# The files a run writes into its directory through a temporary name (their debris,
# after a kill, is removed once the run holds the directory's lock).
RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "predictions.csv", "curves.png",
             "predictions.png")  # fmt: skip


@dataclass
class RunResult:
    """How a run ended.

    Attributes:
        code: 0 when it finished (or was already complete), 128 + the signal's number
            when a signal stopped it (checkpointed), 130 when a second signal aborted it.
        summary: summary.json's record (empty when it did not finish).
        written: the files written at the end.
        resumed_from: the checkpoint it continued (None: it started afresh).
        stopped_by: the signal's name when one stopped it.
        problem: why a run that finished still failed (code 2): it skipped more than
            :data:`MAX_SKIPPED_SHARE` of its steps for non-finite values.
    """

    code: int
    summary: dict = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)
    resumed_from: Path | None = None
    stopped_by: str | None = None
    problem: str | None = None


class Run:
    """One run of ``model`` on ``data`` under ``config``, in the directory ``directory``.

    Args:
        directory: the run directory (created, locked, written; see the module docstring).
        model: the model to train (a :class:`~tbptt.models.RecurrentModel`, e.g. yours in a
            :class:`~tbptt.models.custom.StatefulModule`). Its weights are replaced by the
            checkpoint's when the run continues.
        data: a :class:`~tbptt.data.Dataset` (your own splits: :class:`~tbptt.data.StreamDataset`).
        config: the whole configuration; ``config.train`` drives the trainer,
            ``config.checkpoint`` the schedule, ``config.output`` the outputs.
        objective: the loss and metrics (default: the data's own, as ``tbptt train``).
        strategy: the parsed strategy (default: parsed from ``config.train.strategy``).
        group: a data-parallel job's process group (:mod:`tbptt.train.distributed`):
            every rank trains, rank 0 alone writes.
        title: the model in a few words, for the header line and the plot.
        echo: where the run's lines go (default: the ``tbptt.run`` logger); ``warn`` the
            same for stop and abort messages.
        lock: the directory's lock, when the caller took it already (to read the
            directory's checkpoint with no other run writing there).
        continue_hint: how to continue a stopped run, in the stop message.
    """

    def __init__(
        self,
        directory: str | Path,
        *,
        model: nn.Module,
        data: Dataset,
        config: RunConfig,
        objective: Objective | str | Callable | None = None,
        strategy: Strategy | None = None,
        group=None,
        title: str | None = None,
        echo: Callable[[str], None] | None = None,
        warn: Callable[[str], None] | None = None,
        lock: RunLock | None = None,
        continue_hint: str = "run it again to continue",
    ):
        config.check()
        parse_interval(config.checkpoint.every)
        self.strategy = strategy or parse_strategy(config.train.strategy)
        if data.eval_columns is not None:  # a series: scored as its stream continues
            config = config.replace(train={"eval_batch_size": data.eval_columns})
        config = _as_recorded(config.replace(train={"strategy": self.strategy.spec}))
        self.directory = Path(directory)
        self.model, self.data, self.config, self.group = model, data, config, group
        self.objective = objective if objective is not None else build_objective(config, data)
        self.title = title or type(model).__name__
        self.echo = echo or log.info
        self.warn = warn or log.warning
        self.lock = lock or RunLock(self.directory)
        self.continue_hint = continue_hint
        self.found: tuple[Path, dict] | None = None
        self.trainer: Trainer | None = None
        self.metrics = None
        self._identity: str | None = None

    @property
    def leader(self) -> bool:
        return self.group is None or self.group.leader

    @property
    def identity(self) -> str:
        if self._identity is None:
            self._identity = self.data.identity()
        return self._identity

    # -- the life of a run ---------------------------------------------------------------

    def fit(self) -> RunResult:
        """Start the run (or continue it from its newest checkpoint), train it to its last
        epoch, and write its outputs; how it ended.

        Raises:
            CheckpointError: the directory holds another run, or is locked by one.
            TbpttError: a refusal (data, configuration, memory); nothing is left behind.
        """
        try:
            self.open()
            result = self.train()
            if result.code == 0 and self.leader:
                result = self.finish(result)
            return result
        finally:
            self.close()

    def open(self) -> None:
        """Lock the directory (rank 0), find the checkpoint to continue, build the trainer,
        then write config.json and open the metrics. A new run's directory is created only
        after every check passed, and removed again if a later step fails."""
        created = not self.directory.exists()
        if self.leader and not created:
            self._lock()
        self.found = self._find()
        trainer = self._build_trainer()  # memory and size refusals: before any write
        if self.found is not None:
            trainer.load_state_dict(self.found[1]["trainer"])
        try:
            if self.leader:
                self._lock()  # creates the directory
                self._write_start()
            append = self.found is not None
            metrics = MetricsWriter(
                self.directory / "metrics.jsonl" if self.leader else None,
                append=append,
                tail=METRICS_TAIL,
            )
            if self.config.output.tensorboard and self.leader:
                # A resumed run drops the events its first run wrote after the checkpoint.
                resumed_at = trainer.step + 1 if self.found is not None else None
                board = TensorBoardWriter(self.config.output.tensorboard, purge_step=resumed_at)
                metrics = MirroredMetrics(metrics, board)
        except BaseException:
            if created and self.found is None and self.leader:
                self._remove_new_directory()
            raise
        trainer.metrics = self.metrics = metrics
        self.trainer = trainer

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
        self.lock.release()

    def _lock(self) -> None:
        if not self.lock.held:
            self.lock.acquire()
            remove_debris(self.directory, RUN_FILES)

    def _find(self) -> tuple[Path, dict] | None:
        """The newest valid checkpoint in the directory, checked to be this run's."""
        if not self.directory.is_dir():
            return None
        found = latest_checkpoint(self.directory)
        if found is None:
            return None
        path = found[0]
        saved = saved_config(found)
        diffs = self.config.differences(saved)
        if diffs:
            more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
            raise CheckpointError(
                f"the checkpoint {path} belongs to another run: {'; '.join(diffs[:3])}{more}; "
                "continue it with its own configuration, or use another directory"
            )
        check_same_data(found, self.data, self.identity)
        return found

    def _build_trainer(self) -> Trainer:
        cls, extra = Trainer, {}
        if self.group is not None:
            from tbptt.train.distributed import DistributedTrainer

            cls, extra = DistributedTrainer, {"group": self.group}
        return cls(
            self.model,
            self.data.train_split(),
            self.data.valid_split(),
            self.config.train,
            strategy=self.strategy,
            objective=self.objective,
            **extra,
        )

    def _write_start(self) -> None:
        out = self.directory
        if self.found is None and latest_checkpoint(out) is not None:
            raise CheckpointError(
                f"another run wrote a checkpoint into {out} while this one started; "
                "run it again to continue that run, or use another directory"
            )
        record = {
            **self.config.to_dict(),
            "dataset": self.data.describe(),
            "ran_on": self.ran_on(),
        }
        write_atomically(out / "config.json", json.dumps(record, indent=2) + "\n")
        if self.found is not None:
            restore_metrics(out / "metrics.jsonl", self.found[1])

    def _remove_new_directory(self) -> None:
        """Undo a new run's start: the files it wrote, and the directory if nothing else is there."""
        for name in ("config.json", "metrics.jsonl"):
            with contextlib.suppress(OSError):
                (self.directory / name).unlink()
        self.lock.release()
        with contextlib.suppress(OSError):
            (self.directory / ".lock").unlink()
            self.directory.rmdir()

    def ran_on(self) -> dict:
        return ran_on(self.config, self.group.world if self.group is not None else 1)

    def header(self) -> str:
        """One line: the model, its size, the strategy, objective, data and directory."""
        trainer, data = self.trainer, self.data
        n_params = sum(p.numel() for p in trainer.model.parameters())
        test = data.test_split()
        size = f", vocabulary {data.shape.vocab_size}" if data.shape.vocab_size else ""
        if test is not None:
            size = f" / {len(test):,} test{size}"
        if data.reading():
            size += ", " + data.reading()
        world = f", {self.group.world} processes" if self.group is not None else ""
        return (
            f"{self.title} ({n_params:,} parameters), {self.strategy.spec}, "
            f"{trainer.objective.name}, {len(data.train_split()):,} training / "
            f"{len(data.valid_split()):,} validation {data.unit}{size}{world}; "
            f"run directory {self.directory}"
        )

    def resume_line(self) -> str | None:
        """Where a continued run stands (None: a new run)."""
        if self.found is None:
            return None
        trainer, epochs, out = self.trainer, self.config.train.epochs, self.directory
        if trainer.epoch >= epochs:
            return (
                f"{out} is complete ({trainer.epoch} of {epochs} epochs, step {trainer.step}, "
                f"from {self.found[0]}); rewriting its outputs (train longer with more epochs)"
            )
        return (
            f"resuming {out} from {self.found[0]} (epoch {trainer.epoch + 1} of {epochs}, "
            f"step {trainer.step})"
        )

    def train(self, on_epoch_line: Callable[[dict], str] | None = None) -> RunResult:
        """Train to the last epoch under a progress bar, checkpointing on schedule, at each
        epoch's end and at the end. ``on_epoch_line(record)``: the epoch's line (default:
        its record's metrics)."""
        trainer, config, out, leader = self.trainer, self.config, self.directory, self.leader
        epochs = config.train.epochs
        resumed = self.found[0] if self.found is not None else None
        batch = config.train.batch_size
        rows_per_epoch = trainer.stream.steps * batch  # all ranks' rows
        progress = config.output.progress and leader
        bar = tqdm(
            total=rows_per_epoch * epochs,
            initial=min(
                rows_per_epoch * epochs,
                rows_per_epoch * trainer.epoch + trainer.stream.position * batch,
            ),
            unit="tok" if "token" in self.data.unit else "row",
            unit_scale=True,
            dynamic_ncols=True,
            disable=not progress,
            file=sys.stderr,
            desc="train",
        )
        say = bar.write if progress else self.echo
        every_steps, every_seconds = parse_interval(config.checkpoint.every)
        checkpointer = Checkpointer(
            out, every_steps=every_steps, every_seconds=every_seconds, keep=config.checkpoint.keep
        )
        checkpointer.mark(trainer.step)
        stop = StopRequest(say=self.warn if leader else None)
        alive = {"at": time.monotonic()}

        def agreed(due: bool) -> tuple[bool, int]:
            # Every rank must checkpoint and stop at the same window: rank 0's clock decides
            # when a checkpoint is due, a signal on any rank stops them all.
            if self.group is None:
                return due, stop.signum
            flag, signum = self.group.max([float(due and leader), float(stop.signum)])
            return bool(flag), int(signum)

        def on_step(record):
            # A window just ended: the trainer's state is consistent, so this is where
            # interval checkpoints are written and a stop request is honoured.
            due, signum = agreed(checkpointer.due(record["step"]))
            if due or signum:
                self.checkpoint(checkpointer)
            if signum:
                raise Stopped(signum)
            bar.update(record["tokens"])
            if record["step"] % 10 == 0:
                bar.set_postfix(
                    loss=f"{record['loss']:.3f}", grad=f"{record['grad_norm']:.2f}", refresh=False
                )
            if not progress and leader and time.monotonic() - alive["at"] >= ALIVE_SECONDS:
                alive["at"] = time.monotonic()
                self.echo(
                    f"epoch {record['epoch']}/{epochs}, step {record['step']}, "
                    f"{bar.n:,} of {bar.total:,} {self.data.unit}, loss {record['loss']:.4g}"
                )

        def on_epoch(record):
            line = on_epoch_line(record) if on_epoch_line else _epoch_line(record, epochs)
            say(line)
            alive["at"] = time.monotonic()
            self.checkpoint(checkpointer)
            if trainer.epoch < epochs:  # after the last epoch, finish the outputs instead
                if signum := agreed(False)[1]:
                    raise Stopped(signum)

        try:
            with stop.installed():
                trainer.fit(on_step=on_step, on_epoch=on_epoch)
        except Stopped as e:
            bar.close()
            if leader:  # every rank stopped at this step; rank 0 says so
                self.warn(
                    f"stopped by {e.name} at epoch {trainer.epoch + 1}, step {trainer.step}; "
                    f"checkpoint in {out / LATEST}; {self.continue_hint}"
                )
            return RunResult(128 + e.signum, resumed_from=resumed, stopped_by=e.name)
        except KeyboardInterrupt:  # a second signal: abort now, mid-window, no checkpoint
            bar.close()
            last = checkpointer.last_path or (out / LATEST if (out / LATEST).is_file() else None)
            self.warn(
                f"aborted at epoch {trainer.epoch + 1}, step {trainer.step}; "
                + (
                    f"the last checkpoint is {last}; {self.continue_hint}"
                    if last
                    else "no checkpoint was written"
                )
            )
            return RunResult(130, resumed_from=resumed, stopped_by="SIGINT")
        finally:
            bar.close()
        self.checkpoint(checkpointer)
        return RunResult(0, resumed_from=resumed)

    def checkpoint(self, checkpointer: Checkpointer) -> Path | None:
        """Write a checkpoint of the run as it stands (rank 0; every rank must call it)."""
        payload = {
            "config": self.config.to_dict(),
            "vocab": self.data.vocabulary(),
            "data_identity": self.identity,
            # What metrics.jsonl holds now (its length and SHA-256), not its lines: a
            # checkpoint's size must not grow with the run.
            "metrics_position": self.metrics.position(),
            "trainer": self.trainer.state_dict(),  # distributed: gathered from every rank
        }
        return checkpointer.save(payload, self.trainer.step) if self.leader else None

    def finish(self, result: RunResult) -> RunResult:
        """Rank 0's outputs: curves.png, summary.json and the data's own."""
        self.metrics.close()
        summary, written, notes = write_outputs(
            self.directory,
            self.trainer,
            self.data,
            self.config,
            title=f"{self.title}, {self.strategy.spec}",
            ran=self.ran_on(),
        )
        for note in notes:
            self.warn(note)
        result = dataclasses.replace(result, summary=summary, written=written)
        steps, skipped = self.trainer.step, self.trainer.skipped
        if steps and skipped > MAX_SKIPPED_SHARE * steps:
            result.code = 2
            result.problem = (
                f"{skipped} of {steps} optimizer steps were skipped for non-finite values, more "
                f"than {MAX_SKIPPED_SHARE:.0%}: the model did not train; lower the learning "
                "rate or set a gradient clip"
            )
        return result


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
    return _as_recorded(config)


def _as_recorded(config: RunConfig) -> RunConfig:
    """``config`` with its data section as its kind reads it (text defaults fixed, options
    the kind ignores at their defaults): how a run records it, and compares it."""
    try:
        data, _ = applied_options(config.data.resolved())
    except TbpttError:  # the data cannot be read as it was: loading it says why
        return config
    return dataclasses.replace(config, data=data)


def _epoch_line(record: dict, epochs: int) -> str:
    metrics = "  ".join(
        f"{k} {v:.4g}" for k, v in record.items() if k.startswith(("train_", "val_"))
    )
    return f"epoch {record['epoch']}/{epochs}  {metrics}  {record['tokens_per_s']:,.0f} rows/s"


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
