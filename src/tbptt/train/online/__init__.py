"""Online gradient estimators: RTRL, SnAp-N, UORO and layer-wise diagonal RTRL.

The strategies (``rtrl``, ``snap:N``, ``uoro``; policy only) are in
:mod:`tbptt.truncation.online`; here are the estimators that carry the
sensitivities forward in time (:mod:`~tbptt.train.online.rtrl`,
:mod:`~tbptt.train.online.uoro`), built on ``torch.func`` over the model's own
one-step function (:mod:`~tbptt.train.online.step`), and
:func:`online_gradient`, their estimate of a whole sequence's gradient at
fixed weights (the counterpart of :func:`tbptt.train.sequence_gradient`).
"""

from __future__ import annotations

import torch
from torch import nn

from tbptt.errors import ConfigError
from tbptt.train.objectives import LanguageModel, Objective
from tbptt.train.online.base import OnlineEstimator
from tbptt.train.online.diagonal import DiagonalRTRL, diagonal_covers
from tbptt.train.online.rtrl import (
    RTRL,
    SnAp,
    SnApLagged,
    available_bytes,
    check_rtrl_memory,
    rtrl_bytes,
)
from tbptt.train.online.step import StepFunction
from tbptt.train.online.training import online_window, run_rows
from tbptt.train.online.uoro import UORO
from tbptt.tree import State
from tbptt.truncation.online import OnlineStrategy

__all__ = [
    "OnlineEstimator",
    "RTRL",
    "DiagonalRTRL",
    "SnAp",
    "SnApLagged",
    "UORO",
    "StepFunction",
    "build_estimator",
    "online_gradient",
    "online_window",
    "available_bytes",
    "check_rtrl_memory",
    "rtrl_bytes",
]


def build_estimator(
    strategy: OnlineStrategy,
    model: nn.Module,
    objective: Objective,
    *,
    batch_size: int | None = None,
    available: int | None = None,
) -> OnlineEstimator:
    """The estimator an online strategy names, for ``model`` and ``objective``.

    With ``batch_size``, RTRL / SnAp sensitivities that would not fit in memory
    (``available`` bytes, default: measured) are refused here, before anything is
    allocated (:func:`check_rtrl_memory`).
    """
    if strategy.estimator == "uoro":
        return UORO(model, objective)
    if strategy.estimator == "layer-rtrl" or (
        strategy.estimator == "rtrl" and diagonal_covers(model) and model.recurrent.num_layers == 1
    ):
        if not diagonal_covers(model):
            raise ConfigError(
                f"layer-rtrl tracks element-wise recurrences layer by layer (minGRU, minLSTM, "
                f"LRU without zoneout), got {type(model).__name__}"
                + (f" over {model.config.kind}" if hasattr(model, "config") else "")
                + "; use rtrl (exact, any model)",
                options=("train.strategy", "model.kind"),
            )
        estimator = DiagonalRTRL(model, objective)
        estimator.name = "rtrl" if strategy.estimator == "rtrl" else "layer-rtrl"
        return estimator
    if strategy.estimator == "rtrl":
        estimator = RTRL(model, objective, available=available)
    else:
        kind = SnAp if strategy.estimator == "snap" else SnApLagged
        estimator = kind(model, objective, order=strategy.order, available=available)
    if batch_size is not None:
        estimator.check_memory(batch_size, estimator.fn.initial(batch_size))  # s_0 (B, S)
    return estimator


def online_gradient(
    model: nn.Module,
    strategy: OnlineStrategy,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    state: State | None = None,
    resets: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    objective: Objective | None = None,
) -> list[torch.Tensor]:
    """The online estimate of the gradient of the sequence's mean row loss, at fixed weights.

    Runs the estimator over inputs (T, B[, F]) from ``state`` (None: the model's
    initial state) and sums its per-step gradients, each row's loss divided by
    T * B, as :func:`tbptt.train.sequence_gradient` does; for ``rtrl`` this is
    the exact gradient, for ``uoro`` its expectation is. ``resets``, ``mask``
    (T, B) bool. Returns one tensor per trainable parameter
    (``model.parameters()`` order); the parameters' ``.grad`` are untouched.
    """
    generator = generator or torch.Generator().manual_seed(0)
    estimator = build_estimator(strategy, model, objective or LanguageModel())
    T, B = inputs.shape[:2]
    estimator.start(state if state is not None else model.initial_state(B))
    total, _ = run_rows(estimator, inputs, targets, resets=resets, mask=mask, generator=generator)
    return estimator.fn.split_gradient(total / (T * B))
