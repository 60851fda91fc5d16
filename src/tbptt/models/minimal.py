"""Linear-recurrent layers on one gated scan: minGRU, minLSTM (Feng et al. 2024, "Were RNNs all
we needed?") and the LRU (Orvieto et al. 2023, "Resurrecting recurrent neural networks").

Shapes (time-major): inputs (T, B, I), outputs (T, B, H), state (L, B, S) with S = H (minGRU,
minLSTM) or S = 2H (LRU: the real parts of its complex state, then the imaginary parts).

Each layer is ``h_t = a_t * h_{t-1} + b_t`` with a_t, b_t functions of the layer's input x_t
only, run by :func:`tbptt.models.scan.linear_scan` (gates, resets, the sequential and the
parallel path, a hand-written backward)::

    mingru   z = sigma(W_z x + b_z)    h~ = W_h x + b_h
             a = 1 - z                 b = z * h~                         y = h
    minlstm  f, i = sigma(W_f x + b_f), sigma(W_i x + b_i)   h~ = W_h x + b_h
             a = f / (f + i)           b = i / (f + i) * h~               y = h
             (the normalized gates, computed in log space: log a = log f - logaddexp(log f, log i))
    lru      lambda = exp(-exp(nu) + i exp(theta))   (|lambda| < 1 by construction)
             a = lambda                b = exp(gamma) * (B x)   (complex; exp(gamma) = sqrt(1 - |lambda|^2) at init)
             y = gelu(Re(C h) + D x)

``coefficients(x, layer)`` returns (a, b): a_t is the diagonal Jacobian dh_t/dh_{t-1} of the
layer, the element-wise closed form online (RTRL-style) estimators can use.

Zoneout keeps the recurrence linear: with mask m (1 = keep the old value),
``h_t = m h_{t-1} + (1 - m) (a_t h_{t-1} + b_t)``, i.e. a' = m + (1 - m) a, b' = (1 - m) b
(at evaluation the expectation m = z), so it runs on the same fast paths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tbptt.errors import ConfigError
from tbptt.models.gating import State
from tbptt.models.recurrent import check_sizes
from tbptt.models.scan import linear_scan

__all__ = ["LINEAR_KINDS", "LinearRecurrent"]

LINEAR_KINDS = ("mingru", "minlstm", "lru")
_ROWS = {"mingru": 2, "minlstm": 3}
# path names of the classic stack that callers may pass, mapped to this module's paths
_PATHS = {
    "auto": "auto",
    "sequential": "sequential",
    "steps": "sequential",
    "parallel": "parallel",
    "fused": "parallel",
    "autograd": "autograd",
}


class LinearRecurrent(nn.Module):
    """A stack of ``num_layers`` linear-recurrent layers of one ``kind`` (see the module docstring).

    Inputs: inputs (T, B, I), state or None (zeros), gates (T,) floats or None (all 1),
    resets (T, B) bool or None. Outputs: outputs (T, B, H) of the last layer, state (L, B, S).
    """

    def __init__(
        self,
        kind: str,
        *,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
        zoneout: float = 0.0,
        radius: tuple[float, float] = (0.5, 0.99),
        max_phase: float = math.pi / 10,
    ):
        super().__init__()
        if kind not in LINEAR_KINDS:
            raise ConfigError(f"unknown model {kind!r}; expected one of {', '.join(LINEAR_KINDS)}")
        check_sizes(input_size, hidden_size, num_layers, dropout)
        if not 0.0 <= zoneout <= 1.0:
            raise ConfigError(f"zoneout rate must be in [0, 1], got {zoneout}")
        self.kind, self.hidden_size, self.num_layers = kind, hidden_size, num_layers
        self.dropout, self.zoneout = dropout, zoneout
        self.layers = nn.ModuleList()
        for layer in range(num_layers):
            fan_in = input_size if layer == 0 else hidden_size
            if kind == "lru":
                self.layers.append(_LRUParameters(fan_in, hidden_size, radius, max_phase))
            else:
                self.layers.append(nn.Linear(fan_in, _ROWS[kind] * hidden_size))

    @property
    def state_size(self) -> int:
        return 2 * self.hidden_size if self.kind == "lru" else self.hidden_size

    def initial_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        """Zeros (L, B, S)."""
        ref = next(self.parameters())
        shape = (self.num_layers, batch_size, self.state_size)
        return torch.zeros(shape, device=device or ref.device, dtype=dtype or ref.dtype)

    def coefficients(self, x: torch.Tensor, layer: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """a, b (T, B, H) of ``layer`` for its inputs x (T, B, I); complex for the LRU."""
        if self.kind == "lru":
            return self.layers[layer].coefficients(x)
        proj = self.layers[layer](x)  # (T, B, G*H)
        if self.kind == "mingru":
            k, cand = proj.chunk(2, dim=-1)
            z = torch.sigmoid(k)
            return 1 - z, z * cand
        kf, ki, cand = proj.chunk(3, dim=-1)
        log_f, log_i = F.logsigmoid(kf), F.logsigmoid(ki)
        norm = torch.logaddexp(log_f, log_i)
        return torch.exp(log_f - norm), torch.exp(log_i - norm) * cand

    def forward(
        self,
        inputs: torch.Tensor,
        state: State | None = None,
        gates: Sequence[float] | None = None,
        *,
        resets: torch.Tensor | None = None,
        path: str = "auto",
    ) -> tuple[torch.Tensor, State]:
        """Run the window; ``resets`` (T, B) bool zeroes a stream's state before step t."""
        if path not in _PATHS:
            raise ValueError(f"Expected path one of {', '.join(_PATHS)}, got {path!r}")
        path = _PATHS[path]
        T, B = inputs.shape[:2]
        if state is None:
            state = self.initial_state(B, device=inputs.device, dtype=inputs.dtype)
        scales = (1.0,) * T if gates is None else tuple(float(x) for x in gates)
        keeps = {}
        if resets is not None:
            for t in torch.nonzero(resets.any(dim=1)).flatten().tolist():
                keeps[t] = (~resets[t]).to(inputs.dtype).unsqueeze(-1)  # (B, 1)
        H = self.hidden_size
        finals, x = [], inputs
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                x = F.dropout(x, self.dropout, True)
            a, b = self.coefficients(x, layer)  # (T, B, H)
            a, b = self._zoneout(a, b)
            h0 = state[layer]  # (B, S)
            if self.kind == "lru":
                h0 = torch.complex(h0[..., :H], h0[..., H:])
                a = a.expand_as(b)
            h, h_last = linear_scan(a, b, h0, scales, keeps, path=path)  # (T, B, H)
            if self.kind == "lru":
                x = self.layers[layer].readout(h, x)
                h_last = torch.cat([h_last.real, h_last.imag], dim=-1)  # (B, 2H)
            else:
                x = h
            finals.append(h_last)
        return x, torch.stack(finals)  # (T, B, H), (L, B, S)

    def _zoneout(self, a, b):
        z = self.zoneout
        if z == 0.0:
            return a, b
        if not self.training:
            return z + (1 - z) * a, (1 - z) * b
        keep = (torch.rand(b.shape, device=b.device) < z).to(b.real.dtype)  # (T, B, H)
        return keep + (1 - keep) * a, (1 - keep) * b


class _LRUParameters(nn.Module):
    """One LRU layer: lambda = exp(-exp(nu_log) + i exp(theta_log)), input map B (complex),
    normalization exp(gamma_log), readout C (complex) and skip D (real)."""

    def __init__(self, input_size, hidden_size, radius, max_phase):
        super().__init__()
        r_min, r_max = radius
        N = hidden_size
        u1, u2 = torch.rand(N), torch.rand(N)
        # |lambda| uniform on the ring [r_min, r_max], phase uniform in [0, max_phase]
        nu = -0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2)
        self.nu_log = nn.Parameter(torch.log(nu))
        self.theta_log = nn.Parameter(torch.log(max_phase * u2 + 1e-4))
        self.gamma_log = nn.Parameter(0.5 * torch.log(1 - torch.exp(-2 * nu)))
        self.b_re = nn.Parameter(torch.randn(N, input_size) / math.sqrt(2 * input_size))
        self.b_im = nn.Parameter(torch.randn(N, input_size) / math.sqrt(2 * input_size))
        self.c_re = nn.Parameter(torch.randn(hidden_size, N) / math.sqrt(N))
        self.c_im = nn.Parameter(torch.randn(hidden_size, N) / math.sqrt(N))
        self.skip = nn.Linear(input_size, hidden_size)

    def coefficients(self, x):
        lam = torch.exp(torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log)))  # (N,)
        scale = torch.exp(self.gamma_log)
        bx = torch.complex(x @ self.b_re.t(), x @ self.b_im.t()) * scale  # (T, B, N)
        return lam, bx

    def readout(self, h, x):
        # Re(C h) = C_re Re(h) - C_im Im(h)
        y = h.real @ self.c_re.t() - h.imag @ self.c_im.t() + self.skip(x)  # (T, B, H)
        return F.gelu(y)
