"""Every strategy's gradient against an independent reference (float64)."""

import pytest
import torch

from tbptt.models.gating import detach_state
from tbptt.train import sequence_gradient, window_loss
from tbptt.truncation import FullBPTT, RandomizedTruncation, RegularTruncation, Window
from tests.reference import reference_loss, tiny_batch, tiny_lm
from tests.unbiased import assert_biased, assert_unbiased

KINDS = ["gru", "lstm", "linear"]


def _ref_grads(model, inputs, targets, **kw):
    return torch.autograd.grad(
        reference_loss(model, inputs, targets, **kw), list(model.parameters())
    )


def _assert_all_close(a, b, atol=1e-10):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=atol)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("layers", [1, 2])
def test_full_equals_autograd_on_the_unrolled_graph(kind, layers):
    model = tiny_lm(kind, layers=layers)
    inputs, targets = tiny_batch(T=9)
    got = sequence_gradient(model, FullBPTT(), inputs, targets)
    _assert_all_close(got, _ref_grads(model, inputs, targets))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("k", [1, 2, 4])
def test_regular_equals_naive_loop_detaching_every_k(kind, k):
    model = tiny_lm(kind, layers=2)
    inputs, targets = tiny_batch(T=9)
    got = sequence_gradient(model, RegularTruncation(k), inputs, targets)
    _assert_all_close(got, _ref_grads(model, inputs, targets, cuts=set(range(0, 9, k))))
    if k < 9:  # and it differs from full: the comparison can fail
        full = sequence_gradient(model, FullBPTT(), inputs, targets)
        assert max((a - b).abs().max().item() for a, b in zip(got, full)) > 1e-6


@pytest.mark.parametrize("kind", KINDS)
def test_randomized_forced_off_is_full_and_forced_on_is_regular_1(kind):
    model = tiny_lm(kind)
    inputs, targets = tiny_batch(T=8)
    full = sequence_gradient(model, FullBPTT(), inputs, targets)
    off = sequence_gradient(model, RandomizedTruncation(1, cut_probability=0.0), inputs, targets)
    _assert_all_close(off, full)
    reg1 = sequence_gradient(model, RegularTruncation(1), inputs, targets)
    on = sequence_gradient(model, RandomizedTruncation(1, cut_probability=1.0), inputs, targets)
    _assert_all_close(on, reg1)


@pytest.mark.parametrize("kind", KINDS)
def test_randomized_draw_equals_naive_loop_with_the_same_cuts_and_scales(kind):
    model = tiny_lm(kind, layers=2)
    T = 12
    inputs, targets = tiny_batch(T=T)
    strategy = RandomizedTruncation(3)
    # Replay the draws the engine makes, and build the reference's cuts and hooks from them.
    g = torch.Generator().manual_seed(5)
    cuts, scales, pos = set(), {}, 0
    while pos < T:
        w = strategy.plan(T - pos, g)
        cuts.add(pos)
        scales.update({pos + i: xi for i, xi in enumerate(w.gates) if i > 0})
        pos += w.length
    assert len(cuts) > 1 and scales  # the draw has both cuts and scaled edges
    got = sequence_gradient(
        model, strategy, inputs, targets, generator=torch.Generator().manual_seed(5)
    )
    _assert_all_close(got, _ref_grads(model, inputs, targets, cuts=cuts, scales=scales))


@pytest.mark.slow
def test_randomized_is_unbiased_and_regular_is_not():
    model = tiny_lm("gru", hidden=3, vocab=5, embedding=2, seed=1)
    inputs, targets = tiny_batch(T=10, B=2, vocab=5, seed=2)
    full = torch.cat([g.flatten() for g in sequence_gradient(model, FullBPTT(), inputs, targets)])
    n = 1500
    g = torch.Generator().manual_seed(0)
    draws = torch.stack(
        [
            torch.cat(
                [
                    x.flatten()
                    for x in sequence_gradient(
                        model, RandomizedTruncation(3), inputs, targets, generator=g
                    )
                ]
            )
            for _ in range(n)
        ]
    )  # (n, P)
    assert_unbiased(draws, full, "randomized")
    reg = torch.cat(
        [x.flatten() for x in sequence_gradient(model, RegularTruncation(2), inputs, targets)]
    )
    assert_biased(draws, full, reg, "regular:2", limit=10.0)


def _graph_size(tensor) -> int:
    seen, stack = set(), [tensor.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        stack.extend(f for f, _ in fn.next_functions)
    return len(seen)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_regular_never_keeps_graph_behind_a_detach(kind):
    model = tiny_lm(kind, layers=2)
    inputs, targets = tiny_batch(T=40, B=2)
    k = 5
    sizes, leaky, state, leak_state = [], [], None, None
    for start in range(0, 40, k):
        x, y = inputs[start : start + k], targets[start : start + k]
        loss, state = window_loss(
            model, x, y, detach_state(state) if state is not None else None, Window(k)
        )
        sizes.append(_graph_size(loss))
        loss2, leak_state = window_loss(
            model, x, y, leak_state, Window(k)
        )  # no detach: the graph grows
        leaky.append(_graph_size(loss2))
    assert len(set(sizes[1:])) == 1, sizes
    # without the detach every window's graph holds all earlier windows: it grows each time
    assert all(b > a for a, b in zip(leaky, leaky[1:])), leaky
    assert leaky[-1] > 2 * sizes[-1]
    carried = state if isinstance(state, tuple) else (state,)
    assert all(s.grad_fn is not None for s in carried)
    assert all(s.grad_fn is None and not s.requires_grad for s in detach_state(carried))
