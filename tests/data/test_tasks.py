"""Synthetic tasks: layouts checked by naive per-episode loops, baselines against direct computation."""

import math

import numpy as np
import pytest
import torch

from tbptt.data.streams import SequentialStream
from tbptt.data.tasks import TASKS, parse_task, task_names
from tbptt.errors import SpecError


def episodes_of(split):
    """Row ranges [start, stop) of each episode, read off ``starts`` (independent of the layout code)."""
    first = split.starts.nonzero().flatten().tolist()
    return list(zip(first, first[1:] + [len(split)]))


def test_adding_layout_markers_target_mask_starts():
    task = parse_task("adding:T=7,episodes=20,valid_episodes=5", seed=3)
    assert (task.input_kind, task.input_size, task.target_kind, task.output_size) == ("features", 2, "values", 1)  # fmt: skip
    assert task.objective == "regress" and task.model is None
    for split, episodes in ((task.train, 20), (task.valid, 5)):
        assert split.inputs.shape == (episodes * 7, 2) and split.inputs.dtype == torch.float32
        assert split.targets.shape == (episodes * 7, 1) and split.targets.dtype == torch.float32
        assert split.starts.dtype == torch.bool and split.mask.dtype == torch.bool
        ranges = episodes_of(split)
        assert ranges == [(7 * e, 7 * e + 7) for e in range(episodes)]
        for start, stop in ranges:
            values, markers = split.inputs[start:stop, 0], split.inputs[start:stop, 1]
            assert ((0 <= values) & (values < 1)).all()
            marked = [t for t in range(7) if markers[t] == 1.0]
            assert len(marked) == 2 and sum(markers.tolist()) == 2.0  # the rest are 0
            assert marked[0] < 7 // 2 <= marked[1]
            assert split.mask[start:stop].tolist() == [False] * 6 + [True]
            assert split.targets[stop - 1, 0].item() == pytest.approx(
                values[marked[0]].item() + values[marked[1]].item(), abs=1e-6
            )


def test_adding_baseline_is_the_mse_of_predicting_one_within_four_standard_errors():
    episodes = 4000
    task = parse_task(f"adding:T=6,episodes={episodes}", seed=11)
    y = task.train.targets[task.train.mask, 0].double()  # one target per episode
    assert len(y) == episodes
    empirical = ((y - 1.0) ** 2).mean().item()
    # y - 1 is triangular on [-1, 1] (density 1 - |x|): E[x^4] = 2 * (1/5 - 1/6) = 1/15,
    # so Var((y - 1)^2) = 1/15 - (1/6)^2 = 7/180.
    standard_error = math.sqrt(7 / 180 / episodes)
    assert task.baseline["metric"] == "mse"
    assert abs(empirical - task.baseline["loss"]) < 4 * standard_error
    assert task.baseline["loss"] == pytest.approx(2 / 12)  # Var(U1 + U2), U ~ U[0, 1)


def test_copy_layout_recalls_the_first_symbols_after_the_delimiter():
    T, length, symbols = 5, 3, 4
    task = parse_task(f"copy:T={T},length={length},symbols={symbols},episodes=10,valid_episodes=4")
    blank, delimiter = symbols, symbols + 1
    assert (task.input_kind, task.input_size, task.target_kind, task.output_size) == ("tokens", 6, "classes", 6)  # fmt: skip
    assert task.objective == "classify" and task.train.mask is None
    steps = T + 2 * length
    for split, episodes in ((task.train, 10), (task.valid, 4)):
        assert split.inputs.shape == (episodes * steps,) and split.inputs.dtype == torch.int64
        assert split.targets.shape == (episodes * steps,) and split.targets.dtype == torch.int64
        assert episodes_of(split) == [(steps * e, steps * e + steps) for e in range(episodes)]
        for start, stop in episodes_of(split):
            x, y = split.inputs[start:stop].tolist(), split.targets[start:stop].tolist()
            assert all(0 <= s < symbols for s in x[:length])
            assert x[length:] == [blank] * (T - 1) + [delimiter] + [blank] * length
            assert y[-length:] == x[:length]
            assert y[:-length] == [blank] * (T + length)


def naive_copy_baseline(split, symbols):
    """Mean cross-entropy of the predictor, run online: blank until it reads the delimiter, then uniform."""
    blank, delimiter = symbols, symbols + 1
    total, after = 0.0, False
    for x, y, start in zip(split.inputs.tolist(), split.targets.tolist(), split.starts.tolist()):
        if start:
            after = False
        if after:
            total += -math.log(1 / symbols) if y < symbols else math.inf
        else:
            total += 0.0 if y == blank else math.inf
        after = after or x == delimiter
    return total / len(split)


@pytest.mark.parametrize("T, length, symbols", [(5, 3, 4), (1, 1, 2), (9, 2, 7)])
def test_copy_baseline_formula_equals_the_predictors_loss_on_generated_data(T, length, symbols):
    task = parse_task(f"copy:T={T},length={length},symbols={symbols},episodes=6,valid_episodes=2")
    assert task.baseline["metric"] == "cross_entropy"
    for split in (task.train, task.valid):
        assert task.baseline["loss"] == pytest.approx(
            naive_copy_baseline(split, symbols), rel=1e-12
        )


def test_influence_layout_and_baseline_from_the_linear_system():
    task = parse_task("influence:steps=50,valid_steps=7")
    assert task.model == "influence" and task.objective == "regress"
    assert (task.input_kind, task.input_size, task.target_kind, task.output_size) == ("features", 1, "values", 1)  # fmt: skip
    for split, n in ((task.train, 50), (task.valid, 7)):
        assert split.inputs.shape == (n, 1) and split.inputs.dtype == torch.float32
        assert torch.equal(split.inputs, torch.zeros(n, 1))
        assert torch.equal(split.targets, torch.ones(n, 1))
        assert split.starts is None and split.mask is None

    def long_run_loss(theta, n=23, p=10, steps=3000):  # s_t = 1/2 s + 1/2 (U s) + theta c
        s, c = np.ones(n), np.where(np.arange(n) < p, 1.0, -1.0)
        for _ in range(steps):
            s = 0.5 * s + 0.5 * np.append(s[1:], 0.0) + theta * c
        return (s[0] - 1.0) ** 2

    assert task.baseline == {"name": "theta = 0", "loss": 1.0, "metric": "mse"}
    assert long_run_loss(0.0) == pytest.approx(task.baseline["loss"], abs=1e-9)
    assert long_run_loss(1 / (2 * (2 * 10 - 23))) == pytest.approx(0.0, abs=1e-9)  # theta* = -1/6


@pytest.mark.parametrize("spec", ["adding:T=6,episodes=5,valid_episodes=5", "copy:T=3,length=2,episodes=5,valid_episodes=5"])  # fmt: skip
def test_same_seed_same_data_other_seed_other_data_and_valid_is_not_train(spec):
    a, b, c = parse_task(spec, seed=7), parse_task(spec, seed=7), parse_task(spec, seed=8)
    for split in ("train", "valid"):
        for field in ("inputs", "targets", "starts", "mask"):
            x, y = getattr(getattr(a, split), field), getattr(getattr(b, split), field)
            assert (x is None and y is None) or torch.equal(x, y)
        assert not torch.equal(getattr(a, split).inputs, getattr(c, split).inputs)
    assert not torch.equal(a.train.inputs, a.valid.inputs)  # same size, different draws


def test_a_task_split_feeds_sequential_streams():
    task = parse_task("adding:T=4,episodes=6,valid_episodes=1")
    batch = SequentialStream(task.train, 2).next(3)
    assert batch.inputs.shape == (3, 2, 2) and batch.targets.shape == (3, 2, 1)
    assert batch.resets.shape == (3, 2) and batch.mask.shape == (3, 2)


@pytest.mark.parametrize(
    "spec, canonical",
    [
        ("adding", "adding"),
        ("adding:T=100", "adding"),
        ("adding:T=50", "adding:T=50"),
        (" Copy: valid_episodes=2 , T=5,length=10 ", "copy:T=5,valid_episodes=2"),
        ("influence:p=4,n=9", "influence:n=9,p=4"),
    ],
)
def test_canonical_spec_lists_non_defaults_in_declared_order_and_round_trips(spec, canonical):
    task = parse_task(spec)
    assert task.spec == canonical
    again = parse_task(task.spec)
    assert again.spec == task.spec and again.params == task.params and again.name == task.name
    assert list(task.params) == [p.name for p in TASKS[task.name].params]


def test_defaults_and_names():
    assert task_names() == ("adding", "copy", "influence")
    assert parse_task("influence").params == {"n": 23, "p": 10, "steps": 100_000, "valid_steps": 10_000}  # fmt: skip


def test_every_problem_is_reported_at_once():
    with pytest.raises(SpecError) as info:
        parse_task("adding:T=1,foo=2,episodes=x,valid_episodes=0,7,T=3")
    message = str(info.value)
    for problem in ["T must be at least 2, got 1", "unknown parameter 'foo'", "episodes needs an integer, got 'x'", "valid_episodes must be at least 1, got 0", "expected key=value, got '7'", "'T' given twice"]:  # fmt: skip
        assert problem in message
    with pytest.raises(SpecError) as info:
        parse_task("influence:n=9,p=10,steps=0")
    assert "steps must be at least 1, got 0" in str(info.value)
    assert "p must be at most n (9), got 10" in str(info.value)
    with pytest.raises(SpecError, match="no parameters"):
        parse_task("copy:")
    with pytest.raises(SpecError, match="t=5"):  # keys are case-sensitive
        parse_task("adding:t=5")


def test_an_unknown_task_lists_every_task_with_its_defaults():
    with pytest.raises(SpecError) as info:
        parse_task("addition:T=5")
    message = str(info.value)
    assert "addition" in message
    for name in task_names():
        defaults = ",".join(f"{p.name}={p.default}" for p in TASKS[name].params)
        assert f"{name}:{defaults}" in message
    assert "adding:T=100,episodes=1000,valid_episodes=200" in message


def test_copy_majority_class_baseline_is_the_share_of_blanks():
    task = parse_task("copy:T=7,length=3,episodes=20,valid_episodes=5")
    # blank is the most frequent target: T + length of every T + 2 length steps
    assert task.baselines()["majority class"]["acc"] == pytest.approx((7 + 3) / (7 + 6))
