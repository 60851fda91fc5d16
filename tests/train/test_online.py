"""The online estimators (RTRL, SnAp-N, UORO) against autograd on the unrolled graph (float64)."""

import pytest
import torch
from torch import nn

from tbptt.errors import ConfigError
from tbptt.models.custom import CustomLM
from tbptt.train import sequence_gradient
from tbptt.train.objectives import LanguageModel
from tbptt.train.online import RTRL, check_rtrl_memory, online_gradient
from tbptt.truncation import FullBPTT, RegularTruncation, parse_strategy
from tests.reference import reference_loss, tiny_batch, tiny_lm
from tests.unbiased import assert_biased, assert_unbiased


class DenseRNN(nn.Module):
    """A user's tanh RNN, written step by step, with a dict state."""

    def __init__(self, size=3, hidden=4):
        super().__init__()
        self.w_in = nn.Linear(size, hidden)
        self.w_rec = nn.Linear(hidden, hidden, bias=False)
        self.hidden = hidden

    def initial_state(self, batch_size):
        return {"h": torch.zeros(batch_size, self.hidden, dtype=self.w_in.weight.dtype)}

    def forward(self, inputs, state):
        h, outs = state["h"], []
        for x in inputs:
            h = torch.tanh(self.w_in(x) + self.w_rec(h))
            outs.append(h)
        return torch.stack(outs), {"h": h}

    def readout(self, state):
        return state["h"]  # a step's output is its new state (what SnAp-N needs to know)


class ElementwiseRNN(nn.Module):
    """h' = tanh(a ⊙ h + W x + b): a diagonal recurrence (each unit feeds only itself)."""

    def __init__(self, size=3, hidden=4):
        super().__init__()
        self.w_in = nn.Linear(size, hidden)
        self.a = nn.Parameter(torch.linspace(-0.9, 0.9, hidden))
        self.hidden = hidden

    def initial_state(self, batch_size):
        return torch.zeros(batch_size, self.hidden, dtype=self.a.dtype)

    def forward(self, inputs, state):
        h, outs = state, []
        for x in inputs:
            h = torch.tanh(self.a * h + self.w_in(x))
            outs.append(h)
        return torch.stack(outs), h

    def readout(self, state):
        return state


def _user_lm(core):
    torch.manual_seed(0)
    return CustomLM(core, vocab_size=7, input_size=3, output_size=4).double()


def _flat(grads):
    return torch.cat([g.reshape(-1) for g in grads])


def _unrolled(model, inputs, targets):
    """Autograd on the fully unrolled graph of the whole sequence (one call, no strategy)."""
    outputs, _ = model(inputs, model.initial_state(inputs.shape[1]))
    loss = LanguageModel().loss_sum(outputs, targets) / inputs.numel()
    return torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad])


def _max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


@pytest.mark.parametrize("kind, layers", [("rnn", 1), ("gru", 1), ("lstm", 2)])
def test_rtrl_equals_the_unrolled_gradient_of_the_builtin_models(kind, layers):
    model = tiny_lm(kind, layers=layers)
    inputs, targets = tiny_batch(T=6)
    reference = torch.autograd.grad(
        reference_loss(model, inputs, targets), list(model.parameters())
    )  # a naive loop over ATen's own cells
    got = online_gradient(model, parse_strategy("rtrl"), inputs, targets)
    assert _max_diff(got, reference) < 1e-10
    assert _max_diff(got, sequence_gradient(model, FullBPTT(), inputs, targets)) < 1e-10


@pytest.mark.parametrize("core", [DenseRNN, ElementwiseRNN])
def test_rtrl_equals_the_unrolled_gradient_of_a_user_module(core):
    model = _user_lm(core())
    inputs, targets = tiny_batch(T=6)
    got = online_gradient(model, parse_strategy("rtrl"), inputs, targets)
    assert _max_diff(got, _unrolled(model, inputs, targets)) < 1e-10


def test_rtrl_honours_per_stream_resets_and_masks():
    model = tiny_lm("gru")
    inputs, targets = tiny_batch(T=6)
    resets = torch.zeros(6, 3, dtype=torch.bool)
    resets[2, 0] = resets[4, 2] = True
    mask = torch.ones(6, 3, dtype=torch.bool)
    mask[1, 1] = mask[5, 0] = False
    marks = dict(resets=resets, mask=mask)
    want = sequence_gradient(model, FullBPTT(), inputs, targets, **marks)
    got = online_gradient(model, parse_strategy("rtrl"), inputs, targets, **marks)
    assert _max_diff(got, want) < 1e-10
    # and the resets matter: without them the gradient differs
    assert _max_diff(got, online_gradient(model, parse_strategy("rtrl"), inputs, targets)) > 1e-6


@pytest.mark.parametrize("spec", ["snap:1", "snap-lagged:1"])
def test_snap_1_is_rtrl_for_an_elementwise_recurrence_and_not_for_a_dense_one(spec):
    inputs, targets = tiny_batch(T=6)
    diagonal = _user_lm(ElementwiseRNN())
    exact = _unrolled(diagonal, inputs, targets)
    assert (
        _max_diff(online_gradient(diagonal, parse_strategy(spec), inputs, targets), exact) < 1e-10
    )
    dense = _user_lm(DenseRNN())
    exact = _unrolled(dense, inputs, targets)
    assert _max_diff(online_gradient(dense, parse_strategy(spec), inputs, targets), exact) > 1e-4


@pytest.mark.parametrize("kind, layers, connect", [("rnn", 1, 2), ("gru", 1, 2), ("lstm", 2, 2)])
def test_snap_n_is_rtrl_once_n_steps_connect_every_unit(kind, layers, connect):
    # one step of a dense cell reaches every unit from any unit: M_2 is full
    model = tiny_lm(kind, layers=layers)
    inputs, targets = tiny_batch(T=6)
    exact = sequence_gradient(model, FullBPTT(), inputs, targets)
    snap = lambda n: online_gradient(model, parse_strategy(f"snap:{n}"), inputs, targets)  # noqa: E731
    assert _max_diff(snap(connect - 1), exact) > 1e-5
    assert _max_diff(snap(connect), exact) < 1e-10
    assert _max_diff(snap(connect + 1), exact) < 1e-10


@pytest.mark.slow
def test_uoro_is_unbiased_and_regular_is_not():
    model = tiny_lm("gru", hidden=3, vocab=5, embedding=2, seed=1)
    inputs, targets = tiny_batch(T=6, B=2, vocab=5, seed=2)
    full = _flat(sequence_gradient(model, FullBPTT(), inputs, targets))
    g = torch.Generator().manual_seed(0)
    uoro = parse_strategy("uoro")
    draws = torch.stack(
        [_flat(online_gradient(model, uoro, inputs, targets, generator=g)) for _ in range(300)]
    )  # (n, P)
    assert_unbiased(draws, full, "uoro")
    reg = _flat(sequence_gradient(model, RegularTruncation(1), inputs, targets))
    assert_biased(draws, full, reg, "regular:1", limit=10.0)
    # the draws do vary: a rank-one estimate is noisy, and its relative variance is finite
    variance = ((draws - draws.mean(0)) ** 2).sum(1).mean() / full.norm() ** 2
    assert 1e-3 < variance < 100


def test_an_rtrl_that_cannot_fit_is_refused_before_allocating():
    model = tiny_lm("gru")
    with pytest.raises(ConfigError, match="exact RTRL needs about .* use uoro"):
        check_rtrl_memory(10**6, 32, 1024, 8, available=10**9)
    estimator = RTRL(model, LanguageModel(), available=1000)
    with pytest.raises(ConfigError, match="exact RTRL"):
        estimator.start(model.initial_state(3))
    assert estimator.J is None
