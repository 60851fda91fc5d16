"""Spec strings round-trip: ``parse_strategy(s.spec)`` rebuilds ``s`` exactly, for every
strategy and every valid argument (a property test over random valid strategies)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tbptt.errors import SpecError
from tbptt.truncation import (
    AdaptiveTruncation,
    FullBPTT,
    K1K2Truncation,
    OnlineStrategy,
    RandomizedTruncation,
    RegularTruncation,
    VariableLength,
    parse_strategy,
)

lengths = st.integers(min_value=1, max_value=10**9)
finite = dict(allow_nan=False, allow_infinity=False)


@st.composite
def k1k2(draw):
    k1 = draw(lengths)
    return K1K2Truncation(k1, k1 + draw(st.integers(min_value=0, max_value=10**6)))


@st.composite
def online(draw):
    estimator = draw(st.sampled_from(["rtrl", "uoro", "snap"]))
    order = draw(st.integers(min_value=1, max_value=10**6)) if estimator == "snap" else 0
    return OnlineStrategy(estimator, order=order, update_every=draw(lengths))


strategies = st.one_of(
    online(),
    st.builds(
        AdaptiveTruncation,
        st.floats(min_value=0.0, max_value=1.0, exclude_min=True, exclude_max=True),
        k=st.integers(min_value=1, max_value=1000),
        max_k=st.integers(min_value=1000, max_value=10**6),
        every=st.integers(min_value=1, max_value=100),
    ),
    st.builds(
        FullBPTT,
        st.none() | lengths,
        checkpoint=st.booleans() | st.integers(min_value=1, max_value=10**6),
    ),
    st.builds(RegularTruncation, lengths),
    k1k2(),
    st.builds(
        RandomizedTruncation,
        st.floats(min_value=1.0, **finite),
        alpha=st.none() | st.floats(min_value=2.0, exclude_min=True, **finite),
        cut_probability=st.none() | st.floats(min_value=0.0, max_value=1.0),
    ),
    st.builds(
        VariableLength,
        lengths,
        p=st.floats(min_value=0.0, max_value=1.0),
        sd=st.floats(min_value=0.0, **finite),
        min_length=st.integers(min_value=1, max_value=10**6),
    ),
)


@settings(max_examples=300, deadline=None)
@given(strategies)
def test_parse_of_spec_gives_back_the_same_strategy(strategy):
    again = parse_strategy(strategy.spec)
    assert type(again) is type(strategy)
    assert vars(again) == vars(strategy)
    assert again.spec == strategy.spec


@pytest.mark.parametrize(
    "spec, attribute, value",
    [
        ("randomized:35,alpha=2.0000001", "alpha", 2.0000001),  # was stored as alpha=2, refused
        ("variable:70,sd=4.9999999", "sd", 4.9999999),  # was silently 5
        ("randomized:4,cut=0.3", "cut_probability", 0.3),  # was dropped from the spec
        ("variable:70,min=2", "min_length", 2),
    ],
)
def test_the_issue_examples_keep_their_values(spec, attribute, value):
    strategy = parse_strategy(spec)
    assert getattr(parse_strategy(strategy.spec), attribute) == value


def test_a_huge_sd_plans_a_window_instead_of_overflowing():
    strategy = parse_strategy("variable:5,sd=1e308")  # base + sd * n overflows to +-inf
    generator = torch.Generator().manual_seed(0)
    lengths_drawn = [strategy.plan(50, generator).length for _ in range(40)]
    assert all(5 <= n <= 50 for n in lengths_drawn)
    assert {5, 50} <= set(lengths_drawn)  # draws far below and far above, both bounded


@pytest.mark.parametrize(
    "make",
    [
        lambda: VariableLength(5, sd=math.inf),
        lambda: VariableLength(5, min_length=0),
        lambda: RandomizedTruncation(4, alpha=math.inf),
    ],
)
def test_out_of_range_arguments_are_refused(make):
    with pytest.raises(SpecError):
        make()
