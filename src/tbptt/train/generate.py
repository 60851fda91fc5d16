"""Generation from a prefix: greedy, or sampled with a temperature, top-k and nucleus (top-p);
and :func:`forecast`, the next steps of a series from its history.

Sampling draws from softmax(logits / temperature) restricted to the ``top_k``
most likely tokens and then to the smallest set of most likely tokens whose
probability reaches ``top_p`` (Holtzman et al., 2020); the kept probabilities
are renormalized. ``top_k=1`` and a tiny ``top_p`` both keep only the most
likely token, i.e. greedy decoding.

A model whose outputs are NaN/inf (weights or state overflowed) has no distribution
to sample from: :func:`generate` raises :class:`~tbptt.errors.NonFiniteError` naming
the token at which the outputs went non-finite, rather than sample from it.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from tbptt.errors import ConfigError, NonFiniteError

__all__ = ["generate", "stream_tokens", "check_sampling", "forecast"]


def generate(
    model: nn.Module,
    prefix: torch.Tensor,
    length: int,
    *,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
) -> list[int]:
    """Continue ``prefix`` (P,) token indices by ``length`` tokens (:func:`stream_tokens`,
    collected)."""
    return list(
        stream_tokens(
            model,
            prefix,
            length,
            temperature=temperature,
            generator=generator,
            top_k=top_k,
            top_p=top_p,
        )
    )


def stream_tokens(
    model: nn.Module,
    prefix: torch.Tensor,
    length: int,
    *,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
    top_k: int | None = None,
    top_p: float | None = None,
) -> Iterator[int]:
    """Continue ``prefix`` (P,) token indices by ``length`` tokens, yielding each as it is
    drawn (a long continuation can be shown as it grows).

    ``temperature == 0`` picks the most likely token; otherwise tokens are
    sampled from softmax(logits / temperature) with ``generator``, kept to the
    ``top_k`` most likely tokens (None: all) and to the nucleus of probability
    ``top_p`` (None: all).

    Raises:
        ConfigError: ``temperature < 0``, ``top_k < 1`` or ``top_p`` outside (0, 1].
        NonFiniteError: the model's outputs became NaN/inf; no token is drawn from them.
    """
    if len(prefix) == 0:
        raise ValueError("Expected a prefix of at least one token, got none")
    check_sampling(temperature=temperature, top_k=top_k, top_p=top_p)
    was_training = model.training
    model.eval()
    try:
        yield from _draw(model, prefix, length, temperature, generator, top_k, top_p)
    finally:
        model.train(was_training)


@torch.no_grad()
def _draw(model, prefix, length, temperature, generator, top_k, top_p) -> Iterator[int]:
    device = next(model.parameters()).device
    logits, state = model(prefix.to(device).long().view(-1, 1))  # (P, 1, V)
    last = logits[-1, 0]
    for i in range(length):
        _check_finite(last, i, len(prefix))
        scaled = last.double().cpu() / temperature if temperature > 0 else None
        if scaled is not None and bool(torch.isfinite(scaled).all()):
            probs = _truncated(torch.softmax(scaled, dim=-1), top_k, top_p)
            token = int(torch.multinomial(probs, 1, generator=generator))
        else:  # greedy, or a temperature so small that logits / T overflow: its limit
            token = int(last.argmax())
        yield token
        logits, state = model(torch.tensor([[token]], device=device), state)
        last = logits[-1, 0]


def check_sampling(
    *, temperature: float = 0.0, top_k: int | None = None, top_p: float | None = None
) -> None:
    """Refuse sampling settings that define no distribution, all at once."""
    problems = []
    if not temperature >= 0:  # also NaN
        problems.append(f"a temperature >= 0 (0: greedy), got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k < 1):
        problems.append(f"top_k an integer >= 1 (or None: all tokens), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        problems.append(f"top_p in (0, 1] (or None: all tokens), got {top_p}")
    if problems:
        raise ConfigError("Expected " + "; ".join(problems))


def _truncated(probs: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """``probs`` (V,) kept to the top-k tokens, then to the top-p nucleus, renormalized.

    Ties are broken by index (a stable sort), so the kept set is deterministic.
    """
    if top_k is None and top_p is None:
        return probs
    order = torch.sort(probs, descending=True, stable=True).indices  # (V,)
    ranked = probs[order]  # (V,) descending
    keep = torch.ones_like(ranked, dtype=torch.bool)
    if top_k is not None:
        keep[top_k:] = False
    if top_p is not None:
        # keep token i when the mass strictly before it is below top_p: the smallest
        # prefix reaching top_p, and always the most likely token
        before = torch.cumsum(ranked, dim=0) - ranked
        keep &= before < top_p
        keep[0] = True
    kept = torch.zeros_like(probs)
    kept[order[keep]] = ranked[keep]
    return kept / kept.sum()


def _check_finite(logits: torch.Tensor, index: int, prefix_length: int) -> None:
    """Refuse non-finite logits (V,) before a token is drawn from (or picked by) them."""
    if not bool(torch.isfinite(logits).all()):
        raise NonFiniteError(
            f"the model's outputs are non-finite after the {prefix_length}-token prefix and "
            f"{index} generated token(s): its weights or state overflowed, and no sample can be "
            "drawn; train with a lower learning rate or a gradient clip (or a shorter prefix)",
            options=("train.lr", "train.clip"),
        )


@torch.no_grad()
def forecast(
    model: nn.Module, history: torch.Tensor, steps: int, *, horizon: int = 1, feedback: bool
) -> torch.Tensor:
    """The next ``steps`` target rows after ``history`` (P, F), from a model trained at ``horizon``.

    The model's output at row t is its forecast of the target at row t + h (h = ``horizon``),
    so after reading the history the last h outputs forecast rows P .. P + h - 1. Further
    rows need inputs the history does not have: with ``feedback`` (the inputs are the
    target columns, as in autoregressive forecasting) each forecast row is fed back as
    the input of its row, so the output at row P + j forecasts row P + j + h. Equivalent to::

        rows = history                                  # (P, F)
        for j in range(steps):                          # the forecast of row P + j
            outputs, _ = model(rows[:, None])           # a fresh state, every row again
            out[j] = outputs[P + j - h, 0]
            if feedback and j + 1 >= h:
                rows = cat(rows, out[j + 1 - h])        # the forecast row as an input row

    (the state is carried instead of running the rows again). Values are in the units the
    model was trained in (standardized, for :class:`~tbptt.data.SeriesData`).

    Returns:
        (steps, D) forecasts.

    Raises:
        ConfigError: more than ``horizon`` steps without ``feedback``, a history shorter than
            ``horizon``, or ``steps`` < 1.
    """
    P = history.shape[0]
    if steps < 1:
        raise ConfigError(f"Expected at least 1 step to forecast, got {steps}")
    if P < horizon:
        raise ConfigError(f"Expected a history of at least the horizon h = {horizon} rows, got {P}")
    if steps > horizon and not feedback:
        raise ConfigError(
            f"a model trained at horizon {horizon} reading other columns than its targets "
            f"forecasts at most {horizon} step(s) ahead, {steps} asked for; ask for at most "
            f"{horizon}, or train on the target columns alone (they are then fed back)"
        )
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        outputs, state = model(history.to(device).unsqueeze(1))  # (P, 1, D)
        rows = list(outputs[P - horizon :, 0])  # forecasts of rows P .. P + h - 1, (D,) each
        fed = 0
        while len(rows) < steps:  # feed forecast row P + fed back, read row P + fed + h
            outputs, state = model(rows[fed].view(1, 1, -1), state)  # (1, 1, D)
            rows.append(outputs[0, 0])
            fed += 1
    finally:
        model.train(was_training)
    return torch.stack(rows[:steps]).cpu()  # (steps, D)
