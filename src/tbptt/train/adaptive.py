"""The measurement behind adaptive truncation: the relative bias of ``regular:K`` per K.

At the current weights, on a probe stretch of the training stream (its first
2 max(K) rows of every column, with their resets and loss mask), the exact
gradient g of the mean loss (``full``) and each candidate's estimate g_K
(``regular:K``) come from :func:`tbptt.train.sequence_gradient`, the same
computation as the laboratory's (:func:`tbptt.analysis.estimator.estimator_quality`),
and the relative bias is |g_K − g| / |g|. :func:`adapt` hands the biases to the
strategy (:class:`~tbptt.truncation.adaptive.AdaptiveTruncation`), which picks K.

Cost: one exact and one truncated gradient of the probe per candidate, each
about 3 forward steps per row: (1 + candidates) x 3 x ``length`` steps of B streams.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from tbptt.data.streams import Batch, SequentialStream
from tbptt.errors import ConfigError
from tbptt.train.engine import sequence_gradient
from tbptt.train.objectives import Objective
from tbptt.truncation import FullBPTT, RegularTruncation
from tbptt.truncation.adaptive import AdaptiveTruncation

__all__ = ["truncation_bias", "adapt"]


def _flat(grads) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in grads])


def truncation_bias(
    model: nn.Module, probe: Batch, ks: list[int], *, objective: Objective | None = None
) -> dict[int, float]:
    """{K: |g_K − g| / |g|} on the probe window (inputs, targets, resets, mask (T, B))."""
    marks = dict(resets=probe.resets, mask=probe.mask, objective=objective)
    x, y = probe.inputs, probe.targets
    was_training = model.training
    model.eval()  # no dropout: the same function for every estimate
    try:
        exact = _flat(sequence_gradient(model, FullBPTT(), x, y, **marks))
        norm = float(exact.norm())
        biases = {}
        for k in ks:
            g = _flat(sequence_gradient(model, RegularTruncation(k), x, y, **marks))
            biases[k] = float((g - exact).norm()) / norm if norm > 0 else 0.0
    finally:
        model.train(was_training)
    return biases


def adapt(
    strategy: AdaptiveTruncation,
    model: nn.Module,
    stream: SequentialStream,
    *,
    objective: Objective | None = None,
) -> dict:
    """Measure every candidate K on the stream's first 2 max(K) rows, let the strategy
    choose; returns the metrics fields (``adaptive_k``, ``adaptive_bias``, ``adaptive_delta``).

    Raises:
        ConfigError: the stream is not sequential (random windows have no long stretch).
    """
    if not isinstance(stream, SequentialStream):
        raise ConfigError(
            f"adaptive truncation measures its bias on the training stream laid out in order, "
            f"got {type(stream).__name__}; use sequential sampling",
            options=("train.sampling",),
        )
    ks = strategy.candidates()
    probe = copy.copy(stream)  # the same columns, its own cursor
    probe.restart()
    biases = truncation_bias(
        model, probe.next(min(2 * max(ks), probe.steps)), ks, objective=objective
    )
    k = strategy.choose(biases)
    return {"adaptive_k": k, "adaptive_bias": biases[k], "adaptive_delta": strategy.delta}
