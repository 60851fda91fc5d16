"""Generation from a prefix: greedy or sampled with a temperature."""

from __future__ import annotations

import torch
from torch import nn

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
    """
    if len(prefix) == 0:
        raise ValueError("Expected a prefix of at least one token, got none")
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        logits, state = model(prefix.to(device).view(-1, 1))  # (P, 1, V)
        out: list[int] = []
        last = logits[-1, 0]
        for _ in range(length):
            if temperature > 0:
                probs = torch.softmax(last.double().cpu() / temperature, dim=-1)
                token = int(torch.multinomial(probs, 1, generator=generator))
            else:
                token = int(last.argmax())
            out.append(token)
            logits, state = model(torch.tensor([[token]], device=device), state)
            last = logits[-1, 0]
    finally:
        model.train(was_training)
    return out
