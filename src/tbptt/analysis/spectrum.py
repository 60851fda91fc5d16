"""Eigenvalues and singular values of the recurrent matrices.

Each layer's ``weight_hh`` (shape (G H, H)) stacks G square blocks, one per
gate, in ``nn.RNN/GRU/LSTM``'s order::

    rnn, relu, linear   W_hh                       (G = 1)
    gru                 W_hr, W_hz, W_hn           (reset, update, candidate)
    lstm                W_hi, W_hf, W_hg, W_ho     (input, forget, cell, output)

For a linear RNN the state Jacobian dh_t/dh_{t-1} *is* W_hh, so
||dh_T/dh_t|| = ||W_hh^(T-t)|| grows or decays like rho(W_hh)^(T-t), rho the
spectral radius (max |eigenvalue|); with several layers the state Jacobian is
block triangular and its spectral radius is the largest of the layers'. For
tanh/ReLU RNNs the spectral norm ||W_hh||_2 bounds the per-step growth
(|tanh'| <= 1); for GRU and LSTM the gates multiply these blocks, so their
spectra are a reference, not the rate (measure the rate with
:func:`tbptt.analysis.jacobian_norms`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["GATE_NAMES", "RecurrentBlock", "recurrent_blocks", "spectrum", "reference_radius"]

GATE_NAMES = {
    "rnn": ("hh",),
    "relu": ("hh",),
    "linear": ("hh",),
    "gru": ("reset", "update", "candidate"),
    "lstm": ("input", "forget", "cell", "output"),
}


@dataclass(frozen=True)
class RecurrentBlock:
    """One square recurrent block: ``matrix`` (H, H) of gate ``gate`` in layer ``layer``."""

    layer: int
    gate: str
    matrix: torch.Tensor


def _recurrent(model: nn.Module):
    return getattr(model, "recurrent", model)


def recurrent_blocks(model: nn.Module) -> list[RecurrentBlock]:
    """The (H, H) recurrent blocks of every layer of a ``RecurrentLM`` or ``Recurrent``.

    The matrices are the ones the forward pass uses (after any constraint,
    see :mod:`tbptt.models.constraints`), detached.
    """
    rec = _recurrent(model)
    if rec.kind not in GATE_NAMES:  # the linear recurrences (tbptt.models.minimal)
        from tbptt.errors import ConfigError

        raise ConfigError(
            f"the {rec.kind} model has no recurrent weight matrix (its recurrence is "
            f"element-wise: h_t = a_t h_(t-1) + b_t); spectra need one of "
            f"{', '.join(GATE_NAMES)}"
        )
    gates = GATE_NAMES[rec.kind]
    blocks = []
    for layer in range(rec.num_layers):
        w_hh = getattr(rec.core, f"weight_hh_l{layer}").detach()  # (G H, H)
        for gate, block in zip(gates, w_hh.chunk(len(gates), 0)):
            blocks.append(RecurrentBlock(layer, gate, block))
    return blocks


def spectrum(model: nn.Module) -> list[dict]:
    """Per block: eigenvalues (real and imaginary parts), singular values, spectral radius and norm.

    Returns a list of dicts with keys ``layer, gate, eigenvalues_real,
    eigenvalues_imag, singular_values`` (descending), ``spectral_radius``
    (max |eigenvalue|) and ``spectral_norm`` (largest singular value).
    """
    out = []
    for b in recurrent_blocks(model):
        m = b.matrix.double()
        eig = torch.linalg.eigvals(m)
        sv = torch.linalg.svdvals(m)
        out.append(
            {
                "layer": b.layer,
                "gate": b.gate,
                "eigenvalues_real": eig.real.tolist(),
                "eigenvalues_imag": eig.imag.tolist(),
                "singular_values": sv.tolist(),
                "spectral_radius": float(eig.abs().max()),
                "spectral_norm": float(sv[0]),
            }
        )
    return out


def reference_radius(model: nn.Module) -> float:
    """The spectral radius that sets ||dh_T/dh_t||'s rate for a linear RNN.

    For ``linear`` (and as the reference line for ``rnn``/``relu``) the largest
    spectral radius of any layer's W_hh; for GRU the largest over the layers'
    candidate blocks W_hn, for LSTM over the cell blocks W_hg (the blocks a
    saturated-open gate passes through). Only for the linear RNN is it the exact rate.
    """
    rec = _recurrent(model)
    main = {"gru": "candidate", "lstm": "cell"}.get(rec.kind, "hh")
    radii = [
        float(torch.linalg.eigvals(b.matrix.double()).abs().max())
        for b in recurrent_blocks(model)
        if b.gate == main
    ]
    return max(radii)
