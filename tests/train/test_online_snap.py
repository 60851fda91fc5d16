"""SnAp-N as Menick et al. (2020) define it, and the lagged variant, against a naive loop of
each definition (tests/train/online_reference.py) in float64."""

import pytest
import torch
from torch import nn

from tbptt.errors import ConfigError
from tbptt.models.custom import CustomLM
from tbptt.train.objectives import LanguageModel
from tbptt.train.online import SnAp, online_gradient
from tbptt.truncation import parse_strategy
from tests.reference import tiny_batch, tiny_lm
from tests.train.online_reference import builtin_functions, builtin_points, snap_reference


class TwoUnits(nn.Module):
    """The issue's reproduction: h_t = tanh(W h_{t-1} + b), h_0 = (0.5, 0.5), l_t = h_t[0]."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(1)
        self.W = nn.Parameter(torch.randn(2, 2, generator=g, dtype=torch.float64))
        self.b = nn.Parameter(torch.randn(2, generator=g, dtype=torch.float64))

    def initial_state(self, batch_size):
        return torch.full((batch_size, 2), 0.5, dtype=torch.float64)

    def forward(self, inputs, state, gates=None, *, resets=None, path="auto"):
        h, outs = state, []
        for _ in range(inputs.shape[0]):
            h = torch.tanh(h @ self.W.t() + self.b)
            outs.append(h)
        return torch.stack(outs), h

    def readout(self, state, inputs):
        return state.unsqueeze(0)  # (1, B, 2): the outputs are the new state


class FirstUnit:
    """l_t = h_t[0], summed over streams (an objective with no targets)."""

    def loss_sum(self, outputs, targets, mask=None):
        return outputs[..., 0].sum()


def _two_unit_gradient(spec):
    model = TwoUnits()
    x = torch.zeros(2, 1, 1, dtype=torch.float64)
    grads = online_gradient(model, parse_strategy(spec), x, x, objective=FirstUnit())
    return grads[0] * 2  # the sum of the two losses (online_gradient divides by T * B)


def test_snap_1_gives_exactly_zero_where_the_loss_cannot_see_the_tracked_unit():
    model = TwoUnits()
    W, b = model.W.detach(), model.b.detach()
    h1 = torch.tanh(W @ torch.full((2,), 0.5, dtype=torch.float64) + b)
    h2 = torch.tanh(W @ h1 + b)
    # RTRL by hand: d h2[0] / d W[1, 0] = (1 - h2[0]^2) W[0, 1] (1 - h1[1]^2) h0[0]
    by_hand = (1 - h2[0] ** 2) * W[0, 1] * (1 - h1[1] ** 2) * 0.5
    assert abs(by_hand) > 1e-2
    assert _two_unit_gradient("rtrl")[1, 0] == pytest.approx(float(by_hand), abs=1e-14)
    # SnAp-1 tracks W[1, 0] on unit 1 only, and the loss reads unit 0: exactly 0
    assert _two_unit_gradient("snap:1")[1, 0] == 0.0
    # the lagged variant lets the second loss see one unmasked step: RTRL's value at T = 2
    assert _two_unit_gradient("snap-lagged:1")[1, 0] == pytest.approx(float(by_hand), abs=1e-14)


def _reference(model, inputs, targets, *, order, lagged=False):
    step, readout_loss, theta = builtin_functions(model)
    T, B = inputs.shape
    points = builtin_points(model, model.config.vocab_size)
    S = points[0][1].shape[0]
    total = sum(
        snap_reference(
            step,
            readout_loss,
            theta,
            torch.zeros(S, dtype=torch.float64),
            inputs[:, b],
            targets[:, b],
            order=order,
            lagged=lagged,
            points=points,
        )
        for b in range(B)
    )
    return total / (T * B)


def _flat(grads):
    return torch.cat([g.reshape(-1) for g in grads])


@pytest.mark.parametrize(
    "kind, layers, order",
    [("rnn", 1, 1), ("gru", 1, 1), ("lstm", 1, 1), ("lstm", 1, 2), ("gru", 2, 1), ("gru", 2, 2)],
)
@pytest.mark.parametrize("lagged", [False, True])
def test_snap_equals_a_naive_loop_of_its_definition(kind, layers, order, lagged):
    model = tiny_lm(kind, layers=layers, hidden=3, vocab=5, embedding=2, seed=2)
    inputs, targets = tiny_batch(T=5, B=2, vocab=5, seed=3)
    spec = f"{'snap-lagged' if lagged else 'snap'}:{order}"
    got = _flat(online_gradient(model, parse_strategy(spec), inputs, targets))
    want = _reference(model, inputs, targets, order=order, lagged=lagged)
    assert (got - want).abs().max() < 1e-12
    exact = _reference(model, inputs, targets, order=None)
    if order == 1 or layers == 2 and order == 1:  # dense cells: SnAp-1 drops real terms
        assert (got - exact).abs().max() > 1e-6


def test_snap_and_snap_lagged_differ_on_a_dense_rnn():
    model = tiny_lm("rnn", hidden=4, seed=5)
    inputs, targets = tiny_batch(T=6)
    snap = _flat(online_gradient(model, parse_strategy("snap:1"), inputs, targets))
    lagged = _flat(online_gradient(model, parse_strategy("snap-lagged:1"), inputs, targets))
    assert (snap - lagged).abs().max() > 1e-4


def test_the_closed_form_pattern_is_the_one_the_jacobians_show():
    # SnAp's M_N on the built-in cells is read from their structure; the torch.func engine
    # finds it from the Jacobians at random points: the two agree on every recurrent column
    for kind, layers in (("gru", 2), ("lstm", 2), ("rnn", 1)):
        model = tiny_lm(kind, layers=layers, hidden=3, vocab=5, embedding=0)  # one-hot
        inputs, targets = tiny_batch(T=2, B=2, vocab=5)
        for order in (1, 2):
            fast = SnAp(model, LanguageModel(), order=order)
            slow = SnAp(model, LanguageModel(), order=order, engine="func")
            assert fast.engine is not None and slow.engine is None
            for est in (fast, slow):
                est.start(model.initial_state(2))
                est.step(inputs[:1], targets[:1])
            structural = fast.pattern  # (S, P_s)
            P_s = structural.shape[1]
            found = slow.pattern[:P_s, 0, :].t()  # (S, P_s)
            # columns of input weights whose token has not been read yet are not known there
            known = slow.known[:P_s]
            assert known.sum() > P_s // 2
            assert torch.equal(structural[:, known], found[:, known]), (kind, layers, order)


def test_snap_on_a_module_without_a_readout_says_what_to_do():
    class NoReadout(nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = nn.RNNCell(3, 4)

        def initial_state(self, batch_size):
            return torch.zeros(batch_size, 4)

        def forward(self, inputs, state):
            outs = []
            for x in inputs:
                state = self.cell(x, state)
                outs.append(state)
            return torch.stack(outs), state

    model = CustomLM(NoReadout(), vocab_size=7, input_size=3, output_size=4)
    with pytest.raises(ConfigError, match="snap-lagged:1"):
        SnAp(model, LanguageModel(), order=1)
    # the lagged variant needs no readout
    inputs, targets = tiny_batch(T=3)
    grads = online_gradient(model, parse_strategy("snap-lagged:1"), inputs, targets)
    assert all(torch.isfinite(g).all() for g in grads)
