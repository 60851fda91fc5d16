"""Real data windows to measure on, the state that leads into them, and a measuring copy of a model.

A window is cut from a training split laid into B contiguous columns, as
training sees it (:func:`tbptt.data.batchify`)::

    rows  offset ........ offset + warmup ............ offset + warmup + T (+1 target row)
          |--- warmup: run without a graph ---|--- the measured window (T, B) ---|

so the measured window starts from the state the model actually has there,
not from zeros. The split is a :class:`~tbptt.data.StreamData`: a text's
tokens (next-token layout: the targets are the inputs one row later, hence the
extra row), or the aligned rows of a time series or a task (no extra row). Its
``starts`` become per-stream ``resets`` (of the warm-up and of the window) and
its ``mask`` the window's loss mask, laid into the same columns.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from tbptt.data import StreamData, batchify
from tbptt.data.streams import as_stream_data, ids
from tbptt.errors import DataError
from tbptt.models.gating import State

__all__ = ["Windows", "stream_windows", "data_windows", "warm_state", "measuring_copy"]


@dataclass(frozen=True)
class Windows:
    """B windows of T rows cut from a split, and the W rows that lead into them.

    Attributes:
        warmup: (W, B) ids or (W, B, F) features, run without a graph before the window.
        warmup_resets: (W, B) bool or None; True where a stream restarts in the warm-up.
        inputs: (T, B) ids or (T, B, F) features.
        targets: (T, B) ids or (T, B, D) values (next-token: the inputs one row later).
        resets: (T, B) bool or None; True where stream b restarts its state before row t.
        mask: (T, B) bool or None; the loss of row t counts only where True.
    """

    warmup: torch.Tensor
    warmup_resets: torch.Tensor | None
    inputs: torch.Tensor
    targets: torch.Tensor
    resets: torch.Tensor | None
    mask: torch.Tensor | None


def stream_windows(
    data: StreamData | torch.Tensor,
    *,
    length: int,
    streams: int,
    warmup: int = 0,
    offset: int = 0,
) -> Windows:
    """Cut :class:`Windows` from a split (a (N,) token tensor is a next-token split).

    Raises:
        DataError: the split is too short for ``streams`` columns of
            ``offset + warmup + length`` rows (+ 1 in the next-token layout).
    """
    if length < 1 or streams < 1 or warmup < 0 or offset < 0:
        raise DataError(
            f"expected length >= 1, streams >= 1, warmup >= 0 and offset >= 0, "
            f"got {length}, {streams}, {warmup}, {offset}"
        )
    data = as_stream_data(data)
    extra = 1 if data.next_token else 0  # the next-token layout reads one target row more
    need = offset + warmup + length + extra
    if len(data) < need * streams:
        what = "the text has {} tokens" if data.next_token else "the training split has {} rows"
        raise DataError(
            f"{what.format(len(data))}, fewer than {streams} streams of {need} (offset {offset} "
            f"+ warmup {warmup} + length {length}{' + 1' if extra else ''}); use fewer streams, "
            "a shorter window or more data"
        )

    def columns(rows: torch.Tensor | None) -> torch.Tensor | None:
        # ids widened to int64 as the streams hand them to a model
        return None if rows is None else ids(batchify(rows, streams, min_rows=1))  # (N / B, B, ...)

    inputs, starts, mask = columns(data.inputs), columns(data.starts), columns(data.mask)
    start, stop = offset + warmup, offset + warmup + length
    window = slice(start, stop)
    # next-token: row t's target (and its mask) is row t + 1; aligned: row t's own
    targets = inputs[start + 1 : stop + 1] if data.next_token else columns(data.targets)[window]
    target_rows = slice(start + extra, stop + extra)
    return Windows(
        warmup=inputs[offset:start],  # (W, B, ...)
        warmup_resets=starts[offset:start] if starts is not None else None,  # (W, B)
        inputs=inputs[window],  # (T, B, ...)
        targets=targets,  # (T, B, ...)
        resets=starts[window] if starts is not None else None,  # (T, B)
        mask=mask[target_rows] if mask is not None else None,  # (T, B)
    )


def data_windows(
    tokens: torch.Tensor, *, length: int, streams: int, warmup: int = 0, offset: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Cut (warmup (W, B), inputs (T, B), targets (T, B)) from a (N,) token stream.

    For a split with resets or a loss mask (documents, a time series, a task),
    use :func:`stream_windows`.

    Raises:
        DataError: the stream is too short for ``streams`` columns of
            ``offset + warmup + length + 1`` rows.
    """
    w = stream_windows(tokens, length=length, streams=streams, warmup=warmup, offset=offset)
    return w.warmup, w.inputs, w.targets


@torch.no_grad()
def warm_state(
    model: nn.Module, warm_inputs: torch.Tensor, *, resets: torch.Tensor | None = None
) -> State | None:
    """The state after running ``model`` over (W, B[, F]) inputs from zeros (None when W = 0).

    ``resets`` (W, B) bool: where a stream restarts its state, as in training.
    """
    if warm_inputs.shape[0] == 0:
        return None
    if resets is None:
        _, state = model(warm_inputs)
    else:
        _, state = model(warm_inputs, resets=resets)
    return state


def measuring_copy(model: nn.Module, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A copy of ``model`` in eval mode (no dropout), on the CPU, in ``dtype``.

    Measurements run in float64 so that long products of Jacobians and small
    differences between gradients are not lost to rounding.
    """
    return copy.deepcopy(model).to(device="cpu", dtype=dtype).eval()
