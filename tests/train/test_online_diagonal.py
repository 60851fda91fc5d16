"""Diagonal RTRL for element-wise recurrences (minGRU, minLSTM, LRU), float64: one layer
against full BPTT (autograd on the unrolled graph), a stack against a naive autograd
reference of Zucchet et al.'s per-layer gradient."""

import pytest
import torch

from tbptt.models import ModelConfig, RecurrentNet
from tbptt.train.objectives import LanguageModel, Regression
from tbptt.train.online import DiagonalRTRL, build_estimator, online_gradient
from tbptt.truncation import parse_strategy
from tests.reference import feature_batch, tiny_batch

KINDS = ["mingru", "minlstm", "lru"]


def _model(kind, layers=1, embedding=3, **extra):
    torch.manual_seed(1)
    cfg = ModelConfig(vocab_size=7, kind=kind, hidden_size=4, num_layers=layers,
                      embedding_size=embedding, dropout=0.0, **extra)  # fmt: skip
    return RecurrentNet(cfg).double()


def _flat(grads):
    return torch.cat([g.reshape(-1) for g in grads])


def _unrolled(model, inputs, targets, objective=None, resets=None, mask=None):
    objective = objective or LanguageModel()
    outputs, _ = model(inputs, model.initial_state(inputs.shape[1]), resets=resets)
    loss = objective.loss_sum(outputs, targets, mask) / (inputs.shape[0] * inputs.shape[1])
    return _flat(torch.autograd.grad(loss, list(model.parameters())))


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("embedding", [3, 0])
def test_rtrl_on_one_element_wise_layer_is_diagonal_and_exact(kind, embedding):
    model = _model(kind, embedding=embedding)
    assert isinstance(build_estimator(parse_strategy("rtrl"), model, LanguageModel()), DiagonalRTRL)
    inputs, targets = tiny_batch(T=7, seed=2)
    got = _flat(online_gradient(model, parse_strategy("rtrl"), inputs, targets))
    assert (got - _unrolled(model, inputs, targets)).abs().max() < 1e-10


@pytest.mark.parametrize("kind", KINDS)
def test_diagonal_rtrl_on_features_with_resets_and_a_loss_mask(kind):
    torch.manual_seed(0)
    cfg = ModelConfig(input_size=3, output_size=2, kind=kind, hidden_size=4, num_layers=1,
                      embedding_size=2, dropout=0.0)  # fmt: skip
    model = RecurrentNet(cfg).double()
    inputs, targets, resets, mask = feature_batch()
    marks = dict(resets=resets, mask=mask, objective=Regression())
    got = _flat(online_gradient(model, parse_strategy("rtrl"), inputs, targets, **marks))
    want = _unrolled(model, inputs, targets, Regression(), resets=resets, mask=mask)
    assert (got - want).abs().max() < 1e-10


def _per_layer_reference(model, inputs, targets):
    """Zucchet et al.'s gradient of a stack, by autograd: one pass per layer l, in which layer l
    (with the input adapter when l = 0) keeps its whole graph through time, the layers below
    run without a graph, and the layers above see their previous states as constants. Pass l
    gives layer l's parameters (its readout too), the adapter's (l = 0) and the head's."""
    rec, L = model.recurrent, model.recurrent.num_layers
    T, B = inputs.shape
    objective = LanguageModel()
    out = {}
    for l in range(L):
        hs = []
        for m in range(L):
            h0 = model.initial_state(B)[m]
            hs.append(torch.complex(h0[:, :4], h0[:, 4:]) if rec.kind == "lru" else h0)
        total = 0.0
        for t in range(T):
            x = model.embed(inputs[t : t + 1])  # (1, B, I)
            for m in range(L):
                with torch.set_grad_enabled(m >= l):
                    if m == l and l > 0:
                        x = x.detach()
                    a, b = rec.coefficients(x, m)
                    prev = hs[m] if m == l else hs[m].detach()
                    h = a * prev + b[0] if rec.kind == "lru" else a[0] * prev + b[0]
                    hs[m] = h
                    x = (
                        rec.layers[m].readout(h.unsqueeze(0), x)
                        if rec.kind == "lru"
                        else h.unsqueeze(0)
                    )
            total = total + objective.loss_sum(model.head(x), targets[t : t + 1])
        names = [n for n, _ in model.named_parameters()]
        mine = [n for n in names if n.startswith(f"recurrent.layers.{l}.")
                or (l == 0 and n.startswith("embedding.")) or (l == L - 1 and n.startswith("head."))]  # fmt: skip
        params = dict(model.named_parameters())
        grads = torch.autograd.grad(total / (T * B), [params[n] for n in mine], allow_unused=True)
        out.update(
            {n: torch.zeros_like(params[n]) if g is None else g for n, g in zip(mine, grads)}
        )
    return torch.cat([out[n].reshape(-1) for n, _ in model.named_parameters()])


@pytest.mark.parametrize("kind", KINDS)
def test_layer_rtrl_on_a_stack_is_zucchets_per_layer_gradient(kind):
    model = _model(kind, layers=2)
    inputs, targets = tiny_batch(T=6, seed=3)
    got = _flat(online_gradient(model, parse_strategy("layer-rtrl"), inputs, targets))
    assert (got - _per_layer_reference(model, inputs, targets)).abs().max() < 1e-10
    # not the full gradient: a layer's influence on the layers above through time is left out
    assert (got - _unrolled(model, inputs, targets)).abs().max() > 1e-6
    # rtrl on the stack stays exact (the torch.func engine)
    exact = _flat(online_gradient(model, parse_strategy("rtrl"), inputs, targets))
    assert (exact - _unrolled(model, inputs, targets)).abs().max() < 1e-10


def test_layer_rtrl_on_one_layer_is_rtrl_and_refuses_a_dense_cell():
    model = _model("mingru")
    inputs, targets = tiny_batch(T=5, seed=4)
    a = _flat(online_gradient(model, parse_strategy("layer-rtrl"), inputs, targets))
    assert (a - _unrolled(model, inputs, targets)).abs().max() < 1e-10
    from tbptt.errors import ConfigError
    from tests.reference import tiny_lm

    with pytest.raises(ConfigError, match="use rtrl"):
        build_estimator(parse_strategy("layer-rtrl"), tiny_lm("gru"), LanguageModel())
