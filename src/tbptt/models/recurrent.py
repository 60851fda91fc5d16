"""Recurrent layers with two interchangeable implementations.

Shapes (time-major, as torch's RNNs): inputs (T, B, I), outputs (T, B, H),
state (L, B, H) -- or a pair ((L, B, H), (L, B, H)) = (hidden, cell) for LSTM.

The kinds and their cells, with x the input and h the previous hidden state::

    rnn     h' = tanh(W_ih x + b_ih + W_hh h + b_hh)
    relu    h' = relu(W_ih x + b_ih + W_hh h + b_hh)
    linear  h' =      W_ih x + b_ih + W_hh h + b_hh        (the lecture's linear RNN)
    gru     r = σ(W_ir x + b_ir + W_hr h + b_hr)    z = σ(W_iz x + b_iz + W_hz h + b_hz)
            n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))    h' = (1 - z) ⊙ n + z ⊙ h
    lstm    i, f, g, o = σ, σ, tanh, σ of (W_ih x + b_ih + W_hh h + b_hh)
            c' = f ⊙ c + i ⊙ g    h' = o ⊙ tanh(c')

The parameters are those of ``nn.RNN`` / ``nn.GRU`` / ``nn.LSTM`` (same names,
same layout), and two paths read them:

- **fused**: PyTorch's ``nn.RNN/GRU/LSTM`` kernels run each stretch of steps
  whose inner gates are all 1 in one call;
- **steps**: a per-step loop, layer by layer, with each layer's input
  projection for the whole window computed in one matrix product, and a
  gate applied on every state edge whose xi differs from 1. Each layer's loop
  is one autograd node with a hand-written backward pass
  (:mod:`tbptt.models.steps`); ``path="autograd"`` runs the same loop recorded
  by autograd step by step, for double backward or forward-mode AD.

``forward`` (``path="auto"``) picks the fused path when the gates leave long
stretches, else the step path (thresholds measured, see ``FUSED_MIN_STRETCH``).
All paths give the same values and gradients (tested in float64). The
step path is equivalent to this naive loop for one layer::

    for t in range(T):
        h = gate(h, gates[t])            # identity forward, grad * xi backward
        h = cell(inputs[t], h)
        outputs.append(h)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tbptt.errors import ConfigError
from tbptt.models.gating import State, apply_gate, map_state, segments
from tbptt.models.steps import projected_layer

__all__ = ["KINDS", "Recurrent"]

KINDS = ("lstm", "gru", "rnn", "relu", "linear")
_GATE_ROWS = {"lstm": 4, "gru": 3, "rnn": 1, "relu": 1, "linear": 1}
# The fused/step choice of path="auto": one fused call per gate-free stretch when the mean
# stretch has at least this many steps, else the step path. Measured on CPU (1 thread, B = 32,
# H = 256 and 512, interleaved A/B; see docs/benchmarks.md): oneDNN's fused LSTM beats the step
# path down to stretches of about 5 to 7 steps; the fused GRU/RNN kernels are per-step loops that the
# step path matches with no cut and beats with any, so they run fused only without cuts
# (FUSED_ONLY_UNCUT). On CUDA (H100, cuDNN) one call per stretch beats the step path's
# per-step kernel launches for LSTM and GRU down to stretches of about 5 steps.
FUSED_MIN_STRETCH = {"cpu": 6, "cuda": 5}
FUSED_ONLY_UNCUT = {"cpu": ("gru", "rnn", "relu")}


def check_sizes(input_size: int, hidden_size: int, num_layers: int, dropout: float) -> None:
    """Refuse a layer stack's sizes (each at least 1) or dropout (in [0, 1)) in one line."""
    for name, value in (
        ("input size", input_size),
        ("hidden size", hidden_size),
        ("layers", num_layers),
    ):
        if value < 1:
            raise ConfigError(f"{name} must be at least 1, got {value}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout}")


def _reset_streams(state: State, reset: torch.Tensor) -> State:
    """Zero the (L, B, H) state of the streams where ``reset`` (B,) is True.

    A multiplication by 0, so exactly no gradient crosses the reset.
    """
    keep = (~reset).view(1, -1, 1)  # (1, B, 1)
    return map_state(lambda s: s * keep.to(s.dtype), state)


class _LinearRNN(nn.Module):
    """Parameters of a multi-layer identity-activation RNN, laid out as ``nn.RNN``'s."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int, dropout: float):
        super().__init__()
        self.input_size, self.hidden_size = input_size, hidden_size
        self.num_layers, self.dropout = num_layers, dropout
        for layer in range(num_layers):
            fan_in = input_size if layer == 0 else hidden_size
            self.register_parameter(
                f"weight_ih_l{layer}", nn.Parameter(torch.empty(hidden_size, fan_in))
            )
            self.register_parameter(
                f"weight_hh_l{layer}", nn.Parameter(torch.empty(hidden_size, hidden_size))
            )
            self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(hidden_size)))
            self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(hidden_size)))
        bound = 1.0 / math.sqrt(hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -bound, bound)


class Recurrent(nn.Module):
    """A stack of ``num_layers`` recurrent layers of one ``kind`` (see the module docstring).

    Inputs: inputs (T, B, I), state or None (zeros), gates (T,) floats or None (all 1).
    Outputs: outputs (T, B, H) of the last layer, the final state.
    """

    def __init__(
        self,
        kind: str,
        *,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        if kind not in KINDS:
            raise ConfigError(f"unknown model {kind!r}; expected one of {', '.join(KINDS)}")
        check_sizes(input_size, hidden_size, num_layers, dropout)
        self.kind, self.hidden_size, self.num_layers, self.dropout = (
            kind,
            hidden_size,
            num_layers,
            dropout,
        )
        args = dict(input_size=input_size, hidden_size=hidden_size, num_layers=num_layers)
        d = dropout if num_layers > 1 else 0.0
        if kind == "lstm":
            self.core = nn.LSTM(**args, dropout=d)
        elif kind == "gru":
            self.core = nn.GRU(**args, dropout=d)
        elif kind in ("rnn", "relu"):
            self.core = nn.RNN(**args, dropout=d, nonlinearity="tanh" if kind == "rnn" else "relu")
        else:
            self.core = _LinearRNN(input_size, hidden_size, num_layers, d)

    @property
    def has_fused(self) -> bool:
        return self.kind != "linear"

    def initial_state(self, batch_size: int, *, device=None, dtype=None) -> State:
        """Zeros: (L, B, H), or (hidden, cell) for LSTM."""
        ref = self.core.weight_hh_l0
        shape = (self.num_layers, batch_size, self.hidden_size)
        zeros = torch.zeros(shape, device=device or ref.device, dtype=dtype or ref.dtype)
        return (zeros, zeros.clone()) if self.kind == "lstm" else zeros

    def forward(
        self,
        inputs: torch.Tensor,
        state: State | None = None,
        gates: Sequence[float] | None = None,
        *,
        resets: torch.Tensor | None = None,
        path: str = "auto",
    ) -> tuple[torch.Tensor, State]:
        """Run the window; ``resets`` (T, B) bool marks streams that start afresh at step t.

        A reset zeroes that stream's state before step t (no gradient crosses it),
        for document boundaries inside a window; the other streams carry on.
        """
        if state is None:
            state = self.initial_state(inputs.shape[1], device=inputs.device, dtype=inputs.dtype)
        if resets is not None and not bool(resets.any()):
            resets = None
        reset_steps = (
            set(torch.nonzero(resets.any(dim=1)).flatten().tolist())
            if resets is not None
            else set()
        )
        stretches = segments(gates, inputs.shape[0], extra_cuts=reset_steps)
        if path == "auto":
            path = self._auto_path(inputs, len(stretches))
        if path == "fused":
            if not self.has_fused:
                raise ConfigError(f"the {self.kind} model has no fused kernel; use path='steps'")
            return self._forward_fused(inputs, state, stretches, resets, reset_steps)
        if path == "steps":
            return self._forward_steps(inputs, state, gates, resets, reset_steps)
        if path == "autograd":
            return self._forward_autograd(inputs, state, gates, resets, reset_steps)
        raise ValueError(f"Expected path 'auto', 'fused', 'steps' or 'autograd', got {path!r}")

    def _auto_path(self, inputs: torch.Tensor, num_stretches: int) -> str:
        if not self.has_fused:
            return "steps"
        device = inputs.device.type
        if num_stretches > 1 and self.kind in FUSED_ONLY_UNCUT.get(device, ()):
            return "steps"
        min_stretch = FUSED_MIN_STRETCH.get(device, FUSED_MIN_STRETCH["cpu"])
        return "fused" if inputs.shape[0] >= min_stretch * num_stretches else "steps"

    # -- fused path -----------------------------------------------------------------

    def _forward_fused(self, inputs, state, stretches, resets=None, reset_steps=()):
        if len(stretches) == 1 and resets is None:
            start, stop, xi = stretches[0]
            return self.core(inputs, apply_gate(state, xi))
        outputs = []
        for start, stop, xi in stretches:
            state = apply_gate(state, xi)
            if start in reset_steps:
                state = _reset_streams(state, resets[start])
            out, state = self.core(inputs[start:stop], state)
            outputs.append(out)
        return torch.cat(outputs), state  # (T, B, H)

    # -- step path -------------------------------------------------------------------

    def _weights(self, layer: int):
        c = self.core
        return (
            getattr(c, f"weight_ih_l{layer}"),
            getattr(c, f"weight_hh_l{layer}"),
            getattr(c, f"bias_ih_l{layer}"),
            getattr(c, f"bias_hh_l{layer}"),
        )

    def _forward_steps(self, inputs, state, gates, resets=None, reset_steps=()):
        """Layer by layer: one input projection per window, then the gated loop of
        :func:`tbptt.models.steps.gated_layer` (one autograd node per layer)."""
        lstm = self.kind == "lstm"
        hs, cs = state if lstm else (state, None)
        T = inputs.shape[0]
        scales = [1.0] * T if gates is None else [float(x) for x in gates]
        if len(scales) != T:
            raise ValueError(f"Expected {T} gates (one per step), got {len(scales)}")
        keeps = {t: (~resets[t]).to(inputs.dtype).unsqueeze(-1) for t in reset_steps}  # (B, 1)
        new_h, new_c = [], []
        layer_input = inputs
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and self.training:
                layer_input = F.dropout(layer_input, self.dropout, True)
            h, c = hs[layer], cs[layer] if lstm else None
            if scales[0] == 0.0:  # a real detach of the incoming state
                h, c = h.detach(), c.detach() if lstm else None
            layer_input, h, c = projected_layer(
                self.kind, layer_input, h, c, self._weights(layer), scales, keeps
            )
            new_h.append(h)
            new_c.append(c)
        hidden = torch.stack(new_h)  # (L, B, H)
        if lstm:
            return layer_input, (hidden, torch.stack(new_c))
        return layer_input, hidden

    def _forward_autograd(
        self, inputs, state, gates, resets=None, reset_steps=(), *, update=None, training=None
    ):
        """The step path recorded by autograd step by step (double backward, forward AD).

        ``update(h, c, h_new, c_new) -> (h, c)`` decides the state a step leaves
        (default: the cell's new values); zoneout mixes old and new values there.
        ``training`` (default: the module's mode) switches dropout between layers.
        """
        lstm = self.kind == "lstm"
        training = self.training if training is None else training
        hs, cs = state if lstm else (state, None)
        new_h, new_c = [], []
        layer_input = inputs
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0 and training:
                layer_input = F.dropout(layer_input, self.dropout, True)
            w_ih, w_hh, b_ih, b_hh = self._weights(layer)
            T, B = layer_input.shape[:2]
            # one matrix product for the whole window's input projection
            xproj = torch.addmm(b_ih, layer_input.reshape(T * B, -1), w_ih.t()).view(
                T, B, -1
            )  # (T, B, G*H)
            h = hs[layer]  # (B, H)
            c = cs[layer] if lstm else None
            w_hh_t = w_hh.t()
            outs = []
            for t in range(T):
                if gates is not None and gates[t] != 1.0:
                    if lstm:
                        h, c = apply_gate((h, c), gates[t])
                    else:
                        h = apply_gate(h, gates[t])
                if t in reset_steps:
                    keep = (~resets[t]).to(h.dtype).unsqueeze(-1)  # (B, 1)
                    h = h * keep
                    c = c * keep if lstm else None
                hproj = torch.addmm(b_hh, h, w_hh_t)  # (B, G*H)
                h_new, c_new = self._cell(xproj[t], hproj, h, c)
                h, c = (h_new, c_new) if update is None else update(h, c, h_new, c_new)
                outs.append(h)
            layer_input = torch.stack(outs)  # (T, B, H)
            new_h.append(h)
            new_c.append(c)
        hidden = torch.stack(new_h)  # (L, B, H)
        if lstm:
            return layer_input, (hidden, torch.stack(new_c))
        return layer_input, hidden

    def _cell(self, xp, hp, h, c):
        kind = self.kind
        if kind == "lstm":
            i, f, g, o = (xp + hp).chunk(4, 1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(c), c
        if kind == "gru":
            xr, xz, xn = xp.chunk(3, 1)
            hr, hz, hn = hp.chunk(3, 1)
            r = torch.sigmoid(xr + hr)
            z = torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            return n + z * (h - n), None
        if kind == "rnn":
            return torch.tanh(xp + hp), None
        if kind == "relu":
            return torch.relu(xp + hp), None
        return xp + hp, None
