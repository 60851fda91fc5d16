"""Generation from a prefix: greedy or sampled with a temperature.

A model whose outputs are NaN/inf (weights or state overflowed) has no distribution
to sample from: :func:`generate` raises :class:`~tbptt.errors.NonFiniteError` naming
the token at which the outputs went non-finite, rather than sample from it.
"""

from __future__ import annotations

import torch
from torch import nn

from tbptt.errors import NonFiniteError

__all__ = ["generate"]


@torch.no_grad()
def generate(
    model: nn.Module,
    prefix: torch.Tensor,
    length: int,
    *,
    temperature: float = 0.0,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Continue ``prefix`` (P,) token indices by ``length`` tokens.

    ``temperature == 0`` picks the most likely token; otherwise tokens are
    sampled from softmax(logits / temperature) with ``generator``.

    Raises:
        NonFiniteError: the model's outputs became NaN/inf; no token is drawn from them.
    """
    if len(prefix) == 0:
        raise ValueError("Expected a prefix of at least one token, got none")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        logits, state = model(prefix.to(device).long().view(-1, 1))  # (P, 1, V)
        out: list[int] = []
        last = logits[-1, 0]
        for i in range(length):
            _check_finite(last, i, len(prefix))
            scaled = last.double().cpu() / temperature if temperature > 0 else None
            if scaled is not None and bool(torch.isfinite(scaled).all()):
                probs = torch.softmax(scaled, dim=-1)
                token = int(torch.multinomial(probs, 1, generator=generator))
            else:  # greedy, or a temperature so small that logits / T overflow: its limit
                token = int(last.argmax())
            out.append(token)
            logits, state = model(torch.tensor([[token]], device=device), state)
            last = logits[-1, 0]
    finally:
        model.train(was_training)
    return out


def _check_finite(logits: torch.Tensor, index: int, prefix_length: int) -> None:
    """Refuse non-finite logits (V,) before a token is drawn from (or picked by) them."""
    if not bool(torch.isfinite(logits).all()):
        raise NonFiniteError(
            f"the model's outputs are non-finite after the {prefix_length}-token prefix and "
            f"{index} generated token(s): its weights or state overflowed, and no sample can be "
            "drawn; train with a lower learning rate or a gradient clip (or a shorter prefix)",
            options=("train.lr", "train.clip"),
        )
