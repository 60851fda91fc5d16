"""One step of the built-in cells with its derivatives in closed form.

Every classic cell (:mod:`tbptt.models.recurrent`) reads its input and its
previous hidden state through two affine maps, each G gate blocks of H rows::

    u = W_ih x + b_ih   (B, G, H)          v = W_hh h + b_hh   (B, G, H)

and each new state value Q_i (the hidden h'_i; for an LSTM also the cell c'_i)
is a function of unit i's own entries of u and v and of unit i's own previous
values. So three small tensors per Q carry every first derivative of the step:

    alpha_Q[b, g, i] = ∂Q_i / ∂u[g, i]      beta_Q[b, g, i] = ∂Q_i / ∂v[g, i]
    direct_(Q,R)[b, i] = ∂Q_i / ∂R_i  (R a previous state, beyond its path through v)

from which, with W_g the rows of gate g:

    ∂Q/∂h_prev = Σ_g beta_Q[g] ⊙_rows W_hh,g + diag(direct_(Q,h))   (B, H, H)
    ∂Q/∂x      = Σ_g alpha_Q[g] ⊙_rows W_ih,g                        (B, H, I)
    ∂Q_i/∂W_ih[g H + i, k] = alpha_Q[g, i] x_k     ∂Q_i/∂b_ih[g H + i] = alpha_Q[g, i]
    ∂Q_i/∂W_hh[g H + i, k] = beta_Q[g, i] h_k      ∂Q_i/∂b_hh[g H + i] = beta_Q[g, i]

(every other entry of ∂Q/∂θ is zero). The coefficients per kind, with σ' = σ(1 - σ)::

    rnn      h' = tanh(u + v)          alpha = beta = 1 - h'^2
    relu     h' = relu(u + v)          alpha = beta = [u + v > 0]
    linear   h' = u + v                alpha = beta = 1
    gru      r = σ(u_r + v_r)  z = σ(u_z + v_z)  n = tanh(u_n + r v_n)  h' = (1 - z) n + z h
             alpha_r = beta_r = (1 - z)(1 - n^2) v_n σ'(r)     alpha_z = beta_z = (h - n) σ'(z)
             alpha_n = (1 - z)(1 - n^2)    beta_n = alpha_n r   direct_(h,h) = z
    lstm     i, f, g, o = σ, σ, tanh, σ of (u + v)     c' = f c + i g    h' = o tanh(c')
             (c')  alpha = beta = (g σ'(i), c σ'(f), i (1 - g^2), 0)    direct_(c,c) = f
             (h')  alpha = beta = o (1 - tanh^2 c') (c') + (0, 0, 0, tanh(c') σ'(o))
                   direct_(h,c) = o (1 - tanh^2 c') f

Shapes: x (B, I), h and c (B, H), u and v (B, G, H).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["GATE_ROWS", "CellStep", "cell_step"]

GATE_ROWS = {"rnn": 1, "relu": 1, "linear": 1, "gru": 3, "lstm": 4}


@dataclass
class CellStep:
    """A step's new state and its derivative coefficients (see the module docstring).

    ``alpha[q]``, ``beta[q]`` (B, G, H) for q = 0 (h') and q = 1 (c', LSTM);
    ``direct[(q, r)]`` (B, H): ∂Q_q/∂R_r of the same unit (r = 0: h, r = 1: c).
    """

    h: torch.Tensor
    c: torch.Tensor | None
    alpha: list[torch.Tensor]
    beta: list[torch.Tensor]
    direct: dict[tuple[int, int], torch.Tensor]


def cell_step(
    kind: str, u: torch.Tensor, v: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None
) -> CellStep:
    """The new state and its coefficients from u, v (B, G, H), h, c (B, H)."""
    if kind in ("rnn", "relu", "linear"):
        pre = u[:, 0] + v[:, 0]
        if kind == "rnn":
            h_new = torch.tanh(pre)
            d = 1 - h_new * h_new
        elif kind == "relu":
            h_new = torch.relu(pre)
            d = (pre > 0).to(pre.dtype)
        else:
            h_new = pre
            d = torch.ones_like(pre)
        a = d.unsqueeze(1)  # (B, 1, H)
        return CellStep(h_new, None, [a], [a], {})
    if kind == "gru":
        r = torch.sigmoid(u[:, 0] + v[:, 0])
        z = torch.sigmoid(u[:, 1] + v[:, 1])
        n = torch.tanh(u[:, 2] + r * v[:, 2])
        h_new = n + z * (h - n)
        dn = (1 - z) * (1 - n * n)  # ∂h'/∂(pre-activation of n)
        ar = dn * v[:, 2] * r * (1 - r)
        az = (h - n) * z * (1 - z)
        alpha = torch.stack([ar, az, dn], dim=1)  # (B, 3, H)
        beta = torch.stack([ar, az, dn * r], dim=1)
        return CellStep(h_new, None, [alpha], [beta], {(0, 0): z})
    if kind == "lstm":
        pre = u + v
        i = torch.sigmoid(pre[:, 0])
        f = torch.sigmoid(pre[:, 1])
        g = torch.tanh(pre[:, 2])
        o = torch.sigmoid(pre[:, 3])
        c_new = f * c + i * g
        tc = torch.tanh(c_new)
        h_new = o * tc
        dc = torch.stack(
            [g * i * (1 - i), c * f * (1 - f), i * (1 - g * g), torch.zeros_like(o)], dim=1
        )  # (B, 4, H)
        k = o * (1 - tc * tc)  # ∂h'/∂c'
        dh = k.unsqueeze(1) * dc
        dh[:, 3] = tc * o * (1 - o)
        return CellStep(h_new, c_new, [dh, dc], [dh, dc], {(0, 1): k * f, (1, 1): f})
    raise ValueError(f"Expected a kind among {', '.join(GATE_ROWS)}, got {kind!r}")
