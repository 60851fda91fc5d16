"""Strategy specs: the registry of strategy names and :func:`parse_strategy`.

The window and strategy conventions (gates, loss normalization) are in
:mod:`tbptt.truncation.base`; the strategies in :mod:`tbptt.truncation.deterministic`
and :mod:`tbptt.truncation.stochastic`, all importable from here too.

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
``randomized:K,cut=C``       a constant cut probability C in [0, 1] instead of
                             1/K (K still sets the loss normalization).
``variable:K``               AWD-LSTM's variable length (Merity et al. 2017):
                             base K w.p. 0.95 else K/2, length max(5,
                             int(N(base, 5))), learning rate times length / K
                             (``p=P``, ``sd=S``, ``min=M`` change 0.95, 5, 5).
``adaptive:D``               Aicher et al.'s K from the decay of the state gradients'
                             norms, trained as ``k1k2:K,2K-1``; ``measured:D``:
                             ``regular:K``, K from the bias measured directly
                             (:mod:`tbptt.truncation.adaptive`).
``rtrl``, ``uoro``,          online: the gradient carried forward with the state,
``snap:N``, ``snap-lagged:N``, never cut (:mod:`tbptt.truncation.online`).
``layer-rtrl``
===========================  ====================================================

Every strategy's ``spec`` is written so that ``parse_strategy(s.spec)`` gives back
the same strategy: numbers in their shortest exact form (``alpha=2.0000001``, never
rounded), every argument that differs from its default included.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from tbptt.errors import SpecError
from tbptt.truncation.adaptive import AdaptiveTruncation, parse_adaptive
from tbptt.truncation.base import Strategy, Window
from tbptt.truncation.deterministic import FullBPTT, K1K2Truncation, RegularTruncation
from tbptt.truncation.online import OnlineStrategy, parse_online
from tbptt.truncation.stochastic import RandomizedTruncation, VariableLength

__all__ = [
    "Window",
    "Strategy",
    "FullBPTT",
    "RegularTruncation",
    "RandomizedTruncation",
    "K1K2Truncation",
    "VariableLength",
    "OnlineStrategy",
    "AdaptiveTruncation",
    "STRATEGIES",
    "register",
    "parse_strategy",
]


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
    if len(args) != 1 or set(kw) - {"p", "sd", "min"}:
        raise SpecError(
            "variable takes a base length and optionally p, sd and min, e.g. 'variable:70,sd=5'"
        )
    extra = {k: _float(v, f"variable {k}") for k, v in kw.items() if k != "min"}
    if "min" in kw:
        extra["min_length"] = _int(kw["min"], "variable min")
    return VariableLength(_int(args[0], "variable:K"), **extra)


def _regular(*args, **kw) -> Strategy:
    if len(args) != 1 or kw:
        raise SpecError("regular takes exactly one argument, e.g. 'regular:35'")
    return RegularTruncation(_int(args[0], "regular:K"))


def _randomized(*args, **kw) -> Strategy:
    if len(args) != 1 or set(kw) - {"alpha", "cut"}:
        raise SpecError(
            "randomized takes a mean length and optionally alpha or a cut probability, "
            "e.g. 'randomized:35,alpha=4' or 'randomized:35,cut=0.1'"
        )
    alpha = _float(kw["alpha"], "alpha") if "alpha" in kw else None
    cut = _float(kw["cut"], "randomized cut") if "cut" in kw else None
    return RandomizedTruncation(_float(args[0], "randomized:K"), alpha=alpha, cut_probability=cut)


register("full", _full)
register("regular", _regular)
register("randomized", _randomized)
register("k1k2", _k1k2)
register("variable", _variable)
for _name, _factory in (parse_online() | parse_adaptive()).items():  # online.py, adaptive.py
    register(_name, _factory)


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
            "(e.g. full, full:checkpoint, regular:35, randomized:35, k1k2:10,35, variable:35, "
            "rtrl, uoro, snap:1)"
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
