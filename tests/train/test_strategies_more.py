"""TBPTT(k1, k2), variable-length BPTT and checkpointed full BPTT against independent references."""

import math

import pytest
import torch
import torch.nn.functional as F

from tbptt.models import ModelConfig, RecurrentLM
from tbptt.train import sequence_gradient
from tbptt.train.memory import SavedTensorBytes
from tbptt.truncation import (
    FullBPTT,
    K1K2Truncation,
    RegularTruncation,
    VariableLength,
    parse_strategy,
)
from tests.reference import _cell, reference_loss, tiny_batch, tiny_lm


def _assert_all_close(a, b, atol=1e-10):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=0, atol=atol)


def _max_diff(a, b):
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def naive_k1k2_loss(model, inputs, targets, k1, k2):
    """TBPTT(k1, k2) written out: for each k1-step window [s, e), the losses of steps
    s..e-1 backpropagated to the state entering step max(0, s - (k2 - k1)), taken
    (detached) from a plain forward pass over the whole sequence. Mean over T * B."""
    rec = model.recurrent
    kind, L = rec.kind, rec.num_layers
    T, B = inputs.shape
    weights = [
        tuple(
            getattr(rec.core, f"{n}_l{layer}")
            for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        )
        for layer in range(L)
    ]
    x_all = model.embed(inputs)

    def step(t, hs, cs):
        x = x_all[t]
        for layer in range(L):
            hs[layer], cs[layer] = _cell(kind, x, hs[layer], cs[layer], *weights[layer])
            x = hs[layer]
        return model.head(x)

    zeros = [torch.zeros(B, rec.hidden_size, dtype=torch.float64) for _ in range(L)]
    states = []  # states[t] = (hs, cs) entering step t, no graph
    hs, cs = list(zeros), [z.clone() if kind == "lstm" else None for z in zeros]
    with torch.no_grad():
        for t in range(T):
            states.append((list(hs), list(cs)))
            step(t, hs, cs)
    total = 0.0
    for s in range(0, T, k1):
        e = min(T, s + k1)
        a = max(0, s - (k2 - k1))
        hs = [h.detach() for h in states[a][0]]
        cs = [c.detach() if c is not None else None for c in states[a][1]]
        for t in range(a, e):
            logits = step(t, hs, cs)
            if t >= s:
                total = total + F.cross_entropy(logits, targets[t], reduction="sum")
    return total / (T * B)


# -- TBPTT(k1, k2) ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("k", [1, 3, 4])
def test_k1k2_with_k1_equal_k2_is_regular(kind, k):
    model = tiny_lm(kind, layers=2)
    inputs, targets = tiny_batch(T=10)
    got = sequence_gradient(model, parse_strategy(f"k1k2:{k},{k}"), inputs, targets)
    _assert_all_close(got, sequence_gradient(model, RegularTruncation(k), inputs, targets))
    ref = reference_loss(model, inputs, targets, cuts=set(range(0, 10, k)))
    _assert_all_close(got, torch.autograd.grad(ref, list(model.parameters())))


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_k1k2_over_the_whole_sequence_is_full(kind):
    model = tiny_lm(kind, layers=2)
    inputs, targets = tiny_batch(T=9)
    got = sequence_gradient(model, K1K2Truncation(9, 9), inputs, targets)
    _assert_all_close(got, sequence_gradient(model, FullBPTT(), inputs, targets))
    ref = reference_loss(model, inputs, targets)
    _assert_all_close(got, torch.autograd.grad(ref, list(model.parameters())))


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("k1, k2", [(1, 3), (2, 5), (3, 4), (2, 6), (4, 11)])
def test_k1k2_equals_the_naive_reference(kind, layers, k1, k2):
    model = tiny_lm(kind, layers=layers)
    inputs, targets = tiny_batch(T=11)
    got = sequence_gradient(model, K1K2Truncation(k1, k2), inputs, targets)
    ref = naive_k1k2_loss(model, inputs, targets, k1, k2)
    _assert_all_close(got, torch.autograd.grad(ref, list(model.parameters())))
    # and the lookback matters: it is neither regular:k1 nor full
    assert _max_diff(got, sequence_gradient(model, RegularTruncation(k1), inputs, targets)) > 1e-6
    if k2 < 11:
        assert _max_diff(got, sequence_gradient(model, FullBPTT(), inputs, targets)) > 1e-6


def test_k1k2_on_the_step_path_with_a_linear_rnn():
    model = tiny_lm("linear", layers=2)
    inputs, targets = tiny_batch(T=10)
    got = sequence_gradient(model, K1K2Truncation(3, 7), inputs, targets)
    # the linear RNN has no fused kernel; the reference's cell covers it
    ref = naive_k1k2_loss(model, inputs, targets, 3, 7)
    _assert_all_close(got, torch.autograd.grad(ref, list(model.parameters())))


def test_k1k2_plans_a_constant_lookback_and_rejects_bad_lengths():
    s = K1K2Truncation(10, 35)
    w = s.plan(7, torch.Generator())
    assert (w.length, w.lookback, w.gates) == (7, 25, None)
    assert s.reference_length(1000) == 10
    for spec in ("k1k2:5,4", "k1k2:0,3", "k1k2:5", "k1k2:a,3"):
        with pytest.raises(Exception, match="k1k2"):
            parse_strategy(spec)


# -- variable length -------------------------------------------------------------------


def test_variable_length_sampler_statistics_match_awd_lstm():
    s = VariableLength(70)
    g = torch.Generator().manual_seed(0)
    n = 20000
    lengths = torch.tensor([s.sample_length(g) for _ in range(n)], dtype=torch.float64)
    # closed form: mixture 0.95 N(70, 25) + 0.05 N(35, 25), truncated by int() (-0.5 on average)
    mean = 0.95 * 70 + 0.05 * 35 - 0.5
    sd = math.sqrt(25 + 0.95 * 0.05 * 35**2 + 1 / 12)
    assert abs(lengths.mean().item() - mean) < 4 * sd / math.sqrt(n)  # 67.75
    assert abs(lengths.std().item() - sd) < 0.15  # 9.13
    assert abs((lengths < 52).double().mean().item() - 0.05) < 0.006  # the K/2 branch
    assert lengths.min().item() >= 5


def test_variable_windows_scale_the_learning_rate_and_fit_the_stream():
    s = parse_strategy("variable:8")
    g = torch.Generator().manual_seed(3)
    total, pos = 200, 0
    while pos < total:
        w = s.plan(total - pos, g)
        assert 1 <= w.length <= total - pos
        assert w.lr_scale == pytest.approx(w.length / 8)
        assert w.loss_length == w.length and w.gates is None and not w.reset
        pos += w.length
    assert VariableLength(3, sd=0.0).plan(100, torch.Generator()).length == 5  # the floor


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_variable_gradient_equals_naive_loop_with_the_same_cuts(kind):
    model = tiny_lm(kind, layers=2)
    T = 30
    inputs, targets = tiny_batch(T=T)
    strategy = VariableLength(6, sd=3.0, min_length=2)
    g = torch.Generator().manual_seed(1)
    cuts, pos = set(), 0
    while pos < T:
        cuts.add(pos)
        pos += strategy.plan(T - pos, g).length
    assert len(cuts) > 3
    got = sequence_gradient(
        model, strategy, inputs, targets, generator=torch.Generator().manual_seed(1)
    )
    ref = reference_loss(model, inputs, targets, cuts=cuts)
    _assert_all_close(got, torch.autograd.grad(ref, list(model.parameters())))


# -- checkpointed full BPTT ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gru", "lstm", "linear"])
@pytest.mark.parametrize("spec", ["full:checkpoint", "full:checkpoint=1", "full:checkpoint=4"])
def test_checkpointed_full_equals_full_in_float64(kind, spec):
    model = tiny_lm(kind, layers=2)
    inputs, targets = tiny_batch(T=13)
    got = sequence_gradient(model, parse_strategy(spec), inputs, targets)
    _assert_all_close(got, sequence_gradient(model, FullBPTT(), inputs, targets), atol=1e-12)
    assert max(g.abs().max().item() for g in got) > 1e-3  # a real gradient, not zeros


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_checkpointed_full_equals_full_in_float32(kind):
    torch.manual_seed(0)
    model = RecurrentLM(
        ModelConfig(
            vocab_size=11, kind=kind, hidden_size=8, num_layers=2, embedding_size=5, dropout=0.0
        )
    )
    inputs, targets = tiny_batch(T=36, B=3, vocab=11)
    plain = sequence_gradient(model, parse_strategy("full"), inputs, targets)
    ckpt = sequence_gradient(model, parse_strategy("full:checkpoint"), inputs, targets)
    _assert_all_close(ckpt, plain, atol=1e-6)
    assert max(g.abs().max().item() for g in ckpt) > 1e-3


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_checkpointed_sequences_equal_plain_sequences(kind):
    model = tiny_lm(kind, layers=2)
    inputs, targets = tiny_batch(T=14)
    plain = sequence_gradient(model, parse_strategy("full:5"), inputs, targets)
    ckpt = sequence_gradient(model, parse_strategy("full:5,checkpoint"), inputs, targets)
    _assert_all_close(ckpt, plain, atol=1e-12)


def test_checkpointed_windows_plan_sqrt_segments():
    w = parse_strategy("full:checkpoint").plan(100, torch.Generator())
    assert (w.length, w.checkpoint) == (100, 10)
    w = parse_strategy("full:30,checkpoint").plan(100, torch.Generator())
    assert (w.length, w.checkpoint, w.reset) == (30, 6, True)
    assert parse_strategy("full").plan(100, torch.Generator()).checkpoint == 0
    for spec in ("full:checkpoint=0", "full:3,4", "full:checkpoint,checkpoint=3"):
        with pytest.raises(Exception, match="full"):
            parse_strategy(spec)


def test_checkpointed_memory_grows_sublinearly():
    torch.manual_seed(0)
    model = RecurrentLM(
        ModelConfig(
            vocab_size=7, kind="gru", hidden_size=8, num_layers=1, embedding_size=4, dropout=0.0
        )
    )
    peaks = {}
    for T in (36, 144, 576):
        inputs, targets = tiny_batch(T=T, B=2)
        for spec in ("full", "full:checkpoint"):
            meter = SavedTensorBytes()
            with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
                sequence_gradient(model, parse_strategy(spec), inputs, targets)
            assert meter.live == 0  # everything saved was released
            peaks[spec, T] = meter.peak
    plain = [peaks["full", T] for T in (36, 144, 576)]
    ckpt = [peaks["full:checkpoint", T] for T in (36, 144, 576)]
    # plain grows about linearly (x4 per x4 in T), checkpointed about as sqrt(T) (x2)
    assert plain[2] / plain[1] > 3.0 and plain[1] / plain[0] > 2.5
    assert ckpt[2] / ckpt[1] < 2.5
    assert ckpt[2] / ckpt[0] < 0.5 * plain[2] / plain[0]
    assert ckpt[2] < plain[2] / 5


def test_variable_window_sgd_step_weighs_every_token_like_the_other_strategies():
    """AWD-LSTM's rule (mean over the window's own length, learning rate times length / K)
    takes the same SGD step as the sum over tokens divided by B * K."""
    from tbptt.train import TrainConfig, Trainer
    from tbptt.truncation import Window

    tokens = torch.randint(0, 7, (60,), generator=torch.Generator().manual_seed(0))
    inputs, targets = tokens[:50].view(2, 25).t()[:5], tokens[1:51].view(2, 25).t()[:5]
    updates = []
    for spec, window in [
        ("variable:10", Window(5, lr_scale=0.5, loss_length=5)),
        ("regular:10", Window(5)),
    ]:
        model = tiny_lm("gru")
        before = [p.detach().clone() for p in model.parameters()]
        config = TrainConfig(
            strategy=spec, batch_size=2, optimizer="sgd", lr=0.3, lr_schedule="constant", clip=0
        )
        trainer = Trainer(model, tokens, tokens[:0], config)
        record = trainer.train_step(inputs, targets, window, True)
        assert record["lr"] == pytest.approx(0.3 * window.lr_scale)
        updates.append([b - p.detach() for b, p in zip(before, model.parameters())])
    model = tiny_lm("gru")
    logits, _ = model(inputs)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="sum") / (2 * 10)
    expected = [0.3 * g for g in torch.autograd.grad(loss, list(model.parameters()))]
    _assert_all_close(updates[0], expected, atol=1e-12)
    _assert_all_close(updates[1], expected, atol=1e-12)
