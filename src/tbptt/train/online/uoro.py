"""Unbiased online recurrent optimization (Tallec & Ollivier 2017).

UORO keeps a random rank-one estimate of the sensitivity, J_t ≈ s̃_t θ̃_tᵀ,
whose expectation is the exact J_t. With ν random signs (±1, one per state
value), each step::

    ρ0 = sqrt(|θ̃| / |A s̃|)          A = ∂f/∂s_{t-1}
    ρ1 = sqrt(|νᵀ D| / |ν|)          D = ∂f/∂θ
    s̃ ← ρ0 A s̃ + ρ1 ν               θ̃ ← θ̃ / ρ0 + νᵀ D / ρ1

(E[ν νᵀ] = I makes the new product unbiased; ρ0, ρ1 minimize its variance,
and ε = 1e-7 guards them against zero norms). The gradient of step t's loss
is ∂l_t/∂θ + (∂l_t/∂s_{t-1} · s̃) θ̃.

The B streams form one system whose state is their concatenation, s̃ (B, S)
and θ̃ (P,): one rank-one pair for the whole batch, unbiased as for one
stream, its variance growing with B.

Each step is one forward recorded by autograd and one batch of reverse products:
the loss's (the gradient), ν's (νᵀD) and, for a small state (B S up to
:data:`DENSE_STATE`), e_k's for every state value, which give A itself and A s̃ as a
product; for a larger state A s̃ is the transpose of u ↦ uᵀA, a reverse pass through
the reverse pass. Neither needs a second forward or forward-mode AD (which takes many
modules' ops, a tensor times a Python number among them, through slow decompositions).
Memory: B S + P values beyond the model's own step (and the (B S)² of A when it is
formed). The random signs come from the generator passed to :meth:`step` (the
trainer's, saved with the run).
"""

from __future__ import annotations

import torch

from tbptt.train.online.base import OnlineEstimator, ReverseProducts

__all__ = ["UORO"]

EPS = 1e-7
DENSE_STATE = 64  # up to this many state values (B S) A is formed by reverse products


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
        loss, s_new, leaves = self._recorded(theta, s, row)
        B, S = s.shape
        n = B * S
        nu = (torch.randint(0, 2, s.shape, generator=generator) * 2 - 1).to(s)  # (B, S)
        dense = n <= DENSE_STATE  # A itself, from the same batch of reverse products
        d_loss, d_s = self._cotangents(B, S, s, free=1, every=dense)  # the loss's, ν's, e_k's
        d_s[1] = nu
        graph = ReverseProducts((loss, s_new), leaves, chunk=d_loss.shape[0])
        g_theta, g_s = graph.products(d_loss, d_s, last=dense)
        grad = g_theta[0] + (g_s[0] * self.s_tilde).sum() * self.theta_tilde  # (P,)
        nu_d = g_theta[1]  # νᵀD (P,)
        if dense:  # row k of A is e_kᵀA
            a_s = (g_s[2:].reshape(n, n) @ self.s_tilde.reshape(n)).view(B, S)
        else:  # A s̃ as the transpose of u -> uᵀA: a reverse pass through the reverse pass
            u = torch.zeros_like(s_new, requires_grad=True)
            with torch.enable_grad():
                (v,) = torch.autograd.grad(s_new, leaves[1], u, create_graph=True)
            (a_s,) = torch.autograd.grad(v, u, self.s_tilde)
        rho0 = torch.sqrt((self.theta_tilde.norm() + EPS) / (a_s.norm() + EPS))
        rho1 = torch.sqrt((nu_d.norm() + EPS) / (nu.norm() + EPS))
        self.s_tilde = (rho0 * a_s + rho1 * nu).detach()
        self.theta_tilde = (self.theta_tilde / rho0 + nu_d / rho1).detach()
        return loss.detach(), grad, s_new.detach()
