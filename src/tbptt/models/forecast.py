"""A series forecaster: a recurrent core plus a linear autoregressive highway (LSTNet).

Lai et al. 2018 ("Modeling long- and short-term temporal patterns with deep neural networks",
LSTNet) add to a recurrent network's output a linear autoregression on the last p inputs,
because the network alone misses the scale and the trend of a series; that is this model::

    y^_t = head(core(x_1 .. x_t))  +  c + A_0 x_t + A_1 x_{t-1} + ... + A_{p-1} x_{t-p+1}
           └── the recurrent net ─┘    └──────────────── the highway ─────────────────┘

Shapes (time-major): inputs (T, B, F) standardized features; outputs (T, B, O), O = D target
columns for one step, or H x D for a direct forecast of steps 1..H (step-major: step 1's D
values, then step 2's ...); state ``(core state, history)``, the core's state as
:class:`~tbptt.models.RecurrentNet`'s and history (p - 1, B, F) the last p - 1 inputs
(oldest first).

The highway reads inputs from before the window, so they travel in the state: a window's
first steps read the previous window's last inputs, whichever strategy cut the stream there.
The history is data, not a function of the weights, so no gradient flows through it and a gate
(a truncation) leaves the highway's gradient exact; a reset (a new series, a gap) zeroes it
like the core's state, so a lag never reads across a reset: a stream that restarts is a fresh
stream, whose missing lags read 0 (the training mean of standardized inputs). Equivalent to::

    for t in range(T):
        state = gate(state, gates[t]); state = zero(state, resets[t])
        core_out, core_state = core.step(inputs[t], core_state)
        history = (history + [inputs[t]])[-p:]                     # x_{t-p+1} .. x_t
        outputs[t] = head(core_out) + c + sum_j A_j history[-1 - j]
        history = history[-(p - 1):]                               # what the state keeps

Per-series scaling is the data's: each column standardized on its training rows
(:class:`tbptt.data.series.Standardizer`), so the highway's lags and the core's inputs are in
comparable units and the highway fitted here is an AR model of the standardized series.
:meth:`ForecastNet.fit_highway` sets the highway to the least-squares autoregression of a
training split and the head to zero, so training starts from the AR forecast and the recurrent
net learns what the linear model misses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from tbptt.errors import ConfigError, DataError
from tbptt.models.gating import State
from tbptt.models.lm import ModelConfig, RecurrentNet

__all__ = ["ForecastNet", "highway_design"]

MAX_AR_ORDER = 4096  # a bound on p before anything is allocated


_NEVER = -(2**62)  # "no reset yet": before every lag of every window


def _last_reset(resets: torch.Tensor | None, T: int, B: int, device) -> torch.Tensor:
    """(T, B) int64: the latest step s <= t where stream b reset (``_NEVER`` where none)."""
    if resets is None:
        return torch.full((T, B), _NEVER, dtype=torch.long, device=device)
    steps = torch.arange(T, device=device).unsqueeze(1).expand(T, B)  # (T, B)
    marked = torch.where(resets.bool(), steps, torch.full_like(steps, _NEVER))
    return torch.cummax(marked, dim=0).values  # (T, B)


def highway_design(
    inputs: torch.Tensor, history: torch.Tensor, resets: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The lags the highway reads, and the history the state keeps.

    Args:
        inputs: (T, B, F). history: (p - 1, B, F), the inputs before the window (oldest first).
        resets: (T, B) bool or None; a lag from before a stream's latest reset reads 0.

    Returns:
        lags (T, B, p, F), lags[t, :, j] = x_{t-j}; and the new history (p - 1, B, F).
    """
    T, B, F = inputs.shape
    keep = history.shape[0]
    p = keep + 1
    rows = torch.cat([history.to(inputs.dtype), inputs])  # (p - 1 + T, B, F): x_{-(p-1)} .. x_{T-1}
    last = _last_reset(resets, T, B, inputs.device)  # (T, B)
    lag = torch.arange(p, device=inputs.device)  # (p,)
    time = torch.arange(T, device=inputs.device).view(T, 1, 1) - lag.view(1, 1, p)  # (T, 1, p)
    index = (time + keep).expand(T, B, p)  # rows' index of x_{t-j}
    streams = torch.arange(B, device=inputs.device).view(1, B, 1)
    lags = rows[index, streams]  # (T, B, p, F)
    valid = (time >= last.unsqueeze(-1)).to(inputs.dtype)  # (T, B, p)
    lags = lags * valid.unsqueeze(-1)  # (T, B, p, F)
    if keep == 0:
        return lags, rows[:0]
    tail_time = torch.arange(T - keep, T, device=inputs.device).view(keep, 1)  # (p - 1, 1)
    tail_valid = (tail_time >= last[-1].view(1, B)).to(inputs.dtype)  # (p - 1, B)
    return lags, rows[-keep:] * tail_valid.unsqueeze(-1)


class ForecastNet(nn.Module):
    """A :class:`~tbptt.models.RecurrentNet` core plus a linear highway on the last ``ar_order``
    inputs (see the module docstring).

    Args:
        config: the core's :class:`~tbptt.models.ModelConfig` (float features: ``input_size``
            F, ``output_size`` O; any kind, sizes, dropout, zoneout).
        ar_order: p, the inputs the highway reads (0: no highway, the core alone).

    ``forward(inputs (T, B, F), state, gates, *, resets) -> (outputs (T, B, O), state)``.
    """

    def __init__(self, config: ModelConfig, *, ar_order: int):
        super().__init__()
        if config.tokens:
            raise ConfigError(
                "a forecaster reads float features (input_size), got a vocabulary "
                f"(vocab_size={config.vocab_size}); use RecurrentNet for tokens"
            )
        if isinstance(ar_order, bool) or not isinstance(ar_order, int):
            raise ConfigError(f"Expected an integer AR order, got {ar_order!r}")
        if not 0 <= ar_order <= MAX_AR_ORDER:
            raise ConfigError(f"Expected an AR order in [0, {MAX_AR_ORDER}], got {ar_order}")
        self.config = config
        self.ar_order = ar_order
        self.core = RecurrentNet(config)
        width, outputs = config.input_size, config.head_size
        self.highway = nn.Linear(ar_order * width, outputs) if ar_order else None
        if self.highway is not None:
            nn.init.zeros_(self.highway.weight)
            nn.init.zeros_(self.highway.bias)

    @property
    def input_size(self) -> int:
        return self.config.input_size

    def initial_state(self, batch_size: int) -> State:
        """(core's zeros, history zeros (p - 1, B, F))."""
        ref = self.core.head.weight
        history = torch.zeros(
            max(self.ar_order - 1, 0),
            batch_size,
            self.input_size,
            dtype=ref.dtype,
            device=ref.device,
        )
        return (self.core.initial_state(batch_size), history)

    def forward(
        self,
        inputs: torch.Tensor,
        state: State | None = None,
        gates: Sequence[float] | None = None,
        *,
        resets: torch.Tensor | None = None,
        path: str = "auto",
    ) -> tuple[torch.Tensor, State]:
        if inputs.dim() != 3 or inputs.shape[-1] != self.input_size:
            raise ConfigError(
                f"Expected float inputs of shape (T, B, {self.input_size}), got "
                f"{inputs.dtype} {tuple(inputs.shape)}"
            )
        if state is None:
            state = self.initial_state(inputs.shape[1])
        core_state, history = state
        outputs, core_state = self.core(inputs, core_state, gates, resets=resets, path=path)
        if self.highway is None:
            return outputs, (core_state, history)  # (T, B, O)
        x = inputs.to(self.highway.weight.dtype)
        lags, history = highway_design(x, history, resets)  # (T, B, p, F), (p - 1, B, F)
        T, B = x.shape[:2]
        linear = self.highway(lags.reshape(T, B, -1))  # (T, B, O)
        return outputs + linear, (core_state, history)

    @torch.no_grad()
    def fit_highway(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        starts: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        *,
        penalty: float = 0.0,
        zero_head: bool = True,
    ) -> float:
        """Set the highway to the least-squares autoregression of one training stream and
        (``zero_head``) the core's head to zero, so the model starts as that AR forecast.

        Args:
            inputs: (N, F) the training split's inputs, in order; targets: (N, O).
            starts: (N,) bool or None, where a series (or a segment) starts: no pair whose
                lags cross a start is fitted on.
            mask: (N,) bool or None, the pairs whose targets count (a filled target does not).
            penalty: l >= 0, a ridge penalty l N |slopes|^2 on the unit-variance lag columns
                (the intercept is not penalized), as :mod:`tbptt.data.forecast` chooses it.

        Returns:
            the fit's mean squared error per target value on those pairs.

        Least squares through the Gram matrix of centred unit-variance columns, as
        :func:`tbptt.data.forecast.fit_autoregression` solves it, so the two give the same
        forecast on the same pairs.
        """
        if self.highway is None:
            raise ConfigError("the model has no highway (ar_order 0) to fit")
        p = self.ar_order
        x = torch.as_tensor(inputs, dtype=torch.float64)  # (N, F)
        y = torch.as_tensor(targets, dtype=torch.float64)  # (N, O)
        n = len(x)
        if x.shape != (n, self.input_size) or y.shape != (n, self.config.head_size):
            raise DataError(
                f"Expected inputs (N, {self.input_size}) and targets (N, {self.config.head_size})"
                f", got {tuple(x.shape)} and {tuple(y.shape)}"
            )
        resets = None if starts is None else torch.as_tensor(starts, dtype=torch.bool).view(n, 1)
        history = x.new_zeros(p - 1, 1, self.input_size)
        lags, _ = highway_design(x.view(n, 1, -1), history, resets)  # (N, 1, p, F)
        last = _last_reset(resets, n, 1, x.device)[:, 0]  # (N,)
        complete = torch.arange(n) - (p - 1) >= torch.where(last < 0, 0, last)  # (N,)
        if mask is not None:
            complete &= torch.as_tensor(mask, dtype=torch.bool).view(n)
        design = lags[complete, 0].reshape(int(complete.sum()), -1)  # (M, p F)
        if len(design) <= design.shape[1] + 1:
            raise DataError(
                f"Expected more than {design.shape[1] + 1} training pairs with {p} lags each to "
                f"fit the highway, got {len(design)}; use a lower AR order"
            )
        y = y[complete]  # (M, O)
        mean, y_mean = design.mean(0), y.mean(0)
        scale = design.std(0, correction=0)  # population std, as the data layer's
        scale = torch.where(scale > 0, scale, torch.ones_like(scale))
        z = (design - mean) / scale
        if not (isinstance(penalty, (int, float)) and 0 <= penalty < float("inf")):
            raise ConfigError(f"Expected a ridge penalty >= 0, got {penalty!r}")
        gram = z.T @ z + penalty * len(z) * torch.eye(z.shape[1], dtype=z.dtype)
        slopes = torch.linalg.lstsq(gram, z.T @ (y - y_mean)).solution / scale[:, None]
        bias = y_mean - mean @ slopes  # (O,)
        self.highway.weight.copy_(slopes.T)  # (O, p F)
        self.highway.bias.copy_(bias)
        if zero_head:
            nn.init.zeros_(self.core.head.weight)
            nn.init.zeros_(self.core.head.bias)
        error = design @ slopes + bias - y
        return float(error.square().mean())

    def to_dict(self) -> dict:
        return {"model": self.config.to_dict(), "ar_order": self.ar_order}

    @classmethod
    def from_dict(cls, d: dict) -> ForecastNet:
        return cls(ModelConfig.from_dict(d["model"]), ar_order=int(d["ar_order"]))
