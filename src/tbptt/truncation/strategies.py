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
``full:checkpoint``          ``full`` (or ``full:N,checkpoint``) with activation
                             checkpointing over segments of about sqrt(T) steps
                             (``checkpoint=S``: S steps): the same gradient in
                             O(sqrt T) memory for one extra forward.
``k1k2:K1,K2``               TBPTT(k1, k2) (Williams & Peng 1990): a step every
                             K1 steps; the losses of those K1 steps all reach
                             back to K2 steps before the window's end (K2 >= K1),
                             re-running the K2 - K1 overlap from a stored state.
``variable:K``               AWD-LSTM's variable length (Merity et al. 2017):
                             base K w.p. 0.95 else K/2, length max(5,
                             int(N(base, 5))), learning rate times length / K.
===========================  ====================================================

Windows may ask for more than a length and gates (see :class:`Window`):
``lookback`` steps of already-trained history re-run without loss from a
stored detached state (TBPTT(k1, k2)); ``checkpoint`` steps per activation
checkpoint segment; ``loss_length`` to divide the window's loss by instead
of the reference length (variable length, whose learning-rate factor then
restores the per-token weight).
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
    "K1K2Truncation",
    "VariableLength",
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
            raise SpecError(f"variable:K,p=P needs P in [0, 1], got {p:g}")
        if not sd >= 0:
            raise SpecError(f"variable:K,sd=S needs S >= 0, got {sd:g}")
        self.k, self.p, self.sd, self.min_length = k, p, sd, max(1, min_length)

    @property
    def spec(self) -> str:
        extra = "" if self.p == 0.95 else f",p={self.p:g}"
        extra += "" if self.sd == 5.0 else f",sd={self.sd:g}"
        return f"variable:{self.k}{extra}"

    def reference_length(self, total_steps: int) -> int:
        return self.k

    def sample_length(self, generator: torch.Generator) -> int:
        """One draw of the window length (before the end of the stream cuts it)."""
        u = torch.rand(1, generator=generator, dtype=torch.float64).item()
        base = self.k if u < self.p else self.k / 2
        n = torch.randn(1, generator=generator, dtype=torch.float64).item()
        return max(self.min_length, int(base + self.sd * n))  # int() truncates, as AWD-LSTM

    def plan(self, remaining: int, generator: torch.Generator) -> Window:
        length = min(self.sample_length(generator), remaining)
        return Window(length=length, lr_scale=length / self.k, loss_length=length)


# -- registry and spec parsing --------------------------------------------------------

STRATEGIES: dict[str, Callable[..., Strategy]] = {}


def register(name: str, factory: Callable[..., Strategy]) -> None:
    """Make ``name[:args]`` parse to ``factory(*args, **kwargs)``."""
    STRATEGIES[name] = factory


def _full(*args, **kw) -> Strategy:
    usage = "full takes 'full', 'full:N', 'full:checkpoint' or 'full:N,checkpoint[=S]'"
    checkpoint: bool | int = False
    if args and args[-1].lower() == "checkpoint":
        args, checkpoint = args[:-1], True
    if "checkpoint" in kw:
        if checkpoint:
            raise SpecError(usage)
        checkpoint = _int(kw.pop("checkpoint"), "full:checkpoint=S")
    if kw or len(args) > 1:
        raise SpecError(usage)
    return FullBPTT(_int(args[0], "full:N") if args else None, checkpoint=checkpoint)


def _k1k2(*args, **kw) -> Strategy:
    if len(args) != 2 or kw:
        raise SpecError("k1k2 takes two window lengths K1 <= K2, e.g. 'k1k2:10,35'")
    return K1K2Truncation(_int(args[0], "k1k2:K1"), _int(args[1], "k1k2:K2"))


def _variable(*args, **kw) -> Strategy:
    if len(args) != 1 or set(kw) - {"p", "sd"}:
        raise SpecError("variable takes a base length and optionally p and sd, e.g. 'variable:70'")
    extra = {k: _float(v, f"variable {k}") for k, v in kw.items()}
    return VariableLength(_int(args[0], "variable:K"), **extra)


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
register("k1k2", _k1k2)
register("variable", _variable)


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
            "(e.g. full, full:checkpoint, regular:35, randomized:35, k1k2:10,35, variable:35)"
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
