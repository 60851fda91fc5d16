"""Real-time recurrent learning (Williams & Zipser 1989) and SnAp-N (Menick et al. 2020).

RTRL carries the exact sensitivity of every stream's state to every parameter,
J_t = ds_t/dθ, (P, B, S), and updates it every step::

    J_t = A J_{t-1} + D          A = ∂f/∂s_{t-1} (B, S, S),  D = ∂f/∂θ (B, S, P)

A and D come from ``torch.func.vjp`` of the model's own step, one forward and
then B·S vmapped reverse products (a cotangent e_i on stream b gives row i of
both of that stream's Jacobians), so no Jacobian of a cell is written by hand.
The gradient of step t's loss is ∂l_t/∂θ + Σ_b ∂l_t/∂s_{t-1,b} · J_{t-1}[:, b]
(one more reverse product).

SnAp-N keeps J only on the entries (parameter p, state unit i) that N steps of
the recurrence can connect, starting from the units p writes to directly: a
fixed pattern M_N (P, S) found once, from the structural non-zeros of ∂f/∂θ
and ∂f/∂s, M_1 = nz(∂f/∂θ)ᵀ, M_{n+1} = M_n ∨ (M_n nz(∂f/∂s)ᵀ); after each
update J ← J ⊙ M_N. For an element-wise recurrence (∂f/∂s diagonal) M_1 is
already closed under the recurrence and SnAp-1 is RTRL; for a dense one, once
N is at least the number of steps that connect every unit, M_N is full and
SnAp-N is RTRL again.

Cost per step, B streams, S state values per stream (H for a GRU or RNN, 2 L H
for an LSTM), P parameters, c the cost of one step of the model (about P B
multiply-adds):

=========  ============================================  ==============================
estimator  time                                          memory
=========  ============================================  ==============================
rtrl       B S reverse products of one step (~ 2 B S c,  J, its update and D:
           c ≈ P B) + A J (B S² P): ~ B² S P             3 P B S values; e.g. GRU
           (a GRU: ~ 3 B² H⁴)                            H = 128: P ≈ 50 k, 3·50k·128
                                                         float32 ≈ 77 MB per stream
snap:N     as rtrl (this implementation computes every   as rtrl (J is stored dense
           entry, then masks)                            and masked) + the pattern
                                                         M (P S values)
=========  ============================================  ==============================

Exact RTRL that would not fit in memory is refused before anything is
allocated (:func:`check_rtrl_memory`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import jvp, vjp, vmap

from tbptt.errors import ConfigError
from tbptt.train.budget import available_memory
from tbptt.train.objectives import Objective
from tbptt.train.online.base import OnlineEstimator

__all__ = ["RTRL", "SnAp", "check_rtrl_memory", "rtrl_bytes"]

CHUNK_VALUES = 1 << 22  # values per chunk of vmapped cotangents (32 MB of float64)
COPIES = 3  # J, its update and ∂f/∂θ


def rtrl_bytes(num_parameters: int, batch_size: int, state_size: int, itemsize: int) -> float:
    """Bytes RTRL's sensitivities take: about ``COPIES`` x P x B x S values."""
    return COPIES * num_parameters * batch_size * state_size * itemsize


def check_rtrl_memory(
    num_parameters: int,
    batch_size: int,
    state_size: int,
    itemsize: int,
    device="cpu",
    *,
    available: int | None = None,
) -> float:
    """Refuse, before allocating, sensitivities that would not fit; returns the estimate.

    Raises:
        ConfigError: one line with the estimate, the memory available and what to do.
    """
    need = rtrl_bytes(num_parameters, batch_size, state_size, itemsize)
    free = available if available is not None else available_memory(device)
    if free is not None and need > 0.8 * free:
        raise ConfigError(
            f"exact RTRL needs about {need / 1e9:.1f} GB for its sensitivities "
            f"({num_parameters} parameters x {batch_size} streams x {state_size} state values "
            f"x {itemsize} bytes x {COPIES}) and {free / 1e9:.1f} GB are available; use uoro "
            "(memory P + B S), a smaller hidden size or fewer streams (batch size)",
            options=("train.strategy", "model.hidden_size", "train.batch_size"),
        )
    return need


class RTRL(OnlineEstimator):
    """Exact forward-mode sensitivities (see the module docstring).

    Args:
        model: a recurrent model.
        objective: the loss of its outputs.
        available: bytes available for the sensitivities (default: measured).
    """

    name = "rtrl"

    def __init__(self, model: nn.Module, objective: Objective, *, available: int | None = None):
        super().__init__(model, objective)
        self.available = available
        self.J: torch.Tensor | None = None  # (P, B, S)

    def _start(self, batch_size: int) -> None:
        P, S = self.fn.num_parameters, self.s.shape[1]
        check_rtrl_memory(
            P,
            batch_size,
            S,
            self.s.element_size(),
            self.s.device,
            available=self.available,
        )
        self.J = self.s.new_zeros((P, batch_size, S))

    def _reset(self, keep: torch.Tensor) -> None:
        self.J = self.J * keep[None, :, None]

    def _tensors(self) -> dict:
        return {"J": self.J}

    def _load(self, d: dict) -> None:
        self.J = d["J"]

    def _columns(self, theta, s, row, J):
        """One forward, then reverse-mode products: (loss, gradient (P,), s_t, J_t (P, B, S)).

        A cotangent e_i on stream b's new state gives row i of that stream's
        ∂f/∂θ (P,) and of its ∂f/∂s (S,) at once (streams do not mix), so B vmapped
        batches of S vjps give D (B, S, P) and A (B, S, S); then J_t = A J_{t-1} + D.
        """
        inputs, targets, mask = row
        B, S = s.shape
        P = theta.shape[0]
        step = lambda th, st: self.fn(th, st, inputs, targets, mask)  # noqa: E731
        (loss, s_new), vjp_fn = vjp(step, theta, s)
        g_theta, g_s = vjp_fn((torch.ones_like(loss), torch.zeros_like(s_new)))
        grad = g_theta + torch.einsum("bs,pbs->p", g_s, J)  # (P,)
        rows = vmap(
            lambda v: vjp_fn((torch.zeros_like(loss), v)),
            chunk_size=max(1, CHUNK_VALUES // (P + B * S)),
        )
        D = s.new_empty((B, S, P))
        A = s.new_empty((B, S, S))
        eye = torch.eye(S, dtype=s.dtype, device=s.device)
        for b in range(B):
            cotangents = s.new_zeros((S, B, S))
            cotangents[:, b, :] = eye  # e_i on stream b, for every i
            D[b], ds = rows(cotangents)  # (S, P), (S, B, S)
            A[b] = ds[:, b, :]  # (S_out, S_in)
        new = torch.einsum("bij,pbj->pbi", A, J) + D.permute(2, 0, 1)  # (P, B, S)
        return loss, grad, s_new, new

    def _advance(self, theta, s, row, generator):
        loss, grad, s_new, self.J = self._update(theta, s, row)
        return loss, grad, s_new

    def _update(self, theta, s, row):
        return self._columns(theta, s, row, self.J)


class SnAp(RTRL):
    """SnAp-N: RTRL with J kept on the pattern N steps reach (see the module docstring).

    Args:
        order: N >= 1.
    """

    name = "snap"

    def __init__(self, model: nn.Module, objective: Objective, *, order: int, **kw):
        super().__init__(model, objective, **kw)
        self.order = order
        self.pattern: torch.Tensor | None = None  # (P, 1, S) 0/1 in J's dtype
        self.recurrence: torch.Tensor | None = None  # (S, S) bool, nz(∂f/∂s)
        self.known: torch.Tensor | None = None  # (P,) bool: the column's pattern is found

    def _tensors(self) -> dict:
        return {
            "J": self.J,
            "pattern": self.pattern,
            "recurrence": self.recurrence,
            "known": self.known,
        }

    def _load(self, d: dict) -> None:
        self.J, self.pattern = d["J"], d["pattern"]
        self.recurrence, self.known = d["recurrence"], d["known"]

    def _update(self, theta, s, row):
        if self.pattern is None:
            self._find_pattern(theta, s, row)
        loss, grad, s_new, new = self._columns(theta, s, row, self.J)  # new: (P, B, S)
        # A parameter whose direct influence only shows with some inputs (an embedding row
        # of a token not seen yet) has an unknown column until then; its J column is still
        # zero (masked), so its first non-zero column is its direct pattern ∂f/∂θ_p.
        fresh = ~self.known & (new != 0).flatten(1).any(dim=1)  # (P,)
        if bool(fresh.any()):
            self.pattern[fresh] = self._closure((new[fresh] != 0).any(dim=1)).unsqueeze(1)
            self.known |= fresh
        return loss, grad, s_new, new * self.pattern

    def _closure(self, direct: torch.Tensor) -> torch.Tensor:
        """M_N (k, S) in J's dtype from M_1 = ``direct`` (k, S) bool."""
        reach = direct
        recur_t = self.recurrence.t().to(self.J.dtype)
        for _ in range(self.order - 1):
            reach = reach | ((reach.to(self.J.dtype) @ recur_t) != 0)
        return reach.to(self.J.dtype)

    def _find_pattern(self, theta, s, row, points: int = 2) -> None:
        """nz(∂f/∂s) and M_N at random weights and states (OR of ``points``).

        Random points, not the current ones, so a weight or state that happens to be zero
        (a zero initial state) does not hide an edge of the recurrence.
        """
        inputs, targets, mask = row
        g = torch.Generator().manual_seed(0)
        P, S = theta.shape[0], s.shape[1]
        direct = torch.zeros(P, S, dtype=torch.bool, device=s.device)
        recur = torch.zeros(S, S, dtype=torch.bool, device=s.device)
        state_of = lambda th, st: self.fn(th, st, inputs, targets, mask)[1]  # noqa: E731
        eye = torch.eye(S, dtype=s.dtype, device=s.device)
        for _ in range(points):
            th = theta + 0.1 * torch.randn(theta.shape, generator=g).to(theta)
            st = 0.5 * torch.randn(s.shape, generator=g).to(s)
            d = self._columns(th, st, row, s.new_zeros((P, *s.shape)))[3]
            direct |= (d != 0).any(dim=1)  # (P, S)
            # ∂f/∂s is block-diagonal over streams: one tangent e_i for every stream at once
            cols = vmap(
                lambda v, th=th, st=st: jvp(
                    state_of, (th, st), (torch.zeros_like(th), v.expand_as(st))
                )[1],
                randomness="same",
            )(eye)  # (S_in, B, S_out)
            recur |= (cols != 0).any(dim=1).t()  # (S_out, S_in)
        self.recurrence = recur
        self.known = direct.any(dim=1)  # (P,)
        self.pattern = self._closure(direct).unsqueeze(1)  # (P, 1, S)
