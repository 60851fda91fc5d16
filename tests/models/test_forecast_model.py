"""The highway forecaster against a naive per-step loop (ATen's own cells, a list of past
inputs): values, gradients under every strategy (float64), the history across windows, resets."""

import numpy as np
import pytest
import torch

from tbptt.errors import ConfigError, DataError
from tbptt.models import ModelConfig
from tbptt.models.forecast import ForecastNet
from tbptt.train import sequence_gradient
from tbptt.train.objectives import Regression
from tbptt.truncation import (
    FullBPTT,
    K1K2Truncation,
    RandomizedTruncation,
    RegularTruncation,
    parse_strategy,
)
from tests.reference import _cell

F, O, P = 2, 3, 3  # features, outputs, AR order


def tiny_forecaster(kind="gru", *, layers=1, p=P, seed=0) -> ForecastNet:
    torch.manual_seed(seed)
    config = ModelConfig(
        input_size=F,
        output_size=O,
        kind=kind,
        hidden_size=4,
        num_layers=layers,
        embedding_size=0,
        dropout=0.0,
    )
    model = ForecastNet(config, ar_order=p).double()
    with torch.no_grad():  # a highway that is not zero, so its gradient path is exercised
        if model.highway is not None:
            model.highway.weight.copy_(torch.randn_like(model.highway.weight))
            model.highway.bias.copy_(torch.randn_like(model.highway.bias))
    return model


def tiny_series(T=9, B=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(T, B, F, generator=g, dtype=torch.float64)
    targets = torch.randn(T, B, O, generator=g, dtype=torch.float64)
    return inputs, targets


def reference_outputs(model, inputs, *, cuts=(), resets=None):
    """(T, B, O) outputs of a naive loop: ATen cells step by step, a list of the last p inputs;
    ``cuts`` detach the core's state before those steps; ``resets`` (T, B) zero a stream's
    core state and forget its past inputs before that step."""
    core, p = model.core, model.ar_order
    rec = core.recurrent
    kind, L = rec.kind, rec.num_layers
    T, B, _ = inputs.shape
    hs = [torch.zeros(B, 4, dtype=inputs.dtype) for _ in range(L)]
    cs = [torch.zeros(B, 4, dtype=inputs.dtype) for _ in range(L)] if kind == "lstm" else [None] * L
    weights = [
        tuple(
            getattr(rec.core, f"{n}_l{layer}")
            for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        )
        for layer in range(L)
    ]
    past = [[] for _ in range(B)]  # per stream: its inputs since its last reset
    outputs = []
    for t in range(T):
        if t in cuts:
            hs = [h.detach() for h in hs]
            cs = [c.detach() if c is not None else None for c in cs]
        if resets is not None and resets[t].any():
            keep = (~resets[t]).to(inputs.dtype).unsqueeze(-1)  # (B, 1)
            hs = [h * keep for h in hs]
            cs = [c * keep if c is not None else None for c in cs]
            for b in range(B):
                if resets[t, b]:
                    past[b] = []
        x = inputs[t]
        for layer in range(L):
            hs[layer], cs[layer] = _cell(kind, x, hs[layer], cs[layer], *weights[layer])
            x = hs[layer]
        out = core.head(x)  # (B, O)
        if p:
            w = model.highway.weight.view(O, p, F)  # (O, lag, F)
            rows = []
            for b in range(B):
                past[b].append(inputs[t, b])
                row = model.highway.bias.clone()
                for j in range(min(p, len(past[b]))):
                    row = row + w[:, j] @ past[b][-1 - j]
                rows.append(row)
            out = out + torch.stack(rows)
        outputs.append(out)
    return torch.stack(outputs)  # (T, B, O)


def reference_grads(model, inputs, targets, **kw):
    outputs = reference_outputs(model, inputs, **kw)
    loss = (outputs - targets).square().mean(-1).sum() / (inputs.shape[0] * inputs.shape[1])
    return torch.autograd.grad(loss, list(model.parameters()))


def assert_all_close(got, expected, atol=1e-10):
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=atol)


KINDS = ["gru", "lstm", "linear", "mingru"]


@pytest.mark.parametrize("kind", KINDS)
def test_outputs_equal_the_naive_loop(kind):
    model = tiny_forecaster(kind, layers=2)
    inputs, _ = tiny_series()
    outputs, _ = model(inputs)
    if kind == "mingru":  # no ATen cell: the core is tested elsewhere, compare the highway
        outputs = outputs - model.core(inputs)[0]
        reference = reference_outputs(_highway_only(model), inputs)
    else:
        reference = reference_outputs(model, inputs)
    torch.testing.assert_close(outputs, reference, rtol=0, atol=1e-12)


def _highway_only(model):
    """A GRU forecaster with a zero head and ``model``'s highway: its outputs are the highway's."""
    twin = tiny_forecaster("gru", layers=2)
    with torch.no_grad():
        twin.core.head.weight.zero_()
        twin.core.head.bias.zero_()
        twin.highway.load_state_dict(model.highway.state_dict())
    return twin


@pytest.mark.parametrize("kind", ["gru", "lstm", "linear"])
@pytest.mark.parametrize("layers", [1, 2])
def test_full_equals_autograd_on_the_unrolled_graph(kind, layers):
    model = tiny_forecaster(kind, layers=layers)
    inputs, targets = tiny_series()
    got = sequence_gradient(model, FullBPTT(), inputs, targets, objective=Regression())
    assert_all_close(got, reference_grads(model, inputs, targets))


@pytest.mark.parametrize("kind", ["gru", "lstm", "linear"])
@pytest.mark.parametrize("k", [1, 2, 4])
def test_regular_equals_the_naive_loop_detaching_every_k(kind, k):
    model = tiny_forecaster(kind, layers=2)
    inputs, targets = tiny_series()
    got = sequence_gradient(model, RegularTruncation(k), inputs, targets, objective=Regression())
    assert_all_close(got, reference_grads(model, inputs, targets, cuts=set(range(0, 9, k))))
    full = sequence_gradient(model, FullBPTT(), inputs, targets, objective=Regression())
    assert max((a - b).abs().max().item() for a, b in zip(got, full)) > 1e-6  # it can fail
    # the highway reads inputs, not the state: truncation leaves its gradient exact
    hw = len(list(model.core.parameters()))
    assert_all_close(got[hw:], full[hw:])


@pytest.mark.parametrize("k", [2, 4])
def test_gradients_with_resets_inside_windows(k):
    model = tiny_forecaster("gru")
    inputs, targets = tiny_series(T=10)
    resets = torch.zeros(10, 3, dtype=torch.bool)
    resets[3, 0] = resets[5, 1] = resets[6, 0] = True
    got = sequence_gradient(
        model, RegularTruncation(k), inputs, targets, resets=resets, objective=Regression()
    )
    expected = reference_grads(model, inputs, targets, cuts=set(range(0, 10, k)), resets=resets)
    assert_all_close(got, expected)


def test_randomized_forced_off_is_full_and_forced_on_is_regular_1():
    model = tiny_forecaster("lstm")
    inputs, targets = tiny_series(T=8)
    grad = lambda s: sequence_gradient(model, s, inputs, targets, objective=Regression())  # noqa: E731
    assert_all_close(grad(RandomizedTruncation(1, cut_probability=0.0)), grad(FullBPTT()))
    assert_all_close(grad(RandomizedTruncation(1, cut_probability=1.0)), grad(RegularTruncation(1)))


@pytest.mark.parametrize("spec", ["full:checkpoint", "k1k2:2,4", "variable:4", "randomized:3"])
def test_every_strategy_runs_it(spec):
    model = tiny_forecaster("gru")
    inputs, targets = tiny_series(T=12)
    got = sequence_gradient(model, parse_strategy(spec), inputs, targets, objective=Regression())
    assert all(torch.isfinite(g).all() for g in got)
    if spec == "full:checkpoint":
        assert_all_close(got, reference_grads(model, inputs, targets))


def test_k1k2_reaches_back_k2_steps_with_the_history_of_the_context():
    model = tiny_forecaster("gru")
    inputs, targets = tiny_series(T=8)
    got = sequence_gradient(model, K1K2Truncation(8, 8), inputs, targets, objective=Regression())
    assert_all_close(got, reference_grads(model, inputs, targets))


# -- the history across windows and resets ------------------------------------------------


@pytest.mark.parametrize("split", [1, 2, 5])
def test_windows_carry_the_last_inputs(split):
    model = tiny_forecaster("gru", p=4)
    inputs, _ = tiny_series(T=9)
    whole, state = model(inputs)
    first, mid = model(inputs[:split])
    second, end = model(inputs[split:], mid)
    torch.testing.assert_close(torch.cat([first, second]), whole, rtol=0, atol=1e-12)
    torch.testing.assert_close(end[1], inputs[-3:], rtol=0, atol=0)  # the last p - 1 inputs
    torch.testing.assert_close(end[1], state[1], rtol=0, atol=0)


def test_a_reset_zeroes_the_state_and_forgets_the_past_inputs():
    model = tiny_forecaster("lstm", p=4)
    inputs, _ = tiny_series(T=9, B=2)
    resets = torch.zeros(9, 2, dtype=torch.bool)
    resets[4, 1] = True
    outputs, state = model(inputs, resets=resets)
    fresh, fresh_state = model(inputs[4:, 1:])  # stream 1 started afresh at step 4
    torch.testing.assert_close(outputs[4:, 1:], fresh, rtol=0, atol=1e-12)
    torch.testing.assert_close(state[1][:, 1:], fresh_state[1], rtol=0, atol=0)
    untouched, _ = model(inputs[:, :1])  # stream 0 carries on
    torch.testing.assert_close(outputs[:, :1], untouched, rtol=0, atol=1e-12)

    # a reset at the last step leaves the history of that stream all zeros but its last input
    resets = torch.zeros(9, 2, dtype=torch.bool)
    resets[8, 0] = True
    _, (core, history) = model(inputs, resets=resets)
    assert history[:2, 0].abs().sum() == 0 and torch.equal(history[2, 0], inputs[8, 0])
    torch.testing.assert_close(history[:, 1], inputs[-3:, 1], rtol=0, atol=0)
    # and the core's state of that stream is that of one step from zeros
    _, (one_step, _) = model(inputs[8:, :1])
    torch.testing.assert_close(core[0][:, :1], one_step[0], rtol=0, atol=1e-12)


def test_initial_state_is_zeros_of_the_right_shapes():
    model = tiny_forecaster("gru", layers=2, p=5)
    core, history = model.initial_state(3)
    assert core.shape == (2, 3, 4) and history.shape == (4, 3, F)
    assert not core.any() and not history.any()
    none = tiny_forecaster("gru", p=0)
    assert none.highway is None and none.initial_state(3)[1].shape == (0, 3, F)


# -- the least-squares start --------------------------------------------------------------


def test_fit_highway_is_the_least_squares_autoregression_and_the_model_starts_there():
    g = torch.Generator().manual_seed(0)
    n = 300
    x = torch.zeros(n, 1, dtype=torch.float64)
    for t in range(2, n):
        x[t] = 0.6 * x[t - 1] - 0.2 * x[t - 2] + 0.1 * torch.randn(1, generator=g)
    inputs, targets = x[:-1], x[1:]
    starts = torch.zeros(n - 1, dtype=torch.bool)
    starts[0] = starts[150] = True  # two series: no pair's lags cross row 150
    torch.manual_seed(0)
    config = ModelConfig(
        input_size=1,
        output_size=1,
        kind="gru",
        hidden_size=4,
        num_layers=1,
        embedding_size=0,
        dropout=0.0,
    )
    model = ForecastNet(config, ar_order=2).double()
    mse = model.fit_highway(inputs, targets, starts)

    t = torch.tensor([i for i in range(n - 1) if i not in (0, 150)])
    design = torch.stack([torch.ones(len(t), dtype=torch.float64), x[t, 0], x[t - 1, 0]], 1)
    reference = torch.linalg.lstsq(design, x[t + 1, 0:1], driver="gelsd").solution[:, 0]
    got = torch.cat([model.highway.bias, model.highway.weight[0]])
    torch.testing.assert_close(got, reference, rtol=0, atol=1e-10)
    assert mse == pytest.approx(float((design @ reference - x[t + 1, 0]).square().mean()), rel=1e-9)
    assert not model.core.head.weight.any() and not model.core.head.bias.any()
    outputs, _ = model(inputs[151:].view(-1, 1, 1))  # one series from its start
    np_ref = design[150:] @ reference  # pairs t = 151 .. n - 2
    torch.testing.assert_close(outputs[1:, 0, 0], np_ref, rtol=0, atol=1e-10)


def test_refusals_are_one_line():
    config = ModelConfig(input_size=F, output_size=O, kind="gru", hidden_size=4, embedding_size=0)
    with pytest.raises(ConfigError, match="AR order"):
        ForecastNet(config, ar_order=-1)
    with pytest.raises(ConfigError, match="float features"):
        ForecastNet(ModelConfig(vocab_size=7, kind="gru"), ar_order=2)
    model = ForecastNet(config, ar_order=2)
    with pytest.raises(ConfigError, match=r"\(T, B, 2\)"):
        model(torch.zeros(3, 2, 5))
    with pytest.raises(DataError, match="lower AR order"):
        model.fit_highway(torch.zeros(4, F), torch.zeros(4, O))


def test_fit_highway_leaves_out_masked_pairs():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(80, 1, generator=g, dtype=torch.float64).cumsum(0)
    inputs, targets = x[:-1], x[1:].clone()
    mask = torch.ones(79, dtype=torch.bool)
    mask[[10, 40]] = False
    targets[[10, 40]] = 1e6  # filled values that must not pull the fit
    config = ModelConfig(input_size=1, output_size=1, kind="gru", hidden_size=2, embedding_size=0)
    model = ForecastNet(config, ar_order=1).double()
    model.fit_highway(inputs, targets, mask=mask)
    keep = mask.nonzero().flatten()
    design = torch.stack([torch.ones(len(keep), dtype=torch.float64), inputs[keep, 0]], 1)
    reference = torch.linalg.lstsq(design, targets[keep], driver="gelsd").solution[:, 0]
    got = torch.cat([model.highway.bias, model.highway.weight[0]])
    torch.testing.assert_close(got, reference, rtol=0, atol=1e-10)


@pytest.mark.parametrize("penalty", [0.0, 0.05])
def test_fit_highway_forecasts_what_the_data_layer_autoregression_forecasts(penalty):
    from tbptt.data.forecast import Rows, fit_autoregression

    g = torch.Generator().manual_seed(3)
    x = torch.randn(120, 2, generator=g, dtype=torch.float64).cumsum(0)  # two columns, both read
    inputs, targets = x[:-1], x[1:, :1]
    config = ModelConfig(input_size=2, output_size=1, kind="gru", hidden_size=2, embedding_size=0)
    model = ForecastNet(config, ar_order=3).double()
    model.fit_highway(inputs, targets, penalty=penalty)
    rows = Rows.from_bounds(x.numpy(), x[:, :1].numpy(), [(0, 120)])
    ar = fit_autoregression(rows, np.arange(119), order=3, penalties=(penalty,))
    with torch.no_grad():
        outputs, _ = model(inputs.unsqueeze(1))  # (119, 1, 1); zero head: the highway alone
    expected = ar.predict(rows, np.arange(2, 119))[:, 0]  # pairs with all 3 lags
    np.testing.assert_allclose(outputs[2:, 0, 0].numpy(), expected, atol=1e-9)


@pytest.mark.parametrize("p", [2, 5, 12])
def test_windows_shorter_than_the_order_read_every_lag(p):
    """One step at a time (windows of 1 < p - 1), with and without a reset, equals one call."""
    model = tiny_forecaster("gru", p=p)
    inputs, targets = tiny_series(T=14, B=2)
    resets = torch.zeros(14, 2, dtype=torch.bool)
    resets[9, 1] = True
    for r in (None, resets):
        whole, _ = model(inputs, resets=r)
        state, steps = None, []
        for t in range(14):
            out, state = model(inputs[t : t + 1], state, resets=None if r is None else r[t : t + 1])
            steps.append(out)
        torch.testing.assert_close(torch.cat(steps), whole, rtol=0, atol=1e-12)
    got = sequence_gradient(model, RegularTruncation(1), inputs, targets, objective=Regression())
    expected = reference_grads(model, inputs, targets, cuts=set(range(14)))
    assert_all_close(got, expected)
