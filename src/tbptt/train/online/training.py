"""One optimizer step's worth of online learning, for the trainer.

An online strategy's window is the U = ``update_every`` rows between two
optimizer steps. :func:`online_window` runs them through the estimator one
row at a time, never truncating the state, and leaves in each parameter's
``.grad`` the sum of the rows' gradient estimates times ``scale`` (the
trainer's 1 / (B * U)); the trainer then clips and steps as for every other
strategy.
"""

from __future__ import annotations

import torch

from tbptt.train.online.base import OnlineEstimator
from tbptt.tree import State

__all__ = ["online_window", "run_rows"]


def run_rows(
    estimator: OnlineEstimator,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    resets: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``estimator`` through rows (T, B[, F]) from its carried state; returns (the sum
    of the rows' flat gradient estimates, the rows' loss sum) (:meth:`OnlineEstimator.rows`)."""
    return estimator.rows(inputs, targets, mask=mask, resets=resets, generator=generator)


def online_window(
    estimator: OnlineEstimator,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    start: State | None,
    scale: float,
    resets: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Run rows (T, B[, F]) through ``estimator``; returns the rows' loss sum (scalar).

    ``start``: a state to begin from with zero sensitivity (a fresh stream), or None to
    continue the estimator's carried state and sensitivities. ``resets``, ``mask``
    (T, B) bool. The parameters' ``.grad`` are set to ``scale`` times the summed
    gradient estimates (replacing what was there).
    """
    if start is not None or estimator.s is None:
        if start is None:
            raise ValueError("the estimator has no carried state; pass start=")
        estimator.start(start)
    total, loss_sum = run_rows(
        estimator, inputs, targets, resets=resets, mask=mask, generator=generator
    )
    for p, g in zip(estimator.fn.parameters(), estimator.fn.split_gradient(total * scale)):
        p.grad = g.clone()
    return loss_sum
