"""Float-feature streams under the regression objective: every strategy's gradient against
independent references (float64).

Inputs (T, B, F) and targets (T, B, D) are float64; the loss is
:class:`~tbptt.train.objectives.Regression`: a row's loss is the mean over its D values of
the squared error, and the sequence's loss is the sum of the (masked) row losses divided by
T * B. The models: :class:`~tbptt.models.RecurrentNet` (GRU with and without an input
projection, a two-layer LSTM) and a user's Elman module under
:class:`~tbptt.models.custom.StatefulModule`.

The references share nothing with tbptt's step path, gates or resets. Each model's one step is
written out from its documented math over the model's parameters (:func:`_step_of`), and
:func:`_unroll` runs it step by step: a cut is ``detach()``, a gradient scale a tensor hook, a
per-stream reset a ``torch.where`` to zeros, a mask a boolean selection of rows. ``full``
is also checked against one call of the plain torch module over the whole stream.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from tbptt.models import ModelConfig, RecurrentNet
from tbptt.models.custom import StatefulModule
from tbptt.train import sequence_gradient
from tbptt.train.objectives import Regression
from tbptt.truncation import (
    FullBPTT,
    K1K2Truncation,
    RandomizedTruncation,
    RegularTruncation,
    parse_strategy,
)

T, B, F_IN, D, H = 12, 3, 3, 2, 4
MODELS = ["gru", "gru+proj", "lstm", "elman", "mingru", "minlstm+proj", "lru"]
LINEAR = {"mingru": ("mingru", 2, 0), "minlstm+proj": ("minlstm", 2, 3), "lru": ("lru", 2, 0)}
DOUBLE = torch.float64


# -- the user's module -----------------------------------------------------------------


class Elman(nn.Module):
    """h_t = tanh(W [x_t, h_{t-1}] + b), y_t = R h_t + r; a user's module, looping over time.

    ``forward(inputs (T, B, F), state (B, H)) -> (outputs (T, B, D), state (B, H))``.
    """

    def __init__(self, input_size: int, hidden_size: int, output_size: int):
        super().__init__()
        self.hidden_size = hidden_size
        self.cell = nn.Linear(input_size + hidden_size, hidden_size)
        self.readout = nn.Linear(hidden_size, output_size)

    def initial_state(self, batch_size: int) -> torch.Tensor:
        return torch.zeros(batch_size, self.hidden_size)

    def forward(self, inputs, state):
        outputs = []
        for x in inputs:  # (B, F)
            state = torch.tanh(self.cell(torch.cat([x, state], dim=-1)))  # (B, H)
            outputs.append(self.readout(state))
        return torch.stack(outputs), state  # (T, B, D)


# -- the models and their one-step references ------------------------------------------

Step = Callable[[torch.Tensor, list], tuple[torch.Tensor, list]]


@dataclass
class Case:
    """A model, its one step written out by hand, and its number of (B, H) state tensors."""

    model: nn.Module
    step: Step  # (x (B, F), [state (B, H), ...]) -> (y (B, D), new states)
    num_states: int
    one_call: Callable[[torch.Tensor], torch.Tensor]  # inputs (T, B, F) -> outputs (T, B, D)


def _net_step(model: RecurrentNet) -> Step:
    """One step of a RecurrentNet from the cell equations (gate order as torch's: GRU r, z, n;
    LSTM i, f, g, o). States: [h_0, h_1, ...] (GRU) or [h_0, c_0, h_1, c_1, ...] (LSTM)."""
    core, kind, L = model.recurrent.core, model.config.kind, model.config.num_layers
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")

    def step(x, state):
        if model.embedding is not None:
            x = x @ model.embedding.weight.T + model.embedding.bias  # (B, E)
        new = []
        for layer in range(L):
            w_ih, w_hh, b_ih, b_hh = (getattr(core, f"{n}_l{layer}") for n in names)
            if kind == "lstm":
                h, c = state[2 * layer], state[2 * layer + 1]
                i, f, g, o = (x @ w_ih.T + b_ih + h @ w_hh.T + b_hh).chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                new += [h, c]
            else:
                h = state[layer]
                xr, xz, xn = (x @ w_ih.T + b_ih).chunk(3, dim=-1)
                hr, hz, hn = (h @ w_hh.T + b_hh).chunk(3, dim=-1)
                r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                h = (1 - z) * torch.tanh(xn + r * hn) + z * h
                new.append(h)
            x = h  # (B, H)
        return x @ model.head.weight.T + model.head.bias, new  # (B, D)

    return step


def _net_one_call(model: RecurrentNet):
    """The plain nn.GRU / nn.LSTM over the whole stream in one call, from a zero state."""

    def run(inputs):
        x = inputs if model.embedding is None else model.embedding(inputs)  # (T, B, I)
        out, _ = model.recurrent.core(x)  # (T, B, H)
        return model.head(out)  # (T, B, D)

    return run


def _linear_step(model: RecurrentNet) -> Step:
    """One step of a linear-recurrent RecurrentNet from the documented math (plain form, no log
    space, no scan). States: [h_0, h_1, ...]; the LRU's as [Re h_0, Im h_0, Re h_1, ...]."""
    layers, kind = model.recurrent.layers, model.config.kind

    def step(x, state):
        if model.embedding is not None:
            x = x @ model.embedding.weight.T + model.embedding.bias  # (B, E)
        new = []
        for layer, p in enumerate(layers):
            if kind == "lru":
                h = torch.complex(state[2 * layer], state[2 * layer + 1])
                lam = torch.exp(-torch.exp(p.nu_log) + 1j * torch.exp(p.theta_log))
                h = lam * h + torch.exp(p.gamma_log) * (x.to(h.dtype) @ (p.b_re + 1j * p.b_im).T)
                y = (h @ (p.c_re + 1j * p.c_im).T).real + x @ p.skip.weight.T + p.skip.bias
                x = torch.nn.functional.gelu(y)
                new += [h.real, h.imag]
                continue
            h, pre = state[layer], x @ p.weight.T + p.bias
            if kind == "mingru":
                z, cand = torch.sigmoid(pre[:, :H]), pre[:, H:]
                h = (1 - z) * h + z * cand
            else:
                f, i = torch.sigmoid(pre[:, :H]), torch.sigmoid(pre[:, H : 2 * H])
                h = (f * h + i * pre[:, 2 * H :]) / (f + i)
            new.append(h)
            x = h  # (B, H)
        return x @ model.head.weight.T + model.head.bias, new  # (B, D)

    return step


def _elman_step(module: Elman) -> Step:
    w, b = module.cell.weight, module.cell.bias  # (H, F + H), (H,)

    def step(x, state):
        h = torch.tanh(x @ w[:, :F_IN].T + state[0] @ w[:, F_IN:].T + b)  # (B, H)
        return h @ module.readout.weight.T + module.readout.bias, [h]

    return step


def _case(name: str, seed: int = 0) -> Case:
    torch.manual_seed(seed)
    if name == "elman":
        module = Elman(F_IN, H, D).double()
        model = StatefulModule(module)
        return Case(
            model, _elman_step(module), 1, lambda x: module(x, torch.zeros(B, H, dtype=DOUBLE))[0]
        )
    kind, layers, embedding = {
        **LINEAR,
        "gru": ("gru", 1, 0),
        "gru+proj": ("gru", 2, 3),
        "lstm": ("lstm", 2, 0),
    }[name]
    config = ModelConfig(
        input_size=F_IN,
        output_size=D,
        kind=kind,
        hidden_size=H,
        num_layers=layers,
        embedding_size=embedding,
        dropout=0.0,
    )
    model = RecurrentNet(config).double()
    if name in LINEAR:  # one call of the parallel scan over the whole stream
        one_call = lambda x: model(x, path="parallel")[0]  # noqa: E731
        return Case(model, _linear_step(model), layers * (2 if kind == "lru" else 1), one_call)
    return Case(
        model, _net_step(model), layers * (2 if kind == "lstm" else 1), _net_one_call(model)
    )


# -- data --------------------------------------------------------------------------------


def _stream(seed: int = 0, length: int = T, batch: int = B):
    g = torch.Generator().manual_seed(seed)
    inputs = torch.randn(length, batch, F_IN, generator=g, dtype=DOUBLE)  # (T, B, F)
    targets = torch.randn(length, batch, D, generator=g, dtype=DOUBLE)  # (T, B, D)
    return inputs, targets


def _episodes():
    """resets (T, B): stream 0 restarts at 5 (on a regular:5 window edge), stream 1 at 4 and
    9, stream 2 at 0 (harmless: the state is fresh) and 8 (inside regular:5 windows).
    mask (T, B): the loss counts only at the last step of each episode (7 of 36 rows)."""
    resets = torch.zeros(T, B, dtype=torch.bool)
    for t, b in [(5, 0), (4, 1), (9, 1), (0, 2), (8, 2)]:
        resets[t, b] = True
    mask = torch.zeros(T, B, dtype=torch.bool)
    mask[:-1] = resets[1:]
    mask[-1] = True
    return resets, mask


# -- the naive reference -------------------------------------------------------------------


def _scaled(t: torch.Tensor, xi: float) -> torch.Tensor:
    """t forward, gradient times xi backward (a hook on a copy)."""
    if not t.requires_grad:
        return t
    t = t * 1.0
    t.register_hook(lambda g: g * xi)
    return t


def _unroll(case: Case, inputs, *, state=None, cuts=(), scales=None, resets=None):
    """Step by step: (outputs (T, B, D), [the states entering each step, before its reset]).

    ``cuts``: steps whose incoming state is detached; ``scales``: {t: xi} on the edge
    entering step t; ``resets`` (T, B): zero that stream's state before step t.
    """
    steps, batch = inputs.shape[:2]
    if state is None:
        state = [torch.zeros(batch, H, dtype=DOUBLE) for _ in range(case.num_states)]
    outputs, entering = [], []
    for t in range(steps):
        entering.append(state)
        if t in cuts:
            state = [s.detach() for s in state]
        elif scales and t in scales:
            state = [_scaled(s, scales[t]) for s in state]
        if resets is not None and bool(resets[t].any()):
            restart = resets[t].unsqueeze(-1)  # (B, 1)
            state = [torch.where(restart, torch.zeros_like(s), s) for s in state]
        y, state = case.step(inputs[t], state)
        outputs.append(y)
    return torch.stack(outputs), entering  # (T, B, D)


def _loss_sum(outputs, targets, mask=None):
    """Sum over the counted rows of the mean-over-D squared error (masked rows selected out)."""
    rows = ((outputs - targets) ** 2).mean(-1)  # (T, B)
    return rows[mask].sum() if mask is not None else rows.sum()


def _grads(case: Case, loss) -> list[torch.Tensor]:
    params = [p for p in case.model.parameters() if p.requires_grad]
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def _reference(case, inputs, targets, *, mask=None, resets=None, cuts=(), scales=None):
    """The gradient of the naive loop's loss, divided by T * B."""
    outputs, _ = _unroll(case, inputs, cuts=cuts, scales=scales, resets=resets)
    steps, batch = inputs.shape[:2]
    return _grads(case, _loss_sum(outputs, targets, mask) / (steps * batch))


def _replay(strategy, seed: int, steps: int = T):
    """The cuts and gate scales the engine will draw from ``Generator().manual_seed(seed)``."""
    g = torch.Generator().manual_seed(seed)
    cuts, scales, position = set(), {}, 0
    while position < steps:
        window = strategy.plan(steps - position, g)
        cuts.add(position)
        gates = window.gates or (1.0,) * window.length
        scales.update({position + i: xi for i, xi in enumerate(gates) if i > 0 and xi != 1.0})
        position += window.length
    return cuts, scales


def _got(case, strategy, inputs, targets, *, mask=None, resets=None, seed=0):
    return sequence_gradient(
        case.model,
        strategy,
        inputs,
        targets,
        generator=torch.Generator().manual_seed(seed),
        mask=mask,
        resets=resets,
        objective=Regression(),
    )


def _assert_all_close(got, want, atol=1e-10):
    assert len(got) == len(want)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=atol)


def _distance(a, b) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b))


def _data(with_mask: bool, with_resets: bool):
    inputs, targets = _stream()
    resets, mask = _episodes()
    return inputs, targets, (mask if with_mask else None), (resets if with_resets else None)


CONDITIONS = {"plain": (False, False), "mask": (True, False), "resets": (False, True)}
CONDITIONS["mask+resets"] = (True, True)


# -- (1) full --------------------------------------------------------------------------------


@pytest.mark.parametrize("condition", list(CONDITIONS))
@pytest.mark.parametrize("name", MODELS)
def test_full_equals_autograd_on_the_unrolled_graph(name, condition):
    case = _case(name)
    inputs, targets, mask, resets = _data(*CONDITIONS[condition])
    got = _got(case, FullBPTT(), inputs, targets, mask=mask, resets=resets)
    _assert_all_close(got, _reference(case, inputs, targets, mask=mask, resets=resets))
    if mask is not None or resets is not None:  # the mask and resets change the gradient
        assert _distance(got, _reference(case, inputs, targets)) > 1e-6
    if resets is None:  # and one call of the plain torch module over the whole stream
        one_call = _loss_sum(case.one_call(inputs), targets, mask) / (T * B)
        _assert_all_close(got, _grads(case, one_call))


@pytest.mark.parametrize("name", MODELS)
def test_full_checkpoint_equals_autograd_on_the_unrolled_graph(name):
    case = _case(name)
    inputs, targets, mask, resets = _data(True, True)
    got = _got(case, FullBPTT(checkpoint=5), inputs, targets, mask=mask, resets=resets)
    _assert_all_close(got, _reference(case, inputs, targets, mask=mask, resets=resets))


# -- (2) regular ----------------------------------------------------------------------------


@pytest.mark.parametrize("condition", list(CONDITIONS))
@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("name", MODELS)
def test_regular_equals_naive_loop_detaching_every_k(name, k, condition):
    case = _case(name)
    inputs, targets, mask, resets = _data(*CONDITIONS[condition])
    got = _got(case, RegularTruncation(k), inputs, targets, mask=mask, resets=resets)
    cuts = set(range(0, T, k))
    _assert_all_close(got, _reference(case, inputs, targets, mask=mask, resets=resets, cuts=cuts))
    # ... and differs from full: the comparison could fail.
    full = _reference(case, inputs, targets, mask=mask, resets=resets)
    assert _distance(got, full) > 1e-6


# -- (3) one randomized draw ----------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, condition",
    [("randomized:3", c) for c in CONDITIONS] + [("randomized:3,alpha=4", "mask+resets")],
)
@pytest.mark.parametrize("name", MODELS)
def test_randomized_draw_equals_naive_loop_with_the_same_cuts_and_scales(name, spec, condition):
    case = _case(name)
    inputs, targets, mask, resets = _data(*CONDITIONS[condition])
    strategy = parse_strategy(spec)
    seed = 5
    cuts, scales = _replay(strategy, seed)
    assert len(cuts) > 1 and scales  # the draw has both cuts and scaled edges
    got = _got(case, strategy, inputs, targets, mask=mask, resets=resets, seed=seed)
    want = _reference(case, inputs, targets, mask=mask, resets=resets, cuts=cuts, scales=scales)
    _assert_all_close(got, want)
    # ... and the scales matter: the same cuts without them give another gradient.
    unscaled = _reference(case, inputs, targets, mask=mask, resets=resets, cuts=cuts)
    assert _distance(got, unscaled) > 1e-6


# -- every path of the built-in model --------------------------------------------------------


class _Pinned(nn.Module):
    """A RecurrentNet run on one path (``fused``, ``steps`` or ``autograd``) whatever the gates."""

    def __init__(self, model: RecurrentNet, path: str):
        super().__init__()
        self.model, self.path = model, path

    def initial_state(self, batch_size: int):
        return self.model.initial_state(batch_size)

    def forward(self, inputs, state=None, gates=None, *, resets=None):
        return self.model(inputs, state, gates, resets=resets, path=self.path)


@pytest.mark.parametrize("spec", ["full", "regular:5", "randomized:3"])
@pytest.mark.parametrize("path", ["fused", "steps", "autograd"])
@pytest.mark.parametrize("name", ["gru+proj", "lstm"])
def test_every_path_of_the_builtin_model_equals_the_naive_loop(name, path, spec):
    # path="auto" picks the step path as soon as resets cut a short window into stretches;
    # pinning the path runs the fused kernels' resets (and the recorded step loop) too.
    case = _case(name)
    pinned = Case(_Pinned(case.model, path), case.step, case.num_states, case.one_call)
    inputs, targets, mask, resets = _data(True, True)
    strategy = parse_strategy(spec)
    cuts, scales = _replay(strategy, seed=5)
    got = _got(pinned, strategy, inputs, targets, mask=mask, resets=resets, seed=5)
    want = _reference(case, inputs, targets, mask=mask, resets=resets, cuts=cuts, scales=scales)
    _assert_all_close(got, want)


# -- k1k2: the windows' losses reach back over re-run context rows ----------------------------


@pytest.mark.parametrize("condition", ["plain", "mask+resets"])
@pytest.mark.parametrize("k1, k2", [(3, 5), (2, 7)])
@pytest.mark.parametrize("name", MODELS)
def test_k1k2_equals_naive_rerun_from_the_detached_state(name, k1, k2, condition):
    case = _case(name)
    inputs, targets, mask, resets = _data(*CONDITIONS[condition])
    got = _got(case, K1K2Truncation(k1, k2), inputs, targets, mask=mask, resets=resets)
    # Window s..s+k1-1: its rows' losses, run from the detached true state entering row
    # max(0, s - (k2 - k1)); the windows' graphs are disjoint, so their losses add.
    with torch.no_grad():
        _, entering = _unroll(case, inputs, resets=resets)
    total = 0.0
    for s in range(0, T, k1):
        e, a = min(T, s + k1), max(0, s - (k2 - k1))
        state = [x.detach() for x in entering[a]]
        r = resets[a:e] if resets is not None else None
        outputs, _ = _unroll(case, inputs[a:e], state=state, resets=r)
        own = outputs[s - a :]  # (e - s, B, D)
        total = total + _loss_sum(own, targets[s:e], mask[s:e] if mask is not None else None)
    _assert_all_close(got, _grads(case, total / (T * B)))


# -- forward values do not depend on the strategy ---------------------------------------------


class _Recording(Regression):
    """Regression that keeps the outputs it is given (window by window)."""

    def __init__(self):
        super().__init__()
        self.outputs = []

    def loss_sum(self, outputs, targets, mask=None):
        self.outputs.append(outputs.detach().clone())
        return super().loss_sum(outputs, targets, mask)


@pytest.mark.parametrize("with_resets", [False, True])
@pytest.mark.parametrize("name", MODELS)
def test_forward_values_are_the_same_under_every_strategy(name, with_resets):
    case = _case(name)
    inputs, targets, _, resets = _data(False, with_resets)
    with torch.no_grad():
        want, _ = _unroll(case, inputs, resets=resets)  # (T, B, D)
    specs = ["full", "regular:1", "regular:4", "randomized:3", "randomized:3,alpha=4"]
    specs += ["variable:4"]
    for spec in specs:
        for seed in range(2 if parse_strategy(spec).stochastic else 1):
            recording = _Recording()
            sequence_gradient(
                case.model,
                parse_strategy(spec),
                inputs,
                targets,
                generator=torch.Generator().manual_seed(seed),
                resets=resets,
                objective=recording,
            )
            got = torch.cat(recording.outputs)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-12, msg=spec)


# -- (4) randomized truncation is unbiased; regular truncation is not -------------------------


def _flat(grads) -> torch.Tensor:
    return torch.cat([g.flatten() for g in grads])


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, with_mask", [("gru", True), ("elman", False), ("mingru", True), ("lru", False)]
)
def test_randomized_mean_is_full_and_regular_is_measurably_biased(name, with_mask):
    case = _case(name, seed=1)
    inputs, targets, mask, _ = _data(with_mask, False)
    strategy = RandomizedTruncation(3)
    full = _flat(_reference(case, inputs, targets, mask=mask))
    n = 300
    draws = torch.stack(
        [_flat(_got(case, strategy, inputs, targets, mask=mask, seed=s)) for s in range(n)]
    )  # (n, P)
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(n)
    off = (mean - full).abs()
    worst = (off - 4 * se).max().item()
    assert worst <= 1e-12, f"randomized mean is off the full gradient by > 4 SE (+{worst:.2e})"
    live = se > 1e-12
    assert live.sum() > 10  # most coordinates really vary between draws
    z = (mean - full)[live] / se[live]
    assert 0.3 < (z**2).mean().item() < 3.0, (z**2).mean()
    # The same check on regular:2 fails by far: it could catch a biased estimator.
    regular = _flat(_got(case, RegularTruncation(2), inputs, targets, mask=mask))
    z_regular = (regular - full)[live] / se[live]
    assert z_regular.abs().max().item() > 10.0, "regular:2 should be measurably biased"
