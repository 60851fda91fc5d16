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

Dropout (on the adapted inputs, between layers, before the head) is applied with
explicit masks. Zoneout is not covered (the generic engine takes it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tbptt.train.objectives import Objective
from tbptt.train.online.base import OnlineEstimator

__all__ = ["DiagonalRTRL", "diagonal_covers"]


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
        """(x (B, I) with grad to the adapter, raw ids / features, dropout mask)."""
        model, cfg = self.model, self.model.config
        raw = inputs[0]
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

    def _coefficients(self, layer: int, x: torch.Tensor, h_prev: torch.Tensor, params=None):
        """(a, b, coef, the layer's x -> h Jacobian's factor) with the layer's parameters
        (``params``: detached copies, for the spatial pass). Real kinds: a, b (B, H), coef
        (B, G, H); LRU: a = λ (N,), b = γ B x (B, N) complex, coef None."""
        module = self.rec.layers[layer]
        if self.kind == "lru":
            p = params or {n: t for n, t in module.named_parameters()}
            lam = torch.exp(torch.complex(-torch.exp(p["nu_log"]), torch.exp(p["theta_log"])))
            scale = torch.exp(p["gamma_log"])
            bx = torch.complex(x @ p["b_re"].t(), x @ p["b_im"].t()) * scale
            return lam, bx, None
        p = params or {"weight": module.weight, "bias": module.bias}
        proj = (x @ p["weight"].t() + p["bias"]).view(x.shape[0], -1, self.H)  # (B, G, H)
        if self.kind == "mingru":
            z = torch.sigmoid(proj[:, 0])
            cand = proj[:, 1]
            a, b = 1 - z, z * cand
            coef = torch.stack([z * (1 - z) * (cand - h_prev), z], dim=1)
            return a, b, coef
        f, i, cand = torch.sigmoid(proj[:, 0]), torch.sigmoid(proj[:, 1]), proj[:, 2]
        s = f + i
        a, b = f / s, i / s * cand
        q = f * i / (s * s)
        coef = torch.stack([q * (1 - f) * (h_prev - cand), q * (1 - i) * (cand - h_prev), i / s], 1)
        return a, b, coef

    def _state(self, s: torch.Tensor, layer: int) -> torch.Tensor:
        h = s[:, layer * self.S : (layer + 1) * self.S]
        if self.kind == "lru":
            return torch.complex(h[:, : self.H], h[:, self.H :])
        return h

    def _update(self, layer, x, h_prev, a, bx, coef, g_x, raw, drop):
        """Advance layer ``layer``'s sensitivities (and the adapter's, for layer 0)."""
        e = self.e
        prefix = f"recurrent.layers.{layer}."
        if self.kind == "lru":
            module = self.rec.layers[layer]
            lam = a
            nu, th = module.nu_log.detach(), module.theta_log.detach()
            e[prefix + "nu_log"] = lam * e[prefix + "nu_log"] + lam * (-torch.exp(nu)) * h_prev
            e[prefix + "theta_log"] = (
                lam * e[prefix + "theta_log"] + lam * (1j * torch.exp(th)) * h_prev
            )
            e[prefix + "gamma_log"] = lam * e[prefix + "gamma_log"] + bx
            scale = torch.exp(module.gamma_log.detach())
            e[prefix + "b_re"] = lam[:, None] * e[prefix + "b_re"] + scale[:, None] * x[:, None, :]
            a_rows = lam.unsqueeze(0)  # (1, N)
        else:
            e[prefix + "weight"] = (
                a[:, None, :, None] * e[prefix + "weight"]
                + coef.unsqueeze(-1) * x[:, None, None, :]
            )
            e[prefix + "bias"] = a[:, None, :] * e[prefix + "bias"] + coef
            a_rows = a
        if layer == 0 and "embedding" in e:
            e_in = a_rows.unsqueeze(-1) * e["embedding"]  # (B, H, P_in)
            g_x = g_x.expand(x.shape[0], -1, -1)  # (B, H, I)
            if drop is not None:
                g_x = g_x * drop.unsqueeze(1)
            emb = self.model.embedding
            B, H = g_x.shape[:2]
            if isinstance(emb, nn.Embedding):
                V, E = emb.weight.shape
                e_in.view(B, H, V, E)[torch.arange(B, device=x.device), :, raw, :] += g_x
            else:
                E, Fi = emb.weight.shape
                e_in[:, :, : E * Fi].view(B, H, E, Fi).add_(
                    g_x.unsqueeze(-1) * raw[:, None, None, :]
                )
                if emb.bias is not None:
                    e_in[:, :, E * Fi :].add_(g_x)
            e["embedding"] = e_in

    def _input_jacobian(self, layer, coef):
        """∂h/∂x of layer 0 (B, H, I) (complex for the LRU)."""
        module = self.rec.layers[layer]
        if self.kind == "lru":
            scale = torch.exp(module.gamma_log.detach())
            return (scale[:, None] * torch.complex(module.b_re, module.b_im).detach()).unsqueeze(0)
        G = coef.shape[1]
        w = module.weight.detach().view(G, self.H, -1)
        return torch.einsum("bgh,ghk->bhk", coef, w)

    # -- the step ----------------------------------------------------------------------

    def _advance(self, s, row, generator):
        inputs, targets, mask = row
        L = self.L
        with torch.no_grad():
            x, raw, drop_in = self._adapt(inputs)
            masks, xs, news = [], [], []
            s_new = torch.empty_like(s)
            for layer in range(L):
                h_prev = self._state(s, layer)
                a, bx, coef = self._coefficients(layer, x, h_prev)
                h = a * h_prev + bx
                g_x = self._input_jacobian(layer, coef) if layer == 0 else None
                self._update(layer, x, h_prev, a, bx, coef, g_x, raw, drop_in)
                xs.append(x)
                news.append(h)
                part = torch.cat([h.real, h.imag], dim=1) if self.kind == "lru" else h
                s_new[:, layer * self.S : (layer + 1) * self.S] = part
                y = (
                    self.rec.layers[layer].readout(h.unsqueeze(0), x.unsqueeze(0))[0]
                    if self.kind == "lru"
                    else h
                )
                drop = self._dropout(y, self.rec.dropout) if layer + 1 < L else None
                masks.append(drop)
                x = y if drop is None else y * drop
        loss, grads = self._spatial(inputs, targets, mask, s, news, masks, drop_in)
        return loss, grads, s_new

    def _spatial(self, inputs, targets, mask, s, news, masks, drop_in):
        """The step's loss and gradient: δ^l by spatial backpropagation, then δ^l · e^l."""
        model, L = self.model, self.L
        direct_names = [n for n in self.fn.names if not self._tracked(n)]
        params = dict(zip(self.fn.names, self.fn.parameters()))
        with torch.enable_grad():
            x, _, _ = self._adapt_replay(inputs, drop_in)
            nodes = []
            for layer in range(L):
                if layer == 0:
                    h = news[0].detach()
                else:
                    module = self.rec.layers[layer]
                    frozen = {n: t.detach() for n, t in module.named_parameters()}
                    h_prev = self._state(s, layer)
                    a, bx, _ = self._coefficients(layer, x, h_prev, params=frozen)
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
            self._layer_gradient(layer, delta, out)
            if layer == 0 and "embedding" in self.e:
                g = torch.einsum("bh,bhp->p", delta, self.e["embedding"])
                g = g.real if g.is_complex() else g
                sizes = [p.numel() for p in model.embedding.parameters()]
                for (name, p), part in zip(model.embedding.named_parameters(), g.split(sizes)):
                    out[f"embedding.{name}"] = part.view(p.shape)
        grads = []
        for name, p in zip(self.fn.names, self.fn.parameters()):
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

    def _layer_gradient(self, layer, delta, out):
        prefix = f"recurrent.layers.{layer}."
        e = self.e
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
