"""Online learning for element-wise (diagonal) recurrences: minGRU, minLSTM, LRU.

Each layer of :class:`~tbptt.models.minimal.LinearRecurrent` is h_t = a_t ⊙ h_{t-1}
+ b_t with a_t, b_t functions of the layer's input x_t and of the layer's own
parameters, every one of which belongs to one unit (a row of the input map, a
unit's λ). So ∂h_t/∂h_{t-1} is diagonal and the sensitivity of unit i to a
parameter p of unit i obeys (Zucchet et al. 2023; Irie et al. 2023)::

    e_t[p] = a_t[i] e_{t-1}[p] + ∂(a_t[i] h_{t-1}[i] + b_t[i]) / ∂p

one number per (stream, parameter): memory B·P, a few element-wise products per
step. The LRU's state is complex (e complex; the imaginary part of its input map
has e = i e of the real part, so one is kept). The input adapter (embedding or
linear projection) feeds every unit of the first layer: its sensitivity through
that layer is dense, e_in (B, H, P_in), with e_in_t = a_t ⊙ e_in_{t-1} + ∂h_t/∂x_t
∂x_t/∂θ_in.

The gradient of step t is ∂l_t/∂θ_direct + Σ_l δ^l_t · e^l_t, with δ^l_t =
∂l_t/∂h^l_t by **spatial** backpropagation: through the layers above at the same
step only (their previous states held fixed), as Zucchet et al. define it;
∂l_t/∂θ_direct are the readouts' and the head's gradients at step t (and the
adapter's through the LRU's skip connection).

- One layer: this is exact RTRL (equal to full BPTT), so ``rtrl`` uses it on a
  one-layer minGRU / minLSTM / LRU model.
- A stack (``layer-rtrl``): exact within each layer, but a layer's parameters
  do not see their influence on the layers above through time (h^l_t -> h^{l+1}_{t+1}
  -> ...), and the input of layer l > 0 is held fixed when tracking layer l: the
  gradient Zucchet et al. compute, not the full one. (``rtrl`` on a stack stays exact,
  on the ``torch.func`` engine.)

**A window at a time.** Between two optimizer steps the weights are fixed, so the U
rows of a window (``update_every=U``) run together, layer by layer: the gates of every
row in one product (they read the layer's input only), the states and the
sensitivities by element-wise scans over the rows, and the δ^l of all U·B (row,
stream) pairs in one spatial backpropagation (within a step the pairs do not
interact). The result is the sum of U single steps (tested to 1e-12); every row's
sensitivities are held for that pass, so a window runs in stretches of at most
:data:`STRETCH_VALUES` sensitivity values (:data:`STRETCH_ROWS` rows).

Dropout (on the adapted inputs, between layers, before the head) is applied with
explicit masks. Zoneout is not covered (the generic engine takes it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tbptt.threads.loops import StepThreads
from tbptt.train.objectives import Objective
from tbptt.train.online.base import OnlineEstimator

__all__ = ["DiagonalRTRL", "diagonal_covers"]

STRETCH_ROWS = 64  # the most rows one spatial backpropagation takes
STRETCH_VALUES = 1 << 22  # the most sensitivity values (rows x streams x P) held for it


def diagonal_covers(model: nn.Module) -> bool:
    """Whether ``model`` is a linear-recurrent RecurrentNet this engine runs."""
    from tbptt.models.lm import RecurrentNet
    from tbptt.models.minimal import LinearRecurrent

    if type(model) is not RecurrentNet or not isinstance(model.recurrent, LinearRecurrent):
        return False
    cfg = model.config
    return not (cfg.zoneout or cfg.adaptive_softmax or cfg.tie_weights) and isinstance(
        model.head, nn.Linear
    )


class DiagonalRTRL(OnlineEstimator):
    """Diagonal sensitivities per layer, spatial backpropagation between layers (module docstring).

    Args:
        model: a :class:`~tbptt.models.RecurrentNet` over ``mingru``, ``minlstm`` or ``lru``.
        objective: the loss of its outputs.
    """

    name = "layer-rtrl"

    def __init__(self, model: nn.Module, objective: Objective):
        super().__init__(model, objective)
        if not diagonal_covers(model):
            raise ValueError(
                f"Expected a minGRU / minLSTM / LRU RecurrentNet, got {type(model).__name__}"
            )
        rec = model.recurrent
        self.model, self.rec = model, rec
        self.kind, self.L, self.H = rec.kind, rec.num_layers, rec.hidden_size
        self.S = rec.state_size
        self.params = dict(zip(self.fn.names, self.fn.parameters()))  # θ's order
        self.layer_params = [dict(layer.named_parameters()) for layer in rec.layers]
        self.e: dict[str, torch.Tensor] | None = None

    # -- run state ---------------------------------------------------------------------

    def _start(self, batch_size: int) -> None:
        B, dt = batch_size, self.s.dtype
        ct = torch.complex128 if dt == torch.float64 else torch.complex64
        e = {}
        for layer, module in enumerate(self.rec.layers):
            prefix = f"recurrent.layers.{layer}."
            if self.kind == "lru":
                N, K = module.b_re.shape
                for name in ("nu_log", "theta_log", "gamma_log"):
                    e[prefix + name] = torch.zeros(B, N, dtype=ct, device=self.s.device)
                e[prefix + "b_re"] = torch.zeros(B, N, K, dtype=ct, device=self.s.device)
            else:
                rows, K = module.weight.shape
                G = rows // self.H
                e[prefix + "weight"] = self.s.new_zeros(B, G, self.H, K)
                e[prefix + "bias"] = self.s.new_zeros(B, G, self.H)
        emb = self.model.embedding
        if emb is not None:
            size = sum(p.numel() for p in emb.parameters())
            e["embedding"] = torch.zeros(
                B, self.H, size, dtype=ct if self.kind == "lru" else dt, device=self.s.device
            )
        self.e = e

    def _reset(self, keep: torch.Tensor) -> None:
        for k, v in self.e.items():
            self.e[k] = v * keep.view(-1, *([1] * (v.dim() - 1))).to(v.dtype)

    def _clear(self) -> None:
        self.e = None

    def _tensors(self) -> dict:
        return {f"e/{k}": v for k, v in self.e.items()}

    def _load(self, d: dict) -> None:
        self.e = {k[2:]: v for k, v in d.items() if k.startswith("e/")}

    # -- pieces ------------------------------------------------------------------------

    def _dropout(self, x: torch.Tensor, rate: float) -> torch.Tensor | None:
        if not self.model.training or rate == 0.0:
            return None
        return torch.empty_like(x).bernoulli_(1 - rate) / (1 - rate)

    def _adapt(self, inputs):
        """(x (R, I) for the R = U B (row, stream) pairs of rows (U, B[, F]), the raw ids /
        features (R[, F]), the dropout mask)."""
        model, cfg = self.model, self.model.config
        raw = inputs.reshape(-1, *inputs.shape[2:])
        if cfg.tokens:
            raw = raw.long()
            if model.embedding is None:
                x = F.one_hot(raw, cfg.vocab_size).to(model.head.weight.dtype)
            else:
                x = model.embedding(raw)
        else:
            raw = raw.to(model.head.weight.dtype)
            x = model.embedding(raw) if model.embedding is not None else raw
        drop = self._dropout(x, model.drop.p) if model.embedding is not None else None
        return (x if drop is None else x * drop), raw, drop

    def _gates(self, layer: int, x: torch.Tensor, params=None):
        """(a, b, what :meth:`_coef` needs) of h = a ⊙ h_prev + b from the layer's input x
        (R, K) alone (``params``: detached copies, for the spatial pass). Real kinds: a, b
        (R, H); LRU: a = λ (N,), b = γ B x (R, N) complex."""
        module = self.rec.layers[layer]
        if self.kind == "lru":
            p = params or self.layer_params[layer]
            lam = torch.exp(torch.complex(-torch.exp(p["nu_log"]), torch.exp(p["theta_log"])))
            scale = torch.exp(p["gamma_log"])
            bx = torch.complex(x @ p["b_re"].t(), x @ p["b_im"].t()) * scale
            return lam, bx, None
        p = params or {"weight": module.weight, "bias": module.bias}
        proj = (x @ p["weight"].t() + p["bias"]).view(x.shape[0], -1, self.H)  # (R, G, H)
        if self.kind == "mingru":
            z = torch.sigmoid(proj[:, 0])
            cand = proj[:, 1]
            return 1 - z, z * cand, (z, cand)
        f, i, cand = torch.sigmoid(proj[:, 0]), torch.sigmoid(proj[:, 1]), proj[:, 2]
        s = f + i
        return f / s, i / s * cand, (f, i, s, cand)

    def _coef(self, gates, h_prev: torch.Tensor) -> torch.Tensor | None:
        """∂h/∂(the layer's pre-activations) (R, G, H) given h_prev (R, H) (None: LRU)."""
        if self.kind == "lru":
            return None
        if self.kind == "mingru":
            z, cand = gates
            return torch.stack([z * (1 - z) * (cand - h_prev), z], dim=1)
        f, i, s, cand = gates
        q = f * i / (s * s)
        return torch.stack([q * (1 - f) * (h_prev - cand), q * (1 - i) * (cand - h_prev), i / s], 1)

    def _state(self, s: torch.Tensor, layer: int) -> torch.Tensor:
        h = s[..., layer * self.S : (layer + 1) * self.S]
        if self.kind == "lru":
            return torch.complex(h[..., : self.H], h[..., self.H :])
        return h

    def _increments(self, layer, x, h_prev, a, bx, coef, raw, drop):
        """How layer ``layer``'s sensitivities (and the adapter's, for layer 0) grow over the
        rows, e_t = a_t ⊙ e_{t-1} + c_t: {name: (a (R, ...), broadcastable to e; c (R, ...))}."""
        prefix = f"recurrent.layers.{layer}."
        R = x.shape[0]
        out = {}
        if self.kind == "lru":
            module = self.rec.layers[layer]
            lam = a  # λ (N,)
            nu, th = module.nu_log.detach(), module.theta_log.detach()
            scale = torch.exp(module.gamma_log.detach())
            a_rows = lam.expand(R, -1)  # (R, N): the same λ for every row
            out[prefix + "nu_log"] = (a_rows, lam * (-torch.exp(nu)) * h_prev)
            out[prefix + "theta_log"] = (a_rows, lam * (1j * torch.exp(th)) * h_prev)
            out[prefix + "gamma_log"] = (a_rows, bx)
            out[prefix + "b_re"] = (a_rows[:, :, None], scale[:, None] * x[:, None, :])  # (R, N, K)
            g_x = (scale[:, None] * torch.complex(module.b_re, module.b_im).detach()).unsqueeze(0)
        else:
            out[prefix + "weight"] = (a[:, None, :, None], coef.unsqueeze(-1) * x[:, None, None, :])
            out[prefix + "bias"] = (a[:, None, :], coef)
            a_rows = a
            G = coef.shape[1]
            w = self.rec.layers[layer].weight.detach().view(G, self.H, -1)
            g_x = torch.einsum("rgh,ghk->rhk", coef, w) if layer == 0 else None
        if layer == 0 and "embedding" in self.e:  # ∂h/∂x ∂x/∂θ_in, dense over the units
            g_x = g_x.expand(R, -1, -1)  # (R, H, I)
            if drop is not None:
                g_x = g_x * drop.unsqueeze(1)
            emb = self.model.embedding
            c = g_x.new_zeros(R, self.H, self.e["embedding"].shape[-1])
            if isinstance(emb, nn.Embedding):
                V, E = emb.weight.shape
                c.view(R, self.H, V, E)[torch.arange(R, device=x.device), :, raw, :] = g_x
            else:
                E, Fi = emb.weight.shape
                c[:, :, : E * Fi].view(R, self.H, E, Fi).copy_(g_x.unsqueeze(-1) * raw[:, None, None, :])  # fmt: skip
                if emb.bias is not None:
                    c[:, :, E * Fi :].copy_(g_x)
            out["embedding"] = (a_rows.unsqueeze(-1), c)
        return out

    # -- the step ----------------------------------------------------------------------

    def rows_at_once(self, batch_size: int) -> int:
        """Rows whose sensitivities fit in :data:`STRETCH_VALUES` (each row's sensitivities
        are kept for the stretch's one spatial backpropagation)."""
        per_row = sum(v.numel() for v in self.e.values()) if self.e else 0
        return max(1, min(STRETCH_ROWS, STRETCH_VALUES // max(1, per_row)))

    def _advance(self, s, row, generator):
        """Rows (U, B[, F]) at the same weights, layer by layer: the gates of every row at
        once, the states by a scan (h_t = a_t ⊙ h_{t-1} + b_t), the sensitivities by a scan
        (e_t = a_t ⊙ e_{t-1} + c_t), then every row's δ^l by one spatial backpropagation
        over the U B (row, stream) pairs, which do not interact inside a step."""
        with StepThreads():  # element-wise work and small products: one thread (tbptt.threads)
            return self._window(s, row)

    def _window(self, s, row):
        inputs, targets, mask = row
        U, B = inputs.shape[:2]
        with torch.no_grad():
            x, raw, drop_in = self._adapt(inputs)  # (U B, I)
            s_rows = s.new_empty(U + 1, *s.shape)  # s_{t-1} of every row, then s_{t0+U}
            s_rows[0] = s
            news, masks, every = [], [], {}  # every: each sensitivity at every row (U, B, ..)
            for layer in range(self.L):
                a, bx, gates = self._gates(layer, x)
                h = self._state(s, layer)
                a_t = a.expand(U * B, -1).view(U, B, -1) if a.dim() == 1 else a.view(U, B, -1)
                b_t = bx.view(U, B, -1)
                hs = b_t.new_empty(U + 1, *h.shape)  # h_{t0-1} .. h_{t0+U-1}
                hs[0] = h
                for t in range(U):
                    torch.addcmul(b_t[t], a_t[t], hs[t], out=hs[t + 1])
                h_prev = hs[:-1].reshape(U * B, -1)
                coef = self._coef(gates, h_prev)
                growth = self._increments(layer, x, h_prev, a, bx, coef, raw, drop_in)
                for key, (factor, c) in growth.items():
                    every[key] = self._scan(self.e[key], factor, c, U, B)
                    self.e[key] = every[key][-1]  # a view: the next window writes a new buffer
                part = torch.cat([hs.real, hs.imag], dim=-1) if self.kind == "lru" else hs
                s_rows[:, :, layer * self.S : (layer + 1) * self.S] = part
                h_new = hs[1:].reshape(U * B, -1)
                news.append(h_new)
                y = (
                    self.rec.layers[layer].readout(h_new.unsqueeze(0), x.unsqueeze(0))[0]
                    if self.kind == "lru"
                    else h_new
                )
                drop = self._dropout(y, self.rec.dropout) if layer + 1 < self.L else None
                masks.append(drop)
                x = y if drop is None else y * drop
        e = {k: v.reshape(U * B, *v.shape[2:]) for k, v in every.items()}
        loss, grads = self._spatial(
            inputs, targets, mask, s_rows[:-1].reshape(U * B, -1), news, masks, drop_in, e
        )
        return loss, grads, s_rows[-1]

    @staticmethod
    def _scan(prev, factor, c, U, B):
        """e_t = a_t ⊙ e_{t-1} + c_t over the stretch's rows from e = ``prev`` (B, ...):
        every row's e (U, B, ...)."""
        c = c.view(U, B, *c.shape[1:]).to(prev.dtype)
        factor = factor.reshape(U, B, *factor.shape[1:])  # (R, ...) per row
        rows = c.new_empty(U, *prev.shape)
        for t in range(U):
            torch.addcmul(c[t], factor[t], prev, out=rows[t])
            prev = rows[t]
        return rows

    def _spatial(self, inputs, targets, mask, s, news, masks, drop_in, e):
        """The rows' loss and gradient: δ^l by spatial backpropagation, then Σ δ^l · e^l, for
        the R = U B (row, stream) pairs at once (s, news, masks, drop_in, e: (R, ...))."""
        model, L = self.model, self.L
        flat = lambda t: t.reshape(1, -1, *t.shape[2:])  # noqa: E731  (U, B, ..) -> (1, U B, ..)
        inputs, targets = flat(inputs), flat(targets)
        mask = flat(mask) if mask is not None else None
        direct_names = [n for n in self.fn.names if not self._tracked(n)]
        params = self.params
        with torch.enable_grad():
            x, _, _ = self._adapt_replay(inputs, drop_in)
            nodes = []
            for layer in range(L):
                if layer == 0:
                    h = news[0].detach()
                else:
                    frozen = {n: t.detach() for n, t in self.layer_params[layer].items()}
                    h_prev = self._state(s, layer)
                    a, bx, _ = self._gates(layer, x, params=frozen)
                    h = a * h_prev + bx
                if self.kind == "lru":
                    re, im = h.real.detach(), h.imag.detach()
                    if layer > 0:
                        re, im = h.real, h.imag
                    else:
                        re, im = re.requires_grad_(True), im.requires_grad_(True)
                    nodes.append((re, im))
                    h = torch.complex(re, im)
                    y = self.rec.layers[layer].readout(h.unsqueeze(0), x.unsqueeze(0))[0]
                else:
                    if layer == 0:
                        h = h.requires_grad_(True)
                    nodes.append((h,))
                    y = h
                x = y if masks[layer] is None else y * masks[layer]
            outputs = model.head(model.drop_output(x)).unsqueeze(0)  # (1, B, O)
            loss = self.fn.objective.loss_sum(outputs, targets, mask)
            flat_nodes = [t for n in nodes for t in n]
            wrt = flat_nodes + [params[n] for n in direct_names]
            got = torch.autograd.grad(loss, wrt, allow_unused=True)
        deltas = got[: len(flat_nodes)]
        direct = dict(zip(direct_names, got[len(flat_nodes) :]))
        out = {}
        at = 0
        for layer in range(L):
            if self.kind == "lru":
                delta = torch.complex(deltas[at], deltas[at + 1]).conj()  # conj(δ_re + i δ_im)
                at += 2
            else:
                delta = deltas[at]
                at += 1
            self._layer_gradient(layer, delta, out, e)
            if layer == 0 and "embedding" in e:
                g = torch.einsum("bh,bhp->p", delta, e["embedding"])
                g = g.real if g.is_complex() else g
                sizes = [p.numel() for p in model.embedding.parameters()]
                for (name, p), part in zip(model.embedding.named_parameters(), g.split(sizes)):
                    out[f"embedding.{name}"] = part.view(p.shape)
        grads = []
        for name, p in self.params.items():
            g = out.get(name)
            d = direct.get(name)
            total = torch.zeros_like(p) if g is None else g.to(p.dtype)
            if d is not None:
                total = total + d
            grads.append(total.reshape(-1))
        return loss.detach(), torch.cat(grads)

    def _adapt_replay(self, inputs, drop):
        """The adapted inputs again, under autograd, with the step's own dropout mask."""
        model, cfg = self.model, self.model.config
        raw = inputs[0]
        if cfg.tokens:
            raw = raw.long()
            if model.embedding is None:
                return F.one_hot(raw, cfg.vocab_size).to(model.head.weight.dtype), raw, drop
            x = model.embedding(raw)
        else:
            raw = raw.to(model.head.weight.dtype)
            x = model.embedding(raw) if model.embedding is not None else raw
        return (x if drop is None else x * drop), raw, drop

    def _tracked(self, name: str) -> bool:
        """Parameters whose gradient goes through a sensitivity (not read directly)."""
        if name.startswith("recurrent.layers."):
            leaf = name.split(".", 3)[3]
            if self.kind == "lru":
                return leaf in ("nu_log", "theta_log", "gamma_log", "b_re", "b_im")
            return True
        return False

    def _layer_gradient(self, layer, delta, out, e):
        prefix = f"recurrent.layers.{layer}."
        if self.kind == "lru":
            for name in ("nu_log", "theta_log", "gamma_log"):
                out[prefix + name] = (delta * e[prefix + name]).real.sum(0)
            prod = delta[:, :, None] * e[prefix + "b_re"]  # (B, N, K)
            out[prefix + "b_re"] = prod.real.sum(0)
            out[prefix + "b_im"] = (1j * prod).real.sum(0)
            return
        w = torch.einsum("bh,bghk->ghk", delta, e[prefix + "weight"])
        out[prefix + "weight"] = w.reshape(-1, w.shape[-1])
        out[prefix + "bias"] = torch.einsum("bh,bgh->gh", delta, e[prefix + "bias"]).reshape(-1)
