"""Exact sensitivities of the built-in RNN / GRU / LSTM stacks in closed form, batched.

For :class:`~tbptt.models.RecurrentNet` over a classic cell (``rnn``, ``relu``,
``linear``, ``gru``, ``lstm``, any number of layers) the step and every
derivative RTRL needs come from the gate activations of the step itself
(:mod:`tbptt.train.online.cells`), with no ``torch.func`` and no loop over
streams. The sensitivity J = ds/dθ is kept only for the parameters that reach
the state (the input adapter and the recurrent stack; the head's are zero),
J (B, S, P_s), rows in the order of the flat state s (every layer's h, then
every layer's c), columns in θ's order. Layer by layer, with A = ∂Q/∂h_prev
and G = ∂Q/∂x from the coefficients::

    J_t[Q of layer l] = A_Q J_{t-1}[h of l] + Σ_R direct_(Q,R) ⊙ J_{t-1}[R of l]
                        + G_Q J_t[h of layer l-1]          (l > 0; the input adapter for l = 0)
                        + ∂Q/∂θ_l                          (a few diagonal writes, no dense I)

Only the columns of the adapter and layers 0..l can be non-zero in layer l's
rows, so each product runs on that prefix: for one layer the cost per step is
one (B, H, H) x (B, H, P_s) batched product per state tensor. The step's loss
gradient is ∂l/∂θ_head + Σ_b ∂l/∂h^L_t · J_t (the head by autograd on the
readout only: one small graph per step).

Dropout (on the adapted inputs, between layers, before the head) is applied
with explicit masks, so training mode gives the gradient of the masked step.
Models this engine does not cover (zoneout, a spectral-norm parametrization,
an adaptive softmax, tied weights, a user's module) take the ``torch.func``
path of :class:`~tbptt.train.online.rtrl.RTRL`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tbptt.train.online.cells import GATE_ROWS, cell_step
from tbptt.train.online.step import StepFunction

__all__ = ["DenseCells", "dense_engine"]


def dense_engine(model: nn.Module, fn: StepFunction) -> DenseCells | None:
    """The closed-form engine for ``model``, or None when it does not cover it."""
    from tbptt.models.lm import RecurrentNet

    if type(model) is not RecurrentNet:
        return None
    cfg = model.config
    if cfg.kind not in GATE_ROWS or cfg.zoneout or cfg.zoneout_cell or cfg.spectral_norm:
        return None
    if cfg.adaptive_softmax or cfg.tie_weights or not isinstance(model.head, nn.Linear):
        return None
    if model.embedding is not None and not isinstance(model.embedding, nn.Embedding | nn.Linear):
        return None
    names = fn.names
    state = [n for n in names if n.startswith(("embedding.", "recurrent."))]
    if names != state + ["head.weight", "head.bias"][: len(names) - len(state)]:
        return None  # a frozen or reordered parameter: the generic path
    return DenseCells(model, fn)


class DenseCells:
    """The closed-form step of a classic ``RecurrentNet`` (see the module docstring)."""

    def __init__(self, model: nn.Module, fn: StepFunction):
        rec = model.recurrent
        self.model, self.fn = model, fn
        self.kind, self.L, self.H = rec.kind, rec.num_layers, rec.hidden_size
        self.G = GATE_ROWS[self.kind]
        self.lstm = self.kind == "lstm"
        offsets, at = {}, 0
        for name, size in zip(fn.names, fn.sizes):
            offsets[name] = (at, at + size)
            at += size
        self.offsets = offsets
        self.columns = sum(
            size for n, size in zip(fn.names, fn.sizes) if not n.startswith("head.")
        )  # P_s
        self.head_params = [p for n, p in zip(fn.names, fn.parameters()) if n.startswith("head.")]
        self.layer_end = [offsets[f"recurrent.core.bias_hh_l{layer}"][1] for layer in range(self.L)]
        self.weights = [rec._weights(layer) for layer in range(self.L)]
        self.state_size = self.L * self.H * (2 if self.lstm else 1)  # S

    # -- layout ----------------------------------------------------------------------------

    def rows(self, q: int, layer: int) -> slice:
        """The rows of s (and J) of state tensor q (0: h, 1: c) of ``layer``."""
        start = (q * self.L + layer) * self.H
        return slice(start, start + self.H)

    def pattern(self, order: int, dtype, device) -> torch.Tensor:
        """SnAp's M_N (S, P_s) from the cells' structure (1 where J may be non-zero).

        M_1: a parameter of unit i of layer l writes unit i of layer l (h, and c unless it is
        the LSTM's output gate) and, through
        the layers above at the same step, every unit above; the input adapter writes every
        unit. One step of the recurrence connects h of layer l to every unit of l and above,
        and an LSTM's c_i to its own c_i and h_i (and, through h_i, to the layers above).
        """
        S, P, H, L = self.state_size, self.columns, self.H, self.L
        nq = 2 if self.lstm else 1
        direct = torch.zeros(S, P, dtype=torch.bool, device=device)
        above = lambda layer: [self.rows(q, m) for m in range(layer + 1, L) for q in range(nq)]  # noqa: E731
        if "embedding.weight" in self.offsets:
            end = self.offsets["recurrent.core.weight_ih_l0"][0]
            direct[:, :end] = True
        for layer in range(L):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                a, b = self.offsets[f"recurrent.core.{name}_l{layer}"]
                per_row = (b - a) // (self.G * H)  # columns per row of the weight
                row = torch.arange(b - a, device=device) // per_row  # (cols,) g H + i
                unit, cols = row % H, torch.arange(a, b, device=device)
                for q in range(nq):
                    # an LSTM's output gate (g = 3) writes h_i only, not c_i
                    keep = row // H != 3 if q == 1 else torch.ones_like(row, dtype=torch.bool)
                    direct[self.rows(q, layer).start + unit[keep], cols[keep]] = True
                for r in above(layer):
                    direct[r, a:b] = True
        recur = torch.zeros(S, S, dtype=torch.bool, device=device)  # (S_out, S_in)
        for layer in range(L):
            h_in = self.rows(0, layer)
            for q in range(nq):
                recur[self.rows(q, layer), h_in] = True
                for r in above(layer):
                    recur[r, h_in] = True
            if self.lstm:
                c_in = self.rows(1, layer)
                eye = torch.eye(H, dtype=torch.bool, device=device)
                recur[self.rows(0, layer), c_in] |= eye
                recur[self.rows(1, layer), c_in] |= eye
                for r in above(layer):
                    recur[r, c_in] = True
        reach = direct
        for _ in range(order - 1):
            reach = reach | ((recur.to(dtype) @ reach.to(dtype)) != 0)
        return reach.to(dtype)

    # -- the step --------------------------------------------------------------------------

    def _dropout(self, x: torch.Tensor, rate: float) -> torch.Tensor | None:
        if not self.model.training or rate == 0.0:
            return None
        return torch.empty_like(x).bernoulli_(1 - rate) / (1 - rate)

    def _adapt(self, inputs: torch.Tensor):
        """(x (B, I), the adapter's raw input (ids (B,) or features (B, F)), dropout mask)."""
        model, cfg = self.model, self.model.config
        raw = inputs[0]
        if cfg.tokens:
            raw = raw.long()
            if model.embedding is None:
                x = F.one_hot(raw, cfg.vocab_size).to(model.head.weight.dtype)
            else:
                x = model.embedding.weight[raw]
        else:
            raw = raw.to(model.head.weight.dtype)
            x = model.embedding(raw) if model.embedding is not None else raw
        drop = self._dropout(x, model.drop.p) if model.embedding is not None else None
        return (x if drop is None else x * drop), raw, drop

    def _adapter_columns(self, out, g_x, raw, drop):
        """Add ∂Q/∂x (B, H, E) times ∂x/∂θ_adapter into ``out`` (B, H, P_l) (layer 0)."""
        emb = self.model.embedding
        if emb is None:
            return
        if drop is not None:
            g_x = g_x * drop.unsqueeze(1)
        B, H = g_x.shape[:2]
        a, b = self.offsets["embedding.weight"]
        if isinstance(emb, nn.Embedding):
            V, E = emb.weight.shape
            rows = out[:, :, a:b].view(B, H, V, E)
            rows[torch.arange(B, device=out.device), :, raw, :] += g_x
        else:
            E, Fi = emb.weight.shape
            out[:, :, a:b].view(B, H, E, Fi).add_(g_x.unsqueeze(-1) * raw[:, None, None, :])
            if "embedding.bias" in self.offsets:
                a, b = self.offsets["embedding.bias"]
                out[:, :, a:b].add_(g_x)

    def _immediate(self, out, layer, coef, x, h_prev):
        """Add ∂Q/∂θ_layer (diagonal in the unit) into ``out`` (B, H, P_l)."""
        alpha, beta = coef
        B, H, G = out.shape[0], self.H, self.G
        for name, c, z in (("weight_ih", alpha, x), ("weight_hh", beta, h_prev)):
            a, b = self.offsets[f"recurrent.core.{name}_l{layer}"]
            K = z.shape[1]
            diag = out[:, :, a:b].view(B, H, G, H, K).diagonal(dim1=1, dim2=3)  # (B, G, K, H)
            diag.add_(c.unsqueeze(2) * z[:, None, :, None])
        for name, c in (("bias_ih", alpha), ("bias_hh", beta)):
            a, b = self.offsets[f"recurrent.core.{name}_l{layer}"]
            out[:, :, a:b].view(B, H, G, H).diagonal(dim1=1, dim2=3).add_(c)

    @torch.no_grad()
    def step(self, s, J_old, J_new, row, mask=None, published=True):
        """One row: (loss sum, gradient (P,), s_t (B, S)); J_new (B, S, P_s) is written.

        ``mask`` (S, P_s) (SnAp's M): with ``published`` the mask is applied to J_t before
        the step's gradient (Menick et al.), else after it (the mask on J_{t-1} only).
        """
        inputs, targets, loss_mask = row
        G, H, L = self.G, self.H, self.L
        x, raw, drop_in = self._adapt(inputs)
        s_new = torch.empty_like(s)
        drop = None  # the dropout mask on the input of the layer (above the first)
        for layer in range(L):
            w_ih, w_hh, b_ih, b_hh = self.weights[layer]
            end = self.layer_end[layer]
            h_rows, c_rows = self.rows(0, layer), self.rows(1, layer)
            h = s[:, h_rows]
            c = s[:, c_rows] if self.lstm else None
            u = torch.addmm(b_ih, x, w_ih.t()).view(-1, G, H)  # (B, G, H)
            v = torch.addmm(b_hh, h, w_hh.t()).view(-1, G, H)
            st = cell_step(self.kind, u, v, h, c)
            for q in range(2 if self.lstm else 1):
                out = J_new[:, self.rows(q, layer), :end]  # (B, H, P_l), a view
                a_q = torch.einsum("bgi,gik->bik", st.beta[q], w_hh.view(G, H, -1))
                torch.bmm(a_q, J_old[:, h_rows, :end], out=out)
                for (qq, r), d in st.direct.items():
                    if qq == q:
                        out.addcmul_(d.unsqueeze(-1), J_old[:, self.rows(r, layer), :end])
                g_x = torch.einsum("bgi,gik->bik", st.alpha[q], w_ih.view(G, H, -1))  # (B, H, I)
                if layer == 0:
                    self._adapter_columns(out, g_x, raw, drop_in)
                else:
                    if drop is not None:
                        g_x = g_x * drop.unsqueeze(1)
                    out.baddbmm_(g_x, J_new[:, self.rows(0, layer - 1), :end])
                self._immediate(out, layer, (st.alpha[q], st.beta[q]), x, h)
            s_new[:, h_rows] = st.h
            if self.lstm:
                s_new[:, c_rows] = st.c
            x = st.h
            drop = None
            if layer + 1 < L:
                drop = self._dropout(x, self.model.recurrent.dropout)
                x = x if drop is None else x * drop
        if mask is not None and published:
            J_new.mul_(mask)
        loss, grad = self._gradient(s_new[:, self.rows(0, L - 1)], J_new, targets, loss_mask)
        if mask is not None and not published:
            J_new.mul_(mask)
        return loss, grad, s_new

    def _gradient(self, h_last, J, targets, loss_mask):
        """(loss sum, (P,)): the head by autograd on the readout, the rest through J."""
        model = self.model
        with torch.enable_grad():
            leaf = h_last.detach().requires_grad_(True)
            outputs = model.head(model.drop_output(leaf)).unsqueeze(0)  # (1, B, O)
            loss = model_loss = self.fn.objective.loss_sum(outputs, targets, loss_mask)
            grads = torch.autograd.grad(model_loss, [leaf, *self.head_params])
        rows = J[:, self.rows(0, self.L - 1), :]  # (B, H, P_s)
        through = torch.einsum("bh,bhp->p", grads[0], rows)
        return loss.detach(), torch.cat([through, *(g.reshape(-1) for g in grads[1:])])
