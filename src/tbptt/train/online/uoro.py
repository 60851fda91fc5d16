"""Unbiased online recurrent optimization (Tallec & Ollivier 2017).

UORO keeps a random rank-one estimate of the sensitivity, J_t ≈ s̃_t θ̃_tᵀ,
whose expectation is the exact J_t. With ν random signs (±1, one per state
value), each step::

    ρ0 = sqrt(|θ̃| / |A s̃|)          A = ∂f/∂s_{t-1}   (A s̃: reverse over reverse)
    ρ1 = sqrt(|νᵀ D| / |ν|)          D = ∂f/∂θ         (νᵀ D: one vjp)
    s̃ ← ρ0 A s̃ + ρ1 ν               θ̃ ← θ̃ / ρ0 + νᵀ D / ρ1

(E[ν νᵀ] = I makes the new product unbiased; ρ0, ρ1 minimize its variance,
and ε = 1e-7 guards them against zero norms). The gradient of step t's loss
is ∂l_t/∂θ + (∂l_t/∂s_{t-1} · s̃) θ̃.

The B streams form one system whose state is their concatenation, s̃ (B, S)
and θ̃ (P,): one rank-one pair for the whole batch, unbiased as for one
stream, its variance growing with B.

Cost per step, B streams, S state values per stream, P parameters, c the cost
of one step of the model: time about 4 c (one forward, reverse products for
the loss and νᵀD, and A s̃ as the transpose of the reverse product: a reverse pass
through the reverse pass, which needs no second forward and no forward-mode AD);
memory B S + P values beyond the model's own step. The random signs come from the generator passed to :meth:`step` (the
trainer's, saved with the run).
"""

from __future__ import annotations

import torch
from torch.func import vjp

from tbptt.train.online.base import OnlineEstimator

__all__ = ["UORO"]

EPS = 1e-7


class UORO(OnlineEstimator):
    """The rank-one unbiased estimator (see the module docstring)."""

    name = "uoro"

    def _start(self, batch_size: int) -> None:
        self.s_tilde = torch.zeros_like(self.s)  # (B, S)
        self.theta_tilde = self.s.new_zeros(self.fn.num_parameters)  # (P,)

    def _reset(self, keep: torch.Tensor) -> None:
        self.s_tilde = self.s_tilde * keep[:, None]

    def _tensors(self) -> dict:
        return {"s_tilde": self.s_tilde, "theta_tilde": self.theta_tilde}

    def _load(self, d: dict) -> None:
        self.s_tilde, self.theta_tilde = d["s_tilde"], d["theta_tilde"]

    def _clear(self) -> None:
        self.s_tilde = self.theta_tilde = None

    def _advance(self, s, row, generator):
        theta = self.fn.theta()
        if generator is None:
            raise ValueError("UORO needs a generator for its random signs")
        loss, s_new, vjp_fn = self._loss_and_vjp(theta, s, row)
        ones, zeros = torch.ones_like(loss), torch.zeros_like(loss)
        g_theta, g_s = vjp_fn((ones, torch.zeros_like(s_new)))
        grad = g_theta + (g_s * self.s_tilde).sum() * self.theta_tilde  # (P,)
        nu = (torch.randint(0, 2, s.shape, generator=generator) * 2 - 1).to(s)  # (B, S)
        nu_d, _ = vjp_fn((zeros, nu))  # (P,)
        # A s̃ as the transpose of u -> uᵀA (reverse over reverse): no second forward, and no
        # forward-mode AD, which many user modules' ops take through slow decompositions
        _, transpose = vjp(lambda u: vjp_fn((zeros, u))[1], torch.zeros_like(s_new))
        (a_s,) = transpose(self.s_tilde)  # (B, S)
        rho0 = torch.sqrt((self.theta_tilde.norm() + EPS) / (a_s.norm() + EPS))
        rho1 = torch.sqrt((nu_d.norm() + EPS) / (nu.norm() + EPS))
        self.s_tilde = (rho0 * a_s + rho1 * nu).detach()
        self.theta_tilde = (self.theta_tilde / rho0 + nu_d / rho1).detach()
        return loss, grad, s_new
