"""The gated step loop of one recurrent layer, with a hand-written backward pass.

Autograd on a per-step loop records a dozen small nodes per step and, in the
backward pass, computes the weight gradient one (B, H) x (B, G*H) product per
step. This module runs the same loop as one autograd node instead:

- **forward** (no graph): per step one matrix product ``h W_hh^T`` added to the
  window's precomputed input projection, then the elementwise cell math in place
  in preallocated buffers; the activations the backward pass needs are kept.
- **backward**: per step, the gradient with respect to the pre-activations
  ``d_t`` (B, G*H) and one matrix product ``d_t W_hh`` for the state gradient;
  the gate xi_t multiplies the gradient that crosses the edge into step t and a
  per-stream reset zeroes it. The weight gradient is then ONE matrix product over
  the whole window, ``dW_hh = sum_t d_t^T h_{t-1}`` of shape (T*B, G*H)^T (T*B, H),
  and the input-projection gradient is the stack of the ``d_t`` itself.

Math (pre-activations ``a = xproj_t + b_hh + W_hh h_{t-1}``; ``'`` marks derivatives;
``h~ = xi_t * keep_t * h`` is the gated, reset-masked incoming state)::

    rnn/relu/linear  h_t = act(a)                  d_t = dh_t * act'(a)
                     dh~_{t-1} = d_t W_hh
    lstm  i,f,g,o = sigma,sigma,tanh,sigma(a)      c_t = f c_{t-1} + i g    h_t = o tanh(c_t)
          dc   = dc_carry + dh_t o (1 - tanh(c_t)^2)
          d_t  = [dc g i(1-i), dc c_{t-1} f(1-f), dc i (1-g^2), dh_t tanh(c_t) o(1-o)]
          dh~_{t-1} = d_t W_hh      dc~_{t-1} = dc f
    gru   r,z = sigma(xr + hr), sigma(xz + hz)     n = tanh(xn + r hn)      h_t = n + z (h_{t-1} - n)
          (hr, hz, hn) = W_hh h_{t-1} + b_hh
          dn_pre = dh_t (1-z)(1-n^2)   dz_pre = dh_t (h_{t-1}-n) z(1-z)   dr_pre = dn_pre hn r(1-r)
          d^x_t = [dr_pre, dz_pre, dn_pre]   d^h_t = [dr_pre, dz_pre, dn_pre r]
          dh~_{t-1} = dh_t z + d^h_t W_hh

with ``dh_t = dL/dh_t (from the outputs) + xi_{t+1} keep_{t+1} dh~_t``. Everything
that does not depend on the recurrence (the sigma' and tanh' factors, the
products with saved activations) is computed for the whole window in a few
batched operations before the loop, so the loop itself is a handful of kernel
calls per step. Values and gradients equal autograd on the naive loop (tested
against it to 1e-10 in float64). The backward pass is not itself differentiable
(no double backward, no forward-mode AD): use ``path="autograd"`` for that.

Shapes: xproj (T, B, G*H) = inputs W_ih^T + b_ih; h0, c0 (B, H); w_hh (G*H, H);
b_hh (G*H,); outputs (T, B, H). G = 4 (lstm), 3 (gru), 1 (rnn, relu, linear).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.autograd.function import once_differentiable

__all__ = ["gated_layer"]


def gated_layer(
    kind: str,
    xproj: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor | None,
    w_hh: torch.Tensor,
    b_hh: torch.Tensor,
    scales: Sequence[float],
    keeps: dict[int, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Run one layer over a window; returns outputs (T, B, H), h_T (B, H), c_T (B, H) or None.

    ``scales[t]`` is the gate xi_t on the state edge entering step t;
    ``keeps[t]`` (B, 1) is 0 for the streams that restart at step t, 1 elsewhere.
    """
    if kind == "lstm":
        return _LSTMLayer.apply(xproj, h0, c0, w_hh, b_hh, tuple(scales), keeps)
    if kind == "gru":
        out, h = _GRULayer.apply(xproj, h0, w_hh, b_hh, tuple(scales), keeps)
    else:
        out, h = _SimpleLayer.apply(kind, xproj, h0, w_hh, b_hh, tuple(scales), keeps)
    return out, h, None


def _previous_hidden(h0, outputs, keeps):
    """The (T, B, H) states each step reads: h0, outputs[:-1], reset-masked where keeps says."""
    hp = torch.cat([h0.unsqueeze(0), outputs[:-1]])  # (T, B, H)
    for t, keep in keeps.items():
        hp[t].mul_(keep)
    return hp


def _carry_factor(scales, keeps, t):
    """xi_t * keep_t as a number, or a (B, 1) tensor where some streams reset at t."""
    s = scales[t]
    return keeps[t] * s if t in keeps else s


class _LSTMLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xproj, h0, c0, w_hh, b_hh, scales, keeps):
        T, B, G = xproj.shape
        H = G // 4
        acts = xproj + b_hh  # (T, B, 4H): pre-activations, then activations in place
        cells = xproj.new_empty(T + 1, B, H)  # c_{-1} .. c_{T-1}
        cells[0] = c0
        tanh_c = xproj.new_empty(T, B, H)
        out = xproj.new_empty(T, B, H)
        w_t = w_hh.t().contiguous()  # (H, G*H): a row-major right operand is the faster product
        ifg, gates_g, gates_o = acts[..., : 2 * H], acts[..., 2 * H : 3 * H], acts[..., 3 * H :]
        # per-step views made once, in C++, rather than sliced in the loop
        a_t, ifg_t, g_t, o_t = acts.unbind(0), ifg.unbind(0), gates_g.unbind(0), gates_o.unbind(0)
        i_t, f_t = acts[..., :H].unbind(0), acts[..., H : 2 * H].unbind(0)
        c_t, tc_t, out_t = cells.unbind(0), tanh_c.unbind(0), out.unbind(0)
        h = h0
        for t in range(T):
            if t in keeps:
                h = h * keeps[t]
                c_t[t].mul_(keeps[t])
            a = a_t[t]
            a.addmm_(h, w_t)
            ifg_t[t].sigmoid_()
            g_t[t].tanh_()
            o_t[t].sigmoid_()
            c = c_t[t + 1]
            torch.mul(f_t[t], c_t[t], out=c)
            c.addcmul_(i_t[t], g_t[t])
            torch.tanh(c, out=tc_t[t])
            h = torch.mul(o_t[t], tc_t[t], out=out_t[t])
        ctx.scales, ctx.keeps = scales, keeps
        ctx.save_for_backward(h0, w_hh, acts, cells, tanh_c, out)
        return out, h.clone(), cells[T].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_hT, d_cT):
        h0, w_hh, acts, cells, tanh_c, out = ctx.saved_tensors
        scales, keeps = ctx.scales, ctx.keeps
        T, B, G = acts.shape
        H = G // 4
        i, f, g, o = acts.split(H, dim=-1)  # each (T, B, H)
        c_prev = cells[:-1]  # reset-masked in forward, as the steps read it
        # batched factors: d_t[:3H] = dc * m3, d_t[3H:] = dh * m_o, dc += dh * m_dc
        m3 = torch.cat([g * i * (1 - i), c_prev * f * (1 - f), i * (1 - g * g)], dim=-1)
        m_o = tanh_c * o * (1 - o)
        m_dc = o * (1 - tanh_c * tanh_c)
        xi = torch.tensor(scales, dtype=acts.dtype, device=acts.device).view(T, 1, 1)
        f_carry = f * xi  # (T, B, H): dc~_{t-1} = dc_t f_t xi_t
        for t, keep in keeps.items():
            f_carry[t].mul_(keep)
        d = torch.empty_like(acts)  # (T, B, 4H)
        d3 = d[..., : 3 * H].unflatten(-1, (3, H)).unbind(0)  # (B, 3, H) views
        do_t, d_t = d[..., 3 * H :].unbind(0), d.unbind(0)
        m3_t = m3.unflatten(-1, (3, H)).unbind(0)
        m_o_t, m_dc_t, fc_t = m_o.unbind(0), m_dc.unbind(0), f_carry.unbind(0)
        d_out_t = d_out.unbind(0)
        dh = d_out_t[T - 1] + d_hT
        dc = d_cT
        for t in range(T - 1, -1, -1):
            dc = torch.addcmul(dc, dh, m_dc_t[t])
            torch.mul(m3_t[t], dc.unsqueeze(1), out=d3[t])
            torch.mul(m_o_t[t], dh, out=do_t[t])
            dc = dc * fc_t[t]
            if t == 0:
                break
            s = scales[t]
            if t in keeps:
                dh = torch.addcmul(d_out_t[t - 1], torch.mm(d_t[t], w_hh), keeps[t], value=s)
            elif s == 0.0:
                dh = d_out_t[t - 1]
            else:
                dh = torch.addmm(d_out_t[t - 1], d_t[t], w_hh, alpha=s)
        d_h0 = d_c0 = None
        if ctx.needs_input_grad[1]:
            d_h0 = torch.mm(d[0], w_hh) * _carry_factor(scales, keeps, 0)
        if ctx.needs_input_grad[2]:
            d_c0 = dc
        flat = d.view(T * B, G)
        d_w = d_b = None
        if ctx.needs_input_grad[3]:
            h_prev = _previous_hidden(h0, out, keeps)
            d_w = flat.t() @ h_prev.view(T * B, H)  # (4H, H)
        if ctx.needs_input_grad[4]:
            d_b = flat.sum(0)
        return d, d_h0, d_c0, d_w, d_b, None, None


class _GRULayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, xproj, h0, w_hh, b_hh, scales, keeps):
        T, B, G = xproj.shape
        H = G // 3
        rz = xproj.new_empty(T, B, 2 * H)
        n = xproj.new_empty(T, B, H)
        hproj = xproj.new_empty(T, B, G)  # W_hh h + b_hh, kept for the backward pass
        out = xproj.new_empty(T, B, H)
        w_t = w_hh.t().contiguous()  # (H, G*H): a row-major right operand is the faster product
        x_rz, x_n = xproj[..., : 2 * H].unbind(0), xproj[..., 2 * H :].unbind(0)
        hp_t, hp_rz, hp_n = (
            hproj.unbind(0),
            hproj[..., : 2 * H].unbind(0),
            hproj[..., 2 * H :].unbind(0),
        )
        rz_t, r_t, z_t = rz.unbind(0), rz[..., :H].unbind(0), rz[..., H:].unbind(0)
        n_t, out_t = n.unbind(0), out.unbind(0)
        h = h0
        for t in range(T):
            if t in keeps:
                h = h * keeps[t]
            torch.addmm(b_hh, h, w_t, out=hp_t[t])
            torch.add(x_rz[t], hp_rz[t], out=rz_t[t]).sigmoid_()
            torch.addcmul(x_n[t], r_t[t], hp_n[t], out=n_t[t]).tanh_()
            h = torch.lerp(n_t[t], h, z_t[t], out=out_t[t])  # n + z (h - n)
        ctx.scales, ctx.keeps = scales, keeps
        ctx.save_for_backward(h0, w_hh, rz, n, hproj, out)
        return out, h.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_hT):
        h0, w_hh, rz, n, hproj, out = ctx.saved_tensors
        scales, keeps = ctx.scales, ctx.keeps
        T, B, G = hproj.shape
        H = G // 3
        r, z = rz[..., :H], rz[..., H:]
        hn = hproj[..., 2 * H :]
        h_prev = _previous_hidden(h0, out, keeps)  # (T, B, H)
        m_n = (1 - z) * (1 - n * n)  # dn_pre = dh m_n
        m_z = (h_prev - n) * z * (1 - z)  # dz_pre = dh m_z
        m_r = hn * r * (1 - r)  # dr_pre = dn_pre m_r
        xi = torch.tensor(scales, dtype=hproj.dtype, device=hproj.device).view(T, 1, 1)
        z_carry = z * xi  # direct path h_{t-1} -> h_t, gated
        dh_pre = torch.empty_like(hproj)  # d^h_t (T, B, 3H)
        dn_pre = torch.empty_like(n)
        dhp_t, dr_t = dh_pre.unbind(0), dh_pre[..., :H].unbind(0)
        dz_t, dhn_t = dh_pre[..., H : 2 * H].unbind(0), dh_pre[..., 2 * H :].unbind(0)
        dn_t, mn_t, mz_t, mr_t = dn_pre.unbind(0), m_n.unbind(0), m_z.unbind(0), m_r.unbind(0)
        r_t, zc_t, d_out_t = r.unbind(0), z_carry.unbind(0), d_out.unbind(0)
        dh = d_out_t[T - 1] + d_hT
        for t in range(T - 1, -1, -1):
            torch.mul(dh, mn_t[t], out=dn_t[t])
            torch.mul(dh, mz_t[t], out=dz_t[t])
            torch.mul(dn_t[t], mr_t[t], out=dr_t[t])
            torch.mul(dn_t[t], r_t[t], out=dhn_t[t])
            if t == 0:
                break
            s = scales[t]
            if t in keeps:
                carry = torch.addmm(dh * z[t], dhp_t[t], w_hh)
                dh = torch.addcmul(d_out_t[t - 1], carry, keeps[t], value=s)
            elif s == 0.0:
                dh = d_out_t[t - 1]
            else:
                dh = torch.addcmul(d_out_t[t - 1], dh, zc_t[t]).addmm_(dhp_t[t], w_hh, alpha=s)
        d_h0 = None
        if ctx.needs_input_grad[1]:
            carry = torch.addmm(dh * z[0], dh_pre[0], w_hh)
            d_h0 = carry * _carry_factor(scales, keeps, 0)
        flat = dh_pre.view(T * B, G)
        d_w = d_b = None
        if ctx.needs_input_grad[2]:
            d_w = flat.t() @ h_prev.view(T * B, H)  # (3H, H)
        if ctx.needs_input_grad[3]:
            d_b = flat.sum(0)
        d_x = torch.cat([dh_pre[..., : 2 * H], dn_pre], dim=-1)  # (T, B, 3H)
        return d_x, d_h0, d_w, d_b, None, None


_ACTIVATIONS = {"rnn": torch.tanh_, "relu": torch.relu_, "linear": None}


class _SimpleLayer(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kind, xproj, h0, w_hh, b_hh, scales, keeps):
        T = xproj.shape[0]
        out = xproj + b_hh  # (T, B, H): pre-activations, then h_t in place
        act = _ACTIVATIONS[kind]
        w_t = w_hh.t().contiguous()  # (H, G*H): a row-major right operand is the faster product
        out_t = out.unbind(0)
        h = h0
        for t in range(T):
            if t in keeps:
                h = h * keeps[t]
            h = out_t[t].addmm_(h, w_t)
            if act is not None:
                act(h)
        ctx.kind, ctx.scales, ctx.keeps = kind, scales, keeps
        ctx.save_for_backward(h0, w_hh, out)
        return out, h.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_hT):
        h0, w_hh, out = ctx.saved_tensors
        kind, scales, keeps = ctx.kind, ctx.scales, ctx.keeps
        T, B, H = out.shape
        if kind == "rnn":
            slope = 1 - out * out
        elif kind == "relu":
            slope = (out > 0).to(out.dtype)
        else:
            slope = None
        d = torch.empty_like(out)  # (T, B, H)
        d_t, d_out_t = d.unbind(0), d_out.unbind(0)
        slope_t = slope.unbind(0) if slope is not None else None
        dh = d_out_t[T - 1] + d_hT
        for t in range(T - 1, -1, -1):
            if slope_t is None:
                d_t[t].copy_(dh)
            else:
                torch.mul(dh, slope_t[t], out=d_t[t])
            if t == 0:
                break
            s = scales[t]
            if t in keeps:
                dh = torch.addcmul(d_out_t[t - 1], torch.mm(d_t[t], w_hh), keeps[t], value=s)
            elif s == 0.0:
                dh = d_out_t[t - 1]
            else:
                dh = torch.addmm(d_out_t[t - 1], d_t[t], w_hh, alpha=s)
        d_h0 = None
        if ctx.needs_input_grad[2]:
            d_h0 = torch.mm(d[0], w_hh) * _carry_factor(scales, keeps, 0)
        flat = d.view(T * B, H)
        d_w = d_b = None
        if ctx.needs_input_grad[3]:
            d_w = flat.t() @ _previous_hidden(h0, out, keeps).view(T * B, H)
        if ctx.needs_input_grad[4]:
            d_b = flat.sum(0)
        return None, d, d_h0, d_w, d_b, None, None
