"""Item 1: the linear RNN's closed-form gradients against autograd and finite differences (float64)."""

import pytest
import torch

from tbptt.analysis import (
    LinearRNN,
    linear_rnn_forward,
    linear_rnn_from_model,
    linear_rnn_gradients,
    linear_rnn_loss,
    matrix_with_spectral_radius,
)
from tbptt.errors import ConfigError
from tbptt.train import sequence_gradient
from tbptt.truncation import FullBPTT
from tests.reference import tiny_batch, tiny_lm

NAMES = ["w_hx", "w_hh", "w_qh", "b_h", "b_q"]


def _problem(seed, T, loss, rho=None):
    g = torch.Generator().manual_seed(seed)
    B, I, H, Q = (int(v) for v in torch.randint(1, 7, (4,), generator=g))
    w_hh = matrix_with_spectral_radius(H, rho, generator=g) if rho else None
    params = LinearRNN.random(I, H, Q, generator=g, w_hh=w_hh)
    inputs = torch.randn(T, B, I, generator=g, dtype=torch.float64)
    h0 = torch.randn(B, H, generator=g, dtype=torch.float64)  # h_0 != 0
    if loss == "cross_entropy":
        targets = torch.randint(0, Q, (T, B), generator=g)
    else:
        targets = torch.randn(T, B, Q, generator=g, dtype=torch.float64)
    return params, inputs, targets, h0


def _autograd(params, inputs, targets, h0, loss):
    """Autograd through a naive loop written here, keeping every h_t to read dL/dh_t."""
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.tensors().items()}
    p = LinearRNN(**leaves)
    hs, h = [], h0
    for x in inputs:
        h = x @ p.w_hx.T + h @ p.w_hh.T + p.b_h
        h.retain_grad()
        hs.append(h)
    outputs = torch.stack(hs) @ p.w_qh.T + p.b_q  # (T, B, Q)
    value = linear_rnn_loss(outputs, targets, loss)
    value.backward()
    grads = {k: v.grad for k, v in leaves.items()}
    grads["hidden"] = torch.stack([h.grad for h in hs])
    return grads, value.detach()


@pytest.mark.parametrize("loss", ["cross_entropy", "squared"])
@pytest.mark.parametrize("T", [1, 2, 7, 23, 50])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_closed_form_equals_autograd(seed, T, loss):
    params, inputs, targets, h0 = _problem(seed, T, loss)
    closed = linear_rnn_gradients(params, inputs, targets, h0, loss=loss)
    auto, value = _autograd(params, inputs, targets, h0, loss)
    # 1e-10 absolute, relative to the gradient's size where a radius > 1 makes it large
    for name in [*NAMES, "hidden"]:
        scale = max(1.0, float(auto[name].abs().max()))
        torch.testing.assert_close(closed[name], auto[name], rtol=0, atol=1e-10 * scale)
    torch.testing.assert_close(closed["loss"], value, rtol=0, atol=0)


@pytest.mark.parametrize("rho", [0.9, 1.1])
def test_closed_form_equals_autograd_at_prescribed_radius_over_50_steps(rho):
    params, inputs, targets, h0 = _problem(3, 50, "cross_entropy", rho=rho)
    closed = linear_rnn_gradients(params, inputs, targets, h0)
    auto, _ = _autograd(params, inputs, targets, h0, "cross_entropy")
    for name in NAMES:
        scale = max(1.0, float(auto[name].abs().max()))
        torch.testing.assert_close(closed[name], auto[name], rtol=0, atol=1e-10 * scale)


def test_closed_form_equals_finite_differences():
    params, inputs, targets, h0 = _problem(4, 9, "cross_entropy")
    closed = linear_rnn_gradients(params, inputs, targets, h0)
    eps = 1e-6
    for name, tensor in params.tensors().items():
        for index in [(0,) * tensor.dim(), tuple(s - 1 for s in tensor.shape)]:
            old = float(tensor[index])
            tensor[index] = old + eps
            up = linear_rnn_loss(
                linear_rnn_forward(params, inputs, h0)[1], targets, "cross_entropy"
            )
            tensor[index] = old - eps
            down = linear_rnn_loss(
                linear_rnn_forward(params, inputs, h0)[1], targets, "cross_entropy"
            )
            tensor[index] = old
            fd = float(up - down) / (2 * eps)
            assert float(closed[name][index]) == pytest.approx(fd, abs=1e-8), (name, index)


def test_closed_form_equals_the_library_gradient_of_the_linear_language_model():
    model = tiny_lm("linear", embedding=0)
    inputs, targets = tiny_batch(T=11)
    h0 = torch.randn(1, 3, 4, dtype=torch.float64)
    library = dict(
        zip(
            [n for n, _ in model.named_parameters()],
            sequence_gradient(model, FullBPTT(), inputs, targets, state=h0),
        )
    )
    closed = linear_rnn_gradients(linear_rnn_from_model(model), model.embed(inputs), targets, h0[0])
    for a, b in [
        ("w_hx", "recurrent.core.weight_ih_l0"),
        ("w_hh", "recurrent.core.weight_hh_l0"),
        ("b_h", "recurrent.core.bias_ih_l0"),
        ("b_h", "recurrent.core.bias_hh_l0"),
        ("w_qh", "head.weight"),
        ("b_q", "head.bias"),
    ]:
        torch.testing.assert_close(closed[a], library[b], rtol=0, atol=1e-12)


def test_closed_forms_refuse_other_models():
    with pytest.raises(ConfigError, match="linear RNN with one-hot"):
        linear_rnn_from_model(tiny_lm("gru", embedding=0))
    with pytest.raises(ConfigError, match="linear RNN with one-hot"):
        linear_rnn_from_model(tiny_lm("linear", embedding=3))


@pytest.mark.parametrize("rho", [0.5, 0.9, 1.1])
def test_prescribed_matrix_has_that_radius_and_is_not_normal(rho):
    w = matrix_with_spectral_radius(6, rho, generator=torch.Generator().manual_seed(0))
    assert torch.linalg.eigvals(w).abs().max().item() == pytest.approx(rho, rel=1e-10)
    assert (w @ w.T - w.T @ w).abs().max() > 1e-3  # non-normal: ||W^k|| != rho^k
    assert torch.linalg.matrix_norm(w, ord=2) > rho * 1.01
