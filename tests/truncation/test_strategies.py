import math

import pytest
import torch

from tbptt.errors import SpecError
from tbptt.truncation import FullBPTT, RandomizedTruncation, RegularTruncation, parse_strategy


def _windows(strategy, total, seed=0):
    g = torch.Generator().manual_seed(seed)
    out, pos = [], 0
    while pos < total:
        w = strategy.plan(total - pos, g)
        assert 1 <= w.length <= total - pos
        assert w.gates is None or (len(w.gates) == w.length and w.gates[0] == 1.0)
        out.append(w)
        pos += w.length
    return out


@pytest.mark.parametrize(
    "spec, cls, attrs",
    [
        ("full", FullBPTT, {"sequence_length": None}),
        ("full:50", FullBPTT, {"sequence_length": 50}),
        ("regular:35", RegularTruncation, {"k": 35}),
        (" Regular:7 ", RegularTruncation, {"k": 7}),
        ("randomized:35", RandomizedTruncation, {"k": 35, "alpha": None}),
        ("randomized:35,alpha=4", RandomizedTruncation, {"k": 35, "alpha": 4}),
    ],
)
def test_parse_round_trip(spec, cls, attrs):
    s = parse_strategy(spec)
    assert isinstance(s, cls)
    for k, v in attrs.items():
        assert getattr(s, k) == v
    assert parse_strategy(s.spec).spec == s.spec


@pytest.mark.parametrize(
    "spec, match",
    [
        ("regular:0", "K >= 1"),
        ("regular:-2", "K >= 1"),
        ("regular", "exactly one"),
        ("regular:", "no arguments"),
        ("regular:abc", "integer"),
        ("randomized:-3", "K >= 1"),
        ("randomized:nan", "finite"),
        ("randomized:35,alpha=2", "A > 2"),
        ("randomized:35,beta=3", "alpha"),
        ("full:0", "N >= 1"),
        ("sometimes:3", "unknown strategy"),
        ("", "unknown strategy"),
    ],
)
def test_bad_specs_raise_one_clear_error(spec, match):
    with pytest.raises(SpecError, match=match) as info:
        parse_strategy(spec)
    assert "\n" not in str(info.value)


def test_regular_windows_tile_the_stream():
    ws = _windows(RegularTruncation(4), 10)
    assert [w.length for w in ws] == [4, 4, 2]
    assert all(w.gates is None and not w.reset for w in ws)


def test_full_whole_stream_and_fixed_sequences():
    assert [w.length for w in _windows(FullBPTT(), 10)] == [10]
    ws = _windows(FullBPTT(4), 10)
    assert [w.length for w in ws] == [4, 4, 2] and all(w.reset for w in ws)


def test_randomized_constant_schedule_lengths_are_geometric_and_gates_compensate():
    k = 5.0
    ws = _windows(RandomizedTruncation(k), 200_000)
    lengths = torch.tensor([w.length for w in ws[:-1]], dtype=torch.double)
    # geometric with p = 1/k on {1, 2, ...}: mean k, variance (1 - p) / p^2
    se = math.sqrt((1 - 1 / k) * k * k / len(lengths))
    assert abs(lengths.mean().item() - k) < 5 * se
    assert all(g == pytest.approx(1 / (1 - 1 / k)) for w in ws[:50] for g in w.gates[1:])


def test_tallec_schedule_mean_length_and_polynomial_weights():
    s = RandomizedTruncation(10, alpha=4)
    assert s.cut_probability_at(1) == pytest.approx(3 / 21)
    ws = _windows(s, 300_000, seed=3)
    lengths = torch.tensor([w.length for w in ws[:-1]], dtype=torch.double)
    assert 9.0 < lengths.mean().item() < 11.0  # mean about K (heavy tail: loose bound)
    # compensation weight after n steps is prod 1 / (1 - c_t) ~ ((2K + n) / 2K)^3: polynomial
    w = max(ws, key=lambda w: w.length)
    weight = math.prod(w.gates[1:])
    n = w.length - 1
    assert weight == pytest.approx(math.prod(1 / (1 - 3 / (20 + t)) for t in range(1, n + 1)))
    assert weight < ((20 + n) / 20) ** 3 * 1.5


def test_randomized_forced_off_and_on():
    off = _windows(RandomizedTruncation(1, cut_probability=0.0), 9)
    assert [w.length for w in off] == [9] and set(off[0].gates) == {1.0}
    on = _windows(RandomizedTruncation(1, cut_probability=1.0), 9)
    assert [w.length for w in on] == [1] * 9


def test_randomized_is_reproducible_from_its_generator():
    a = [w.length for w in _windows(RandomizedTruncation(7), 500, seed=11)]
    b = [w.length for w in _windows(RandomizedTruncation(7), 500, seed=11)]
    c = [w.length for w in _windows(RandomizedTruncation(7), 500, seed=12)]
    assert a == b and a != c
