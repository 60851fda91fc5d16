"""Your own recurrent module under every strategy.

The protocol: any ``nn.Module`` called as ``module(inputs, state) -> (outputs,
new_state)`` with inputs (T, B, ...) time-major, outputs (T, B, ...), and a
state that is a tensor or a (nested) tuple / list / dict of tensors, each with
the batch on dimension ``batch_dim`` (default -2: (B, H) and (L, B, H) both
work). :class:`StatefulModule` adapts it to the interface the trainer and the
engine use, ``forward(inputs, state, gates, *, resets)``:

- a gate xi_t != 1 inside a window (randomized truncation) is applied by
  running the module stretch by stretch, with :func:`~tbptt.models.gating.apply_gate`
  on the state between stretches (xi = 0 is a real detach);
- a per-stream reset (a document boundary) zeroes that stream's slice of every
  state tensor between stretches, a multiplication by 0, so no gradient crosses;
- ``initial_state(batch_size)`` comes from the callable you pass (or the
  module's own ``initial_state``).

It is equivalent to this loop::

    for start, stop, xi in segments(gates, T, extra_cuts=reset steps):
        state = apply_gate(state, xi)
        state = zero the streams that reset at ``start``
        out, state = module(inputs[start:stop], state)

:class:`CustomLM` puts an embedding in front and a vocabulary head behind, so
a module over vectors becomes a language model for :class:`~tbptt.train.Trainer`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from tbptt.errors import ConfigError
from tbptt.models.gating import State, apply_gate, map_state, segments

__all__ = ["StatefulModule", "CustomLM"]


class StatefulModule(nn.Module):
    """Adapter for a module ``(inputs (T, B, ...), state) -> (outputs (T, B, ...), state)``.

    Args:
        module: the user's module.
        initial_state: ``batch_size -> state`` (zeros, usually); default: the
            module's own ``initial_state`` method.
        batch_dim: the batch dimension of every state tensor (default -2).
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        initial_state: Callable[[int], State] | None = None,
        batch_dim: int = -2,
    ):
        super().__init__()
        init = initial_state or getattr(module, "initial_state", None)
        if init is None:
            raise ConfigError(
                f"{type(module).__name__} has no initial_state(batch_size) method; pass "
                "initial_state=lambda batch_size: <a zero state> (e.g. torch.zeros(batch_size, H))"
            )
        self.module = module
        self._init = init
        self.batch_dim = batch_dim

    def initial_state(self, batch_size: int) -> State:
        ref = next(self.parameters(), None)
        state = self._init(batch_size)
        if ref is None:
            return state
        return map_state(lambda t: t.to(device=ref.device, dtype=ref.dtype), state)

    def _reset(self, state: State, reset: torch.Tensor) -> State:
        """Zero the streams where ``reset`` (B,) is True in every state tensor."""
        keep = ~reset  # (B,)

        def zero(t: torch.Tensor) -> torch.Tensor:
            if t.dim() == 0 or t.shape[self.batch_dim] != keep.shape[0]:
                raise ConfigError(
                    f"a state tensor has shape {tuple(t.shape)}, with no batch of "
                    f"{keep.shape[0]} on dimension {self.batch_dim}; pass batch_dim= to "
                    "StatefulModule / CustomLM"
                )
            shape = [1] * t.dim()
            shape[self.batch_dim] = keep.shape[0]
            return t * keep.view(shape).to(t.dtype)

        return map_state(zero, state)

    def forward(
        self,
        inputs: torch.Tensor,
        state: State | None = None,
        gates: Sequence[float] | None = None,
        *,
        resets: torch.Tensor | None = None,
        path: str = "auto",
    ) -> tuple[torch.Tensor, State]:
        """Run the window; ``gates`` (T,) and ``resets`` (T, B) as for :class:`~tbptt.models.Recurrent`.

        ``path`` is accepted for interface compatibility and ignored.
        """
        T = inputs.shape[0]
        if state is None:
            state = self.initial_state(inputs.shape[1])
        reset_steps = (
            set(torch.nonzero(resets.any(dim=1)).flatten().tolist())
            if resets is not None
            else set()
        )
        outputs = []
        for start, stop, xi in segments(gates, T, extra_cuts=reset_steps):
            state = apply_gate(state, xi)
            if start in reset_steps:
                state = self._reset(state, resets[start])
            out, state = self.module(inputs[start:stop], state)
            outputs.append(out)
        return (outputs[0] if len(outputs) == 1 else torch.cat(outputs)), state


class CustomLM(nn.Module):
    """Embedding -> :class:`StatefulModule` (your module) -> linear head.

    ``forward(inputs (T, B) tokens, state, gates, *, resets) -> (logits (T, B, V), state)``,
    the interface of :class:`~tbptt.models.RecurrentLM`, so it trains with
    :class:`~tbptt.train.Trainer` under every strategy.

    Args:
        core: your module over vectors, (T, B, input_size) -> (T, B, output_size).
        vocab_size: V.
        input_size: embedding width fed to ``core``.
        output_size: width of ``core``'s outputs.
        initial_state, batch_dim: as for :class:`StatefulModule`.
    """

    def __init__(
        self,
        core: nn.Module,
        *,
        vocab_size: int,
        input_size: int,
        output_size: int,
        initial_state: Callable[[int], State] | None = None,
        batch_dim: int = -2,
    ):
        super().__init__()
        if vocab_size < 2:
            raise ConfigError(f"vocabulary size must be at least 2, got {vocab_size}")
        self.embedding = nn.Embedding(vocab_size, input_size)
        self.core = StatefulModule(core, initial_state=initial_state, batch_dim=batch_dim)
        self.head = nn.Linear(output_size, vocab_size)

    def initial_state(self, batch_size: int) -> State:
        return self.core.initial_state(batch_size)

    def forward(
        self,
        inputs: torch.Tensor,
        state: State | None = None,
        gates: Sequence[float] | None = None,
        *,
        resets: torch.Tensor | None = None,
        path: str = "auto",
    ) -> tuple[torch.Tensor, State]:
        outputs, state = self.core(self.embedding(inputs), state, gates, resets=resets)
        return self.head(outputs), state  # (T, B, V)
