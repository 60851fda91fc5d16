"""Objectives: the per-step loss l(o_t, y_t) and the metrics a run reports.

Shapes: outputs (T, B, O) (O = V logits, C class logits, or D values);
targets (T, B) class / token ids or (T, B, D) values; mask (T, B) bool or None
(None: every row counts).

**Normalization (the same for every objective and strategy).** A row is one
step of one stream. :meth:`Objective.loss_sum` returns the *sum* of the rows'
losses (a row's loss: its cross-entropy, or the mean over its D values of the
squared error); masked rows add 0. The trainer divides that sum by
``B * reference_length`` (the strategy's nominal window length), so every row
weighs the same in every strategy, masked or not, and a randomized estimate
stays unbiased.

**Metrics.** Evaluation adds up :meth:`Objective.statistics` window by
window (plain sums, so they also add across processes) and
:meth:`Objective.summary` turns the sums into the figures a run reports:

=============  =========================  ======================================
objective      training loss               reported (``val_<name>``)
=============  =========================  ======================================
``lm``         cross-entropy (nats)        ``loss``, ``ppl`` = exp(loss), ``bpt``
                                           (bits per token = loss / ln 2)
``classify``   cross-entropy (nats)        ``loss``, ``acc``
``regress``    squared error (standard-    ``loss`` (= MSE in the units the model
               ized units where the data   sees), ``rmse`` and ``mae`` in the
               was standardized)           data's own units (``scale``)
=============  =========================  ======================================

Under an adaptive softmax (:mod:`tbptt.models.adaptive`) the ``lm`` loss is the same
sum of -log p(target): in training the model's outputs are scored per target
(:class:`~tbptt.models.adaptive.AdaptiveOutputs`), in evaluation they are the full
log-probabilities, whose cross-entropy is that same sum.

Your own loss: ``PerStepLoss(fn)``, with ``fn(outputs, targets) -> (T, B)``
per-row losses, trains like the others and reports ``loss``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from tbptt.data.streams import StreamData, ids
from tbptt.errors import ConfigError
from tbptt.models.adaptive import AdaptiveOutputs

__all__ = [
    "Objective",
    "LanguageModel",
    "Classification",
    "Regression",
    "PerStepLoss",
    "OBJECTIVES",
    "make_objective",
    "default_objective",
    "check_fits",
]

IGNORE = -100  # target id cross_entropy skips


@runtime_checkable
class Objective(Protocol):
    """A per-step loss and the metrics built from it (see the module docstring).

    Attributes:
        name: registry name (``lm``, ``classify``, ``regress``) or ``custom``.
        primary: the metric runs are compared by (a key of :meth:`summary`).
        higher_is_better: whether a larger ``primary`` is better.
    """

    name: str
    primary: str
    higher_is_better: bool

    def loss_sum(
        self, outputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scalar: the sum of the rows' losses (rows where ``mask`` is False add 0)."""
        ...

    def statistics(
        self, outputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None
    ) -> dict[str, float]:
        """Additive sums over the rows (``loss_sum``, ``count`` and any the metrics need)."""
        ...

    def summary(self, sums: dict[str, float]) -> dict[str, float]:
        """The reported metrics from (summed) statistics; keys absent from ``sums`` are skipped."""
        ...


def _count(targets: torch.Tensor, mask: torch.Tensor | None, rows_dims: int = 2) -> float:
    if mask is not None:
        return float(mask.sum())
    return float(math.prod(targets.shape[:rows_dims]))


def _mean_loss(sums: dict[str, float]) -> float:
    count = sums.get("count", 0.0)
    return sums.get("loss_sum", math.nan) / count if count else math.nan


class LanguageModel:
    """Next-token cross-entropy over a vocabulary: loss (nats), perplexity, bits per token."""

    name = "lm"
    primary = "ppl"
    higher_is_better = False

    def loss_sum(self, outputs, targets, mask=None):
        if isinstance(outputs, AdaptiveOutputs):  # an adaptive softmax: the same sum of -log p
            return outputs.loss_sum(ids(targets), mask)
        targets = ids(targets)  # a split may store ids in a narrow type
        if mask is not None:
            targets = targets.masked_fill(~mask, IGNORE)
        return F.cross_entropy(
            outputs.flatten(0, 1), targets.flatten(), reduction="sum", ignore_index=IGNORE
        )

    def statistics(self, outputs, targets, mask=None):
        targets = ids(targets)
        if isinstance(outputs, AdaptiveOutputs):
            outputs = outputs.log_probs()  # (T, B, V): the metrics of the full distribution
        if mask is not None:
            targets = targets.masked_fill(~mask, IGNORE)
        return {
            "loss_sum": float(self.loss_sum(outputs, targets)),
            "count": float((targets != IGNORE).sum()),
        }

    def summary(self, sums):
        loss = _mean_loss(sums)
        return {"loss": loss, "ppl": math.exp(min(loss, 700.0)), "bpt": loss / math.log(2)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Classification(LanguageModel):
    """Per-step classification: cross-entropy and accuracy."""

    name = "classify"
    primary = "acc"
    higher_is_better = True

    def statistics(self, outputs, targets, mask=None):
        sums = super().statistics(outputs, targets, mask)
        hit = outputs.argmax(-1) == targets  # (T, B)
        if mask is not None:
            hit = hit & mask
        sums["correct"] = float(hit.sum())
        return sums

    def summary(self, sums):
        out = {"loss": _mean_loss(sums)}
        if "correct" in sums and sums.get("count"):
            out["acc"] = sums["correct"] / sums["count"]
        return out


class Regression:
    """Squared error per row (the mean over D values), with RMSE and MAE in the data's units.

    Args:
        scale: (D,) the standard deviations the targets were divided by
            (``None``: the targets are in their own units), so ``rmse`` and
            ``mae`` are reported back in the data's units.
    """

    name = "regress"
    primary = "rmse"
    higher_is_better = False

    def __init__(self, scale: Sequence[float] | None = None):
        self.scale = tuple(float(s) for s in scale) if scale is not None else None

    def _errors(self, outputs, targets):
        if outputs.shape != targets.shape:
            raise ConfigError(
                f"Expected outputs of the targets' shape {tuple(targets.shape)}, got "
                f"{tuple(outputs.shape)}; the model's output size must equal the target width"
            )
        return outputs - targets.to(outputs.dtype)  # (T, B, D)

    def loss_sum(self, outputs, targets, mask=None):
        rows = self._errors(outputs, targets).square().mean(-1)  # (T, B)
        if mask is not None:
            rows = rows * mask.to(rows.dtype)
        return rows.sum()

    def statistics(self, outputs, targets, mask=None):
        errors = self._errors(outputs, targets).detach().double()  # (T, B, D)
        keep = mask.to(errors.dtype) if mask is not None else torch.ones_like(errors[..., 0])
        rows = errors.square().mean(-1) * keep  # (T, B)
        if self.scale is not None:
            errors = errors * errors.new_tensor(self.scale)  # the data's own units
        count = float(keep.sum())
        return {
            "loss_sum": float(rows.sum()),
            "count": count,
            "sse": float((errors.square() * keep[..., None]).sum()),
            "sae": float((errors.abs() * keep[..., None]).sum()),
            "elements": count * errors.shape[-1],
        }

    def summary(self, sums):
        out = {"loss": _mean_loss(sums)}
        if sums.get("elements"):
            out["rmse"] = math.sqrt(sums["sse"] / sums["elements"])
            out["mae"] = sums["sae"] / sums["elements"]
        return out

    def __repr__(self) -> str:
        return f"Regression(scale={self.scale})"


class PerStepLoss:
    """Your own per-step loss: ``fn(outputs (T, B, O), targets) -> (T, B)`` row losses."""

    name = "custom"
    primary = "loss"
    higher_is_better = False

    def __init__(self, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        self.fn = fn

    def _rows(self, outputs, targets, mask):
        rows = self.fn(outputs, targets)
        if tuple(rows.shape) != tuple(outputs.shape[:2]):
            raise ConfigError(
                f"Expected the loss function to return one loss per row, shape "
                f"{tuple(outputs.shape[:2])}, got {tuple(rows.shape)}"
            )
        return rows * mask.to(rows.dtype) if mask is not None else rows

    def loss_sum(self, outputs, targets, mask=None):
        return self._rows(outputs, targets, mask).sum()

    def statistics(self, outputs, targets, mask=None):
        return {
            "loss_sum": float(self._rows(outputs, targets, mask).sum()),
            "count": _count(targets, mask),
        }

    def summary(self, sums):
        return {"loss": _mean_loss(sums)}


OBJECTIVES: dict[str, Callable[..., Objective]] = {
    "lm": LanguageModel,
    "classify": Classification,
    "regress": Regression,
}


def make_objective(objective: str | Objective | Callable | None, **options) -> Objective:
    """An :class:`Objective` from a registry name, an objective, or a per-step loss function.

    Raises:
        ConfigError: an unknown name (the valid ones are listed).
    """
    if objective is None:
        objective = "lm"
    if isinstance(objective, str):
        if objective not in OBJECTIVES:
            raise ConfigError(
                f"unknown objective {objective!r}; expected one of {', '.join(OBJECTIVES)}"
            )
        return OBJECTIVES[objective](**options)
    if isinstance(objective, Objective):
        return objective
    if callable(objective):
        return PerStepLoss(objective)
    raise ConfigError(
        f"Expected an objective name ({', '.join(OBJECTIVES)}), an Objective or a loss "
        f"function, got {type(objective).__name__}"
    )


def default_objective(split: StreamData) -> Objective:
    """The objective a split implies: next-token cross-entropy for a next-token split,
    classification for integer targets, regression for float targets."""
    if split.next_token:
        return LanguageModel()
    if split.targets.is_floating_point():
        return Regression()
    return Classification()


def check_fits(name: str, split: StreamData) -> None:
    """Refuse an objective the split's targets cannot serve (one line, what to use instead)."""
    if split.next_token:
        kind, fits = "next-token token ids", name == "lm"
    elif split.targets.is_floating_point():
        kind, fits = "float targets", name in ("regress", "custom")
    else:
        kind, fits = "class ids", name in ("classify", "custom")
    if not fits:
        implied = default_objective(split).name
        raise ConfigError(
            f"the objective {name!r} does not fit this data, whose targets are {kind}; "
            f"use the objective {implied!r}"
        )
