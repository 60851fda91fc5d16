"""The strategies whose windows are drawn at random: unbiased randomized truncation and
AWD-LSTM's variable length (``stochastic = True``; every draw comes from the generator
passed to ``plan``).

Conventions (gates, loss normalization, what a :class:`Window` may ask for) are in
:mod:`tbptt.truncation.base`; the spec grammar in :mod:`tbptt.truncation.strategies`.
"""

from __future__ import annotations

import math

import torch

from tbptt.errors import SpecError
from tbptt.truncation.base import Strategy, Window, format_number

__all__ = ["RandomizedTruncation", "VariableLength"]


class RandomizedTruncation(Strategy):
    """Unbiased randomized truncation (Tallec & Ollivier 2017).

    Each edge h_{t-1} -> h_t is cut with probability c_t (a window ends there
    and the optimizer steps); otherwise its gradient is multiplied by
    1 / (1 - c_t). Then E[xi_t] = 1 and, at fixed weights, the sum of the
    windows' gradients is an unbiased estimate of the full gradient.

    Schedules: constant c = 1/k (geometric window lengths of mean k), or, with
    ``alpha``, c_t = (alpha - 1) / ((alpha - 2) k + t), t the steps since the
    last cut; window lengths then have mean about k and a polynomial tail.
    ``cut_probability`` overrides the constant schedule with any c in [0, 1]
    (0: never cut, i.e. full BPTT; 1: cut every edge, i.e. ``regular:1``).
    """

    name = "randomized"
    stochastic = True

    def __init__(
        self, k: float, *, alpha: float | None = None, cut_probability: float | None = None
    ):
        if not (k >= 1 and math.isfinite(k)):
            raise SpecError(f"randomized:K needs a finite mean window length K >= 1, got {k!r}")
        if alpha is not None and not (alpha > 2 and math.isfinite(alpha)):
            raise SpecError(f"randomized:K,alpha=A needs a finite A > 2, got {alpha!r}")
        if cut_probability is not None and not 0.0 <= cut_probability <= 1.0:
            raise SpecError(f"randomized:K,cut=C needs C in [0, 1], got {cut_probability!r}")
        self.k, self.alpha, self.cut_probability = k, alpha, cut_probability

    @property
    def spec(self) -> str:
        spec = f"randomized:{format_number(self.k)}"
        if self.alpha is not None:
            spec += f",alpha={format_number(self.alpha)}"
        if self.cut_probability is not None:
            spec += f",cut={format_number(self.cut_probability)}"
        return spec

    def reference_length(self, total_steps: int) -> int:
        return max(1, round(self.k))

    def cut_probability_at(self, t: int) -> float:
        """c_t for the edge t steps after the last cut (t >= 1)."""
        if self.cut_probability is not None:
            return self.cut_probability
        if self.alpha is None:
            return 1.0 / self.k
        return min(1.0, (self.alpha - 1.0) / ((self.alpha - 2.0) * self.k + t))

    def plan(self, remaining: int, generator: torch.Generator) -> Window:
        gates = [1.0]
        # Draw uniforms in blocks; the edge t steps after the window start is cut when u < c_t.
        block = max(16, min(2 * int(self.k), 1 << 16))
        t = 1
        while t < remaining:
            draws = torch.rand(block, generator=generator, dtype=torch.float64).tolist()
            for u in draws:
                c = self.cut_probability_at(t)
                if u < c:
                    return Window(length=t, gates=tuple(gates))
                gates.append(1.0 / (1.0 - c))
                t += 1
                if t >= remaining:
                    break
        return Window(length=remaining, gates=tuple(gates))


class VariableLength(Strategy):
    """Variable-length BPTT (Merity, Keskar & Socher 2017, AWD-LSTM).

    Each window: a base length K with probability ``p`` (0.95), else K / 2; the
    length is max(``min_length``, int(x)) with x ~ N(base, ``sd``^2) (sd 5),
    cut at the end of the stream. The state is detached at window edges, as in
    regular truncation. The window's loss is the *mean* over its own length
    (``loss_length = length``) and the learning rate is multiplied by
    length / K, as AWD-LSTM does; for SGD the product leaves every token with
    the weight 1 / (B K), as in every other strategy here.

    Length statistics for K = 70: mean 0.95 * 70 + 0.05 * 35 - 0.5 (int()
    truncation) = 67.75, sd sqrt(5^2 + 0.95 * 0.05 * 35^2 + 1/12) = 9.13.
    """

    name = "variable"
    stochastic = True

    def __init__(self, k: int, *, p: float = 0.95, sd: float = 5.0, min_length: int = 5):
        if k < 1:
            raise SpecError(f"variable:K needs a base window length K >= 1, got {k}")
        if not 0.0 <= p <= 1.0:
            raise SpecError(f"variable:K,p=P needs P in [0, 1], got {p!r}")
        if not (sd >= 0 and math.isfinite(sd)):
            raise SpecError(f"variable:K,sd=S needs a finite S >= 0, got {sd!r}")
        if min_length < 1:
            raise SpecError(f"variable:K,min=M needs M >= 1, got {min_length}")
        self.k, self.p, self.sd, self.min_length = k, p, sd, min_length

    @property
    def spec(self) -> str:
        extra = "" if self.p == 0.95 else f",p={format_number(self.p)}"
        extra += "" if self.sd == 5.0 else f",sd={format_number(self.sd)}"
        extra += "" if self.min_length == 5 else f",min={self.min_length}"
        return f"variable:{self.k}{extra}"

    def reference_length(self, total_steps: int) -> int:
        return self.k

    def sample_length(self, generator: torch.Generator) -> int:
        """One draw of the window length (before the end of the stream cuts it)."""
        u = torch.rand(1, generator=generator, dtype=torch.float64).item()
        base = self.k if u < self.p else self.k / 2
        n = torch.randn(1, generator=generator, dtype=torch.float64).item()
        # A huge sd can overflow base + sd * n to +-inf: bound it before int() (which
        # truncates, as AWD-LSTM); the end of the stream cuts a long draw anyway.
        x = min(max(base + self.sd * n, float(self.min_length)), 2.0**62)
        return max(self.min_length, int(x))

    def plan(self, remaining: int, generator: torch.Generator) -> Window:
        length = min(self.sample_length(generator), remaining)
        return Window(length=length, lr_scale=length / self.k, loss_length=length)
