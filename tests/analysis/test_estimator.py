"""Estimator quality: the statistics, the exact gradient they are measured against, and their limits."""

import math

import pytest
import torch

from tbptt.analysis import compare_estimates, estimator_quality, exact_gradient, flat_gradient
from tbptt.errors import DataError
from tbptt.models import ModelConfig, RecurrentNet
from tbptt.train import Regression
from tbptt.truncation import RandomizedTruncation
from tests.reference import reference_loss, tiny_batch, tiny_lm


def test_statistics_match_their_definitions():
    g = torch.Generator().manual_seed(0)
    exact = torch.randn(9, generator=g, dtype=torch.float64)
    estimates = exact + 0.3 * torch.randn(5, 9, generator=g, dtype=torch.float64) + 0.1
    got = compare_estimates(estimates, exact)
    mean = estimates.mean(0)
    norm = exact.norm().item()
    assert got["cosine"] == pytest.approx((mean @ exact).item() / (mean.norm().item() * norm))
    assert got["relative_bias"] == pytest.approx((mean - exact).norm().item() / norm)
    var = sum(((e - mean) ** 2).sum().item() for e in estimates) / 4
    assert got["relative_variance"] == pytest.approx(var / norm**2)
    mse = sum(((e - exact) ** 2).sum().item() for e in estimates) / 5
    assert got["relative_mse"] == pytest.approx(mse / norm**2)
    # per draw, MSE = |bias|^2 + (n - 1)/n variance
    assert got["relative_mse"] == pytest.approx(
        got["relative_bias"] ** 2 + 4 / 5 * got["relative_variance"]
    )
    assert got["noise_floor"] == pytest.approx(math.sqrt(var / 5) / norm)
    cosines = [(e @ exact).item() / (e.norm().item() * norm) for e in estimates]
    assert got["cosine_per_draw"] == pytest.approx(sum(cosines) / 5)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_exact_gradient_is_autograd_on_the_unrolled_graph(kind):
    model = tiny_lm(kind, layers=2).eval()
    inputs, targets = tiny_batch(T=8)
    state = model.initial_state(3)
    state = tuple(s + 0.3 for s in state) if kind == "lstm" else state + 0.3
    ref = torch.autograd.grad(
        reference_loss(model, inputs, targets, state=state), list(model.parameters())
    )
    got = exact_gradient(model, inputs, targets, state=state)
    torch.testing.assert_close(got, flat_gradient(ref), rtol=0, atol=1e-10)


def test_no_cut_means_no_bias_and_deterministic_strategies_take_one_draw():
    model = tiny_lm("gru").eval()
    inputs, targets = tiny_batch(T=8)
    never = RandomizedTruncation(4, cut_probability=0.0)
    r = estimator_quality(
        model, inputs, targets, ["regular:8", "regular:20", "randomized:1", never], draws=5
    )
    by_spec = {x["spec"]: x for x in r["results"]}
    for spec in ("regular:8", "regular:20"):
        assert by_spec[spec]["relative_bias"] < 1e-12
        assert by_spec[spec]["cosine"] == pytest.approx(1.0, abs=1e-12)
        assert by_spec[spec]["draws"] == 1
    # randomized:1 cuts every edge with probability 1: regular:1, one draw
    assert by_spec["randomized:1"]["draws"] == 1
    assert by_spec["randomized:1"]["relative_bias"] > 0.01
    assert r["results"][3]["draws"] == 5
    assert r["results"][3]["relative_bias"] < 1e-12
    assert r["results"][3]["relative_variance"] < 1e-20


def test_randomized_bias_is_noise_and_regular_bias_is_not():
    model = tiny_lm("gru", hidden=3, vocab=5, embedding=2, seed=1).eval()
    inputs, targets = tiny_batch(T=10, B=2, vocab=5, seed=2)
    r = estimator_quality(model, inputs, targets, ["regular:2", "randomized:2"], draws=300)
    regular, randomized = r["results"]
    assert randomized["relative_variance"] > 0
    # |mean - exact| of an unbiased estimator is about the noise floor sqrt(var / n) / |g|
    assert randomized["relative_bias"] < 3 * randomized["noise_floor"]
    assert regular["relative_bias"] > 10 * randomized["noise_floor"]


def test_exact_gradient_honours_resets_mask_and_objective():
    """Float features, squared error, a restart in one stream, a loss mask: against a naive loop
    that runs each stream's pieces separately (from the warm state, then from zeros)."""
    torch.manual_seed(0)
    config = ModelConfig(input_size=2, output_size=1, kind="gru", hidden_size=3, num_layers=1,
                         embedding_size=0, dropout=0.0)  # fmt: skip
    model = RecurrentNet(config).double().eval()
    g = torch.Generator().manual_seed(1)
    T, B = 6, 2
    inputs = torch.randn(T, B, 2, generator=g, dtype=torch.float64)
    targets = torch.randn(T, B, 1, generator=g, dtype=torch.float64)
    state = 0.3 * torch.randn(1, B, 3, generator=g, dtype=torch.float64)
    resets = torch.zeros(T, B, dtype=torch.bool)
    resets[3, 0] = True
    mask = torch.rand(T, B, generator=g) < 0.6
    mask[0, 0] = mask[4, 0] = True

    def stream_loss(b):
        pieces = [(0, 3, state[:, b : b + 1]), (3, T, None)] if b == 0 else [(0, T, state[:, 1:])]
        total = 0.0
        for start, stop, h in pieces:
            out, _ = model(inputs[start:stop, b : b + 1], h)
            err = (out - targets[start:stop, b : b + 1]).square().mean(-1)  # (t, 1)
            total = total + (err * mask[start:stop, b : b + 1]).sum()
        return total

    loss = sum(stream_loss(b) for b in range(B)) / (T * B)
    ref = torch.autograd.grad(loss, list(model.parameters()))
    got = exact_gradient(
        model, inputs, targets, state=state, resets=resets, mask=mask, objective=Regression()
    )
    torch.testing.assert_close(got, flat_gradient(ref), rtol=0, atol=1e-12)
    # and the restart matters: without it the gradient differs
    assert not torch.allclose(
        got, exact_gradient(model, inputs, targets, state=state, mask=mask, objective=Regression())
    )


def test_a_window_where_no_loss_counts_is_refused():
    model = tiny_lm("gru").eval()
    inputs, targets = tiny_batch(T=4)
    mask = torch.zeros(4, 3, dtype=torch.bool)
    with pytest.raises(DataError, match="zero"):
        estimator_quality(model, inputs, targets, ["regular:2"], mask=mask)
