"""Truncation layer: strategies as pure policy (window lengths and gates), and their registry."""

from tbptt.truncation.strategies import (
    STRATEGIES,
    FullBPTT,
    RandomizedTruncation,
    RegularTruncation,
    Strategy,
    Window,
    parse_strategy,
    register,
)

__all__ = [
    "STRATEGIES",
    "FullBPTT",
    "RandomizedTruncation",
    "RegularTruncation",
    "Strategy",
    "Window",
    "parse_strategy",
    "register",
]
