"""The statistical test of an unbiased gradient estimator, shared by every such test.

``draws`` (n, P) independent estimates at fixed weights and data; ``exact`` (P,)
the exact gradient. Each coordinate's mean is compared with the exact value in
units of its standard error, z = (mean - exact) / (std / sqrt n): for an
unbiased estimator every |z| is small and the mean of z^2 is about 1; a biased
estimate sits many standard errors away.
"""

from __future__ import annotations

import math

import torch


def z_scores(draws: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z of ``value`` against the draws' mean, in standard errors; mask of live coordinates)."""
    n = draws.shape[0]
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(n)
    live = se > 1e-12
    return (mean - value)[live] / se[live], live


def assert_unbiased(draws: torch.Tensor, exact: torch.Tensor, name: str, limit: float = 5.0):
    z, _ = z_scores(draws, exact)
    assert z.abs().max() < limit, f"{name} mean is off by {z.abs().max():.1f} standard errors"
    assert 0.3 < (z**2).mean() < 3.0, f"{name}: mean z^2 is {(z**2).mean():.2f}, expected ~1"


def assert_biased(
    draws: torch.Tensor, exact: torch.Tensor, estimate: torch.Tensor, name: str, limit: float
):
    """``estimate`` (P,), a deterministic strategy's gradient, is more than ``limit`` standard
    errors (of the unbiased draws) from the exact gradient somewhere: the test above fails it."""
    n = draws.shape[0]
    se = draws.std(0) / math.sqrt(n)
    live = se > 1e-12
    z = (estimate - exact)[live] / se[live]
    assert z.abs().max() > limit, f"{name} should be measurably biased"
