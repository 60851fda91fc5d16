"""Truncation strategies: where windows end and which gate sits on each state edge.

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

Strategies (spec grammar ``name[:arg[,arg...]][,key=value...]``):

===========================  ====================================================
``full``                     xi = 1 over the whole stream of each column; one
                             optimizer step per epoch.
``full:N``                   sequences of N steps, each from a fresh state; one
                             step per sequence.
``regular:K``                detach every K steps; one step per window.
``randomized:K``             cut each edge with probability c = 1/K, else scale
                             its gradient by 1/(1 - c); windows end at the cuts.
``randomized:K,alpha=A``     Tallec & Ollivier's schedule c_t = (A - 1) /
                             ((A - 2) K + t), t = steps since the last cut (A > 2),
                             so the compensation 1/prod(1 - c) grows polynomially.
===========================  ====================================================
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tbptt.errors import SpecError

__all__ = [
    "Window",
    "Strategy",
    "FullBPTT",
    "RegularTruncation",
    "RandomizedTruncation",
    "STRATEGIES",
    "register",
    "parse_strategy",
]


@dataclass(frozen=True)
class Window:
    """The plan for one optimizer step.

    Attributes:
        length: steps in the window (>= 1).
        gates: (length,) gate values, or None for all 1 (see the module docstring).
        reset: start from a fresh (zero) state instead of the carried one.
        lr_scale: factor on the learning rate for this step.
    """

    length: int
    gates: tuple[float, ...] | None = None
    reset: bool = False
    lr_scale: float = 1.0


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


class FullBPTT(Strategy):
    """Exact backpropagation through time over whole sequences.

    ``sequence_length=None``: the sequence is the whole stream of each column
    (one optimizer step per epoch). Otherwise the stream is cut into
    independent sequences of that many steps, each starting from a fresh state.
    """

    name = "full"

    def __init__(self, sequence_length: int | None = None):
        if sequence_length is not None and sequence_length < 1:
            raise SpecError(f"full:N needs a sequence length N >= 1, got {sequence_length}")
        self.sequence_length = sequence_length

    @property
    def spec(self) -> str:
        return "full" if self.sequence_length is None else f"full:{self.sequence_length}"

    def reference_length(self, total_steps: int) -> int:
        return self.sequence_length or total_steps

    def plan(self, remaining: int, generator: torch.Generator) -> Window:
        if self.sequence_length is None:
            return Window(length=remaining)
        return Window(length=min(self.sequence_length, remaining), reset=True)


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
            raise SpecError(f"randomized:K needs a mean window length K >= 1, got {k:g}")
        if alpha is not None and not alpha > 2:
            raise SpecError(f"randomized:K,alpha=A needs A > 2, got {alpha:g}")
        if cut_probability is not None and not 0.0 <= cut_probability <= 1.0:
            raise SpecError(f"cut probability must be in [0, 1], got {cut_probability:g}")
        self.k, self.alpha, self.cut_probability = k, alpha, cut_probability

    @property
    def spec(self) -> str:
        k = f"{self.k:g}"
        return f"randomized:{k}" + (f",alpha={self.alpha:g}" if self.alpha is not None else "")

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
        block = max(16, 2 * int(self.k))
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


# -- registry and spec parsing --------------------------------------------------------

STRATEGIES: dict[str, Callable[..., Strategy]] = {}


def register(name: str, factory: Callable[..., Strategy]) -> None:
    """Make ``name[:args]`` parse to ``factory(*args, **kwargs)``."""
    STRATEGIES[name] = factory


def _full(*args, **kw) -> Strategy:
    if kw or len(args) > 1:
        raise SpecError("full takes at most one argument: 'full' or 'full:N'")
    return FullBPTT(_int(args[0], "full:N") if args else None)


def _regular(*args, **kw) -> Strategy:
    if len(args) != 1 or kw:
        raise SpecError("regular takes exactly one argument, e.g. 'regular:35'")
    return RegularTruncation(_int(args[0], "regular:K"))


def _randomized(*args, **kw) -> Strategy:
    if len(args) != 1 or set(kw) - {"alpha"}:
        raise SpecError(
            "randomized takes a mean length and optionally alpha, e.g. 'randomized:35,alpha=4'"
        )
    alpha = _float(kw["alpha"], "alpha") if "alpha" in kw else None
    return RandomizedTruncation(_float(args[0], "randomized:K"), alpha=alpha)


register("full", _full)
register("regular", _regular)
register("randomized", _randomized)


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise SpecError(f"{what} needs an integer, got {text!r}") from None


def _float(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SpecError(f"{what} needs a number, got {text!r}") from None
    if not math.isfinite(value):
        raise SpecError(f"{what} needs a finite number, got {text!r}")
    return value


def parse_strategy(spec: str | Strategy) -> Strategy:
    """Turn a spec such as ``regular:35`` or ``randomized:35,alpha=4`` into a strategy.

    Raises:
        SpecError: unknown name, malformed or out-of-range arguments.
    """
    if isinstance(spec, Strategy):
        return spec
    text = spec.strip()
    name, _, rest = text.partition(":")
    name = name.strip().lower()
    if name not in STRATEGIES:
        raise SpecError(
            f"unknown strategy {spec!r}; expected one of {', '.join(sorted(STRATEGIES))} "
            "(e.g. full, regular:35, randomized:35)"
        )
    if _ and not rest.strip():
        raise SpecError(f"strategy {spec!r} has a ':' but no arguments after it")
    args, kwargs = [], {}
    for part in filter(None, (p.strip() for p in rest.split(","))) if rest else []:
        key, eq, value = part.partition("=")
        if eq:
            kwargs[key.strip().lower()] = value.strip()
        elif kwargs:
            raise SpecError(f"in {spec!r}, positional arguments must come before key=value ones")
        else:
            args.append(part)
    return STRATEGIES[name](*args, **kwargs)
