"""Item 2: exact ||dh_T/dh_t|| for any model, and the linear RNN's rate = log of its spectral radius."""

import math

import pytest
import torch

from tbptt.analysis import (
    fit_rate,
    jacobian_norms,
    matrix_with_spectral_radius,
    recurrent_blocks,
    reference_radius,
    spectrum,
    state_jacobians,
    state_vector,
    vector_state,
)
from tbptt.errors import ConfigError
from tbptt.models import ModelConfig, RecurrentLM
from tests.reference import tiny_batch, tiny_lm

KINDS = ["gru", "lstm", "rnn", "linear"]


def _run(model, inputs, flat, like):
    """The state after running ``inputs`` from the flat state: the reference map s_t -> s_T."""
    _, state = model.recurrent(model.embed(inputs), vector_state(flat, like))
    return state_vector(state)


@pytest.mark.parametrize("kind", KINDS)
def test_norms_equal_autograd_jacobians_of_the_unrolled_map(kind):
    model = tiny_lm(kind, layers=2).eval()
    T = 6
    inputs, _ = tiny_batch(T=T)
    g = torch.Generator().manual_seed(3)
    like = model.initial_state(3)
    start = torch.randn(3, state_vector(like).shape[1], generator=g, dtype=torch.float64) * 0.5
    got = jacobian_norms(model, inputs, state=vector_state(start, like))
    got_fro = jacobian_norms(model, inputs, state=vector_state(start, like), norm="frobenius")
    # reference: the state s_{T-k} by running forward, then the Jacobian of s_{T-k} -> s_T
    S = start.shape[1]
    assert got.log_norms[:, 0].tolist() == [0.0] * 3  # k = 0: the identity
    assert got_fro.log_norms[:, 0].tolist() == pytest.approx([0.5 * math.log(S)] * 3, abs=1e-14)
    for k in range(1, T + 1):
        s = start if T - k == 0 else _run(model, inputs[: T - k], start, like).detach()
        J = torch.autograd.functional.jacobian(
            lambda f, k=k: _run(model, inputs[T - k :], f, like), s
        )
        for b in range(3):
            jb = J[b, :, b, :]  # streams do not interact: the diagonal block is stream b's
            assert float(got.log_norms[b, k]) == pytest.approx(
                math.log(torch.linalg.matrix_norm(jb, ord=2)), abs=1e-8
            )
            assert float(got_fro.log_norms[b, k]) == pytest.approx(
                math.log(torch.linalg.matrix_norm(jb)), abs=1e-10
            )


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_one_step_jacobians_equal_autograd(kind):
    model = tiny_lm(kind, layers=2).eval()
    inputs, _ = tiny_batch(T=3)
    jacobians, final = state_jacobians(model, inputs)
    like = model.initial_state(3)
    s = state_vector(like)
    for t in range(3):
        J = torch.autograd.functional.jacobian(
            lambda f, t=t: _run(model, inputs[t : t + 1], f, like), s
        )
        for b in range(3):
            torch.testing.assert_close(jacobians[t][b], J[b, :, b, :], rtol=0, atol=1e-12)
        s = _run(model, inputs[t : t + 1], s, like).detach()
    torch.testing.assert_close(state_vector(final), s, rtol=0, atol=1e-12)


def _linear_lm(w_hh, vocab=7):
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=vocab,
        kind="linear",
        hidden_size=w_hh.shape[0],
        num_layers=1,
        embedding_size=0,
        dropout=0.0,
    )
    model = RecurrentLM(config).double().eval()
    with torch.no_grad():
        model.recurrent.core.weight_hh_l0.copy_(w_hh)
    return model


@pytest.mark.parametrize("rho", [0.9, 1.1])
@pytest.mark.parametrize("seed", [0, 1])
def test_linear_rnn_log_slope_matches_log_rho(rho, seed, time_machine):
    from tbptt.analysis import data_windows
    from tbptt.data import load_corpus, prepare_text

    data = prepare_text(load_corpus(time_machine)[0][:20000])
    g = torch.Generator().manual_seed(seed)
    model = _linear_lm(matrix_with_spectral_radius(8, rho, generator=g), len(data.vocab))
    _, inputs, _ = data_windows(data.train, length=100, streams=2)  # real text windows
    profile = jacobian_norms(model, inputs)
    fit = profile.fit()
    assert fit["slope"] == pytest.approx(math.log(rho), rel=0.02)
    assert reference_radius(model) == pytest.approx(rho, rel=1e-10)
    # the transient is real: the first steps do not follow rho^k (W is not normal)
    assert abs(float(profile.mean_log_norms[1]) - math.log(rho)) > 0.05


@pytest.mark.parametrize("rho", [0.9, 1.1])
def test_linear_rnn_rate_for_a_gaussian_matrix_scaled_to_radius_rho(rho):
    # No structure imposed besides the radius: a (likely complex) leading eigenpair.
    g = torch.Generator().manual_seed(7)
    w = torch.randn(6, 6, generator=g, dtype=torch.float64)
    w = w * rho / torch.linalg.eigvals(w).abs().max()
    model = _linear_lm(w)
    inputs = torch.randint(0, 7, (300, 1), generator=g)
    fit = jacobian_norms(model, inputs).fit()
    assert fit["slope"] == pytest.approx(math.log(rho), rel=0.02)


def test_renormalised_products_follow_far_below_the_float_range():
    # 0.5^1200 ~ 1e-361 underflows float64; the running log-scale keeps the norm exact.
    w = torch.diag(torch.tensor([0.5, 0.25, -0.3], dtype=torch.float64))
    model = _linear_lm(w)
    inputs = torch.randint(0, 7, (1200, 1), generator=torch.Generator().manual_seed(0))
    profile = jacobian_norms(model, inputs)
    expected = torch.arange(1201, dtype=torch.float64) * math.log(0.5)
    torch.testing.assert_close(profile.log_norms[0], expected, rtol=0, atol=1e-9)


def test_fit_rate_recovers_a_line_and_skips_non_finite_points():
    k = torch.arange(40, dtype=torch.float64)
    y = 0.3 - 0.2 * k
    y[30] = -math.inf
    fit = fit_rate(y)
    assert fit["slope"] == pytest.approx(-0.2, abs=1e-12)
    assert fit["rate"] == pytest.approx(math.exp(-0.2), rel=1e-12)
    assert fit["intercept"] == pytest.approx(0.3, abs=1e-12)
    assert fit["points"] == 29  # k = 10 .. 39 without k = 30
    assert math.isnan(fit_rate(y[:2], start=1)["slope"])


def test_unknown_norm_is_refused():
    model = tiny_lm("gru")
    with pytest.raises(ConfigError, match="unknown norm"):
        jacobian_norms(model, tiny_batch()[0], norm="nuclear")


@pytest.mark.parametrize("kind, gates", [("gru", 3), ("lstm", 4), ("rnn", 1)])
def test_spectrum_reads_each_gate_block(kind, gates):
    model = tiny_lm(kind, layers=2)
    blocks = spectrum(model)
    assert len(blocks) == 2 * gates
    H = 4
    for i, b in enumerate(blocks):
        layer, gate = divmod(i, gates)
        w = getattr(model.recurrent.core, f"weight_hh_l{layer}")[gate * H : (gate + 1) * H]
        eig = torch.linalg.eigvals(w.detach())
        assert sorted(b["eigenvalues_real"]) == pytest.approx(sorted(eig.real.tolist()), abs=1e-12)
        assert b["spectral_radius"] == pytest.approx(float(eig.abs().max()), abs=1e-12)
        assert b["spectral_norm"] == pytest.approx(
            float(torch.linalg.svdvals(w.detach())[0]), abs=1e-12
        )
    names = {b.gate for b in recurrent_blocks(model)}
    assert len(names) == gates


def test_reference_radius_of_a_deep_linear_rnn_is_the_largest_layer_radius():
    model = tiny_lm("linear", layers=2)
    radii = [
        float(
            torch.linalg.eigvals(getattr(model.recurrent.core, f"weight_hh_l{i}").detach())
            .abs()
            .max()
        )
        for i in range(2)
    ]
    assert reference_radius(model) == pytest.approx(max(radii), abs=1e-12)
    # and it is the rate of the block-triangular two-layer state Jacobian
    inputs = torch.randint(0, 7, (250, 1), generator=torch.Generator().manual_seed(0))
    fit = jacobian_norms(model.eval(), inputs).fit(start=100)
    assert fit["rate"] == pytest.approx(max(radii), rel=0.02)


def test_jacobians_follow_the_models_own_step_with_zoneout():
    # At evaluation zoneout mixes h_t = z h_{t-1} + (1 - z) h~_t: part of the model's step.
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=7, kind="gru", hidden_size=4, num_layers=1, embedding_size=3, zoneout=0.4
    )
    model = RecurrentLM(config).double().eval()
    inputs, _ = tiny_batch(T=2)
    jacobians, _ = state_jacobians(model, inputs)
    like = model.initial_state(3)
    s = state_vector(like)

    def step(flat):
        return state_vector(model(inputs[:1], vector_state(flat, like))[1])

    J = torch.autograd.functional.jacobian(step, s)
    for b in range(3):
        torch.testing.assert_close(jacobians[0][b], J[b, :, b, :], rtol=0, atol=1e-12)
    plain = torch.autograd.functional.jacobian(lambda f: _run(model, inputs[:1], f, like), s)
    assert (plain[0, :, 0, :] - J[0, :, 0, :]).abs().max() > 0.1  # zoneout changes the map


@pytest.mark.parametrize("embedding", [0, 3])
def test_jacobians_of_a_model_reading_float_features_equal_autograd(embedding):
    torch.manual_seed(0)
    config = ModelConfig(input_size=2, output_size=1, kind="lstm", hidden_size=3, num_layers=2,
                         embedding_size=embedding, dropout=0.0)  # fmt: skip
    model = RecurrentLM(config).double().eval()
    inputs = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    jacobians, _ = state_jacobians(model, inputs)
    like = model.initial_state(3)
    s = state_vector(like)
    for t in range(4):
        J = torch.autograd.functional.jacobian(
            lambda f, t=t: _run(model, inputs[t : t + 1], f, like), s
        )
        for b in range(3):
            torch.testing.assert_close(jacobians[t][b], J[b, :, b, :], rtol=0, atol=1e-12)
        s = _run(model, inputs[t : t + 1], s, like).detach()
