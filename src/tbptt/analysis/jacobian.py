"""||dh_T/dh_t|| as a function of the distance T - t, exactly, for any recurrent model.

The state s_t is the whole recurrent state after step t, flattened per stream:
every layer's hidden vector, and for LSTM every layer's cell vector too
(S = L H, or 2 L H for LSTM). The one-step Jacobian

    A_t = ds_t / ds_{t-1}        (B, S, S), one matrix per stream

is computed by autograd through the model's per-step path on the real inputs
x_t, token ids or float features (one batched backward of S grad vectors per
step). Then

    ds_T/ds_{T-k} = A_T A_{T-1} ... A_{T-k+1}        k = 0 .. T

is accumulated as a product of matrices; to follow it far beyond the range of
floating point, the running product is divided by its norm after every factor
and the logarithms of those norms are summed, so ``log_norms`` is exact where
the product itself would underflow or overflow.

The log-norm is nearly linear in k for large k; the slope of a least-squares
line through it (``fit_rate``) is the decay (< 0) or growth (> 0) rate per
step, and exp(slope) is comparable with a spectral radius: for a linear RNN
A_t = W_hh and the slope tends to log rho(W_hh).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from tbptt.errors import ConfigError
from tbptt.tree import State, flatten_state, map_state, state_tensors, unflatten_state

__all__ = [
    "NORMS",
    "JacobianProfile",
    "state_vector",
    "vector_state",
    "state_jacobians",
    "jacobian_norms",
    "fit_rate",
]

NORMS = ("spectral", "frobenius")


def state_vector(state: State) -> torch.Tensor:
    """(L, B, H) or ((L, B, H), (L, B, H)) -> (B, S): layers (then cell) side by side."""
    parts = state_tensors(state)
    return torch.cat([p.transpose(0, 1).flatten(1) for p in parts], dim=1)  # (B, S)


def vector_state(flat: torch.Tensor, like: State) -> State:
    """Inverse of :func:`state_vector`, shaped like ``like``."""
    parts, spec = flatten_state(like)
    out, start = [], 0
    for p in parts:
        L, B, H = p.shape
        out.append(flat[:, start : start + L * H].reshape(B, L, H).transpose(0, 1))  # (L, B, H)
        start += L * H
    return unflatten_state(spec, out)


def state_jacobians(model: nn.Module, inputs: torch.Tensor, state: State | None = None):
    """One-step state Jacobians along a window, and the final state.

    Args:
        model: a ``RecurrentNet`` (called as ``model(x (1, B[, F]), state, path="steps")``),
            in eval mode for dropout-free values.
        inputs: (T, B) token ids or (T, B, F) features.
        state: the state before step 1 (None: zeros).

    Returns:
        A list of T tensors (B, S, S), A_t[b, j, i] = d s_t[b, j] / d s_{t-1}[b, i],
        and the state after step T.
    """
    if state is None:
        state = model.initial_state(inputs.shape[1])
    flat = state_vector(state).detach()  # (B, S)
    B, S = flat.shape
    # S replicas of every stream, replica j seeded with grad e_j: one ordinary backward
    # then gives row j of every stream's A_t (the replicas never interact). The step is
    # the model's own forward (embedding, and any zoneout's evaluation-time mixing, included).
    seed = torch.eye(S, dtype=flat.dtype).unsqueeze(1).expand(S, B, S).reshape(S * B, S)
    jacobians = []
    for x in inputs:  # (B,) ids or (B, F) features
        s_in = flat.repeat(S, 1).requires_grad_(True)  # (S B, S), row j B + b = stream b
        with torch.enable_grad():
            _, out = model(
                x.repeat(S, *[1] * (x.dim() - 1)).unsqueeze(0),  # (1, S B[, F])
                vector_state(s_in, _replicate(state, S)),
                path="steps",
            )
            (rows,) = torch.autograd.grad(state_vector(out), s_in, seed)  # (S B, S)
        jacobians.append(rows.view(S, B, S).transpose(0, 1))  # (B, S, S): [b, j, i]
        with torch.no_grad():
            _, state = model(x.unsqueeze(0), state, path="steps")
        flat = state_vector(state)
    return jacobians, state


def _replicate(state: State, copies: int) -> State:
    """A state shaped for a batch of ``copies`` times B (only its shape is used)."""
    return map_state(lambda s: s.repeat(1, copies, 1), state)


def _spectral_norm(
    m: torch.Tensor, v: torch.Tensor, *, tol: float = 1e-10, max_iter: int = 1000
) -> tuple[torch.Tensor, torch.Tensor]:
    """Largest singular value of each (S, S) in m (B, S, S) by power iteration on M^T M.

    ``v`` (B, S) is the starting vector (warm start: the previous distance's
    top right singular vector, which moves little from one k to the next).
    Iterates until sigma changes by less than ``tol`` (relative). Returns
    sigma (B,) and the new vectors. An exact SVD per distance would cost
    O(S^3) each; this is a few O(S^2) products.
    """
    sigma = torch.zeros(m.shape[0], dtype=m.dtype)
    for _ in range(max_iter):
        u = (m @ v.unsqueeze(-1)).squeeze(-1)  # (B, S)
        w = (m.transpose(-1, -2) @ u.unsqueeze(-1)).squeeze(-1)  # (B, S): M^T M v
        new = u.norm(dim=-1)  # ||M v|| with ||v|| = 1: a lower bound that rises to sigma
        wn = w.norm(dim=-1)
        v = w / torch.where(wn > 0, wn, torch.ones_like(wn)).unsqueeze(-1)
        done = bool(((new - sigma).abs() <= tol * new.abs()).all())
        sigma = new
        if done:
            break
    return sigma, v


@dataclass
class JacobianProfile:
    """``log_norms[b, k]`` = log ||ds_T/ds_{T-k}|| for stream b, k = 0 .. T (natural log)."""

    log_norms: torch.Tensor  # (B, T + 1)
    norm: str

    @property
    def distances(self) -> list[int]:
        return list(range(self.log_norms.shape[1]))

    @property
    def mean_log_norms(self) -> torch.Tensor:
        """(T + 1,) log of the geometric mean over streams."""
        return self.log_norms.mean(0)

    def fit(self, start: int | None = None, stop: int | None = None) -> dict:
        """:func:`fit_rate` on the streams' mean log-norm (default range: the last 3/4)."""
        return fit_rate(self.mean_log_norms, start, stop)


def jacobian_norms(
    model: nn.Module,
    inputs: torch.Tensor,
    *,
    state: State | None = None,
    norm: str = "spectral",
) -> JacobianProfile:
    """||ds_T/ds_{T-k}|| for k = 0 .. T on one window of real inputs (see the module docstring).

    Args:
        model: a ``RecurrentNet`` (put it in eval mode, and in float64 for long windows).
        inputs: (T, B) token ids or (T, B, F) features: B streams, T steps.
        state: the state before the window (None: zeros).
        norm: ``"spectral"`` (largest singular value) or ``"frobenius"``.
    """
    if norm not in NORMS:
        raise ConfigError(f"unknown norm {norm!r}; expected one of {', '.join(NORMS)}")
    jacobians, _ = state_jacobians(model, inputs, state)
    B, S, _ = jacobians[0].shape
    dtype = jacobians[0].dtype
    product = torch.eye(S, dtype=dtype).expand(B, S, S)  # ds_T/ds_T
    v = torch.ones(B, S, dtype=dtype) / S**0.5
    log_scale = torch.zeros(B, dtype=torch.float64)
    # k = 0: the identity, spectral norm 1, Frobenius norm sqrt(S)
    log_norms = [
        torch.full((B,), 0.5 * math.log(S) if norm == "frobenius" else 0.0, dtype=torch.float64)
    ]
    for a in reversed(jacobians):  # k = 1 .. T
        product = product @ a  # (B, S, S), times exp(log_scale)
        if norm == "frobenius":
            n = torch.linalg.matrix_norm(product)
        else:
            n, v = _spectral_norm(product, v)
        log_norms.append(log_scale + torch.log(n).double())
        # renormalise (a zero product stays zero: its log-norm is -inf from here on)
        safe = torch.where(n > 0, n, torch.ones_like(n))
        product = product / safe.view(B, 1, 1)
        log_scale = log_scale + torch.log(safe).double()
    return JacobianProfile(log_norms=torch.stack(log_norms, dim=1), norm=norm)  # (B, T + 1)


def fit_rate(log_norms: torch.Tensor, start: int | None = None, stop: int | None = None) -> dict:
    """Least-squares line log ||.|| = a + slope k over k in [start, stop).

    Default range: the last three quarters of the distances, past the
    transient of the first steps. Non-finite points are left out.

    Returns ``{"slope", "rate" (= exp(slope)), "intercept", "start", "stop", "points"}``.
    """
    n = log_norms.shape[0]
    start = max(1, n // 4) if start is None else start
    stop = n if stop is None else stop
    k = torch.arange(start, stop, dtype=torch.float64)
    y = log_norms[start:stop].double()
    ok = torch.isfinite(y)
    k, y = k[ok], y[ok]
    if len(k) < 2:
        return {
            "slope": math.nan,
            "rate": math.nan,
            "intercept": math.nan,
            "start": start,
            "stop": stop,
            "points": len(k),
        }
    km, ym = k.mean(), y.mean()
    slope = float(((k - km) * (y - ym)).sum() / ((k - km) ** 2).sum())
    return {
        "slope": slope,
        "rate": math.exp(slope),
        "intercept": float(ym - slope * km),
        "start": start,
        "stop": stop,
        "points": len(k),
    }
