"""Zoneout: z = 0 is the plain cell, z = 1 freezes the state, the keep rate is z,
evaluation uses the expectation (against a naive loop over ATen's cells)."""

import pytest
import torch

from tbptt.errors import ConfigError
from tbptt.models import ModelConfig, Recurrent, RecurrentLM
from tbptt.models.zoneout import zoneout_forward
from tbptt.train import sequence_gradient
from tbptt.truncation import parse_strategy
from tests.reference import _cell, tiny_batch


def _rec(kind, layers=2, hidden=4, inputs=3, seed=0):
    torch.manual_seed(seed)
    return Recurrent(kind, input_size=inputs, hidden_size=hidden, num_layers=layers).double()


def _state(rec, B, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = (rec.num_layers, B, rec.hidden_size)
    h = torch.randn(shape, generator=g, dtype=torch.float64)
    return (h, torch.randn(shape, generator=g, dtype=torch.float64)) if rec.kind == "lstm" else h


def _flat(state):
    return torch.cat([s.flatten() for s in state]) if isinstance(state, tuple) else state.flatten()


@pytest.mark.parametrize("kind", ["gru", "lstm", "rnn"])
@pytest.mark.parametrize("training", [True, False])
def test_rate_zero_is_the_plain_cell_values_and_gradients(kind, training):
    rec = _rec(kind)
    rec.train(training)
    x = torch.randn(7, 3, 3, dtype=torch.float64, requires_grad=True)
    gates = [1.0, 1.0, 0.5, 1.0, 0.0, 2.0, 1.0]
    resets = torch.zeros(7, 3, dtype=torch.bool)
    resets[3, 1] = True
    state = _state(rec, 3)
    out_z, st_z = zoneout_forward(rec, x, state, gates, resets=resets, hidden_rate=0.0)
    out, st = rec(x, state, gates, resets=resets, path="steps")
    torch.testing.assert_close(out_z, out, rtol=0, atol=1e-12)
    torch.testing.assert_close(_flat(st_z), _flat(st), rtol=0, atol=1e-12)
    loss_z = out_z.pow(2).sum() + _flat(st_z).sum()
    loss = out.pow(2).sum() + _flat(st).sum()
    params = [x, *rec.parameters()]
    for a, b in zip(torch.autograd.grad(loss_z, params), torch.autograd.grad(loss, params)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("training", [True, False])
def test_rate_one_freezes_the_state(kind, training):
    rec = _rec(kind)
    rec.train(training)
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    state = _state(rec, 3)
    h0 = state[0] if kind == "lstm" else state
    out, final = zoneout_forward(rec, x, state, hidden_rate=1.0, cell_rate=1.0)
    for t in range(6):
        torch.testing.assert_close(out[t], h0[-1], rtol=0, atol=0)
    torch.testing.assert_close(_flat(final), _flat(state), rtol=0, atol=0)


@pytest.mark.parametrize("kind, rates", [("gru", (0.3, None)), ("lstm", (0.2, 0.6))])
def test_empirical_keep_rate_is_z(kind, rates):
    z_h, z_c = rates
    rec = Recurrent(kind, input_size=3, hidden_size=16, num_layers=1)
    rec.train()
    torch.manual_seed(0)
    T, B = 60, 8
    x = torch.randn(T, B, 3)
    state = rec.initial_state(B)
    kept_h = kept_c = 0
    for t in range(T):  # one step at a time, to see the state before and after each step
        _, new = zoneout_forward(rec, x[t : t + 1], state, hidden_rate=z_h, cell_rate=z_c)
        if kind == "lstm":
            kept_h += (new[0] == state[0]).sum().item()
            kept_c += (new[1] == state[1]).sum().item()
        else:
            kept_h += (new == state).sum().item()
        state = new
    n = T * B * 16
    assert abs(kept_h / n - z_h) < 0.03  # about 5 standard errors
    if kind == "lstm":
        assert abs(kept_c / n - z_c) < 0.03


def _naive_expectation(rec, x, state, z_h, z_c):
    """Evaluation-time zoneout written out with ATen's cells: the expectation of the masks."""
    lstm = rec.kind == "lstm"
    hs = list((state[0] if lstm else state).unbind(0))
    cs = list(state[1].unbind(0)) if lstm else [None] * rec.num_layers
    outs = []
    for t in range(x.shape[0]):
        inp = x[t]
        for layer in range(rec.num_layers):
            w = tuple(
                getattr(rec.core, f"{n}_l{layer}")
                for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            )
            h_new, c_new = _cell(rec.kind, inp, hs[layer], cs[layer], *w)
            if lstm:
                cs[layer] = z_c * cs[layer] + (1 - z_c) * c_new
            hs[layer] = z_h * hs[layer] + (1 - z_h) * h_new
            inp = hs[layer]
        outs.append(inp)
    return torch.stack(outs)


@pytest.mark.parametrize("kind, rates", [("gru", (0.3, None)), ("lstm", (0.25, 0.6))])
def test_evaluation_uses_the_expectation(kind, rates):
    rec = _rec(kind)
    rec.eval()
    x = torch.randn(6, 3, 3, dtype=torch.float64)
    state = _state(rec, 3)
    out, _ = zoneout_forward(rec, x, state, hidden_rate=rates[0], cell_rate=rates[1])
    z_c = rates[0] if rates[1] is None else rates[1]
    ref = _naive_expectation(rec, x, state, rates[0], z_c)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


def test_lstm_rates_are_separate():
    rec = _rec("lstm", layers=1)
    rec.train()
    x = torch.randn(5, 3, 3, dtype=torch.float64)
    state = _state(rec, 3)
    _, (h, c) = zoneout_forward(rec, x, state, hidden_rate=1.0, cell_rate=0.0)
    assert torch.equal(h, state[0]) and not torch.equal(c, state[1])
    _, (h, c) = zoneout_forward(rec, x, state, hidden_rate=0.0, cell_rate=1.0)
    assert torch.equal(c, state[1]) and not torch.equal(h, state[0])


def test_language_model_chooses_zoneout_and_checks_rates():
    cfg = dict(vocab_size=7, kind="lstm", hidden_size=4, num_layers=1, embedding_size=3)
    with pytest.raises(ConfigError, match="zoneout"):
        RecurrentLM(ModelConfig(**cfg, zoneout=1.5))
    with pytest.raises(ConfigError, match="cell zoneout"):
        RecurrentLM(ModelConfig(**cfg, zoneout=0.1, zoneout_cell=-0.1))
    torch.manual_seed(0)
    plain = RecurrentLM(ModelConfig(**cfg, dropout=0.0))
    torch.manual_seed(0)
    zoned = RecurrentLM(ModelConfig(**cfg, dropout=0.0, zoneout=0.5))
    inputs, _ = tiny_batch(T=8)
    zoned.train()
    assert not torch.allclose(zoned(inputs)[0], plain(inputs)[0])
    zoned_frozen = RecurrentLM(ModelConfig(**cfg, dropout=0.0, zoneout=1.0))
    zoned_frozen.load_state_dict(plain.state_dict())  # the same parameter names
    logits, _ = zoned_frozen(inputs)
    bias_only = zoned_frozen.head(torch.zeros(4))
    torch.testing.assert_close(logits, bias_only.expand_as(logits))  # the state never moves


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_checkpointed_full_replays_the_masks(kind):
    torch.manual_seed(0)
    model = RecurrentLM(
        ModelConfig(
            vocab_size=7,
            kind=kind,
            hidden_size=4,
            num_layers=2,
            embedding_size=3,
            dropout=0.2,
            zoneout=0.3,
        )
    ).double()
    model.train()
    T, B = 12, 3
    inputs, targets = tiny_batch(T=T, B=B)
    # The same forward without checkpointing: 4-step calls with the state carried
    # (attached), drawing the random masks in the same order as the checkpointed run.
    torch.manual_seed(5)
    state, loss = None, 0.0
    for a in range(0, T, 4):
        logits, state = model(inputs[a : a + 4], state)
        loss = loss + torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), targets[a : a + 4].flatten(), reduction="sum"
        )
    expected = torch.autograd.grad(loss / (T * B), list(model.parameters()))
    torch.manual_seed(5)
    got = sequence_gradient(model, parse_strategy("full:checkpoint=4"), inputs, targets)
    # Recomputation during backward must use the masks of the forward, or this differs.
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
