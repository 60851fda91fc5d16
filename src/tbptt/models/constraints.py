"""A spectral-norm bound on the recurrent matrices: the remedy for exploding gradients.

For a linear RNN dh_T/dh_t = W_hh^(T-t), so ||dh_T/dh_t||_2 <= ||W_hh||_2^(T-t):
bounding the spectral norm (largest singular value) of W_hh by c <= 1 rules
out growth. For tanh/ReLU RNNs the same bound holds since |tanh'|, relu' <= 1.

The bound is a reparametrization, exact at every forward pass: each layer's
``weight_hh`` is computed from a free matrix V as

    W = V * min(1, c / sigma_max(V))          for every (H, H) gate block of V

with sigma_max computed exactly (``torch.linalg.matrix_norm(ord=2)``, an SVD;
not a power-iteration estimate), so ||W||_2 <= c holds after every optimizer
step whatever the optimizer does to V, and gradients flow through the
rescaling (the gradient is that of the constrained model). Blocks already
inside the ball are left as they are.

Which blocks: ``weight_hh`` stacks one (H, H) block per gate (see
:mod:`tbptt.models.recurrent`), and each is bounded separately:
rnn/relu/linear: W_hh; GRU: W_hr, W_hz, W_hn (reset, update, candidate);
LSTM: W_hi, W_hf, W_hg, W_ho (input, forget, cell, output). Input weights
``weight_ih`` and biases are free. The state-dict key of a constrained layer
becomes ``...parametrizations.weight_hh_l<k>.original`` (that is V); rebuild
the model from its :class:`~tbptt.models.ModelConfig` (``spectral_norm``)
before loading such a checkpoint.

Cost: one SVD of G (H, H) blocks per layer per forward pass (about as much as a
few steps of the recurrence at H = 256).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from tbptt.errors import ConfigError

__all__ = ["SpectralNormBound", "constrain_spectral_norm", "recurrent_spectral_norms"]

_BLOCKS = {"lstm": 4, "gru": 3, "rnn": 1, "relu": 1, "linear": 1}


class SpectralNormBound(nn.Module):
    """Parametrization ``V (G H, H) -> W``: every (H, H) block rescaled to spectral norm <= max_norm."""

    def __init__(self, max_norm: float, blocks: int):
        super().__init__()
        self.max_norm, self.blocks = float(max_norm), blocks

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        g, h = self.blocks, v.shape[1]
        blocks = v.view(g, h, h)  # (G, H, H)
        sigma = torch.linalg.matrix_norm(blocks, ord=2)  # (G,) exact largest singular values
        scale = torch.clamp(self.max_norm / sigma, max=1.0)  # 1 inside the ball (and for V = 0)
        return (blocks * scale.view(g, 1, 1)).view_as(v)  # (G H, H)

    def extra_repr(self) -> str:
        return f"max_norm={self.max_norm:g}, blocks={self.blocks}"


def constrain_spectral_norm(recurrent: nn.Module, max_norm: float) -> nn.Module:
    """Bound every recurrent block of a :class:`~tbptt.models.Recurrent` (in place; returned).

    Raises:
        ConfigError: ``max_norm`` is not a positive finite number.
    """
    if not (isinstance(max_norm, (int, float)) and max_norm > 0 and math.isfinite(max_norm)):
        raise ConfigError(
            f"spectral norm bound must be a positive number (e.g. 1.0), got {max_norm!r}"
        )
    blocks = _BLOCKS[recurrent.kind]
    for layer in range(recurrent.num_layers):
        parametrize.register_parametrization(
            recurrent.core, f"weight_hh_l{layer}", SpectralNormBound(max_norm, blocks)
        )
    return recurrent


def recurrent_spectral_norms(recurrent: nn.Module) -> torch.Tensor:
    """(L, G) spectral norms of the recurrent blocks the forward pass uses."""
    blocks = _BLOCKS[recurrent.kind]
    norms = []
    with torch.no_grad():
        for layer in range(recurrent.num_layers):
            w = getattr(recurrent.core, f"weight_hh_l{layer}")  # (G H, H), after any constraint
            h = w.shape[1]
            norms.append(torch.linalg.matrix_norm(w.view(blocks, h, h), ord=2))
    return torch.stack(norms)  # (L, G)
