"""The gradient gate: identity forward, gradient times xi backward.

A gate sits on a state edge h_{t-1} -> h_t. Forward it never changes a value;
backward it multiplies the gradient flowing into h_{t-1} by xi:

- ``xi == 1``: nothing happens (the edge is kept as it is);
- ``xi == 0``: a real ``detach()``: no graph is kept behind the edge, which is
  where truncation saves memory;
- otherwise a custom autograd function scales the gradient.

States are tensors or (nested) tuples, lists and dicts of tensors, so the gate
works for LSTM's (hidden, cell) and for user modules alike.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = ["ScaleGrad", "apply_gate", "detach_state", "map_state", "segments"]

State = Any  # a tensor, or a tuple / list / dict of states


class ScaleGrad(torch.autograd.Function):
    """``y = x`` forward; ``dL/dx = xi * dL/dy`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, xi: float) -> torch.Tensor:
        ctx.xi = xi
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.xi, None


def map_state(fn: Callable[[torch.Tensor], torch.Tensor], state: State) -> State:
    """Apply ``fn`` to every tensor of a (nested) state, keeping its structure."""
    if isinstance(state, torch.Tensor):
        return fn(state)
    if isinstance(state, tuple):
        return tuple(map_state(fn, s) for s in state)
    if isinstance(state, list):
        return [map_state(fn, s) for s in state]
    if isinstance(state, dict):
        return {k: map_state(fn, v) for k, v in state.items()}
    if state is None:
        return None
    raise TypeError(
        f"Expected a state made of tensors (or tuples, lists, dicts of them), got {type(state).__name__}"
    )


def detach_state(state: State) -> State:
    """``detach()`` every tensor of a state (xi = 0)."""
    return map_state(torch.Tensor.detach, state)


def apply_gate(state: State, xi: float) -> State:
    """Put a gate with factor ``xi`` on every tensor of ``state``."""
    if xi == 1.0:
        return state
    if xi == 0.0:
        return detach_state(state)

    def scale(t: torch.Tensor) -> torch.Tensor:
        return ScaleGrad.apply(t, xi) if t.requires_grad else t

    return map_state(scale, state)


def segments(
    gates: Sequence[float] | None,
    length: int,
    *,
    extra_cuts: set[int] | frozenset[int] = frozenset(),
) -> list[tuple[int, int, float]]:
    """Cut ``length`` steps into runs whose inner gates are all 1.

    ``gates[t]`` is the gate on the edge entering step t (``gates[0]`` on the
    incoming state). Returns ``(start, stop, xi)`` triples: apply ``xi`` to the
    state, then run steps ``start:stop`` with no gate inside. Steps in
    ``extra_cuts`` start a new run too (e.g. where some streams reset).
    """
    if gates is None and not extra_cuts:
        return [(0, length, 1.0)]
    if gates is not None and len(gates) != length:
        raise ValueError(f"Expected {length} gates (one per step), got {len(gates)}")
    if gates is None:
        gates = [1.0] * length
    cuts = [t for t in range(1, length) if gates[t] != 1.0 or t in extra_cuts]
    starts = [0, *cuts]
    stops = [*cuts, length]
    return [(a, b, float(gates[a])) for a, b in zip(starts, stops)]
