"""RTRL's closed-form engine for the built-in cells against autograd on the unrolled graph
(float64): every kind, stacks, token / one-hot / feature inputs, resets, dropout masks."""

import pytest
import torch

from tbptt.models import ModelConfig, RecurrentNet
from tbptt.train.objectives import LanguageModel, Regression
from tbptt.train.online import RTRL, online_gradient
from tbptt.train.online.dense import DenseCells
from tbptt.truncation import parse_strategy
from tests.reference import feature_batch, reference_loss, tiny_batch, tiny_lm


def _flat(grads):
    return torch.cat([g.reshape(-1) for g in grads])


def _unrolled(model, inputs, targets, objective, resets=None, mask=None):
    """Autograd on the whole sequence's graph (the model's own forward, every gate 1)."""
    outputs, _ = model(inputs, model.initial_state(inputs.shape[1]), resets=resets)
    loss = objective.loss_sum(outputs, targets, mask) / (inputs.shape[0] * inputs.shape[1])
    return _flat(torch.autograd.grad(loss, list(model.parameters())))


def _rtrl(model, inputs, targets, objective=None, **marks):
    est = RTRL(model, objective or LanguageModel())
    assert isinstance(est.engine, DenseCells)  # the closed form, not torch.func
    return _flat(
        online_gradient(
            model, parse_strategy("rtrl"), inputs, targets, objective=objective, **marks
        )
    )


@pytest.mark.parametrize(
    "kind, layers", [("rnn", 1), ("relu", 1), ("linear", 2), ("gru", 3), ("lstm", 1), ("lstm", 3)]
)
@pytest.mark.parametrize("embedding", [3, 0])  # an embedding, or one-hot inputs
def test_closed_form_rtrl_equals_the_unrolled_gradient(kind, layers, embedding):
    model = tiny_lm(kind, layers=layers, embedding=embedding, seed=4)
    inputs, targets = tiny_batch(T=6, seed=5)
    want = _flat(
        torch.autograd.grad(reference_loss(model, inputs, targets), list(model.parameters()))
    )  # a naive loop over ATen's own cells
    assert (_rtrl(model, inputs, targets) - want).abs().max() < 1e-12


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("embedding", [2, 0])  # a linear input projection, or the features
def test_closed_form_rtrl_on_features_with_resets_and_a_loss_mask(kind, embedding):
    torch.manual_seed(0)
    cfg = ModelConfig(input_size=3, output_size=2, kind=kind, hidden_size=4, num_layers=2,
                      embedding_size=embedding, dropout=0.0)  # fmt: skip
    model = RecurrentNet(cfg).double()
    inputs, targets, resets, mask = feature_batch()
    want = _unrolled(model, inputs, targets, Regression(), resets=resets, mask=mask)
    got = _rtrl(model, inputs, targets, Regression(), resets=resets, mask=mask)
    assert (got - want).abs().max() < 1e-12


def test_closed_form_and_torch_func_engines_agree_step_by_step():
    model = tiny_lm("lstm", layers=2, seed=6)
    inputs, targets = tiny_batch(T=4, seed=7)
    fast, slow = RTRL(model, LanguageModel()), RTRL(model, LanguageModel(), engine="func")
    for est in (fast, slow):
        est.start(model.initial_state(3))
    for t in range(4):
        (lf, gf), (ls, gs) = (e.step(inputs[t : t + 1], targets[t : t + 1]) for e in (fast, slow))
        assert abs(float(lf - ls)) < 1e-12 and (gf - gs).abs().max() < 1e-12
        P_s = fast.J.shape[2]
        assert (fast.J - slow.J[:P_s].permute(1, 2, 0)).abs().max() < 1e-12  # (B, S, P_s)
        assert slow.J[P_s:].abs().max() == 0  # the head's columns: the state never sees them


def test_closed_form_rtrl_in_training_mode_uses_the_dropout_masks_it_draws(monkeypatch):
    """Dropout on the embedded inputs and between layers: the gradient of the masked step
    (the masks are recorded, then a naive loop replays them under autograd)."""
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=7, kind="gru", hidden_size=4, num_layers=2, embedding_size=3,
                      dropout=0.3, output_dropout=0.0)  # fmt: skip
    model = RecurrentNet(cfg).double().train()
    inputs, targets = tiny_batch(T=5, seed=8)
    masks = []
    draw = DenseCells._dropout

    def record(self, x, rate):
        m = draw(self, x, rate)
        masks.append(m)
        return m

    monkeypatch.setattr(DenseCells, "_dropout", record)
    got = _flat(online_gradient(model, parse_strategy("rtrl"), inputs, targets))
    assert len(masks) == 2 * 5 and all(m is not None for m in masks)
    # the replay: embedding -> mask -> GRU cell -> mask -> GRU cell -> head, per step
    rec = model.recurrent.core
    h = [torch.zeros(3, 4, dtype=torch.float64) for _ in range(2)]
    loss = 0.0
    for t in range(5):
        x = model.embedding(inputs[t]) * masks[2 * t]
        h[0] = torch._VF.gru_cell(
            x, h[0], rec.weight_ih_l0, rec.weight_hh_l0, rec.bias_ih_l0, rec.bias_hh_l0
        )
        x = h[0] * masks[2 * t + 1]
        h[1] = torch._VF.gru_cell(
            x, h[1], rec.weight_ih_l1, rec.weight_hh_l1, rec.bias_ih_l1, rec.bias_hh_l1
        )
        loss = loss + torch.nn.functional.cross_entropy(
            model.head(h[1]), targets[t], reduction="sum"
        )
    want = _flat(torch.autograd.grad(loss / 15, list(model.parameters())))
    assert (got - want).abs().max() < 1e-12
