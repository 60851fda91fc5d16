"""The gated step loop of one recurrent layer, with a hand-written backward pass.

Autograd on a per-step loop records a dozen small nodes per step and, in the
backward pass, computes the weight gradient one (B, H) x (B, G*H) product per
step. This module runs the same loop as one autograd node instead:

- **forward** (no graph): per step one matrix product ``h W_hh^T`` added to the
  window's input projection (one product for the whole window), then the elementwise
  cell math in place in preallocated buffers; what the backward pass needs is kept.
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

with ``dh_t = dL/dh_t (from the outputs) + xi_{t+1} keep_{t+1} dh~_t``. What does not
depend on the recurrence (the sigma' and tanh' factors, the products with saved
activations) is computed once per step where the step's values are in cache (LSTM: in
the forward loop) or for the whole window before the loop (GRU, RNN), so the backward
loop is a handful of kernel calls per step. Values and gradients equal autograd on the
naive loop (tested against it to 1e-10 in float64, and against ``torch.nn.LSTMCell``).
The backward pass is not itself differentiable (no double backward, no forward-mode
AD): use ``path="autograd"`` for that.

**Threads.** A step's elementwise ops touch one step's values ((B, H) = 8,192 of them at
B = 32, H = 256). Most ATen kernels stay on one thread at that size, but ``tanh`` and
``exp`` (MKL's vector math) open an OpenMP parallel region from 2,048 values; with two
threads every such region wakes a worker that slept since the previous one (tbptt bounds
OpenMP's spin-waiting, :mod:`tbptt.threads`) and costs more than the op itself: the
step path ran slower with two threads than with one. Inside the loops torch therefore
runs on one thread, and each step's matrix product switches to all of them
(:class:`tbptt.threads.StepThreads`; a switch costs about 0.1 us).

Shapes: xproj (T, B, G*H) = inputs W_ih^T + b_ih; h0, c0 (B, H); w_hh (G*H, H);
b_hh (G*H,); outputs (T, B, H). G = 4 (lstm), 3 (gru), 1 (rnn, relu, linear).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.autograd.function import once_differentiable

from tbptt.threads.loops import StepThreads

__all__ = ["gated_layer", "projected_layer"]


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
        return _LSTMLayer.apply(xproj, None, b_hh, h0, c0, w_hh, tuple(scales), keeps)
    if kind == "gru":
        out, h = _GRULayer.apply(xproj, h0, w_hh, b_hh, tuple(scales), keeps)
    else:
        out, h = _SimpleLayer.apply(kind, xproj, h0, w_hh, b_hh, tuple(scales), keeps)
    return out, h, None


def projected_layer(
    kind: str,
    inputs: torch.Tensor,
    h0: torch.Tensor,
    c0: torch.Tensor | None,
    weights: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    scales: Sequence[float],
    keeps: dict[int, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """:func:`gated_layer` from the layer's inputs (T, B, I) and ``weights`` = (w_ih, w_hh,
    b_ih, b_hh): the input projection for the whole window is one matrix product (for LSTM
    inside the layer's node, so its gate buffer is the product's own output)."""
    w_ih, w_hh, b_ih, b_hh = weights
    if kind == "lstm":
        return _LSTMLayer.apply(inputs, w_ih, b_ih + b_hh, h0, c0, w_hh, tuple(scales), keeps)
    T, B = inputs.shape[:2]
    xproj = torch.addmm(b_ih, inputs.reshape(T * B, -1), w_ih.t()).view(T, B, -1)  # (T, B, G*H)
    return gated_layer(kind, xproj, h0, c0, w_hh, b_hh, scales, keeps)


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
    """One LSTM layer over a window. With ``w_ih`` the layer's input projection is part of
    the node (one matrix product for the window, ``x W_ih^T + bias``, written straight into
    the gate buffer); without it ``x`` is the projection itself and ``bias`` is added to it.

    The forward pass leaves in the gate buffer, step by step while the step's values are
    in cache, the factors the backward pass needs (so it never reads the activations
    again): ``[g i(1-i), c_{t-1} f(1-f), i(1-g^2), tanh(c_t) o(1-o)]`` (B, 4H) per step,
    with ``m_dc = o (1 - tanh(c_t)^2)`` and ``f`` beside it. The backward pass multiplies the
    factors by the recursion's ``dc`` and ``dh`` into ``d`` (the factors stay as saved, so
    a second backward through the window, as gradcheck runs, gives the same result)."""

    @staticmethod
    def forward(ctx, x, w_ih, bias, h0, c0, w_hh, scales, keeps):
        T, B = x.shape[:2]
        G = w_hh.shape[0]
        H = G // 4
        grad = any(ctx.needs_input_grad)  # no factors for a forward without a graph
        if w_ih is None:
            acts = x + bias  # (T, B, 4H): pre-activations, activations, then factors
        else:
            acts = torch.addmm(bias, x.reshape(T * B, -1), w_ih.t()).view(T, B, G)
        out = acts.new_empty(T, B, H)
        m_dc = acts.new_empty(T, B, H) if grad else None
        forget = acts.new_empty(T, B, H) if grad else None  # f, which the factors overwrite
        ig, c_prev, c, tc = (acts.new_empty(B, H) for _ in range(4))  # per-step scratch
        c_prev.copy_(c0)
        w_t = w_hh.t().contiguous()  # (H, 4H): a row-major right operand is the faster product
        # per-step views made once, in C++, rather than sliced in the loop
        a_t, ifg_t = acts.unbind(0), acts[..., : 2 * H].unbind(0)
        i_t, f_t = acts[..., :H].unbind(0), acts[..., H : 2 * H].unbind(0)
        g_t, o_t = acts[..., 2 * H : 3 * H].unbind(0), acts[..., 3 * H :].unbind(0)
        out_t = out.unbind(0)
        if grad:
            m_dc_t, fs_t = m_dc.unbind(0), forget.unbind(0)
        h = h0
        with StepThreads() as threads:
            for t in range(T):
                if t in keeps:
                    h = h * keeps[t]
                    c_prev.mul_(keeps[t])
                threads.wide()
                a_t[t].addmm_(h, w_t)
                threads.narrow()
                ifg_t[t].sigmoid_()
                i, f, g, o = i_t[t], f_t[t], g_t[t], o_t[t]
                g.tanh_()
                o.sigmoid_()
                torch.mul(i, g, out=ig)
                torch.addcmul(ig, f, c_prev, out=c)
                torch.tanh(c, out=tc)
                h = torch.mul(o, tc, out=out_t[t])
                if grad:  # the step's factors, in place of its activations (order matters)
                    fs_t[t].copy_(f)
                    torch.addcmul(o, h, tc, value=-1, out=m_dc_t[t])  # o (1 - tanh(c_t)^2)
                    torch.addcmul(h, h, o, value=-1, out=o)  # tanh(c_t) o (1 - o)
                    torch.addcmul(i, ig, g, value=-1, out=g)  # i (1 - g^2)
                    torch.addcmul(ig, ig, i, value=-1, out=i)  # g i (1 - i)
                    torch.addcmul(f, f, f, value=-1, out=f).mul_(c_prev)  # c_{t-1} f (1 - f)
                c, c_prev = c_prev, c
        ctx.scales, ctx.keeps, ctx.projected = scales, keeps, w_ih is not None
        ctx.save_for_backward(x, w_ih, h0, w_hh, acts, m_dc, forget, out)
        return out, h.clone(), c_prev.clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_hT, d_cT):
        x, w_ih, h0, w_hh, factors, m_dc, forget, out = ctx.saved_tensors
        scales, keeps = ctx.scales, ctx.keeps
        T, B, G = factors.shape
        H = G // 4
        d = torch.empty_like(factors)  # the factors stay as saved: backward may run again
        d3 = d[..., : 3 * H].unflatten(-1, (3, H)).unbind(0)  # (B, 3, H) views
        do_t, d_t = d[..., 3 * H :].unbind(0), d.unbind(0)
        f3 = factors[..., : 3 * H].unflatten(-1, (3, H)).unbind(0)
        fo_t = factors[..., 3 * H :].unbind(0)
        m_dc_t, f_t, d_out_t = m_dc.unbind(0), forget.unbind(0), d_out.unbind(0)
        # the recursion's dh and dc in two buffers each, written in place (no allocation)
        dh, dh_next = torch.add(d_out_t[T - 1], d_hT), torch.empty_like(d_hT)
        dc, dc_next = torch.addcmul(d_cT, dh, m_dc_t[T - 1]), torch.empty_like(d_hT)
        dcu, dcu_next = dc.unsqueeze(1), dc_next.unsqueeze(1)  # (B, 1, H) views
        with StepThreads() as threads:
            for t in range(T - 1, -1, -1):
                torch.mul(f3[t], dcu, out=d3[t])
                torch.mul(fo_t[t], dh, out=do_t[t])
                if t == 0:
                    break
                s = scales[t]  # xi_t (and keep_t) scale what crosses the edge into step t
                threads.wide()
                if t in keeps:
                    torch.mm(d_t[t], w_hh, out=dh_next).mul_(keeps[t])
                    torch.add(d_out_t[t - 1], dh_next, alpha=s, out=dh_next)
                    dc.mul_(keeps[t])
                elif s == 0.0:
                    dh_next.copy_(d_out_t[t - 1])
                else:
                    torch.addmm(d_out_t[t - 1], d_t[t], w_hh, alpha=s, out=dh_next)
                threads.narrow()
                dh, dh_next = dh_next, dh
                # dc_{t-1} = dh_{t-1} m_dc_{t-1} + xi_t keep_t f_t dc_t
                torch.mul(dh, m_dc_t[t - 1], out=dc_next).addcmul_(dc, f_t[t], value=s)
                dc, dc_next, dcu, dcu_next = dc_next, dc, dcu_next, dcu
        need = ctx.needs_input_grad
        carry = _carry_factor(scales, keeps, 0)
        d_h0 = torch.mm(d[0], w_hh) * carry if need[3] else None
        d_c0 = dc * f_t[0] * carry if need[4] else None
        flat = d.view(T * B, G)
        d_w = None
        if need[5]:  # dW_hh = sum_t d_t^T h~_{t-1}: one product over the window
            if keeps or T == 1:
                d_w = flat.t() @ _previous_hidden(h0, out, keeps).view(T * B, H)  # (4H, H)
            else:  # h~_{t-1} is out[t-1] (and h0): no copy of the window's states
                d_w = torch.addmm(
                    torch.mm(d[0].t(), h0), d[1:].reshape(-1, G).t(), out[:-1].reshape(-1, H)
                )
        d_bias = flat.sum(0) if need[2] else None
        if not ctx.projected:
            return d, None, d_bias, d_h0, d_c0, d_w, None, None
        d_x = (flat @ w_ih).view(x.shape) if need[0] else None
        d_w_ih = flat.t() @ x.reshape(T * B, -1) if need[1] else None
        return d_x, d_w_ih, d_bias, d_h0, d_c0, d_w, None, None


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
        with StepThreads() as threads:
            for t in range(T):
                if t in keeps:
                    h = h * keeps[t]
                threads.wide()
                torch.addmm(b_hh, h, w_t, out=hp_t[t])
                threads.narrow()
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
        with StepThreads() as threads:
            for t in range(T - 1, -1, -1):
                torch.mul(dh, mn_t[t], out=dn_t[t])
                torch.mul(dh, mz_t[t], out=dz_t[t])
                torch.mul(dn_t[t], mr_t[t], out=dr_t[t])
                torch.mul(dn_t[t], r_t[t], out=dhn_t[t])
                if t == 0:
                    break
                s = scales[t]
                if t in keeps:
                    carry = dh * z[t]
                    threads.wide()
                    carry.addmm_(dhp_t[t], w_hh)
                    threads.narrow()
                    dh = torch.addcmul(d_out_t[t - 1], carry, keeps[t], value=s)
                elif s == 0.0:
                    dh = d_out_t[t - 1]
                else:
                    dh = torch.addcmul(d_out_t[t - 1], dh, zc_t[t])
                    threads.wide()
                    dh.addmm_(dhp_t[t], w_hh, alpha=s)
                    threads.narrow()
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
        with StepThreads() as threads:
            for t in range(T):
                if t in keeps:
                    h = h * keeps[t]
                threads.wide()
                h = out_t[t].addmm_(h, w_t)
                threads.narrow()
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
        with StepThreads() as threads:
            for t in range(T - 1, -1, -1):
                if slope_t is None:
                    d_t[t].copy_(dh)
                else:
                    torch.mul(dh, slope_t[t], out=d_t[t])
                if t == 0:
                    break
                s = scales[t]
                if s == 0.0 and t not in keeps:
                    dh = d_out_t[t - 1]
                    continue
                threads.wide()
                if t in keeps:
                    dh = torch.mm(d_t[t], w_hh)
                    threads.narrow()
                    dh = torch.addcmul(d_out_t[t - 1], dh, keeps[t], value=s)
                else:
                    dh = torch.addmm(d_out_t[t - 1], d_t[t], w_hh, alpha=s)
                    threads.narrow()
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
