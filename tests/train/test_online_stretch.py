"""Several rows in one pass (``OnlineEstimator.rows``), float64: the rows' summed gradient,
their loss and everything the estimator carries to the next window equal stepping the same
rows one at a time with ``step`` (the ``torch.func`` engine on a user's module, the diagonal
engine on minGRU / minLSTM / LRU and layer-rtrl on a stack), across windows, resets and a
loss mask; and a stretch really is one pass."""

import pytest
import torch

from tbptt.models import ModelConfig, RecurrentNet
from tbptt.models.custom import StatefulModule
from tbptt.models.influence import InfluenceBalancing
from tbptt.train.objectives import LanguageModel, Regression
from tbptt.train.online import build_estimator
from tbptt.train.online.base import stretches
from tbptt.truncation import parse_strategy
from tests.reference import tiny_batch
from tests.train.test_online import DenseRNN, _user_lm

T, B = 9, 3


def _marks():
    resets = torch.zeros(T, B, dtype=torch.bool)
    resets[4, 1] = resets[7, 0] = True  # inside the second and third windows
    mask = torch.ones(T, B, dtype=torch.bool)
    mask[2, 2] = mask[6, 1] = False
    return resets, mask


def _compare(model, spec, inputs, targets, objective, window=4):
    """Row by row against windows of ``window`` rows; returns the stretched estimator's
    number of passes."""
    resets, mask = _marks()
    one = build_estimator(parse_strategy(spec), model, objective)
    many = build_estimator(parse_strategy(spec), model, objective)
    state = model.initial_state(inputs.shape[1])
    one.start(state)
    many.start(state)
    passes = {"n": 0}
    advance = many._advance

    def counted(*args):
        passes["n"] += 1
        return advance(*args)

    many._advance = counted
    g = torch.Generator().manual_seed(0)
    want_grad, want_loss = 0, 0
    for t in range(inputs.shape[0]):
        rows = slice(t, t + 1)
        loss, grad = one.step(inputs[rows], targets[rows], mask=mask[rows], resets=resets[rows], generator=g)  # fmt: skip
        want_grad, want_loss = want_grad + grad, want_loss + loss
    got_grad, got_loss = 0, 0
    for a in range(0, inputs.shape[0], window):
        rows = slice(a, a + window)
        grad, loss = many.rows(inputs[rows], targets[rows], mask=mask[rows], resets=resets[rows], generator=g)  # fmt: skip
        got_grad, got_loss = got_grad + grad, got_loss + loss
    assert (got_grad - want_grad).abs().max() < 1e-12 * max(1.0, want_grad.abs().max())
    assert abs(got_loss - want_loss) < 1e-12 * max(1.0, abs(want_loss))
    assert (many.s - one.s).abs().max() < 1e-12
    carried = one._tensors()
    for name, value in many._tensors().items():
        if value is None or not (value.is_floating_point() or value.is_complex()):
            assert (value is None and carried[name] is None) or torch.equal(value, carried[name])
        else:
            assert (value - carried[name]).abs().max() < 1e-12, name
    return passes["n"]


def test_a_users_module_takes_a_window_in_one_pass_with_its_exact_sensitivity():
    model = _user_lm(DenseRNN())
    inputs, targets = tiny_batch(T=T, B=B, seed=3)
    passes = _compare(model, "rtrl", inputs, targets, LanguageModel())
    assert passes == 4  # windows [0,4) [4,8) [8,9); the reset at row 7 cuts [4,8) in two


def test_influence_balancing_one_pass_per_window():
    model = StatefulModule(InfluenceBalancing(), batch_dim=-2).double()
    x, y = torch.zeros(T, B, 1, dtype=torch.float64), torch.ones(T, B, 1, dtype=torch.float64)
    assert _compare(model, "rtrl", x, y, Regression()) == 4


@pytest.mark.parametrize("kind", ["mingru", "minlstm", "lru"])
@pytest.mark.parametrize("spec, layers, embedding", [("rtrl", 1, 3), ("rtrl", 1, 0), ("layer-rtrl", 2, 3)])  # fmt: skip
def test_the_diagonal_engine_takes_a_window_in_one_backpropagation(kind, spec, layers, embedding):
    torch.manual_seed(1)
    cfg = ModelConfig(vocab_size=7, kind=kind, hidden_size=4, num_layers=layers,
                      embedding_size=embedding, dropout=0.0)  # fmt: skip
    model = RecurrentNet(cfg).double()
    inputs, targets = tiny_batch(T=T, B=B, seed=4)
    assert _compare(model, spec, inputs, targets, LanguageModel()) == 4


def test_estimators_that_act_at_every_step_stay_row_by_row():
    model = _user_lm(DenseRNN())
    inputs, targets = tiny_batch(T=T, B=B, seed=3)
    for spec in ("uoro", "snap:1", "snap-lagged:1"):
        assert build_estimator(parse_strategy(spec), model, LanguageModel()).rows_at_once(B) == 1
    gru = RecurrentNet(ModelConfig(vocab_size=7, kind="gru", hidden_size=4, embedding_size=3))
    assert build_estimator(parse_strategy("rtrl"), gru, LanguageModel()).rows_at_once(B) == 1
    assert _compare(model, "snap-lagged:1", inputs, targets, LanguageModel()) == T


def test_stretches_cut_at_resets_and_at_the_longest():
    resets = torch.zeros(10, 2, dtype=torch.bool)
    resets[3, 1] = resets[4, 0] = True
    assert stretches(10, resets, 4) == [(0, 3), (3, 4), (4, 8), (8, 10)]
    assert stretches(10, None, 4) == [(0, 4), (4, 8), (8, 10)]
    assert stretches(3, resets[:3], 1) == [(0, 1), (1, 2), (2, 3)]


def test_the_diagonal_window_runs_on_one_thread_and_restores_the_count(monkeypatch):
    torch.manual_seed(1)
    cfg = ModelConfig(
        vocab_size=7, kind="mingru", hidden_size=4, num_layers=1, embedding_size=3, dropout=0.0
    )
    model = RecurrentNet(cfg).double()
    est = build_estimator(parse_strategy("rtrl"), model, LanguageModel())
    inputs, targets = tiny_batch(T=T, B=B, seed=4)
    est.start(model.initial_state(B))
    seen = []
    window = type(est)._window

    def spy(self, *args):
        seen.append(torch.get_num_threads())
        return window(self, *args)

    monkeypatch.setattr(type(est), "_window", spy)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        est.rows(inputs, targets)
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
