"""The hand-written backward of the gated step loop against autograd and finite differences."""

import pytest
import torch

from tbptt.models import KINDS, Recurrent
from tbptt.models.steps import gated_layer, projected_layer
from tbptt.threads.loops import StepThreads
from tests.reference import reference_loss, tiny_batch, tiny_lm

GROWS = {"lstm": 4, "gru": 3, "rnn": 1, "relu": 1, "linear": 1}


def _layer_args(kind, T=5, B=3, H=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    G = GROWS[kind] * H

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.double).requires_grad_(True)

    c0 = r(B, H) if kind == "lstm" else None
    return r(T, B, G), r(B, H), c0, r(G, H) * 0.7, r(G)


def _naive_layer(kind, xproj, h0, c0, w_hh, b_hh, scales, keeps):
    """Autograd on an unrolled loop of ATen-free elementwise math; hooks scale the edges."""
    H = h0.shape[1]
    h, c, outs = h0, c0, []
    for t in range(xproj.shape[0]):
        s = scales[t]
        if s == 0.0:
            h = h.detach()
            c = c.detach() if c is not None else None
        elif s != 1.0:
            h = h * 1.0
            h.register_hook(lambda gr, s=s: gr * s)
            if c is not None:
                c = c * 1.0
                c.register_hook(lambda gr, s=s: gr * s)
        if t in keeps:
            h = h * keeps[t]
            c = c * keeps[t] if c is not None else None
        hp = h @ w_hh.t() + b_hh
        xp = xproj[t]
        if kind == "lstm":
            a = xp + hp
            i, f, gg, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
            h = torch.sigmoid(o) * torch.tanh(c)
        elif kind == "gru":
            r = torch.sigmoid(xp[:, :H] + hp[:, :H])
            z = torch.sigmoid(xp[:, H : 2 * H] + hp[:, H : 2 * H])
            n = torch.tanh(xp[:, 2 * H :] + r * hp[:, 2 * H :])
            h = (1 - z) * n + z * h
        elif kind == "rnn":
            h = torch.tanh(xp + hp)
        elif kind == "relu":
            h = torch.relu(xp + hp)
        else:
            h = xp + hp
        outs.append(h)
    return torch.stack(outs), h, c


CASES = {
    "plain": ([1.0] * 5, {}),
    "scaled": ([1.0, 1.5, 0.5, 2.0, 1.25], {}),
    "cut inside": ([1.0, 1.5, 0.0, 1.0, 2.0], {}),
    "scaled start": ([0.5, 1.0, 3.0, 1.0, 1.0], {}),
    "resets": ([1.0, 2.0, 1.0, 0.5, 1.0], {0: [1, 0, 1], 3: [0, 1, 1]}),
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("case", CASES)
def test_gated_layer_matches_autograd_on_the_unrolled_loop(kind, case):
    scales, reset_rows = CASES[case]
    keeps = {t: torch.tensor(k, dtype=torch.double).unsqueeze(-1) for t, k in reset_rows.items()}
    args = _layer_args(kind)
    inputs = [a for a in args if a is not None]
    out, h, c = gated_layer(kind, *args, scales, keeps)
    ref_out, ref_h, ref_c = _naive_layer(kind, *args, scales, keeps)
    torch.testing.assert_close(out, ref_out, rtol=0, atol=1e-12)
    torch.testing.assert_close(h, ref_h, rtol=0, atol=1e-12)
    g = torch.Generator().manual_seed(1)
    w_out = torch.randn(out.shape, generator=g, dtype=torch.double)
    w_h = torch.randn(h.shape, generator=g, dtype=torch.double)

    def objective(o, hh, cc):
        total = (o * w_out).sum() + (hh * w_h).sum()
        return total + (cc**2).sum() if cc is not None else total

    grads = torch.autograd.grad(objective(out, h, c), inputs)
    ref = torch.autograd.grad(objective(ref_out, ref_h, ref_c), inputs, allow_unused=True)
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, torch.zeros_like(a) if b is None else b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_gated_layer_passes_finite_difference_gradcheck(kind):
    args = _layer_args(kind, T=4, B=2, H=2, seed=3)
    keeps = {2: torch.tensor([[0.0], [1.0]], dtype=torch.double)}
    scales = [1.0] * 4  # gates change only the backward pass: the true derivative needs xi = 1

    def fn(*tensors):
        full = list(tensors) if kind == "lstm" else [tensors[0], tensors[1], None, *tensors[2:]]
        out, h, c = gated_layer(kind, *full, scales, keeps)
        return (out, h) if c is None else (out, h, c)

    assert torch.autograd.gradcheck(fn, tuple(a for a in args if a is not None), atol=1e-7)


@pytest.mark.parametrize("kind", KINDS)
def test_autograd_path_matches_naive_reference(kind):
    model = tiny_lm(kind, layers=2)
    inputs, targets = tiny_batch()
    gates = [1.0, 1.5, 0.0, 1.0, 2.0, 1.0]
    params = list(model.parameters())
    logits, _ = model(inputs, None, gates, path="autograd")
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    ref = reference_loss(model, inputs, targets, cuts={2}, scales={1: 1.5, 4: 2.0})
    torch.testing.assert_close(loss, ref, rtol=0, atol=1e-12)
    for a, b in zip(torch.autograd.grad(loss, params), torch.autograd.grad(ref, params)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
def test_step_path_state_and_input_gradients_equal_the_autograd_path(kind):
    """Gradients reaching the carried state and the inputs, with resets, dropout off."""
    torch.manual_seed(0)
    rec = Recurrent(kind, input_size=3, hidden_size=4, num_layers=2).double()
    x = torch.randn(7, 3, 3, dtype=torch.double, requires_grad=True)
    base = rec.initial_state(3)
    if kind == "lstm":
        state = tuple(torch.randn_like(s).requires_grad_(True) for s in base)
        leaves = [x, *state]
    else:
        state = torch.randn_like(base).requires_grad_(True)
        leaves = [x, state]
    gates = [0.5, 1.0, 2.0, 1.0, 0.0, 1.25, 1.0]
    resets = torch.zeros(7, 3, dtype=torch.bool)
    resets[2, 0] = resets[5, 2] = True
    results = []
    for path in ("steps", "autograd"):
        out, st = rec(x, state, gates, resets=resets, path=path)
        flat = torch.cat([s.flatten() for s in (st if isinstance(st, tuple) else (st,))])
        objective = (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum() + flat.sum()
        results.append((out, flat, torch.autograd.grad(objective, leaves + list(rec.parameters()))))
    (o1, s1, g1), (o2, s2, g2) = results
    torch.testing.assert_close(o1, o2, rtol=0, atol=1e-12)
    torch.testing.assert_close(s1, s2, rtol=0, atol=1e-12)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_zero_gate_at_the_start_detaches_the_incoming_state():
    rec = Recurrent("lstm", input_size=2, hidden_size=3).double()
    h = torch.randn(1, 2, 3, dtype=torch.double, requires_grad=True)
    out, _ = rec(torch.randn(4, 2, 2, dtype=torch.double), (h, h * 1), [0.0, 1.5, 1.5, 1.5])
    assert out.grad_fn is not None
    (g,) = torch.autograd.grad(out.sum(), h, allow_unused=True)
    assert g is None  # no graph reaches the carried state


def test_auto_path_follows_the_measured_thresholds():
    x = torch.zeros(12, 2, 3)
    lstm, gru = (
        Recurrent("lstm", input_size=3, hidden_size=2),
        Recurrent("gru", input_size=3, hidden_size=2),
    )
    assert lstm._auto_path(x, 1) == "fused" and lstm._auto_path(x, 2) == "fused"
    assert lstm._auto_path(x, 3) == "steps"  # stretches of 4 steps
    assert gru._auto_path(x, 1) == "fused" and gru._auto_path(x, 2) == "steps"
    linear = Recurrent("linear", input_size=3, hidden_size=2)
    assert linear._auto_path(x, 1) == "steps"


# -- the LSTM layer node with its input projection (projected_layer) -------------------


def _lstm_args(T=5, B=3, I=4, H=3, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g, dtype=torch.double) * scale).requires_grad_(True)

    x, h0, c0 = r(T, B, I), r(B, H), r(B, H)
    weights = (r(4 * H, I, scale=0.7), r(4 * H, H, scale=0.7), r(4 * H), r(4 * H))
    return x, h0, c0, weights


def _lstm_cell_loop(x, h0, c0, weights, scales, keeps):
    """torch.nn.LSTMCell step by step with the same parameters; hooks scale the edges."""
    cell = torch.nn.LSTMCell(x.shape[-1], h0.shape[-1]).double()
    for name, w in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), weights):
        delattr(cell, name)
        setattr(cell, name, w)  # the test's leaves, so autograd reaches them
    h, c, outs = h0, c0, []
    for t in range(x.shape[0]):
        s = scales[t]
        if s == 0.0:
            h, c = h.detach(), c.detach()
        elif s != 1.0:
            h, c = h * 1.0, c * 1.0
            h.register_hook(lambda gr, s=s: gr * s)
            c.register_hook(lambda gr, s=s: gr * s)
        if t in keeps:
            h, c = h * keeps[t], c * keeps[t]
        h, c = cell(x[t], (h, c))
        outs.append(h)
    return torch.stack(outs), h, c


@pytest.mark.parametrize("case", CASES)
def test_lstm_node_with_its_projection_matches_torchs_lstm_cell(case):
    scales, reset_rows = CASES[case]
    keeps = {t: torch.tensor(k, dtype=torch.double).unsqueeze(-1) for t, k in reset_rows.items()}
    x, h0, c0, weights = _lstm_args()
    leaves = [x, h0, c0, *weights]
    out, h, c = projected_layer("lstm", x, h0, c0, weights, scales, keeps)
    ref_out, ref_h, ref_c = _lstm_cell_loop(x, h0, c0, weights, scales, keeps)
    for a, b in ((out, ref_out), (h, ref_h), (c, ref_c)):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)
    g = torch.Generator().manual_seed(1)
    w = [torch.randn(t.shape, generator=g, dtype=torch.double) for t in (out, h, c)]

    def objective(o, hh, cc):
        return (o * w[0]).sum() + (hh * w[1]).sum() + (cc * w[2]).sum()

    grads = torch.autograd.grad(objective(out, h, c), leaves)
    ref = torch.autograd.grad(objective(ref_out, ref_h, ref_c), leaves, allow_unused=True)
    for a, b in zip(grads, ref):
        torch.testing.assert_close(a, torch.zeros_like(a) if b is None else b, rtol=0, atol=1e-10)


def test_lstm_node_with_its_projection_passes_gradcheck():
    x, h0, c0, weights = _lstm_args(T=4, B=2, I=3, H=2, seed=5)
    keeps = {2: torch.tensor([[0.0], [1.0]], dtype=torch.double)}

    def fn(x, h0, c0, w_ih, w_hh, b_ih, b_hh):
        return projected_layer("lstm", x, h0, c0, (w_ih, w_hh, b_ih, b_hh), [1.0] * 4, keeps)

    assert torch.autograd.gradcheck(fn, (x, h0, c0, *weights), atol=1e-7)


@pytest.mark.parametrize("kind", KINDS)
def test_step_loops_share_only_the_matrix_products_and_restore_the_thread_count(kind):
    """With two threads the loops' elementwise ops run on one (tbptt.models.steps docstring):
    the same values and gradients as on one thread, and torch's thread count as it was."""
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            torch.manual_seed(0)
            rec = Recurrent(kind, input_size=3, hidden_size=4).double()
            x = torch.randn(6, 3, 3, dtype=torch.double, requires_grad=True)
            out, _ = rec(x, None, [1.0, 1.5, 1.5, 0.0, 1.5, 1.5], path="steps")
            results.append((out, torch.autograd.grad(out.square().sum(), [x, *rec.parameters()])))
            assert torch.get_num_threads() == n
    finally:
        torch.set_num_threads(threads)
    (o1, g1), (o2, g2) = results
    torch.testing.assert_close(o1, o2, rtol=0, atol=1e-13)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_the_step_thread_switch_restores_the_count_when_the_loop_raises():
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with pytest.raises(RuntimeError), StepThreads() as switch:
            assert torch.get_num_threads() == 1
            switch.wide()
            assert torch.get_num_threads() == 2
            switch.narrow()
            raise RuntimeError("inside the loop")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
