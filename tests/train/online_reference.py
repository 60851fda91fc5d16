"""Independent references for the online estimators: the definitions, written as naive loops.

Nothing here uses tbptt's online code. A model is given as three plain functions of a
flat parameter vector θ (P,) and ONE stream's flat state s (S,):

    step(θ, s, x_t) -> s_t                 readout_loss(θ, s_t, x_t, y_t) -> l_t

and the per-step Jacobians D_t = ∂s_t/∂θ (S, P), A_t = ∂s_t/∂s_{t-1} (S, S) and the
readout's gradients come from ``torch.autograd.functional.jacobian`` (plain reverse
mode, one stream at a time). SnAp's pattern is found from the same Jacobians at
random points and every input value, as the paper defines it:
M_1 = nz(D), M_{n+1} = M_n ∨ nz(A) M_n.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.functional import jacobian


def snap_reference(step, readout_loss, theta, s0, xs, ys, *, order=None, lagged=False, points=()):
    """Σ_t of one stream's per-step gradient estimates (P,) under RTRL or SnAp-N.

    order None: RTRL (no mask). ``lagged``: the mask applied after the step's gradient,
    the gradient of step t then being ∂l_t/∂θ + ∂l_t/∂s_{t-1} J̃_{t-1} (unmasked step).
    ``points``: (θ, s, x) triples where the structural non-zeros are collected.
    """
    P, S = theta.shape[0], s0.shape[0]
    mask = None
    if order is not None:
        direct = torch.zeros(S, P, dtype=torch.bool)
        recur = torch.zeros(S, S, dtype=torch.bool)
        for th, st, x in points:
            direct |= jacobian(lambda p, st=st, x=x: step(p, st, x), th) != 0
            recur |= jacobian(lambda h, th=th, x=x: step(th, h, x), st) != 0
        mask = direct
        for _ in range(order - 1):
            mask = mask | ((recur.double() @ mask.double()) != 0)
        mask = mask.double()
    J = torch.zeros(S, P, dtype=theta.dtype)
    s, total = s0, torch.zeros(P, dtype=theta.dtype)
    for x, y in zip(xs, ys):
        D = jacobian(lambda p, s=s, x=x: step(p, s, x), theta)  # (S, P)
        A = jacobian(lambda h, x=x: step(theta, h, x), s)  # (S, S)
        s_new = step(theta, s, x)
        g_theta = jacobian(lambda p, h=s_new, x=x, y=y: readout_loss(p, h, x, y), theta)  # (P,)
        g_s = jacobian(lambda h, x=x, y=y: readout_loss(theta, h, x, y), s_new)  # (S,)
        J_new = D + A @ J
        if mask is not None and not lagged:
            J_new = J_new * mask
        total = total + g_theta + g_s @ J_new
        if mask is not None and lagged:
            J_new = J_new * mask
        J, s = J_new, s_new
    return total


def _cell(kind, x, h, c, w_ih, w_hh, b_ih, b_hh):
    if kind == "lstm":
        return torch._VF.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
    if kind == "gru":
        return torch._VF.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh), None
    return torch._VF.rnn_tanh_cell(x, h, w_ih, w_hh, b_ih, b_hh), None


def builtin_functions(model):
    """(step, readout_loss, θ) of a built-in classic RecurrentNet (token inputs, one stream),
    written with ATen's own cells; the state is every layer's h, then every layer's c."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    rec = model.recurrent
    kind, L, H = rec.kind, rec.num_layers, rec.hidden_size

    def params(th):
        return {n: t.view(s) for n, t, s in zip(names, th.split(sizes), shapes)}

    def embed(p, x):
        if "embedding.weight" in p:
            return p["embedding.weight"][x]
        return F.one_hot(x, model.config.vocab_size).to(theta.dtype)

    def step(th, s, x):
        p = params(th)
        inp = embed(p, x).unsqueeze(0)  # (1, E)
        hs, cs = [], []
        for layer in range(L):
            h = s[layer * H : (layer + 1) * H].unsqueeze(0)
            c = s[(L + layer) * H : (L + layer + 1) * H].unsqueeze(0) if kind == "lstm" else None
            w = [
                p[f"recurrent.core.{n}_l{layer}"]
                for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            ]
            h, c = _cell(kind, inp, h, c, *w)
            hs.append(h[0])
            cs.append(c[0] if c is not None else None)
            inp = h
        return torch.cat(hs + ([c for c in cs] if kind == "lstm" else []))

    def readout_loss(th, s, x, y):
        p = params(th)
        h = s[(L - 1) * H : L * H]
        logits = h @ p["head.weight"].t() + p["head.bias"]
        return F.cross_entropy(logits.unsqueeze(0), y.view(1), reduction="sum")

    return step, readout_loss, theta


def builtin_points(model, vocab, seed=0):
    """Random (θ, s, x) points covering every input token, for the structural pattern."""
    step, _, theta = builtin_functions(model)
    g = torch.Generator().manual_seed(seed)
    S = step(theta, torch.zeros(_state_size(model), dtype=theta.dtype), torch.tensor(0)).shape[0]
    points = []
    for _ in range(2):
        th = theta + 0.1 * torch.randn(theta.shape, generator=g, dtype=theta.dtype)
        st = 0.5 * torch.randn(S, generator=g, dtype=theta.dtype)
        points += [(th, st, torch.tensor(v)) for v in range(vocab)]
    return points


def _state_size(model):
    rec = model.recurrent
    return rec.num_layers * rec.hidden_size * (2 if rec.kind == "lstm" else 1)
