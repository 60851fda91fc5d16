"""Truncation layer: strategies as pure policy (window lengths and gates), and their registry."""

from tbptt.truncation.strategies import (
    STRATEGIES,
    FullBPTT,
    K1K2Truncation,
    RandomizedTruncation,
    RegularTruncation,
    Strategy,
    VariableLength,
    Window,
    parse_strategy,
    register,
)

__all__ = [
    "STRATEGIES",
    "FullBPTT",
    "K1K2Truncation",
    "RandomizedTruncation",
    "RegularTruncation",
    "Strategy",
    "VariableLength",
    "Window",
    "parse_strategy",
    "register",
]
