"""The window a strategy plans and the base class every strategy derives from.

A strategy is pure policy. Given how many steps remain in the stream and a
random generator, ``plan`` returns the next :class:`Window`: its length, the
gate xi_t on each edge inside it, whether it starts from a fresh state, and a
learning-rate factor. The trainer runs the window, calls backward once and
steps the optimizer once. Forward values never depend on the strategy.

Gate convention: ``gates[t]`` multiplies the gradient on the edge entering
step t of the window. The edge entering a window is always cut (the carried
state is detached), so ``gates[0]`` is 1 and the values that matter are
``gates[1:]``. ``gates = None`` means all 1 (one fused kernel call).

Loss normalization (the same for every strategy). The objective is the mean
per-token cross-entropy over the stream. A window's loss is the *sum* of its
token losses divided by ``B * reference_length`` (B streams; the strategy's
nominal window length K, or the sequence length for full BPTT). Every token
then carries the same weight in every strategy: windows of random length are
not reweighted, so a randomized estimate stays unbiased, and a step's
gradient has the scale of a mean over K tokens.

Windows may ask for more than a length and gates (see :class:`Window`):
``lookback`` steps of already-trained history re-run without loss from a
stored detached state (TBPTT(k1, k2)); ``checkpoint`` steps per activation
checkpoint segment; ``loss_length`` to divide the window's loss by instead
of the reference length (variable length, whose learning-rate factor then
restores the per-token weight).

The strategies themselves are in :mod:`tbptt.truncation.deterministic` and
:mod:`tbptt.truncation.stochastic`; their spec grammar and registry in
:mod:`tbptt.truncation.strategies`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Window", "Strategy", "format_number"]


def format_number(x: float) -> str:
    """``x`` as a spec writes it: the shortest text that reads back as exactly ``x``
    (``35``, ``2.0000001``, ``1e-05``), so ``parse_strategy(s.spec)`` rebuilds ``s``."""
    x = float(x)
    if x.is_integer() and abs(x) < 1e16:
        return str(int(x))
    return repr(x)


@dataclass(frozen=True)
class Window:
    """The plan for one optimizer step.

    Attributes:
        length: steps in the window (>= 1).
        gates: (length,) gate values, or None for all 1 (see the module docstring).
        reset: start from a fresh (zero) state instead of the carried one.
        lr_scale: factor on the learning rate for this step.
        lookback: steps *before* the window, already trained on, that are run
            again (no loss on them) from the detached state stored at their
            start, so the window's gradient reaches that far back. The runner
            keeps this many trailing steps (inputs, per-stream resets and the
            state entering them) for the next window; fewer are used when the
            stream has not gone that far since its last reset.
        checkpoint: 0, or the number of steps per activation-checkpoint
            segment: activations inside a segment are recomputed during
            backward instead of stored (same gradient, less memory).
        loss_length: divide the window's loss sum by ``B * loss_length``
            instead of ``B * reference_length`` (None: the reference length).
    """

    length: int
    gates: tuple[float, ...] | None = None
    reset: bool = False
    lr_scale: float = 1.0
    lookback: int = 0
    checkpoint: int = 0
    loss_length: int | None = None


class Strategy:
    """Base of all strategies. Subclasses set ``name`` and implement ``plan``."""

    name: str = ""
    stochastic: bool = False

    @property
    def spec(self) -> str:
        """The spec string that :func:`parse_strategy` turns back into this strategy."""
        raise NotImplementedError

    def reference_length(self, total_steps: int) -> int:
        """The K of the loss normalization (see the module docstring)."""
        raise NotImplementedError

    def plan(self, remaining: int, generator: torch.Generator) -> Window:
        """The next window, when ``remaining`` (>= 1) steps are left in the stream."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"
