"""The one interface every model of tbptt offers the engine, the trainer and the laboratory.

Shapes (time-major): inputs (T, B) token ids or (T, B, F) features; outputs
(T, B, O); gates (T,) floats or None (all 1); resets (T, B) bool or None;
state a tensor or a nested tuple / list / dict of tensors (:mod:`tbptt.tree`).

``model(inputs, state, gates, resets=resets)`` runs T steps from ``state``
(None: ``initial_state``), with gate ``gates[t]`` on the state edge entering
step t (identity forward, gradient times ``gates[t]`` backward; 0 a real
detach) and, where ``resets[t, b]``, stream b's state zeroed before step t.
It is equivalent to::

    for t in range(T):
        state = gate(state, gates[t]); state = zero(state, resets[t])
        outputs[t], state = step(inputs[t], state)

:class:`~tbptt.models.RecurrentNet` (:class:`~tbptt.models.RecurrentLM`) and
:class:`~tbptt.models.custom.StatefulModule` (your module) implement it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch

from tbptt.tree import State

__all__ = ["RecurrentModel"]


@runtime_checkable
class RecurrentModel(Protocol):
    """A recurrent model under every strategy (see the module docstring)."""

    def initial_state(self, batch_size: int) -> State:
        """The state a stream starts from (zeros, usually), for ``batch_size`` streams."""
        ...

    def __call__(
        self,
        inputs: torch.Tensor,
        state: State | None = None,
        gates: Sequence[float] | None = None,
        *,
        resets: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, State]:
        """Run the window: (outputs (T, B, O), final state)."""
        ...
