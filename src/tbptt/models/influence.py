"""Influence balancing (Tallec & Ollivier 2017): where truncation gets the sign wrong.

A linear system of n units and one scalar parameter theta::

    s_0     = (1, ..., 1)                              (n,)
    s_t     = A s_{t-1} + theta * c                    t = 1, 2, ...
    o_t     = s_t[1]                                   (the first unit, read after the update)

    A = 1/2 I + 1/2 U,   (U s)_i = s_{i+1}  (s_{n+1} = 0),   c = (+1 x p, -1 x (n - p))

Unit i reaches unit 1 through the upper shift after i - 1 steps. The loss of
step t is l_t = 1/2 (o_t - 1)^2.

**The fixed point.** The stationary state solves (I - A) s = theta c, i.e.
s_n = 2 theta c_n and s_i = s_{i+1} + 2 theta c_i, so
s[1] = 2 theta sum_i c_i = 2 theta (2p - n). The loss is zero in the long run
at theta* = 1 / (2 (2p - n)): -1/6 for n = 23, p = 10.

**The conflict.** d o_t / d theta = z_t[1], where z_t = d s_t / d theta obeys
the same linear recurrence, z_t = A z_{t-1} + c with z_0 = 0, so
z_t = sum_{k<t} A^k c. Its first entries are positive (the p "+" units are
closest to unit 1): a gradient truncated after fewer than about p steps says
"increasing theta increases o", while the full influence, -6 in the long run
(2p - n), says the opposite. Truncated BPTT with short windows therefore pushes
theta the wrong way and diverges; full or unbiased randomized BPTT finds -1/6.

Equivalent to forward (one stream)::

    for t in range(T):
        s = 0.5 * s + 0.5 * concat(s[1:], [0]) + theta * c
        outputs[t] = s[0]

Inputs: ``inputs`` (T, B, F) (only T, B are used: the system has no input),
``state`` (B, n) or None (ones). Outputs: ``outputs`` (T, B, 1), ``state`` (B, n).
The state's batch is on dimension -2, so ``StatefulModule(model, batch_dim=-2)``
runs it under every strategy.
"""

from __future__ import annotations

import torch
from torch import nn

from tbptt.errors import ConfigError

__all__ = ["InfluenceBalancing", "optimal_theta"]


def optimal_theta(n: int = 23, p: int = 10) -> float:
    """theta* = 1 / (2 (2p - n)), where the stationary output is 1 (-1/6 for n = 23, p = 10)."""
    if 2 * p == n:
        raise ConfigError(f"influence balancing has no optimum when 2p = n, got n={n}, p={p}")
    return 1.0 / (2 * (2 * p - n))


class InfluenceBalancing(nn.Module):
    """The influence-balancing system, one parameter ``theta`` (see the module docstring).

    Args:
        n: number of units (>= 1).
        p: units that receive +theta, the first p (0 <= p <= n); the others get -theta.
        theta: initial value of the parameter.
    """

    def __init__(self, *, n: int = 23, p: int = 10, theta: float = 0.5):
        super().__init__()
        if n < 1 or not 0 <= p <= n:
            raise ConfigError(
                f"influence balancing expects n >= 1 units and 0 <= p <= n, got n={n}, p={p}"
            )
        self.n = n
        self.p = p
        self.theta = nn.Parameter(torch.tensor(float(theta)))

    def signs(self) -> torch.Tensor:
        """c: (n,) +1 for the first p units, -1 for the rest (dtype and device of theta)."""
        c = torch.ones(self.n, dtype=self.theta.dtype, device=self.theta.device)
        c[self.p :] = -1.0
        return c

    def initial_state(self, batch_size: int) -> torch.Tensor:
        """s_0: ones (B, n)."""
        return torch.ones(batch_size, self.n, dtype=self.theta.dtype, device=self.theta.device)

    def forward(
        self, inputs: torch.Tensor, state: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run T steps: inputs (T, B, F), state (B, n) -> outputs (T, B, 1), state (B, n)."""
        T, B = inputs.shape[0], inputs.shape[1]
        s = self.initial_state(B) if state is None else state
        if s.shape != (B, self.n):
            raise ConfigError(f"Expected a state of shape ({B}, {self.n}), got {tuple(s.shape)}")
        drive = self.theta * self.signs()  # (n,)
        pad = s.new_zeros(B, 1)
        outputs = []
        for _ in range(T):
            shifted = torch.cat([s[:, 1:], pad], dim=1)  # (B, n): (U s)_i = s_{i+1}
            s = 0.5 * s + 0.5 * shifted + drive  # (B, n)
            outputs.append(s[:, :1])  # (B, 1): o_t = s_t[1], after the update
        return torch.stack(outputs), s  # (T, B, 1), (B, n)
