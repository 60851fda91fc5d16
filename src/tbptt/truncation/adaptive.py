"""Adaptive truncation (Aicher, Foti & Fox 2019): choose K so the gradient's bias stays below δ.

``adaptive:DELTA`` trains as ``regular:K`` (detach every K steps, one optimizer
step per window), with K chosen during training: every ``every`` epochs the
trainer measures, on a probe stretch of the training stream at the current
weights, the relative bias of each candidate ``regular:K``'s gradient against
the exact one, |g_K − g| / |g| (:mod:`tbptt.train.adaptive`), and the strategy
takes the smallest candidate whose bias is at most δ (the largest candidate
when none is). The candidates are K0 · 2^j up to ``max``. The chosen K and
its measured bias go into every epoch's metrics.

Spec: ``adaptive:DELTA[,k=K0][,max=KMAX][,every=E]``, δ in (0, 1); defaults
K0 = 5, KMAX = 200, E = 1. This is pure policy: the measurement is the train
layer's, and the strategy only turns measured biases into K (:meth:`choose`).
"""

from __future__ import annotations

import torch

from tbptt.errors import SpecError
from tbptt.truncation.base import Strategy, Window, format_number

__all__ = ["AdaptiveTruncation", "parse_adaptive"]


class AdaptiveTruncation(Strategy):
    """``regular:K`` with K re-chosen from measured gradient bias (see the module docstring).

    Args:
        delta: the largest relative bias accepted, in (0, 1).
        k: the initial K (and the smallest candidate).
        max_k: the largest candidate.
        every: epochs between measurements.
    """

    name = "adaptive"

    def __init__(self, delta: float, *, k: int = 5, max_k: int = 200, every: int = 1):
        if not 0.0 < delta < 1.0:
            raise SpecError(f"adaptive:DELTA needs a relative bias in (0, 1), got {delta}")
        if k < 1 or max_k < k:
            raise SpecError(f"adaptive needs 1 <= k <= max, got k={k}, max={max_k}")
        if every < 1:
            raise SpecError(f"adaptive every=E needs E >= 1 epochs, got {every}")
        self.delta = float(delta)
        self.k0 = k
        self.max_k = max_k
        self.every = every
        self.k = k  # the current window length
        self.bias: float | None = None  # the measured bias of the current K

    @property
    def spec(self) -> str:
        text = f"adaptive:{format_number(self.delta)}"
        for key, value, default in (
            ("k", self.k0, 5),
            ("max", self.max_k, 200),
            ("every", self.every, 1),
        ):
            if value != default:
                text += f",{key}={value}"
        return text

    def candidates(self) -> list[int]:
        """The window lengths to measure: K0, 2 K0, 4 K0, ... up to ``max`` (included)."""
        out, k = [], self.k0
        while k < self.max_k:
            out.append(k)
            k *= 2
        return out + [self.max_k]

    def due(self, epoch: int) -> bool:
        """Whether to measure before epoch ``epoch`` (0-based count of completed epochs)."""
        return epoch % self.every == 0

    def choose(self, biases: dict[int, float]) -> int:
        """Take the smallest K whose measured bias is at most δ (else the largest); returns it."""
        ok = [k for k in sorted(biases) if biases[k] <= self.delta]
        self.k = ok[0] if ok else max(biases)
        self.bias = biases[self.k]
        return self.k

    def reference_length(self, total_steps: int) -> int:
        return self.k0

    def plan(self, remaining: int, generator: torch.Generator) -> Window:
        # the loss of a window is divided by B * K of the current K (not the initial one)
        return Window(length=min(self.k, remaining), loss_length=self.k)

    def state_dict(self) -> dict:
        return {"k": self.k, "bias": self.bias}

    def load_state_dict(self, d: dict) -> None:
        self.k, self.bias = int(d["k"]), d.get("bias")


def _adaptive(*args, **kw) -> Strategy:
    usage = "adaptive takes a relative bias and optionally k, max and every, e.g. 'adaptive:0.1,max=100'"
    if len(args) != 1 or set(kw) - {"k", "max", "every"}:
        raise SpecError(usage)
    try:
        delta = float(args[0])
        ints = {key: int(value) for key, value in kw.items()}
    except ValueError:
        raise SpecError(usage) from None
    return AdaptiveTruncation(
        delta, k=ints.get("k", 5), max_k=ints.get("max", 200), every=ints.get("every", 1)
    )


def parse_adaptive() -> dict:
    """The registry entry: name -> factory."""
    return {"adaptive": _adaptive}
