"""The mixin that gives a LightningModule tbptt's strategies (:class:`TruncatedBPTT`)."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from tbptt.errors import ConfigError, NonFiniteError
from tbptt.integrations.lightning.batches import StreamBatches, _swap
from tbptt.train.engine import Context, run_window
from tbptt.train.objectives import Objective, make_objective
from tbptt.tree import State, cpu_copy, detach_state, map_state
from tbptt.truncation import Strategy, parse_strategy

__all__ = ["TruncatedBPTT", "CHECKPOINT_KEY"]

CHECKPOINT_KEY = "tbptt"  # the entry of a Lightning checkpoint holding the carried state


class TruncatedBPTT:
    """Mixin for a ``LightningModule``: tbptt's strategies through manual optimization.

    Put it before ``LightningModule`` in the bases, keep your recurrent model in an
    attribute (``self.model``: a :class:`tbptt.RecurrentLM` / :class:`tbptt.RecurrentNet`,
    or your module in :class:`tbptt.models.custom.StatefulModule`), return one optimizer
    from ``configure_optimizers`` and call :meth:`configure_tbptt` in ``__init__``.

    Attributes (set by :meth:`configure_tbptt`):
        tbptt_strategy: the :class:`~tbptt.truncation.Strategy`.
        tbptt_state: the carried (detached) state, None at a stream start.
        tbptt_context: TBPTT(k1, k2)'s lookback rows, None when there are none.
        tbptt_generator: the generator the strategy draws windows from.
        tbptt_record: the last batch's metrics (loss per row, windows, grad norm, lr).
        tbptt_val: the last validation's metrics (``loss``, ``ppl``, ... of the objective),
            logged as ``val_loss``, ``val_ppl``, ...
    """

    def configure_tbptt(
        self,
        strategy: str | Strategy = "regular:35",
        *,
        model: str = "model",
        objective: str | Objective | Callable | None = None,
        clip: float = 1.0,
        seed: int = 0,
        batch_first: bool = True,
        carry_across_epochs: bool = False,
    ) -> None:
        """Choose the strategy and its settings (call in ``__init__``).

        Args:
            strategy: a spec (``regular:35``, ``randomized:35``, ``k1k2:10,35``, ...) or a
                :class:`~tbptt.truncation.Strategy`.
            model: the attribute holding the recurrent model.
            objective: the loss (a name, an :class:`~tbptt.train.objectives.Objective` or a
                per-row loss function); default next-token cross-entropy.
            clip: gradient clipping by global norm over the module's parameters (0: none).
            seed: seeds the strategy's generator (its draws are saved in checkpoints).
            batch_first: batches are (B, T, ...) (False: time-major (T, B, ...)).
            carry_across_epochs: keep the state from the end of one epoch into the next
                (default: each epoch starts every stream afresh, as the data restart).
        """
        if not clip >= 0:
            raise ConfigError(f"Expected clip >= 0 (0: no clipping), got {clip}")
        self.automatic_optimization = False
        self.tbptt_strategy = parse_strategy(strategy) if isinstance(strategy, str) else strategy
        self.tbptt_objective = make_objective(objective)
        self.tbptt_generator = torch.Generator().manual_seed(seed)
        self.tbptt_settings = {
            "model": model,
            "clip": float(clip),
            "batch_first": batch_first,
            "carry_across_epochs": carry_across_epochs,
        }
        self.tbptt_state: State | None = None
        self.tbptt_context: Context | None = None
        self.tbptt_record: dict = {}
        self.tbptt_val: dict = {}
        self._eval_state: State | None = None
        self._eval_sums: dict[str, float] = {}
        self._tbptt_resumed = False

    # -- the step --------------------------------------------------------------------

    def tbptt_model(self) -> torch.nn.Module:
        return getattr(self, self.tbptt_settings["model"])

    def tbptt_unpack(self, batch) -> dict:
        """The batch as a dict of time-major tensors (inputs, targets, resets, mask) and reset."""
        if isinstance(batch, dict):
            parts = dict(batch)
        elif isinstance(batch, (tuple, list)) and len(batch) in (2, 3):
            parts = dict(zip(("inputs", "targets", "resets"), batch))
        else:
            raise ConfigError(
                "Expected a batch as a dict with inputs and targets (and optionally resets, "
                f"mask, reset) or a tuple (inputs, targets[, resets]), got {type(batch).__name__}"
            )
        missing = {"inputs", "targets"} - set(parts)
        if missing:
            raise ConfigError(f"the batch has no {', '.join(sorted(missing))}")
        if self.tbptt_settings["batch_first"]:
            parts = {k: _swap(v) for k, v in parts.items()}
        reset = parts.get("reset", False)
        parts["reset"] = bool(reset.any()) if isinstance(reset, torch.Tensor) else bool(reset)
        return parts

    def training_step(self, batch, batch_idx):
        parts = self.tbptt_unpack(batch)
        return self.tbptt_train_batch(
            parts["inputs"],
            parts["targets"],
            resets=parts.get("resets"),
            mask=parts.get("mask"),
            reset=parts["reset"],
        )

    def tbptt_train_batch(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        *,
        resets: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        reset: bool = False,
    ) -> torch.Tensor:
        """Train on one time-major batch, one optimizer step per window; returns the
        batch's mean row loss (detached).

        inputs (T, B[, F]); targets (T, B[, D]); resets, mask (T, B) bool; ``reset``: start
        every stream afresh.
        """
        model, strategy = self.tbptt_model(), self.tbptt_strategy
        optimizer = self.optimizers()
        if isinstance(optimizer, (list, tuple)):
            raise ConfigError(
                f"TruncatedBPTT steps one optimizer per window; configure_optimizers "
                f"returned {len(optimizer)}"
            )
        steps, batch_size = inputs.shape[:2]
        reference = strategy.reference_length(steps)
        if reset:
            self.tbptt_state, self.tbptt_context = None, None
        clip = self.tbptt_settings["clip"] or math.inf
        loss_total, counted, windows, position = 0.0, 0, 0, 0
        grad_norm = lr = math.nan
        while position < steps:
            window = strategy.plan(steps - position, self.tbptt_generator)
            rows = slice(position, position + window.length)
            if window.reset or self.tbptt_state is None:
                state, self.tbptt_context = model.initial_state(batch_size), None
            else:
                state = detach_state(map_state(lambda t: t.to(inputs.device), self.tbptt_state))
            context = self.tbptt_context
            if context is not None:
                context = context.to(inputs.device)
            result = run_window(
                model,
                inputs[rows],
                targets[rows],
                state,
                window,
                resets=resets[rows] if resets is not None else None,
                mask=mask[rows] if mask is not None else None,
                context=context,
                objective=self.tbptt_objective,
            )
            loss = result.loss_sum / (batch_size * (window.loss_length or reference))
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.parameters(), clip))
            loss_sum = float(result.loss_sum.detach())
            if not (math.isfinite(loss_sum) and math.isfinite(grad_norm)):
                raise NonFiniteError(
                    f"non-finite {'loss' if not math.isfinite(loss_sum) else 'gradient'} in "
                    f"window {windows + 1} of the batch (gradient norm {grad_norm:g}); no step "
                    "was taken. Lower the learning rate or set a gradient clip"
                )
            groups = _param_groups(optimizer)
            base = [group["lr"] for group in groups]
            for group in groups:  # variable length: the learning rate times length / K
                group["lr"] = group["lr"] * window.lr_scale
            lr = groups[0]["lr"]
            optimizer.step()
            for group, value in zip(groups, base):
                group["lr"] = value
            self.tbptt_state = detach_state(result.state)
            self.tbptt_context = result.context
            loss_total += loss_sum
            counted += window.length * batch_size if mask is None else int(mask[rows].sum())
            windows += 1
            position = rows.stop
        mean = loss_total / max(counted, 1)
        self.tbptt_record = {"loss": mean, "windows": windows, "grad_norm": grad_norm, "lr": lr}
        if getattr(self, "_trainer", None) is not None:
            self.log("train_loss", mean, prog_bar=True, batch_size=batch_size)
            self.log("grad_norm", grad_norm, batch_size=batch_size)
        return torch.tensor(mean)

    # -- validation ----------------------------------------------------------------

    @torch.no_grad()
    def validation_step(self, batch, batch_idx):
        """Score the batch with the state carried from the previous validation batch (no
        windows, no graph), as tbptt evaluates; the epoch's metrics are logged at its end."""
        parts = self.tbptt_unpack(batch)
        inputs, targets, resets = parts["inputs"], parts["targets"], parts.get("resets")
        model = self.tbptt_model()
        if parts["reset"] or self._eval_state is None:
            state = model.initial_state(inputs.shape[1])
        else:
            state = self._eval_state
        if resets is None:
            outputs, state = model(inputs, state, None)  # (T, B, O)
        else:
            outputs, state = model(inputs, state, None, resets=resets)
        self._eval_state = detach_state(state)
        stats = self.tbptt_objective.statistics(outputs, targets, parts.get("mask"))
        for key, value in stats.items():
            self._eval_sums[key] = self._eval_sums.get(key, 0.0) + value

    def on_validation_epoch_start(self) -> None:
        self._eval_state, self._eval_sums = None, {}
        super().on_validation_epoch_start()

    def on_validation_epoch_end(self) -> None:
        if self._eval_sums:
            self.tbptt_val = self.tbptt_objective.summary(self._eval_sums)
            for key, value in self.tbptt_val.items():
                self.log(f"val_{key}", value, prog_bar=key == self.tbptt_objective.primary)
        super().on_validation_epoch_end()

    # -- Lightning hooks ---------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        if not self.tbptt_settings["carry_across_epochs"]:
            self.tbptt_state, self.tbptt_context = None, None
        # The streams are read from their start again, whatever position a checkpoint
        # restored (one written at the end of an epoch that limit_train_batches cut short).
        if isinstance(self.trainer.train_dataloader, StreamBatches):
            self.trainer.train_dataloader.rewind()
        self._tbptt_resumed = False
        super().on_train_epoch_start()

    def on_train_batch_start(self, batch, batch_idx: int):
        if self._tbptt_resumed:  # the first batch after a checkpoint was loaded
            self._tbptt_resumed = False
            self.tbptt_check_resume(batch_idx)
        return super().on_train_batch_start(batch, batch_idx)

    def tbptt_check_resume(self, batch_idx: int) -> None:
        """At the first batch after a checkpoint was loaded: refuse to go on unless the
        training loader continues where the checkpoint was written (else the carried state
        would meet the rows of another batch).

        ``batch_idx``: the batch of the epoch Lightning resumes at (its restored progress).
        """
        if batch_idx == 0 and not self.tbptt_settings["carry_across_epochs"]:
            # A checkpoint written after an epoch's last batch resumes at the next epoch's
            # first batch without calling on_train_epoch_start: reset the state here.
            self.tbptt_state, self.tbptt_context = None, None
        loader = self.trainer.train_dataloader
        where = f"the run resumes at batch {batch_idx} of an epoch"
        if isinstance(loader, StreamBatches):
            if loader.position - 1 != batch_idx:
                raise ConfigError(
                    f"{where}, but the training StreamBatches resumed at its batch "
                    f"{loader.position - 1} (the checkpoint holds no position of it, or one "
                    "limit_train_batches left inside the epoch); resume from a checkpoint "
                    "written by a run that handed StreamBatches to fit itself, or from the start"
                )
        elif batch_idx > 0 and not (
            hasattr(loader, "state_dict") and hasattr(loader, "load_state_dict")
        ):
            raise ConfigError(
                f"{where}, and the training loader ({type(loader).__name__}) has no position "
                "Lightning can save: it would start the epoch again under the state carried "
                f"out of {batch_idx} batches; pass StreamBatches(...) to fit itself (not a "
                "DataLoader around it) or a stateful loader, or resume from an end-of-epoch "
                "checkpoint"
            )

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[CHECKPOINT_KEY] = {
            "strategy": self.tbptt_strategy.spec,
            "state": cpu_copy(self.tbptt_state),
            "context": self.tbptt_context.state_dict() if self.tbptt_context else None,
            "generator": self.tbptt_generator.get_state(),
        }
        super().on_save_checkpoint(checkpoint)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get(CHECKPOINT_KEY)
        if saved is None:
            raise ConfigError(
                "the checkpoint holds no tbptt entry (state, generator): it was not written "
                "by a module with TruncatedBPTT; train from the start instead"
            )
        if saved["strategy"] != self.tbptt_strategy.spec:
            raise ConfigError(
                f"the checkpoint was trained with strategy {saved['strategy']}, this module "
                f"has {self.tbptt_strategy.spec}; configure the same strategy to resume"
            )
        self.tbptt_state = saved["state"]
        self.tbptt_context = Context.from_state_dict(saved["context"])
        self.tbptt_generator.set_state(saved["generator"])
        self._tbptt_resumed = True  # check the loader's position at the first batch
        super().on_load_checkpoint(checkpoint)


def _param_groups(optimizer) -> list[dict]:
    # Lightning wraps the optimizer (LightningOptimizer); its groups are the wrapped one's.
    return getattr(optimizer, "optimizer", optimizer).param_groups
