"""The strategies whose windows are fixed by their arguments: full BPTT, regular
truncation and TBPTT(k1, k2) (``stochastic = False``; the generator is never drawn from).

Conventions (gates, loss normalization, what a :class:`Window` may ask for) are in
:mod:`tbptt.truncation.base`; the spec grammar in :mod:`tbptt.truncation.strategies`.
"""

from __future__ import annotations

import math

import torch

from tbptt.errors import SpecError
from tbptt.truncation.base import Strategy, Window

__all__ = ["FullBPTT", "RegularTruncation", "K1K2Truncation"]


class FullBPTT(Strategy):
    """Exact backpropagation through time over whole sequences.

    ``sequence_length=None``: the sequence is the whole stream of each column
    (one optimizer step per epoch). Otherwise the stream is cut into
    independent sequences of that many steps, each starting from a fresh state.

    ``checkpoint``: False (store every activation, memory O(T)); True (activation
    checkpointing over segments of ceil(sqrt(T)) steps: only the states at segment
    edges are stored during the forward, and each segment is run again during
    backward, so memory is O(sqrt T) for one extra forward and the gradient is
    the same); or an int S, segments of S steps.
    """

    name = "full"

    def __init__(self, sequence_length: int | None = None, *, checkpoint: bool | int = False):
        if sequence_length is not None and sequence_length < 1:
            raise SpecError(f"full:N needs a sequence length N >= 1, got {sequence_length}")
        if not isinstance(checkpoint, bool) and checkpoint < 1:
            raise SpecError(f"full:checkpoint=S needs S >= 1 steps per segment, got {checkpoint}")
        self.sequence_length = sequence_length
        self.checkpoint = checkpoint

    @property
    def spec(self) -> str:
        parts = [] if self.sequence_length is None else [str(self.sequence_length)]
        if self.checkpoint is True:
            parts.append("checkpoint")
        elif self.checkpoint:
            parts.append(f"checkpoint={self.checkpoint}")
        return "full" + (":" + ",".join(parts) if parts else "")

    def reference_length(self, total_steps: int) -> int:
        return self.sequence_length or total_steps

    def segment_length(self, length: int) -> int:
        """Steps per checkpoint segment for a window of ``length`` steps (0: no checkpointing)."""
        if self.checkpoint is False:
            return 0
        if self.checkpoint is True:
            return max(1, math.ceil(math.sqrt(length)))
        return int(self.checkpoint)

    def plan(self, remaining: int, generator: torch.Generator) -> Window:
        if self.sequence_length is None:
            return Window(length=remaining, checkpoint=self.segment_length(remaining))
        length = min(self.sequence_length, remaining)
        return Window(length=length, reset=True, checkpoint=self.segment_length(length))


class RegularTruncation(Strategy):
    """Detach the state every ``k`` steps; one optimizer step per window of ``k`` steps."""

    name = "regular"

    def __init__(self, k: int):
        if k < 1:
            raise SpecError(f"regular:K needs a window length K >= 1, got {k}")
        self.k = k

    @property
    def spec(self) -> str:
        return f"regular:{self.k}"

    def reference_length(self, total_steps: int) -> int:
        return self.k

    def plan(self, remaining: int, generator: torch.Generator) -> Window:
        return Window(length=min(self.k, remaining))


class K1K2Truncation(Strategy):
    """TBPTT(k1, k2) (Williams & Peng 1990, in Sutskever's notation).

    Every ``k1`` steps the optimizer steps once; the loss of *each* of those k1
    steps contributes, and every one of them is backpropagated to the same
    point: k2 - k1 steps before the window's first step, i.e. ``k2`` steps
    before the end of a full window. With the window covering steps
    s .. s+k1-1, the gradient is that of

        sum_{t=s}^{s+k1-1} l_t   with the state entering step max(0, s+k1-k2) detached,

    so the last step's loss reaches k2 steps back and the first one
    k2 - k1 + 1. ``k1 == k2`` is ``regular:k1``; ``k1 == k2 == T`` is full BPTT
    over T steps. (A shorter last window keeps the same k2 - k1 lookback.)

    Implementation: the k2 - k1 steps of overlap with earlier windows are run
    again (``Window.lookback``) from the detached state stored at their start,
    rather than keeping the previous windows' graphs alive. Recomputing costs
    k2 / k1 forward passes per step (instead of 1) but holds only one window's
    graph of k2 steps at a time and no graph between steps; keeping the graph
    would save the recomputation but keep k2 steps of activations alive at all
    times and cannot end the backward pass at an arbitrary earlier step without
    a detach point placed in the forward (see docs/strategies.md).
    """

    name = "k1k2"

    def __init__(self, k1: int, k2: int):
        if k1 < 1 or k2 < k1:
            raise SpecError(f"k1k2:K1,K2 needs 1 <= K1 <= K2, got K1={k1}, K2={k2}")
        self.k1, self.k2 = k1, k2

    @property
    def spec(self) -> str:
        return f"k1k2:{self.k1},{self.k2}"

    def reference_length(self, total_steps: int) -> int:
        return self.k1

    def plan(self, remaining: int, generator: torch.Generator) -> Window:
        return Window(length=min(self.k1, remaining), lookback=self.k2 - self.k1)
