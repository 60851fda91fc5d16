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

from collections.abc import Sequence

import torch

from tbptt.tree import State, detach_state, map_state

__all__ = ["State", "ScaleGrad", "apply_gate", "detach_state", "map_state", "segments"]


class ScaleGrad(torch.autograd.Function):
    """``y = x`` forward; ``dL/dx = xi * dL/dy`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, xi: float) -> torch.Tensor:
        ctx.xi = xi
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.xi, None


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
