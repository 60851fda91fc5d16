"""Bias-controlled truncation: ``adaptive:D`` as Aicher, Foti & Fox define it (the decay fit,
the bias bound, the choice of K, the buffer windows) against closed forms on a linear RNN,
and ``measured:D`` (the direct measurement) against the laboratory's own."""

import logging
import math

import pytest
import torch

from tbptt.analysis.estimator import estimator_quality
from tbptt.data.streams import Batch, SequentialStream
from tbptt.errors import SpecError
from tbptt.models import ModelConfig, RecurrentNet
from tbptt.train.adaptive import adapt, state_gradient_norms, truncation_bias
from tbptt.truncation import K1K2Truncation, parse_strategy
from tbptt.truncation.adaptive import decay_rate, relative_bias_bound
from tests.reference import tiny_batch, tiny_lm
from tests.train.test_resume import make_trainer, one_thread  # noqa: F401 (a fixture)


def test_the_decay_fit_of_exactly_geometric_norms_is_their_ratio():
    k = torch.arange(12, dtype=torch.float64)
    for a in (0.3, 0.8, 0.97):
        assert decay_rate(torch.log(2.5 * a**k)) == pytest.approx(a, rel=1e-12)
        assert decay_rate(torch.log(2.5 * a**k), tau=4) == pytest.approx(a, rel=1e-12)
    # only the lags from tau on are fit: a different start does not matter
    bent = torch.log(torch.cat([torch.tensor([9.0, 7.0]), 0.5 ** k[2:]]).double())
    assert decay_rate(bent, tau=2) == pytest.approx(0.5, rel=1e-12)
    # norms under e^-50 are left out; fewer than two left: no gradient reaches back
    assert decay_rate(torch.tensor([0.0, -60.0, -70.0]).double()) == 0.0


def test_the_bias_bound_of_one_aligned_geometric_gradient():
    # v_k = c a^k (one state value, every lag the same sign): E(j) = c a^j / (1 - a),
    # G_j = c (1 - a^j) / (1 - a), N = G_n - E(n) = c (1 - 2 a^n) / (1 - a), so
    # delta(K) = E(K - 1) / N = a^(K - 1) / (1 - 2 a^n)
    a, c, n = 0.6, 3.0, 10
    k = torch.arange(n, dtype=torch.float64)
    phi = c * a**k
    running = torch.cat([torch.zeros(1), torch.cumsum(phi, 0)]).double()
    got = relative_bias_bound(phi, running, a, tau=0)
    want = torch.tensor(
        [a ** (K - 1) / (1 - 2 * a**n) for K in range(1, n + 1)], dtype=torch.float64
    )
    assert torch.allclose(got, want.double(), rtol=1e-12, atol=0)
    # tau > 0: the first lags are summed as measured, the same for exact geometric norms
    assert torch.allclose(relative_bias_bound(phi, running, a, tau=3), want.double(), rtol=1e-12)
    # no decay: no bound
    assert math.isinf(float(relative_bias_bound(phi, running, 1.0).min()))


def _linear_rnn(a, hidden=2, vocab=5):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=vocab, kind="linear", hidden_size=hidden, num_layers=1,
                      embedding_size=3, dropout=0.0)  # fmt: skip
    model = RecurrentNet(cfg).double()
    with torch.no_grad():
        model.recurrent.core.weight_hh_l0.copy_(a * torch.eye(hidden, dtype=torch.float64))
    return model


def _stream(vocab=5, rows=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    return SequentialStream(torch.randint(0, vocab, (rows,), generator=g), batch_size=2)


def test_the_state_gradients_of_a_linear_rnn_are_powers_of_its_recurrence():
    # h_t = W x_t + a h_{t-1}: the state entering row s - k gets v_k = a^(k+1) ∂L/∂h_s
    a = 0.7
    model = _linear_rnn(a)
    stretch = _stream().next(12)
    norms, sums = state_gradient_norms(model, stretch, burnin=4)
    # ∂L/∂h_s by hand: the head's weight times softmax - one-hot, per stream
    _, state = model(stretch.inputs[:-1], model.initial_state(2))
    outputs, h_s = model(stretch.inputs[-1:], state)
    p = torch.softmax(outputs[0], dim=-1) - torch.nn.functional.one_hot(stretch.targets[-1], 5)
    top = p @ model.head.weight  # (B, H)
    for k in range(8):
        v = a ** (k + 1) * top
        assert float(norms[k]) == pytest.approx(float(v.norm(dim=1).sum()), rel=1e-12)
        assert torch.allclose(sums[k], v.sum(0), rtol=1e-12, atol=1e-15)


def test_adaptive_finds_the_decay_of_a_linear_rnn_and_the_smallest_k_under_delta(caplog):
    a = 0.8
    model = _linear_rnn(a)
    strategy = parse_strategy("adaptive:0.05,max=40,burnin=10,stretches=3")
    with caplog.at_level(logging.INFO, logger="tbptt.train.adaptive"):
        fields = adapt(strategy, model, _stream())
    assert strategy.beta == pytest.approx(a, rel=1e-10)  # phi_k = a^k phi_0 exactly
    assert strategy.passed and fields["adaptive_passed"] is True
    assert strategy.bias <= 0.05
    # smallest: one lag fewer breaks the bound. With beta = a, delta(K) = a^(K-1) phi_0 / (1-a) / N
    # for every K, so K - 1 = ceil(log(0.05 N (1 - a) / phi_0) / log a).
    assert strategy.k > 1
    ratio = strategy.bias / a  # delta(K - 1) = delta(K) / a
    assert ratio > 0.05
    assert f"K = {strategy.k}" in caplog.text
    assert fields == strategy.metrics() and fields["adaptive_beta"] == strategy.beta


def test_when_no_k_meets_delta_the_strategy_says_so(caplog):
    model = _linear_rnn(1.0)  # no decay at all: no bound holds
    strategy = parse_strategy("adaptive:0.05,max=20,burnin=5")
    with caplog.at_level(logging.WARNING, logger="tbptt.train.adaptive"):
        fields = adapt(strategy, model, _stream())
    assert strategy.beta == pytest.approx(1.0, abs=1e-10)
    assert fields["adaptive_passed"] is False and strategy.k == 20
    assert "no K up to 20" in caplog.text


def test_adaptive_trains_every_loss_at_least_k_deep_as_the_buffer_scheme():
    s = parse_strategy("adaptive:0.1,k=3")
    k1k2 = K1K2Truncation(3, 5)  # the paper's buffer: k1k2:K,2K-1
    w, want = s.plan(100, torch.Generator()), k1k2.plan(100, torch.Generator())
    assert (w.length, w.lookback, w.loss_length) == (want.length, want.lookback, 3)
    s.k = 7
    assert s.plan(4, torch.Generator()).length == 4 and s.plan(100, None).lookback == 6


def test_adaptive_specs_round_trip_and_bad_ones_are_refused():
    s = parse_strategy("adaptive:0.1,max=50,tau=3,stretches=4,burnin=20,seed=2")
    assert (
        parse_strategy(s.spec).spec
        == s.spec
        == "adaptive:0.1,max=50,tau=3,stretches=4,burnin=20,seed=2"
    )
    assert parse_strategy("adaptive:0.1").spec == "adaptive:0.1"
    for bad in ("adaptive", "adaptive:1.5", "adaptive:0.1,k=0", "adaptive:0.1,x=2",
                "adaptive:0.1,tau=100", "measured:0.1,tau=2"):  # fmt: skip
        with pytest.raises(SpecError):
            parse_strategy(bad)


# -- measured:D, the direct measurement -------------------------------------------------


def test_the_measured_policy_takes_the_smallest_k_under_delta_else_the_largest():
    s = parse_strategy("measured:0.1,k=2,max=20")
    assert s.candidates() == [2, 4, 8, 16, 20]
    assert s.choose({2: 0.5, 4: 0.2, 8: 0.09, 16: 0.01, 20: 0.0}) == 8 and s.bias == 0.09
    assert s.passed and s.plan(100, torch.Generator()).length == 8
    assert s.plan(100, torch.Generator()).loss_length == 8  # normalized by the current K
    assert s.choose({2: 0.5, 4: 0.4}) == 4 and not s.passed  # none is good enough: the longest
    again = parse_strategy(s.spec)
    again.load_state_dict(s.state_dict())
    assert again.k == 4 and again.spec == "measured:0.1,k=2,max=20"


def test_the_bias_it_measures_is_the_laboratorys():
    model = tiny_lm("gru").eval()
    inputs, targets = tiny_batch(T=8)
    probe = Batch(inputs, targets)
    ks = [1, 2, 4, 8]
    got = truncation_bias(model, probe, ks)
    lab = estimator_quality(model, inputs, targets, [f"regular:{k}" for k in ks])
    want = {int(r["spec"].split(":")[1]): r["relative_bias"] for r in lab["results"]}
    assert got == pytest.approx(want, rel=1e-9)
    assert got[8] < 1e-12 < got[1]  # one window of the whole probe is exact


@pytest.mark.parametrize("spec", ["adaptive:0.2,k=2,max=16,burnin=4", "measured:0.2,k=2,max=16"])
def test_the_trainer_rechooses_k_each_epoch_and_records_it(spec):
    trainer = make_trainer(spec, epochs=2)
    records = trainer.fit()
    for r in records:
        assert 1 <= r["adaptive_k"] <= 16 and r["adaptive_bias"] is not None
        assert r["adaptive_bias"] <= 0.2 or r["adaptive_k"] == 16
    steps = [r for r in trainer.metrics.records if r["event"] == "step"]
    for epoch, record in enumerate(records, start=1):
        lengths = [r["length"] for r in steps if r["epoch"] == epoch]
        assert set(lengths[:-1]) == {record["adaptive_k"]}  # the last window: what is left
