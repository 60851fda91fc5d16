"""The gated linear recurrence ``h_t = a_t * h_{t-1} + b_t``, with a hand-written backward pass.

Element-wise (diagonal) recurrences -- minGRU, minLSTM, the LRU (:mod:`tbptt.models.minimal`)
-- run on this one primitive. Shapes: a, b (T, B, N) real or complex; h0 (B, N); outputs
(T, B, N) = h_0 .. h_{T-1}; the final state (B, N). It is equivalent to this naive loop::

    h = h0
    for t in range(T):
        h = gate(h, scales[t])           # identity forward, gradient * xi_t backward
        h = keeps[t] * h                 # a reset (document boundary): 0 for that stream
        h = a[t] * h + b[t]
        outputs.append(h)

**Backward.** The adjoint ``lam_t = dL/dh_t`` obeys the same recurrence run backwards,
with the gate multiplying the coefficient (``conj`` for complex states, PyTorch's convention
of gradients as dL/d(conj z))::

    lam_{T-1} = g_{T-1} + dL/dh_T
    lam_{t-1} = g_{t-1} + xi_t * keep_t * conj(a_t) * lam_t
    dL/db_t = lam_t     dL/da_t = lam_t * conj(keep_t h_{t-1})     dL/dh0 = xi_0 keep_0 conj(a_0) lam_0

with g_t the gradient arriving at output t. xi_t = 0 is a real cut, xi_t = 1/(1-c) a
randomized-truncation edge, and a reset sets a_t to 0 for that stream (forward and backward).
So forward and backward are one scan each, and both run on either path:

- **sequential**: one fused multiply-add per step (T kernel calls);
- **parallel**: a blocked associative scan. The steps are cut into blocks of C; every block is
  scanned from a zero state at once (C steps over (T/C, B, N) tensors), the blocks' carries
  ``h_end = P h_start + e`` (P the block's product of a, by ``torch.cumprod``) form a recurrence
  of length T/C that is scanned the same way (recursively), and the carries are added back:
  depth C log_C T instead of T, about three times the sequential work. No division by a
  cumulative product occurs, so it is stable for any |a| <= 1 (products merely underflow to 0);
  the log-space form of the minGRU paper is not needed.

``path="auto"`` (:func:`choose_path`) takes the parallel path for windows of at least
``PARALLEL_MIN_STEPS[device]`` steps whose per-step width B*N is at most
``PARALLEL_MAX_WIDTH[device]``: on CPU each sequential step is one memory-bound kernel call,
so the parallel path's extra traffic only pays off where the call overhead dominates (narrow
steps). Measured: benchmarks/linear_recurrence.py, docs/linear-recurrences.md. Both paths give
the same values and gradients (float64: 1e-10; float32: 1e-5), tested against autograd on the
naive loop. The backward pass is not itself differentiable (use ``naive_scan`` for that).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch.autograd.function import once_differentiable

from tbptt.models.gating import apply_gate

__all__ = [
    "PARALLEL_MAX_WIDTH",
    "PARALLEL_MIN_STEPS",
    "choose_path",
    "linear_scan",
    "naive_scan",
    "scan",
]

# path="auto": the parallel path for windows of at least PARALLEL_MIN_STEPS steps of per-step
# width B*N at most PARALLEL_MAX_WIDTH (see the module docstring and docs/linear-recurrences.md;
# CPU measured, 1 and 2 threads; CUDA not measured here: one kernel launch per sequential step
# makes the parallel path the expected winner there beyond a few dozen steps).
PARALLEL_MIN_STEPS = {"cpu": 256, "cuda": 32}
PARALLEL_MAX_WIDTH = {"cpu": 2048, "cuda": None}


def choose_path(steps: int, width: int, device: str) -> str:
    """The path ``path="auto"`` takes for a window of ``steps`` steps of ``width`` = B*N values."""
    min_steps = PARALLEL_MIN_STEPS.get(device, PARALLEL_MIN_STEPS["cpu"])
    max_width = PARALLEL_MAX_WIDTH.get(device, PARALLEL_MAX_WIDTH["cpu"])
    if steps >= min_steps and (max_width is None or width <= max_width):
        return "parallel"
    return "sequential"


def _block_size(steps: int) -> int:
    """C ~ sqrt(T): two levels of T / C + C kernel calls each; C = 2 would give the log-depth tree."""
    return max(2, math.isqrt(max(steps, 1) - 1) + 1)


def _sequential(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, reverse: bool = False):
    """h_t = a_t h_{t-1} + b_t (or h_t = a_t h_{t+1} + b_t when ``reverse``), no graph. (T, ...)"""
    out = torch.empty_like(b)
    a_t, b_t, out_t = a.unbind(0), b.unbind(0), out.unbind(0)
    h = h0
    order = range(b.shape[0] - 1, -1, -1) if reverse else range(b.shape[0])
    for t in order:
        h = torch.addcmul(b_t[t], a_t[t], h, out=out_t[t])
    return out


def _blocked(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor, block: int | None = None):
    """h_t = a_t h_{t-1} + b_t from h0, by the blocked scan of the module docstring. (T, ...)"""
    T = b.shape[0]
    C = block or _block_size(T)
    n = T // C  # whole blocks; the last T - n C steps run sequentially after them
    if n < 2:
        return _sequential(a, b, h0)
    rest, m = b.shape[1:], n * C
    out = torch.empty_like(b)
    a2, b2 = a[:m].view(n, C, *rest), b[:m].view(n, C, *rest)  # (n, C, ...): block, step
    local = out[:m].view(n, C, *rest)  # every block from a zero state, all blocks at once
    prod = torch.empty_like(a2)  # a's product from the block's start (a loop: torch.cumprod
    local[:, 0], prod[:, 0] = b2[:, 0], a2[:, 0]  # along a leading dim is slow on CPU)
    for k in range(1, C):
        torch.addcmul(b2[:, k], a2[:, k], local[:, k - 1], out=local[:, k])
        torch.mul(a2[:, k], prod[:, k - 1], out=prod[:, k])
    ends = _blocked(prod[:, -1], local[:, -1], h0, block)  # (n, ...): h at each block's end
    local[1:].addcmul_(prod[1:], ends[:-1].unsqueeze(1))  # the carry into blocks 1 .. n-1
    local[0].addcmul_(prod[0], h0.unsqueeze(0))  # and into block 0
    if m < T:
        out[m:] = _sequential(a[m:], b[m:], out[m - 1])
    return out


def scan(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor,
    *,
    parallel: bool,
    reverse: bool = False,
    block: int | None = None,
) -> torch.Tensor:
    """The plain scan (no graph, no gates): h (T, ...) from a, b (T, ...) and h0 (...).

    ``reverse`` runs h_t = a_t h_{t+1} + b_t from h_T = h0 (the adjoint's direction).
    """
    if not parallel:
        return _sequential(a, b, h0, reverse)
    if reverse:
        return _blocked(a.flip(0), b.flip(0), h0, block).flip(0)
    return _blocked(a, b, h0, block)


def _effective_a(a: torch.Tensor, keeps: Mapping[int, torch.Tensor]) -> torch.Tensor:
    """a with the reset streams' coefficients zeroed (a copy when there are resets)."""
    if not keeps:
        return a
    a = a.clone()
    for t, keep in keeps.items():
        a[t].mul_(keep)
    return a


class _GatedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, h0, scales, keeps, parallel):
        a_eff = _effective_a(a, keeps)
        out = scan(a_eff, b, h0, parallel=parallel)  # (T, B, N)
        ctx.scales, ctx.keeps, ctx.parallel = scales, keeps, parallel
        ctx.save_for_backward(a_eff, h0, out)
        return out, out[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx, d_out, d_hT):
        a_eff, h0, out = ctx.saved_tensors
        scales, keeps = ctx.scales, ctx.keeps
        T = out.shape[0]
        if d_out is None:
            d_out = torch.zeros_like(out)
        if d_hT is None:
            d_hT = torch.zeros_like(out[0])
        xi = torch.tensor(scales, dtype=out.real.dtype, device=out.device)
        xi = xi.view(T, *([1] * (out.dim() - 1)))
        # reverse coefficients: lam_t = c_t lam_{t+1} + g_t with c_t = xi_{t+1} conj(a'_{t+1})
        coeff = torch.empty_like(a_eff)
        torch.mul(a_eff[1:].conj(), xi[1:], out=coeff[:-1])
        coeff[-1] = 1.0
        lam = scan(coeff, d_out, d_hT, parallel=ctx.parallel, reverse=True)  # (T, B, N)
        d_a = d_h0 = None
        if ctx.needs_input_grad[0]:
            h_prev = torch.cat([h0.unsqueeze(0), out[:-1]])  # (T, B, N)
            for t, keep in keeps.items():
                h_prev[t].mul_(keep)
            d_a = lam * h_prev.conj()
        if ctx.needs_input_grad[2]:
            d_h0 = lam[0] * a_eff[0].conj() * xi[0]
        return d_a, lam, d_h0, None, None, None


def _check(a, b, h0, scales, keeps) -> None:
    if a.shape != b.shape or h0.shape != b.shape[1:]:
        raise ValueError(
            f"Expected a, b of one shape (T, B, N) and h0 (B, N), got a {tuple(a.shape)}, "
            f"b {tuple(b.shape)}, h0 {tuple(h0.shape)}"
        )
    if len(scales) != b.shape[0]:
        raise ValueError(f"Expected {b.shape[0]} gates (one per step), got {len(scales)}")
    if any(not 0 <= t < b.shape[0] for t in keeps):
        raise ValueError(f"Expected reset steps in [0, {b.shape[0]}), got {sorted(keeps)}")


def linear_scan(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor,
    scales: Sequence[float] | None = None,
    keeps: Mapping[int, torch.Tensor] | None = None,
    *,
    path: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``h_t = a_t * keep_t * h_{t-1} + b_t`` over a window; returns (outputs (T, B, N), h_T (B, N)).

    ``scales[t]`` is the gate xi_t on the state edge entering step t (None: all 1; xi_0 = 0
    detaches ``h0``); ``keeps[t]`` (B, 1) is 0 for the streams that restart at step t, 1
    elsewhere (the contract of :func:`tbptt.models.steps.gated_layer`). ``path``: "auto",
    "sequential", "parallel" (hand-written backward) or "autograd" (:func:`naive_scan`).
    """
    T = b.shape[0]
    scales = (1.0,) * T if scales is None else tuple(float(s) for s in scales)
    keeps = dict(keeps or {})
    _check(a, b, h0, scales, keeps)
    if path == "auto":
        path = choose_path(T, b[0].numel(), b.device.type)
    if path == "autograd":
        return naive_scan(a, b, h0, scales, keeps)
    if path not in ("sequential", "parallel"):
        raise ValueError(
            f"Expected path 'auto', 'sequential', 'parallel' or 'autograd', got {path!r}"
        )
    if scales[0] == 0.0:
        h0 = h0.detach()  # a real cut: no graph behind the incoming state
    return _GatedScan.apply(a, b, h0, scales, keeps, path == "parallel")


def naive_scan(
    a: torch.Tensor,
    b: torch.Tensor,
    h0: torch.Tensor,
    scales: Sequence[float] | None = None,
    keeps: Mapping[int, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The loop of the module docstring recorded by autograd (double backward, forward AD)."""
    keeps = keeps or {}
    h, outs = h0, []
    for t in range(b.shape[0]):
        if scales is not None:
            h = apply_gate(h, float(scales[t]))
        if t in keeps:
            h = h * keeps[t]
        h = a[t] * h + b[t]
        outs.append(h)
    return torch.stack(outs), h
