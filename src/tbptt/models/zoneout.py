"""Zoneout (Krueger et al. 2016): units keep their previous value at random.

At training time, for every unit, stream and step, the state keeps its
previous value with probability z and takes the cell's new value otherwise::

    d_t ~ Bernoulli(z)  (per unit)          h_t = d_t * h_{t-1} + (1 - d_t) * h~_t

At evaluation time the expectation is used: h_t = z * h_{t-1} + (1 - z) * h~_t.
For an LSTM the cell and the hidden state have their own rates (z_c, z_h),
with the new hidden value computed from the new candidate cell, as in the paper::

    c~_t = f * c_{t-1} + i * g      c_t = d^c_t * c_{t-1} + (1 - d^c_t) * c~_t
    h~_t = o * tanh(c~_t)           h_t = d^h_t * h_{t-1} + (1 - d^h_t) * h~_t

z = 0 is the plain cell; z = 1 freezes the state. Unlike dropout, the kept
value is the previous state itself, so gradients flow through kept units
unchanged (the identity path), which is what makes zoneout a regulariser of
recurrent dynamics.

:func:`zoneout_forward` runs a :class:`~tbptt.models.Recurrent`'s own
parameters and cells step by step (it never uses the fused kernels, whose
steps cannot be interrupted), with the same gate and reset semantics as
``Recurrent.forward``. The masks come from torch's global generator, like
dropout, so runs are reproducible from the seed and a checkpointed segment
that replays the random state replays the masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from tbptt.errors import ConfigError
from tbptt.models.gating import State
from tbptt.models.recurrent import Recurrent

__all__ = ["check_rates", "zoneout_forward"]


def check_rates(hidden_rate: float, cell_rate: float) -> None:
    for name, z in (("zoneout", hidden_rate), ("cell zoneout", cell_rate)):
        if not 0.0 <= z <= 1.0:
            raise ConfigError(f"{name} rate must be in [0, 1], got {z}")


def _zone(old: torch.Tensor, new: torch.Tensor, z: float, training: bool) -> torch.Tensor:
    if z == 0.0:
        return new
    if not training:
        return z * old + (1.0 - z) * new  # the expectation
    keep = torch.rand_like(new) < z  # (B, H)
    return torch.where(keep, old, new)


def zoneout_forward(
    rec: Recurrent,
    inputs: torch.Tensor,
    state: State | None,
    gates: Sequence[float] | None = None,
    *,
    resets: torch.Tensor | None = None,
    hidden_rate: float = 0.0,
    cell_rate: float | None = None,
    training: bool | None = None,
) -> tuple[torch.Tensor, State]:
    """``rec``'s forward with zoneout on its state (see the module docstring).

    Args:
        rec: the recurrent stack whose parameters and cells are used.
        inputs: (T, B, I).
        state: (L, B, H), or (hidden, cell) for LSTM; None for zeros.
        gates: (T,) gradient gates (``gates[t]`` on the edge entering step t), or None.
        resets: (T, B) bool, zero that stream's state before step t (no gradient crosses).
        hidden_rate: z_h (the only rate for non-LSTM kinds).
        cell_rate: z_c for LSTM (None: ``hidden_rate``).
        training: masks (True) or the expectation (False); None: ``rec.training``.

    Returns:
        outputs (T, B, H) of the last layer (the zoned-out hidden states), final state.
    """
    cell_rate = hidden_rate if cell_rate is None else cell_rate
    check_rates(hidden_rate, cell_rate)
    training = rec.training if training is None else training
    lstm = rec.kind == "lstm"
    T, B = inputs.shape[:2]
    if state is None:
        state = rec.initial_state(B, device=inputs.device, dtype=inputs.dtype)
    if gates is not None and len(gates) != T:
        raise ValueError(f"Expected {T} gates (one per step), got {len(gates)}")
    reset_steps = (
        set(torch.nonzero(resets.any(dim=1)).flatten().tolist()) if resets is not None else set()
    )

    def update(h, c, h_new, c_new):
        if lstm:
            c_new = _zone(c, c_new, cell_rate, training)
        return _zone(h, h_new, hidden_rate, training), c_new

    return rec._forward_autograd(
        inputs, state, gates, resets, reset_steps, update=update, training=training
    )
