"""The linear RNN of the lecture, and its gradients in closed form (matrix powers, no autograd).

The model, for a batch of B sequences of T steps (shapes in brackets)::

    h_t = W_hx x_t + W_hh h_{t-1} + b_h        x_t (B, I)   h_t (B, H)   h_0 given
    o_t = W_qh h_t + b_q                       o_t (B, Q)
    L   = 1/(T B) sum_{t, b} l(o_t, y_t)

The exact gradient, with g_t = dL/do_t (the 1/(T B) lives inside g_t)::

    dL/dW_qh = sum_t g_t^T h_t          dL/db_q = sum_t g_t
    dL/dh_t  = sum_{i=t}^{T} (W_hh^T)^{i-t} W_qh^T g_i
             = sum_{i=t}^{T} (W_hh^T)^{T-i} W_qh^T g_{T+t-i}      (the lecture's form)
    dL/dW_hx = sum_t dL/dh_t^T x_t      dL/db_h = sum_t dL/dh_t
    dL/dW_hh = sum_t dL/dh_t^T h_{t-1}

(sums over t also sum over the batch). ``dL/dh_t`` is written out as that sum
of matrix powers -- the long products of Jacobians that truncation drops and
that explode or vanish with the eigenvalues of W_hh -- not as the backward
recursion, so the formula itself is what gets tested.

This is the same model as ``RecurrentLM(ModelConfig(kind="linear",
num_layers=1, embedding_size=0))`` with ``l`` the cross-entropy: one-hot
inputs, ``W_hx = weight_ih_l0``, ``W_hh = weight_hh_l0``, ``b_h = bias_ih_l0 +
bias_hh_l0``, ``W_qh = head.weight``, ``b_q = head.bias``
(:func:`linear_rnn_from_model`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from tbptt.errors import ConfigError

__all__ = [
    "LinearRNN",
    "LOSSES",
    "linear_rnn_forward",
    "linear_rnn_loss",
    "linear_rnn_output_grads",
    "linear_rnn_gradients",
    "linear_rnn_from_model",
    "matrix_with_spectral_radius",
    "spectral_radius",
]

LOSSES = ("cross_entropy", "squared")


@dataclass
class LinearRNN:
    """Parameters of a linear RNN: w_hx (H, I), w_hh (H, H), w_qh (Q, H), b_h (H,), b_q (Q,)."""

    w_hx: torch.Tensor
    w_hh: torch.Tensor
    w_qh: torch.Tensor
    b_h: torch.Tensor
    b_q: torch.Tensor

    @classmethod
    def random(
        cls,
        input_size: int,
        hidden_size: int,
        output_size: int,
        *,
        generator: torch.Generator,
        dtype: torch.dtype = torch.float64,
        w_hh: torch.Tensor | None = None,
    ) -> LinearRNN:
        """Gaussian weights scaled by 1/sqrt(fan-in); ``w_hh`` replaces the recurrent matrix."""

        def randn(*shape, fan_in=1):
            return torch.randn(*shape, generator=generator, dtype=dtype) / fan_in**0.5

        return cls(
            w_hx=randn(hidden_size, input_size, fan_in=input_size),
            w_hh=w_hh.to(dtype)
            if w_hh is not None
            else randn(hidden_size, hidden_size, fan_in=hidden_size),
            w_qh=randn(output_size, hidden_size, fan_in=hidden_size),
            b_h=randn(hidden_size, fan_in=10),
            b_q=randn(output_size, fan_in=10),
        )

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "w_hx": self.w_hx,
            "w_hh": self.w_hh,
            "w_qh": self.w_qh,
            "b_h": self.b_h,
            "b_q": self.b_q,
        }


def linear_rnn_forward(
    params: LinearRNN, inputs: torch.Tensor, h0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the recursion: inputs (T, B, I), h0 (B, H) -> hidden (T + 1, B, H) (h_0 first), outputs (T, B, Q)."""
    hidden = [h0]
    for x in inputs:
        hidden.append(x @ params.w_hx.T + hidden[-1] @ params.w_hh.T + params.b_h)  # (B, H)
    hidden = torch.stack(hidden)  # (T + 1, B, H)
    outputs = hidden[1:] @ params.w_qh.T + params.b_q  # (T, B, Q)
    return hidden, outputs


def _check_loss(loss: str) -> None:
    if loss not in LOSSES:
        raise ConfigError(f"unknown loss {loss!r}; expected one of {', '.join(LOSSES)}")


def linear_rnn_loss(outputs: torch.Tensor, targets: torch.Tensor, loss: str) -> torch.Tensor:
    """L = 1/(T B) sum l(o_t, y_t): cross-entropy with targets (T, B) indices, or
    l = |o - y|^2 / 2 with targets (T, B, Q)."""
    _check_loss(loss)
    T, B = outputs.shape[:2]
    if loss == "cross_entropy":
        return F.cross_entropy(outputs.flatten(0, 1), targets.flatten(), reduction="sum") / (T * B)
    return 0.5 * ((outputs - targets) ** 2).sum() / (T * B)


def linear_rnn_output_grads(
    outputs: torch.Tensor, targets: torch.Tensor, loss: str
) -> torch.Tensor:
    """g_t = dL/do_t in closed form, (T, B, Q).

    Cross-entropy: (softmax(o_t) - onehot(y_t)) / (T B); squared: (o_t - y_t) / (T B).
    """
    _check_loss(loss)
    T, B, Q = outputs.shape
    if loss == "cross_entropy":
        return (torch.softmax(outputs, dim=-1) - F.one_hot(targets, Q).to(outputs.dtype)) / (T * B)
    return (outputs - targets) / (T * B)


def linear_rnn_gradients(
    params: LinearRNN,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    h0: torch.Tensor,
    *,
    loss: str = "cross_entropy",
) -> dict[str, torch.Tensor]:
    """The exact gradient of L from the closed forms of the module docstring.

    Args:
        params: the weights.
        inputs: (T, B, I) input vectors.
        targets: (T, B) class indices (cross-entropy) or (T, B, Q) vectors (squared).
        h0: (B, H) initial state (any value; its term enters dL/dW_hh).
        loss: ``"cross_entropy"`` or ``"squared"``.

    Returns:
        ``w_hx, w_hh, w_qh, b_h, b_q`` (shaped as the parameters), ``hidden``
        (T, B, H) = dL/dh_t for t = 1..T, and ``loss`` (a scalar).
    """
    hidden, outputs = linear_rnn_forward(params, inputs, h0)  # (T + 1, B, H), (T, B, Q)
    g = linear_rnn_output_grads(outputs, targets, loss)  # (T, B, Q)
    T = inputs.shape[0]
    # powers[j] = (W_hh^T)^j, j = 0 .. T - 1
    powers = [torch.eye(params.w_hh.shape[0], dtype=params.w_hh.dtype)]
    for _ in range(T - 1):
        powers.append(powers[-1] @ params.w_hh.T)
    back = g @ params.w_qh  # (T, B, H): row b of W_qh^T g_i, for every i
    # dL/dh_t = sum_{i=t}^{T} (W_hh^T)^{i-t} W_qh^T g_i   (0-based: t, i in 0 .. T-1)
    dh = torch.stack(
        [sum(back[i] @ powers[i - t].T for i in range(t, T)) for t in range(T)]
    )  # (T, B, H)
    return {
        "w_hx": torch.einsum("tbh,tbi->hi", dh, inputs),
        "w_hh": torch.einsum("tbh,tbk->hk", dh, hidden[:-1]),
        "w_qh": torch.einsum("tbq,tbh->qh", g, hidden[1:]),
        "b_h": dh.sum((0, 1)),
        "b_q": g.sum((0, 1)),
        "hidden": dh,
        "loss": linear_rnn_loss(outputs, targets, loss),
    }


def linear_rnn_from_model(model) -> LinearRNN:
    """The :class:`LinearRNN` inside a one-layer, one-hot ``RecurrentLM`` of kind ``linear``.

    Raises:
        ConfigError: the model is not such a language model.
    """
    config = getattr(model, "config", None)
    if config is None or (config.kind, config.num_layers, config.embedding_size) != (
        "linear",
        1,
        0,
    ):
        got = (
            f"{config.kind}, {config.num_layers} layer(s), embedding {config.embedding_size}"
            if config is not None
            else type(model).__name__
        )
        raise ConfigError(
            f"the closed forms need a one-layer linear RNN with one-hot inputs "
            f"(kind 'linear', num_layers 1, embedding_size 0), got {got}",
            options=("model.kind", "model.num_layers", "model.embedding_size"),
        )
    core = model.recurrent.core
    return LinearRNN(
        w_hx=core.weight_ih_l0.detach(),
        w_hh=core.weight_hh_l0.detach(),
        w_qh=model.head.weight.detach(),
        b_h=(core.bias_ih_l0 + core.bias_hh_l0).detach(),
        b_q=model.head.bias.detach(),
    )


def spectral_radius(matrix: torch.Tensor) -> float:
    """max |eigenvalue| of a square matrix."""
    return float(torch.linalg.eigvals(matrix.double()).abs().max())


def matrix_with_spectral_radius(
    size: int,
    rho: float,
    *,
    generator: torch.Generator,
    gap: float = 0.7,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """A non-normal (size, size) matrix S diag(lambda) S^-1 with spectral radius exactly ``rho``.

    lambda_1 = rho; the other eigenvalues are real, drawn uniformly in
    (-gap rho, gap rho), so ``||W^k||`` behaves like C rho^k once the other
    modes have died out (k of a few tens). S is Gaussian, so W is not normal
    and ``||W^k|| != rho^k`` for small k: the transient is real.
    """
    if size < 1 or not rho > 0 or not 0 <= gap < 1:
        raise ConfigError(
            f"expected size >= 1, rho > 0 and 0 <= gap < 1, got {size}, {rho:g}, {gap:g}"
        )
    eig = (torch.rand(size, generator=generator, dtype=torch.float64) * 2 - 1) * gap * rho
    eig[0] = rho
    s = torch.randn(size, size, generator=generator, dtype=torch.float64) + 2 * torch.eye(
        size, dtype=torch.float64
    )  # the shifted diagonal keeps S well conditioned
    w = s @ torch.diag(eig) @ torch.linalg.inv(s)
    return w.to(dtype)
