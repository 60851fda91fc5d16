"""The measurements behind bias-controlled truncation (:mod:`tbptt.truncation.adaptive`).

``adaptive:D`` (Aicher, Foti & Fox 2019): :func:`state_gradient_norms` runs
``stretches`` random stretches of the training stream, each ``burnin`` rows
without a graph to reach a typical state and then W + 1 rows with one, and
backpropagates the loss of each stretch's last row L_s to every state of the
stretch: phi_k = mean over streams and stretches of |∂L_s/∂h_{s-k}| and G_K =
|mean Σ_{k<K} ∂L_s/∂h_{s-k}|, for k, K = 0 .. W (the state of a stream is every
tensor of the model's state, flattened). The strategy turns them into K.
Cost: stretches x (burnin + W + 1) forward steps and one backward of W + 1 steps.

``measured:D``: :func:`truncation_bias` measures, on the stream's first 2 max(K)
rows, the relative bias |g_K − g| / |g| of each candidate ``regular:K``
against full BPTT (:func:`tbptt.train.sequence_gradient`, as the laboratory's
:func:`tbptt.analysis.estimator.estimator_quality` does). Cost: one exact and one
truncated gradient of the probe per candidate.

:func:`adapt` runs the strategy's measurement, lets it choose, logs the choice
(a warning when no K meets δ) and returns the metrics fields.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

from tbptt.data.streams import Batch, SequentialStream
from tbptt.errors import ConfigError
from tbptt.train.engine import sequence_gradient
from tbptt.train.objectives import LanguageModel, Objective
from tbptt.tree import State, flatten_state, map_state
from tbptt.truncation import FullBPTT, RegularTruncation
from tbptt.truncation.adaptive import AdaptiveTruncation, MeasuredTruncation

__all__ = ["truncation_bias", "state_gradient_norms", "adapt"]

log = logging.getLogger(__name__)


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


def _state_batch(state: State, batch_dim: int = -2) -> torch.Tensor:
    """(B, S): each stream's state tensors flattened (the batch on ``batch_dim``)."""
    tensors, _ = flatten_state(state)
    B = tensors[0].shape[batch_dim]
    return torch.cat([t.movedim(batch_dim, 0).reshape(B, -1) for t in tensors], dim=1)


def state_gradient_norms(
    model: nn.Module,
    stretch: Batch,
    burnin: int,
    *,
    objective: Objective | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-lag state gradients of one stretch, rows (burnin + n, B).

    The last row's loss L_s is backpropagated to the state entering each of the last n
    rows: v_k = ∂L_s/∂(the state entering row s - k), k = 0 .. n - 1, per stream (each
    stream's state tensors flattened, S values). Returns (Σ_b |v_k[b]| (n,), Σ_b v_k[b]
    (n, S)). The burn-in rows run without a graph, from the model's initial state.
    """
    objective = objective or LanguageModel()
    x, y, resets, mask = stretch.inputs, stretch.targets, stretch.resets, stretch.mask
    row = lambda m, t: m[t : t + 1] if m is not None else None  # noqa: E731
    state = model.initial_state(x.shape[1])
    with torch.no_grad():
        if burnin > 0:
            r = resets[:burnin] if resets is not None else None
            _, state = model(x[:burnin], state, resets=r)
    entering = []
    for t in range(burnin, x.shape[0]):
        if not entering:
            state = map_state(lambda s: s.detach().requires_grad_(True), state)
        else:
            map_state(lambda s: s.retain_grad(), state)
        entering.append(state)
        outputs, state = model(x[t : t + 1], state, resets=row(resets, t))
    loss = objective.loss_sum(outputs, y[-1:], row(mask, x.shape[0] - 1))
    loss.backward()
    zero = lambda s: s.grad if s.grad is not None else torch.zeros_like(s)  # noqa: E731
    v = torch.stack([_state_batch(map_state(zero, st)) for st in reversed(entering)])  # (n, B, S)
    v = v.double()
    return v.norm(dim=2).sum(dim=1), v.sum(dim=1)


def _aicher(strategy: AdaptiveTruncation, model, stream, objective) -> None:
    """Measure phi and G on random stretches and let the strategy choose K."""
    n = min(strategy.max_k, stream.steps)
    burnin = strategy.max_k if strategy.burnin is None else strategy.burnin
    burnin = max(0, min(burnin, stream.steps - n))
    length = burnin + n
    phi, total, count = 0.0, 0.0, 0
    was_training = model.training
    model.eval()  # no dropout: the same function for every lag
    try:
        for _ in range(strategy.stretches):
            top = stream.steps - length
            start = int(torch.randint(0, top + 1, (1,), generator=strategy.generator))
            probe = copy.copy(stream)
            probe.position = start
            norms, sums = state_gradient_norms(
                model, probe.next(length), burnin, objective=objective
            )
            phi, total = phi + norms, total + sums
            count += probe.batch_size
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    phi = phi / count  # (n,)
    mean = total / count  # (n, S)
    running = torch.cat([mean.new_zeros(1, mean.shape[1]), mean.cumsum(0)]).norm(dim=1)  # (n + 1,)
    strategy.choose(phi, running)


def adapt(
    strategy: AdaptiveTruncation,
    model: nn.Module,
    stream: SequentialStream,
    *,
    objective: Objective | None = None,
) -> dict:
    """Run the strategy's measurement, let it choose K, log it; returns the metrics fields
    (``adaptive_k``, ``adaptive_bias``, ``adaptive_passed``, ``adaptive_beta``,
    ``adaptive_delta``).

    Raises:
        ConfigError: the stream is not sequential (random windows have no long stretch).
    """
    if not isinstance(stream, SequentialStream):
        raise ConfigError(
            f"{strategy.name} truncation measures its bias on the training stream laid out in "
            f"order, got {type(stream).__name__}; use sequential sampling",
            options=("train.sampling",),
        )
    if isinstance(strategy, MeasuredTruncation):
        ks = strategy.candidates()
        probe = copy.copy(stream)  # the same columns, its own cursor
        probe.restart()
        batch = probe.next(min(2 * max(ks), probe.steps))
        strategy.choose(truncation_bias(model, batch, ks, objective=objective))
    else:
        _aicher(strategy, model, stream, objective)
    if strategy.passed:
        log.info("%s: K = %d (estimated relative bias %.3g <= %g)", strategy.spec, strategy.k,
                 strategy.bias, strategy.delta)  # fmt: skip
    else:
        log.warning(
            "%s: no K up to %d keeps the estimated relative bias under %g (at K = %d: %s); "
            "training with K = %d",
            strategy.spec, strategy.max_k, strategy.delta, strategy.k, strategy.bias, strategy.k,
        )  # fmt: skip
    return strategy.metrics()
