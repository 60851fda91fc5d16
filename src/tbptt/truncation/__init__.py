"""Truncation layer: strategies as pure policy (window lengths and gates), and their registry.

Modules: :mod:`~tbptt.truncation.base` (:class:`Window`, :class:`Strategy` and the gate and
loss conventions), :mod:`~tbptt.truncation.deterministic` (full BPTT, regular, TBPTT(k1, k2)),
:mod:`~tbptt.truncation.stochastic` (randomized truncation, variable length),
:mod:`~tbptt.truncation.online` (rtrl, uoro, snap: the gradient carried forward in time) and
:mod:`~tbptt.truncation.strategies` (the spec grammar, registry and :func:`parse_strategy`).
"""

from tbptt.truncation.adaptive import AdaptiveTruncation
from tbptt.truncation.base import Strategy, Window
from tbptt.truncation.deterministic import FullBPTT, K1K2Truncation, RegularTruncation
from tbptt.truncation.online import OnlineStrategy
from tbptt.truncation.stochastic import RandomizedTruncation, VariableLength
from tbptt.truncation.strategies import STRATEGIES, parse_strategy, register

__all__ = [
    "AdaptiveTruncation",
    "STRATEGIES",
    "FullBPTT",
    "K1K2Truncation",
    "OnlineStrategy",
    "RandomizedTruncation",
    "RegularTruncation",
    "Strategy",
    "VariableLength",
    "Window",
    "parse_strategy",
    "register",
]
