"""Independent references for gradient tests: a naive per-step loop over ATen's own cells.

Nothing here uses tbptt's gates or step path: cuts are ``detach()`` calls and
gradient scales are tensor hooks, written out step by step.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _cell(kind, x, h, c, w_ih, w_hh, b_ih, b_hh):
    if kind == "lstm":
        return torch._VF.lstm_cell(x, (h, c), w_ih, w_hh, b_ih, b_hh)
    if kind == "gru":
        return torch._VF.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh), None
    if kind == "rnn":
        return torch._VF.rnn_tanh_cell(x, h, w_ih, w_hh, b_ih, b_hh), None
    if kind == "relu":
        return torch._VF.rnn_relu_cell(x, h, w_ih, w_hh, b_ih, b_hh), None
    return x @ w_ih.t() + b_ih + h @ w_hh.t() + b_hh, None  # linear


def reference_loss(model, inputs, targets, *, cuts=(), scales=None, state=None):
    """Mean token loss of a RecurrentLM over (T, B), run naively step by step.

    ``cuts``: steps t whose incoming state edge is detached (a fresh window).
    ``scales``: {t: xi} multiplies the gradient on the edge entering step t (a hook).
    """
    rec = model.recurrent
    kind, L = rec.kind, rec.num_layers
    T, B = inputs.shape
    x_all = model.embed(inputs)
    if state is None:
        state = rec.initial_state(B)
    if kind == "lstm":
        hs, cs = list(state[0].unbind(0)), list(state[1].unbind(0))
    else:
        hs, cs = list(state.unbind(0)), [None] * L
    weights = [
        tuple(
            getattr(rec.core, f"{n}_l{layer}")
            for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        )
        for layer in range(L)
    ]
    total = 0.0
    for t in range(T):
        if t in cuts:
            hs = [h.detach() for h in hs]
            cs = [c.detach() if c is not None else None for c in cs]
        if scales and t in scales and t not in cuts:
            xi = scales[t]
            hs = [h * 1.0 for h in hs]
            for h in hs:
                if h.requires_grad:
                    h.register_hook(lambda g, xi=xi: g * xi)
            if kind == "lstm":
                cs = [c * 1.0 for c in cs]
                for c in cs:
                    if c.requires_grad:
                        c.register_hook(lambda g, xi=xi: g * xi)
        x = x_all[t]
        for layer in range(L):
            hs[layer], cs[layer] = _cell(kind, x, hs[layer], cs[layer], *weights[layer])
            x = hs[layer]
        logits = model.head(x)
        total = total + F.cross_entropy(logits, targets[t], reduction="sum")
    return total / (T * B)


def tiny_lm(kind, *, layers=1, vocab=7, hidden=4, embedding=3, seed=0):
    from tbptt.models import ModelConfig, RecurrentLM

    torch.manual_seed(seed)
    cfg = ModelConfig(
        vocab_size=vocab,
        kind=kind,
        hidden_size=hidden,
        num_layers=layers,
        embedding_size=embedding,
        dropout=0.0,
    )
    return RecurrentLM(cfg).double()


def tiny_batch(T=6, B=3, vocab=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (T + 1, B), generator=g)
    return tokens[:-1], tokens[1:]


def feature_batch(T=7, B=3, inputs=3, outputs=2, seed=1):
    """Float64 features (T, B, inputs) and targets (T, B, outputs), with per-stream resets
    (rows 3 and 5) and a loss mask (T, B) that leaves out two (row, stream) pairs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, inputs, generator=g, dtype=torch.float64)
    y = torch.randn(T, B, outputs, generator=g, dtype=torch.float64)
    resets = torch.zeros(T, B, dtype=torch.bool)
    resets[3, 1] = resets[5, 0] = True
    mask = torch.ones(T, B, dtype=torch.bool)
    mask[2, 2] = mask[6, 1] = False
    return x, y, resets, mask
