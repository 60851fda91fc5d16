"""One window forward and backward, and the gradient of a whole sequence under a strategy.

Shapes: inputs, targets (T, B); logits (T, B, V).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tbptt.models.gating import State, detach_state
from tbptt.truncation import Strategy, Window

__all__ = ["window_loss", "sequence_gradient"]


def window_loss(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    state: State | None,
    window: Window,
) -> tuple[torch.Tensor, State]:
    """Run one window and return (sum of token losses, final state).

    ``state`` is used as it is (the caller detaches or resets it); the
    window's gates shape the gradient inside. Targets equal to -100 are ignored.
    """
    logits, state = model(inputs, state, window.gates)  # (T, B, V)
    loss_sum = F.cross_entropy(
        logits.flatten(0, 1), targets.flatten(), reduction="sum", ignore_index=-100
    )
    return loss_sum, state


def sequence_gradient(
    model: nn.Module,
    strategy: Strategy,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    generator: torch.Generator | None = None,
    state: State | None = None,
) -> list[torch.Tensor]:
    """The strategy's estimate of the gradient of the sequence's mean token loss, at fixed weights.

    Runs the windows the strategy plans over inputs (T, B), carrying (detached)
    state between them, and sums the windows' gradients without any optimizer
    step. Every token's loss is divided by T * B, so for ``full`` this is the
    exact gradient of the mean loss, and for an unbiased strategy its
    expectation is. Returns one tensor per parameter (``model.parameters()`` order).
    """
    generator = generator or torch.Generator().manual_seed(0)
    params = [p for p in model.parameters()]
    grads = [torch.zeros_like(p) for p in params]
    total_steps, batch_size = inputs.shape
    scale = 1.0 / (total_steps * batch_size)
    position = 0
    while position < total_steps:
        window = strategy.plan(total_steps - position, generator)
        stop = position + window.length
        if window.reset or state is None:
            state = _fresh_state(model, batch_size)
        loss_sum, state = window_loss(
            model, inputs[position:stop], targets[position:stop], detach_state(state), window
        )
        window_grads = torch.autograd.grad(loss_sum * scale, params, allow_unused=True)
        for g, wg in zip(grads, window_grads):
            if wg is not None:
                g += wg
        position = stop
    return grads


def _fresh_state(model: nn.Module, batch_size: int) -> State | None:
    init = getattr(model, "initial_state", None)
    return init(batch_size) if init is not None else None
