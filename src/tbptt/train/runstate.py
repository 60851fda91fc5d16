"""A trainer's run state: what :meth:`Trainer.state_dict` saves and ``load_state_dict`` restores.

:class:`RunState` is the part of :class:`~tbptt.train.trainer.Trainer` that
checkpoints and resumes a run: model, optimizer, carried hidden state, stream
position, epoch and step counters, the epoch's partial sums, and every random
generator. It works on the attributes the trainer's constructor sets up
(``model``, ``optimizer``, ``stream``, ``generator``, ``strategy``, ``config``,
``device``) and on the run state the training loop updates (``state``,
``context``, ``epoch``, ``step``, ``skipped``, ``_epoch_*``).
"""

from __future__ import annotations

import copy
import logging
import resource

import torch

from tbptt.errors import CheckpointError
from tbptt.train.checkpoint import capture_rng, check_compatible, restore_rng
from tbptt.train.config import TrainConfig, resumable_fields
from tbptt.train.engine import Context
from tbptt.train.guards import state_signature
from tbptt.tree import cpu_copy, flatten_state, map_state

log = logging.getLogger(__name__)

__all__ = ["RunState"]


class RunState:
    """Saving and restoring a :class:`~tbptt.train.trainer.Trainer`'s run (a mixin of it)."""

    # Attributes rebuilt by the constructor from its arguments (their mutable contents
    # -- weights, optimizer moments, generator, stream cursor -- are in state_dict).
    # Every other attribute is run state: state_dict must save it and load_state_dict
    # restore it; tests/train/test_resume.py fails for an attribute left out.
    REBUILT_ATTRIBUTES = frozenset(
        {
            "config",
            "device",
            "model",
            "strategy",
            "generator",
            "stream",
            "reference_length",
            "optimizer",
            "metrics",
            "objective",
            "valid_batch",
            "_state_shapes",
            "online",  # its sensitivities are saved under "online"
        }
    )

    def _zero_counters(self) -> None:
        self.epoch = 0  # completed epochs
        self.step = 0  # optimizer steps taken
        self.skipped = 0  # steps dropped for non-finite values, over the whole run
        self._epoch_skipped = 0  # ... in the epoch under way
        self._epoch_loss = 0.0  # summed row losses of the epoch's trained steps
        self._epoch_counted = 0  # rows whose loss counted
        self._epoch_tokens = 0  # rows read
        self._epoch_seconds = 0.0

    def _tally(self, record: dict, seconds: float) -> None:
        """Add a step's record (and its wall-clock seconds) to the epoch's partial sums."""
        self._epoch_seconds += seconds
        if not record["skipped"]:
            if record["counted"]:
                self._epoch_loss += record["loss"] * record["counted"]
                self._epoch_counted += record["counted"]
            self._epoch_tokens += record["tokens"]

    def _epoch_record(self, fraction: float) -> dict:
        """The epoch record of the partial sums (then zeroed for the next epoch)."""
        record = {"event": "epoch", "epoch": self.epoch, "step": self.step}
        if self._epoch_counted:  # an epoch whose every step was skipped trained nothing
            sums = {"loss_sum": self._epoch_loss, "count": self._epoch_counted}
            record.update({f"train_{k}": v for k, v in self.objective.summary(sums).items()})
        record.update(
            tokens=self._epoch_tokens,
            seconds=self._epoch_seconds,
            tokens_per_s=self._epoch_tokens / max(self._epoch_seconds, 1e-9),
            skipped_steps=self._epoch_skipped,  # this epoch's (the run's: self.skipped)
            peak_rss_mb=peak_rss_mb(),
            fraction=fraction,
        )
        self._epoch_loss, self._epoch_tokens, self._epoch_seconds = 0.0, 0, 0.0
        self._epoch_counted = self._epoch_skipped = 0
        return record

    def state_dict(self) -> dict:
        """Everything a resumed run needs to continue exactly, as CPU copies.

        Model and optimizer state, the carried hidden state (all B streams), the
        stream cursor, epoch / step / skipped counters, the epoch's partial sums,
        the strategy's generator, every global generator (torch CPU and CUDA,
        Python, NumPy), the strategy's own state where it has one, and the
        configuration. Only tensors, numbers, strings and containers, so
        ``torch.load(weights_only=True)`` reads it.
        """
        return cpu_copy(
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "hidden": self.state,
                "context": self.context.state_dict() if self.context is not None else None,
                "epoch": self.epoch,
                "step": self.step,
                "skipped": self.skipped,
                "position": self.stream.position,
                "epoch_partial": [
                    self._epoch_loss,
                    self._epoch_tokens,
                    self._epoch_seconds,
                    self._epoch_counted,
                    self._epoch_skipped,
                ],
                "generator": self.generator.get_state(),
                "rng": capture_rng(),
                "strategy": self.strategy.state_dict()
                if hasattr(self.strategy, "state_dict")
                else None,
                "config": self.config.to_dict(),
                # rtrl / snap sensitivities, uoro's rank-one factors (tbptt.train.online)
                "online": self.online.state_dict()
                if getattr(self, "online", None) is not None
                else None,
            }
        )

    def load_state_dict(self, d: dict) -> None:
        """Continue the run saved by :meth:`state_dict`.

        A state saved by an older version is migrated where what it lacks has a
        meaning (no ``skipped``: 0; no ``context``: none; no partial sums: an epoch
        boundary); a state that lacks what an exact resume needs (``position``,
        ``generator``...), or holds a value of the wrong type or size, is refused.

        Raises:
            CheckpointError: the state belongs to another configuration or model, or is
                incomplete or malformed (one line naming the key); nothing is changed then.
        """
        if isinstance(d, dict) and d.get("world_size", 1) != 1:  # tbptt.train.distributed
            raise CheckpointError(
                f"the checkpoint was written by {d['world_size']} processes (torchrun) and this "
                f"run is one process; resume with torchrun --nproc-per-node {d['world_size']}, "
                "or start a new run"
            )
        d = self._validated(d)
        check_compatible(
            {"train": d.get("config") or {}},
            {"train": self.config.to_dict()},
            ignore=tuple(f"train.{k}" for k in resumable_fields(TrainConfig)),
        )
        _check_same_parameters(d["model"], self.model.state_dict())
        # Everything that can still fail, first, each undone on failure: nothing is changed
        # unless the whole state loads.
        before_rng = capture_rng()
        try:
            restore_rng(d["rng"])
        except (TypeError, ValueError, KeyError, IndexError, RuntimeError) as e:
            restore_rng(before_rng)
            raise CheckpointError(
                f"the checkpoint's random generator states cannot be restored ({_first_line(e)}); "
                "it was written by another version or is damaged; start a new run"
            ) from None
        before_optimizer = copy.deepcopy(self.optimizer.state_dict())
        try:
            self.optimizer.load_state_dict(d["optimizer"])
        except (ValueError, KeyError, RuntimeError, TypeError, IndexError) as e:
            restore_rng(before_rng)
            self.optimizer.load_state_dict(before_optimizer)
            raise CheckpointError(
                "the checkpoint's optimizer state does not fit this model and optimizer: "
                f"{_first_line(e)}"
            ) from e
        self.model.load_state_dict(d["model"])
        hidden = d["hidden"]
        self.state = map_state(lambda t: t.to(self.device), hidden) if hidden is not None else None
        self.context = Context.from_state_dict(d["context"], self.device)
        self.epoch, self.step, self.skipped = d["epoch"], d["step"], d["skipped"]
        self.stream.position = d["position"]
        (
            self._epoch_loss,
            self._epoch_tokens,
            self._epoch_seconds,
            self._epoch_counted,
            self._epoch_skipped,
        ) = d["epoch_partial"]
        self.generator.set_state(d["generator"])
        if getattr(self, "online", None) is not None:
            self.online.load_state_dict(d.get("online") or {"s": None}, self.device)
        if d.get("strategy") is not None and hasattr(self.strategy, "load_state_dict"):
            self.strategy.load_state_dict(d["strategy"])
        self._note_schedule_change(d.get("config") or {})

    def _validated(self, d) -> dict:
        """``d`` checked key by key and migrated to the current layout, or one CheckpointError.

        Required (an exact resume needs them): ``model``, ``optimizer``, ``epoch``, ``step``,
        ``position``, ``generator``. Migrated when missing: ``skipped`` (0), ``hidden`` and
        ``context`` (none), ``epoch_partial`` (an epoch's start; rows counted = rows read;
        skipped 0), ``rng`` (from a ``torch_rng``, or left as it is).
        """
        if not isinstance(d, dict):
            raise CheckpointError(
                f"the checkpoint's trainer state is a {type(d).__name__}, expected a mapping; "
                "the file was not written by tbptt train"
            )
        problems = [f"{k} is missing" for k in _REQUIRED if k not in d]
        out = dict(d)
        for key in ("model", "optimizer"):
            if key in d and not isinstance(d[key], dict):
                problems.append(f"{key} is a {type(d[key]).__name__}, expected a mapping")
        for key in ("epoch", "step", "position", "skipped"):
            if key in d and not _count(d[key]):
                problems.append(f"{key} is {d[key]!r}, expected an integer >= 0")
        out.setdefault("skipped", 0)
        steps = self.stream.steps
        if _count(d.get("position")) and d["position"] > steps:
            problems.append(f"position is {d['position']} but the stream has {steps} steps")
        want = self.generator.get_state()
        got = d.get("generator")
        if "generator" in d and not (
            isinstance(got, torch.Tensor) and got.dtype == want.dtype and got.shape == want.shape
        ):
            shown = (
                f"a {got.dtype} tensor of shape {tuple(got.shape)}"
                if isinstance(got, torch.Tensor)
                else f"a {type(got).__name__}"
            )
            problems.append(
                f"generator is {shown}, expected a {want.dtype} tensor of shape {tuple(want.shape)}"
            )
        partial = d.get("epoch_partial", [0.0, 0, 0.0])
        if not (
            isinstance(partial, (list, tuple))
            and 3 <= len(partial) <= 5
            and all(_number(v) for v in partial)
        ):
            problems.append(f"epoch_partial is {partial!r}, expected 3 to 5 numbers")
        else:
            partial = list(partial)
            if len(partial) < 4:  # before masks: every row read counted
                partial.append(partial[1])
            if len(partial) < 5:  # before per-epoch skipped counts
                partial.append(0)
            out["epoch_partial"] = partial
        out["hidden"] = d.get("hidden")
        if out["hidden"] is not None:
            problems += self._state_problems("hidden", out["hidden"])
        out["context"] = d.get("context")
        context = out["context"]
        if context is not None:
            if not (isinstance(context, dict) and isinstance(context.get("inputs"), torch.Tensor)):
                problems.append("context is not a lookback context (state, inputs, resets)")
            elif (
                context["inputs"].dim() < 2 or context["inputs"].shape[1] != self.stream.batch_size
            ):
                problems.append(
                    f"context holds rows of shape {tuple(context['inputs'].shape)}, expected "
                    f"(T', {self.stream.batch_size}, ...)"
                )
            else:
                problems += self._state_problems("context.state", context.get("state"))
        if "rng" not in d:
            out["rng"] = {"torch": d["torch_rng"]} if "torch_rng" in d else {}
        elif not isinstance(d["rng"], dict):
            problems.append(f"rng is a {type(d['rng']).__name__}, expected a mapping")
        elif "torch" not in d["rng"]:  # without it, dropout would not continue as it was
            problems.append("rng lacks the torch generator's state")
        if d.get("config") is not None and not isinstance(d["config"], dict):
            problems.append(f"config is a {type(d['config']).__name__}, expected a mapping")
        if problems:
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise CheckpointError(
                f"the checkpoint's trainer state is incomplete or malformed: "
                f"{'; '.join(problems[:3])}{more}; it was written by another version or is "
                "damaged; resume from another checkpoint or start a new run"
            )
        return out

    def _state_problems(self, key: str, state) -> list[str]:
        """Why ``state`` cannot be this run's carried state (structure, shapes, dtypes)."""
        want = state_signature(self.model.initial_state(self.stream.batch_size))
        try:
            got = state_signature(state)
            flatten_state(state)
        except TypeError:
            return [f"{key} is not a state made of tensors"]
        if got != want:
            return [f"{key} does not have the structure, shapes and dtypes of this model's state"]
        return []

    def _note_schedule_change(self, saved: dict) -> None:
        """Log how a cosine schedule continues when a run is resumed with other ``epochs``."""
        epochs = saved.get("epochs")
        if self.config.lr_schedule == "cosine" and _count(epochs) and epochs != self.config.epochs:
            log.warning(
                "the cosine schedule is stretched from %d to %d epochs: the learning rate "
                "continues at %.3g, the longer schedule's value at this point (see "
                "Trainer.current_lr)",
                epochs,
                self.config.epochs,
                self.current_lr(),
            )


_REQUIRED = ("model", "optimizer", "epoch", "step", "position", "generator")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _count(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _check_same_parameters(saved: dict, current: dict) -> None:
    """One-line CheckpointError naming the first parameters that differ in name or shape."""
    problems = [f"{k} is missing" for k in current if k not in saved]
    problems += [f"{k} is unexpected" for k in saved if k not in current]
    problems += [
        f"{k} has shape {tuple(saved[k].shape)} there, {tuple(v.shape)} here"
        for k, v in current.items()
        if k in saved and tuple(saved[k].shape) != tuple(v.shape)
    ]
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CheckpointError(
            f"the checkpoint holds another model: {'; '.join(problems[:3])}{more}; "
            "resume with the same model options, or start a new run"
        )
