"""How good is a strategy's gradient: bias and variance against the exact gradient.

On fixed weights and one batch of windows, inputs and targets (T, B[, F or D]),
with the data's per-stream resets and loss mask and its objective (next-token
cross-entropy for text, squared error for a series, ...):

- the exact gradient g of the mean row loss, every gate 1 (``full``);
- each strategy's estimate, from :func:`tbptt.train.sequence_gradient`: the
  sum of its windows' gradients, state carried (detached) between windows,
  as training would see it at these weights. A deterministic strategy
  (``regular:K``) gives one estimate; a random one (``randomized:K``) gives
  one per draw of its cuts, ``draws`` of them.

With estimates g_1 .. g_n and their mean m (all flattened over every parameter)::

    cosine         = <m, g> / (|m| |g|)
    relative bias  = |m - g| / |g|
    variance       = 1/(n-1) sum_i |g_i - m|^2             (trace of the covariance)
    relative MSE   = 1/n sum_i |g_i - g|^2 / |g|^2         (= bias^2 + variance, per draw)
    noise floor    = sqrt(variance / n) / |g|

For an unbiased estimator the measured relative bias of the mean is only
Monte-Carlo noise, about the noise floor; a biased one sits above it no matter
how many draws. ``cosine_per_draw`` (mean and spread over draws) says how well
a *single* step's gradient points, which is what one optimizer step uses.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from torch import nn

from tbptt.errors import DataError
from tbptt.models.gating import State
from tbptt.train import Objective, sequence_gradient
from tbptt.train.online import online_gradient
from tbptt.truncation import FullBPTT, OnlineStrategy, Strategy, parse_strategy

__all__ = ["flat_gradient", "exact_gradient", "estimator_quality", "compare_estimates"]


def flat_gradient(grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """One (P,) vector from per-parameter gradients."""
    return torch.cat([g.reshape(-1) for g in grads])


def exact_gradient(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    state: State | None = None,
    resets: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    objective: Objective | None = None,
) -> torch.Tensor:
    """(P,) the exact gradient of the mean row loss over (T, B): every gate 1, no cut.

    ``resets``, ``mask`` (T, B) bool and ``objective`` as for :func:`tbptt.train.sequence_gradient`.
    """
    return flat_gradient(
        sequence_gradient(
            model,
            FullBPTT(),
            inputs,
            targets,
            state=state,
            resets=resets,
            mask=mask,
            objective=objective,
        )
    )


def compare_estimates(estimates: torch.Tensor, exact: torch.Tensor) -> dict:
    """The statistics of the module docstring for estimates (n, P) against exact (P,)."""
    n = estimates.shape[0]
    exact_norm = float(exact.norm())
    mean = estimates.mean(0)
    variance = float(((estimates - mean) ** 2).sum(1).sum() / (n - 1)) if n > 1 else 0.0
    per_draw = torch.nn.functional.cosine_similarity(estimates, exact.unsqueeze(0), dim=1)
    return {
        "draws": n,
        "cosine": float(torch.nn.functional.cosine_similarity(mean, exact, dim=0)),
        "relative_bias": float((mean - exact).norm()) / exact_norm,
        "relative_variance": variance / exact_norm**2,
        "relative_mse": float(((estimates - exact) ** 2).sum(1).mean()) / exact_norm**2,
        "noise_floor": math.sqrt(variance / n) / exact_norm,
        "cosine_per_draw": float(per_draw.mean()),
        "cosine_per_draw_std": float(per_draw.std()) if n > 1 else 0.0,
        "relative_norm": float(mean.norm()) / exact_norm,
    }


def _random(strategy: Strategy) -> bool:
    """Whether draws can differ: randomized truncation whose first edge is cut with
    probability 1 (K = 1) cuts every edge on every draw, so it is ``regular:1``."""
    if not strategy.stochastic:
        return False
    first = getattr(strategy, "cut_probability_at", None)
    return first is None or first(1) < 1.0


def estimator_quality(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    strategies: Sequence[str | Strategy],
    *,
    draws: int = 20,
    generator: torch.Generator | None = None,
    state: State | None = None,
    resets: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    objective: Objective | None = None,
    on_result=None,
) -> dict:
    """Bias and variance of each strategy's gradient against the exact one (module docstring).

    Args:
        model: put it in eval mode (no dropout) and, for exactness, float64.
        inputs: (T, B) token ids or (T, B, F) features.
        targets: (T, B) ids or (T, B, D) values (what ``objective`` scores).
        strategies: specs such as ``regular:35``, ``randomized:35``, ``rtrl``, ``uoro``,
            ``snap:1`` (or strategy objects).
        draws: estimates per random strategy (deterministic ones get one).
        generator: the source of the random strategies' cuts (default: seed 0).
        state: the state before the window (None: zeros), the same for every estimate.
        resets: (T, B) bool, where a stream restarts its state (None: nowhere).
        mask: (T, B) bool, the rows whose loss counts (None: every row).
        objective: the loss (None: next-token cross-entropy).
        on_result: called with each strategy's result dict as it is finished.

    Returns:
        ``{"exact_norm", "steps", "streams", "parameters", "results": [...]}``,
        one result per strategy: ``spec``, ``k`` (the strategy's nominal window
        length, when it has one), ``stochastic``, the statistics of
        :func:`compare_estimates` and ``seconds_per_step`` (the wall time of one
        estimate divided by T).

    Raises:
        DataError: the exact gradient is zero (no row's loss counts, or it is flat) or not
            finite, so nothing can be measured relative to it.
    """
    generator = generator or torch.Generator().manual_seed(0)
    marks = dict(state=state, resets=resets, mask=mask, objective=objective)
    exact = exact_gradient(model, inputs, targets, **marks)
    norm = float(exact.norm())
    if not math.isfinite(norm):
        raise DataError(
            "the exact gradient on these windows is not finite (the loss overflows there); "
            "use shorter windows, another offset or a model whose state stays bounded"
        )
    if norm == 0:
        raise DataError(
            "the exact gradient on these windows is zero (no row's loss counts there, or the "
            "loss is flat), so no bias can be measured relative to it; use longer windows or "
            "another offset"
        )
    results = []
    for spec in strategies:
        strategy = parse_strategy(spec)
        n = draws if _random(strategy) else 1
        # online strategies (rtrl, uoro, snap) carry their gradient forward in time
        gradient = online_gradient if isinstance(strategy, OnlineStrategy) else sequence_gradient
        if gradient is online_gradient:  # one untimed row: torch.func's first-call setup
            first = {
                k: v[:1] if k in ("resets", "mask") and v is not None else v
                for k, v in marks.items()
            }
            online_gradient(model, strategy, inputs[:1], targets[:1], generator=generator, **first)
        start = time.perf_counter()
        estimates = torch.stack(
            [
                flat_gradient(
                    gradient(model, strategy, inputs, targets, generator=generator, **marks)
                )
                for _ in range(n)
            ]
        )  # (n, P)
        seconds = (time.perf_counter() - start) / n
        result = {
            "spec": strategy.spec,
            "name": strategy.name,
            "k": getattr(strategy, "k", None),
            "stochastic": strategy.stochastic,
            **compare_estimates(estimates, exact),
            # wall time of one estimate over the T steps (all B streams), per step
            "seconds_per_step": seconds / inputs.shape[0],
        }
        results.append(result)
        if on_result is not None:
            on_result(result)
    return {
        "exact_norm": float(exact.norm()),
        "steps": inputs.shape[0],
        "streams": inputs.shape[1],
        "parameters": exact.numel(),
        "results": results,
    }
