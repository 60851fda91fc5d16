"""Real data windows to measure on, the state that leads into them, and a measuring copy of a model.

A window is cut from the training stream laid into B contiguous columns, as
training sees it (:func:`tbptt.data.batchify`)::

    rows  offset ........ offset + warmup ............ offset + warmup + T (+1 target row)
          |--- warmup: run without a graph ---|--- the measured window (T, B) ---|

so the measured window starts from the state the model actually has there,
not from zeros.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from tbptt.data import batchify
from tbptt.errors import DataError
from tbptt.models.gating import State

__all__ = ["data_windows", "warm_state", "measuring_copy"]


def data_windows(
    tokens: torch.Tensor, *, length: int, streams: int, warmup: int = 0, offset: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut (warmup (W, B), inputs (T, B), targets (T, B)) from a (N,) token stream.

    Raises:
        DataError: the stream is too short for ``streams`` columns of
            ``offset + warmup + length + 1`` rows.
    """
    if length < 1 or streams < 1 or warmup < 0 or offset < 0:
        raise DataError(
            f"expected length >= 1, streams >= 1, warmup >= 0 and offset >= 0, "
            f"got {length}, {streams}, {warmup}, {offset}"
        )
    need = offset + warmup + length + 1
    if len(tokens) < need * streams:
        raise DataError(
            f"the text has {len(tokens)} tokens, fewer than {streams} streams of {need} "
            f"(offset {offset} + warmup {warmup} + length {length} + 1); use fewer streams, "
            "a shorter window or a longer text"
        )
    columns = batchify(tokens, streams)  # (N / B, B)
    warm = columns[offset : offset + warmup]  # (W, B)
    start = offset + warmup
    return warm, columns[start : start + length], columns[start + 1 : start + length + 1]


@torch.no_grad()
def warm_state(model: nn.Module, warm_inputs: torch.Tensor) -> State | None:
    """The state after running ``model`` over (W, B) inputs from zeros (None when W = 0)."""
    if warm_inputs.shape[0] == 0:
        return None
    _, state = model(warm_inputs)
    return state


def measuring_copy(model: nn.Module, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A copy of ``model`` in eval mode (no dropout), on the CPU, in ``dtype``.

    Measurements run in float64 so that long products of Jacobians and small
    differences between gradients are not lost to rounding.
    """
    return copy.deepcopy(model).to(device="cpu", dtype=dtype).eval()
