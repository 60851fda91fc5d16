"""The generic engines' branches compute the same thing, float64: UORO's A s̃ from A itself
(a small state) and by reverse over reverse (a large one); RTRL's reverse products with
every stream in one batch, stream by stream, and in small chunks of cotangents."""

import pytest
import torch

import tbptt.train.online.rtrl as rtrl_module
import tbptt.train.online.uoro as uoro_module
from tbptt.train.objectives import LanguageModel
from tbptt.train.online import build_estimator
from tbptt.truncation import parse_strategy
from tests.reference import tiny_batch
from tests.train.test_online import DenseRNN, _user_lm


def _run(spec, model, inputs, targets, window):
    est = build_estimator(parse_strategy(spec), model, LanguageModel())
    est.start(model.initial_state(inputs.shape[1]))
    g = torch.Generator().manual_seed(0)
    grads = []
    for a in range(0, inputs.shape[0], window):
        grad, _ = est.rows(inputs[a : a + window], targets[a : a + window], generator=g)
        grads.append(grad)
    return torch.stack(grads), est._tensors()


def _same(a, b):
    (ga, ta), (gb, tb) = a, b
    assert (ga - gb).abs().max() < 1e-12 * max(1.0, ga.abs().max())
    for k in ta:
        assert (ta[k] - tb[k]).abs().max() < 1e-12 * max(1.0, ta[k].abs().max()), k


def test_uoro_forms_a_small_a_or_transposes_the_reverse_product_alike(monkeypatch):
    model = _user_lm(DenseRNN())
    inputs, targets = tiny_batch(T=6, B=3, seed=5)
    assert 3 * 4 <= uoro_module.DENSE_STATE  # the default takes A itself here
    dense = _run("uoro", model, inputs, targets, 1)
    monkeypatch.setattr(uoro_module, "DENSE_STATE", 0)
    _same(dense, _run("uoro", model, inputs, targets, 1))
    assert dense[0].abs().max() > 0 and dense[1]["theta_tilde"].abs().max() > 0


@pytest.mark.parametrize("chunk_values", [150, 40])
def test_rtrl_reverse_products_in_one_batch_stream_by_stream_or_in_chunks(
    monkeypatch, chunk_values
):
    model = _user_lm(DenseRNN())
    inputs, targets = tiny_batch(T=6, B=3, seed=5)
    one_batch = _run("rtrl", model, inputs, targets, 3)
    # 150: B² S² = 144 still fits (one batch, chunks of 150 // (P + U B S) cotangents);
    # 40: stream by stream, a few cotangents at a time
    monkeypatch.setattr(rtrl_module, "CHUNK_VALUES", chunk_values)
    _same(one_batch, _run("rtrl", model, inputs, targets, 3))
