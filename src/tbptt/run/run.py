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
import sys
import time
from collections.abc import Callable
from pathlib import Path

from torch import nn
from tqdm import tqdm

from tbptt.atomic import remove_debris
from tbptt.data.dataset import Dataset
from tbptt.errors import CheckpointError
from tbptt.integrations.tensorboard import MirroredMetrics, TensorBoardWriter
from tbptt.run.outputs import (
    RunResult,
    epoch_line,
    header_line,
    ran_on,
    resume_line,
    write_outputs,
)
from tbptt.run.resume import as_recorded, check_same_data, restore_metrics, saved_config
from tbptt.run.signals import Stopped, StopRequest
from tbptt.threads import revise as revise_threads
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
from tbptt.truncation import Strategy, parse_strategy

__all__ = ["Run", "RunResult", "RUN_FILES"]

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
        config = as_recorded(config.replace(train={"strategy": self.strategy.spec}))
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
        return header_line(self)

    def resume_line(self) -> str | None:
        """Where a continued run stands (None: a new run)."""
        return resume_line(self)

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
            # interval checkpoints are written and a stop request is honoured, and where the
            # thread count follows the CPUs other work leaves free (tbptt.threads.revise).
            revise_threads()
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
            line = on_epoch_line(record) if on_epoch_line else epoch_line(record, epochs)
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
