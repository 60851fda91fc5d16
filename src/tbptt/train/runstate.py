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

from tbptt.errors import CheckpointError
from tbptt.train.checkpoint import capture_rng, check_compatible, restore_rng
from tbptt.train.config import TrainConfig, resumable_fields
from tbptt.train.engine import Context
from tbptt.tree import cpu_copy, map_state

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
        }
    )

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
                ],
                "generator": self.generator.get_state(),
                "rng": capture_rng(),
                "strategy": self.strategy.state_dict()
                if hasattr(self.strategy, "state_dict")
                else None,
                "config": self.config.to_dict(),
            }
        )

    def load_state_dict(self, d: dict) -> None:
        """Continue the run saved by :meth:`state_dict`.

        Raises:
            CheckpointError: the state belongs to another configuration or model
                (one line naming the mismatch); nothing is changed then.
        """
        check_compatible(
            {"train": d.get("config", {})},
            {"train": self.config.to_dict()},
            ignore=tuple(f"train.{k}" for k in resumable_fields(TrainConfig)),
        )
        _check_same_parameters(d["model"], self.model.state_dict())
        self.model.load_state_dict(d["model"])
        try:
            self.optimizer.load_state_dict(d["optimizer"])
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(
                f"the checkpoint's optimizer state does not fit this model and optimizer: {e}"
            ) from e
        hidden = d.get("hidden")
        self.state = map_state(lambda t: t.to(self.device), hidden) if hidden is not None else None
        self.context = Context.from_state_dict(d.get("context"), self.device)
        self.epoch, self.step, self.skipped = d["epoch"], d["step"], d.get("skipped", 0)
        self.stream.position = d["position"]
        partial = list(d.get("epoch_partial", [0.0, 0, 0.0]))
        self._epoch_loss, self._epoch_tokens, self._epoch_seconds = partial[:3]
        self._epoch_counted = partial[3] if len(partial) > 3 else self._epoch_tokens
        self.generator.set_state(d["generator"])
        if d.get("strategy") is not None and hasattr(self.strategy, "load_state_dict"):
            self.strategy.load_state_dict(d["strategy"])
        restore_rng(d["rng"] if "rng" in d else {"torch": d["torch_rng"]})


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
