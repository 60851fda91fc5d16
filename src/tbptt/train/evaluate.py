"""Evaluation with carried state and no graph, and the unigram baseline.

Metrics are row-weighted sums (see :mod:`tbptt.train.objectives`): for a
language model, exp(total negative log-likelihood / number of tokens), with
every validation token scored, the first one included (it is predicted from
the last training token).

The validation split is laid into B columns like a training stream, but
padded instead of cut: every row is scored once, and the padding is masked
out (``mask`` False)::

    rows 0..9, B = 4          column 0   column 1   column 2   column 3
                               0          3          6          9
                               1          4          7          pad
                               2          5          8          pad
"""

from __future__ import annotations

import math

import torch
from torch import nn

from tbptt.data.dataset import unigram_perplexity
from tbptt.data.streams import Batch, StreamData, as_stream_data, ids
from tbptt.train.objectives import LanguageModel, Objective
from tbptt.tree import State

__all__ = [
    "evaluation_batch",
    "validation_batch",
    "evaluate",
    "score",
    "predict",
    "unigram_perplexity",
]


def _columns(rows: torch.Tensor, batch_size: int, fill) -> torch.Tensor:
    """(N, ...) -> (ceil(N / B), B, ...) contiguous columns, the last padded with ``fill``."""
    n = len(rows)
    per_column = math.ceil(n / batch_size)
    pad = rows.new_full((per_column * batch_size - n, *rows.shape[1:]), fill)
    laid = torch.cat([rows, pad]).reshape(batch_size, per_column, *rows.shape[1:])
    return laid.transpose(0, 1).contiguous()  # (N/B, B, ...)


def evaluation_batch(
    split: StreamData | torch.Tensor, batch_size: int, *, context: torch.Tensor | None = None
) -> Batch:
    """The whole validation split as one :class:`~tbptt.data.Batch` of (ceil(N / B), B) rows.

    Next-token layout: the targets are the split's N tokens and the inputs the
    same tokens shifted by one, starting with ``context`` (the last training
    token; without it the first token is only an input). A document start is
    reset just before its token is *read*, i.e. one row after it is predicted,
    as in training. Aligned layout: the split's own pairs. ``mask`` is False on
    the padding (and wherever the split's own mask is).
    """
    split = as_stream_data(split)
    if split.next_token:
        tokens = split.inputs
        if context is not None:
            inputs = torch.cat([context.reshape(1).to(tokens), tokens[:-1]])
            targets, starts, mask = tokens, split.starts, split.mask
            if starts is not None:  # input row i reads token i - 1
                starts = torch.cat([starts.new_zeros(1), starts[:-1]])
        else:
            inputs, targets = tokens[:-1], tokens[1:]
            starts = split.starts[:-1] if split.starts is not None else None
            mask = split.mask[1:] if split.mask is not None else None
    else:
        inputs, targets, starts, mask = split.inputs, split.targets, split.starts, split.mask
    n = len(inputs)
    batch_size = max(1, min(batch_size, n))
    valid = mask if mask is not None else torch.ones(n, dtype=torch.bool, device=inputs.device)
    return Batch(
        inputs=ids(_columns(inputs, batch_size, 0)),  # (R, B, ...)
        targets=ids(_columns(targets, batch_size, 0)),  # (R, B, ...)
        resets=_columns(starts, batch_size, False) if starts is not None else None,  # (R, B)
        mask=_columns(valid, batch_size, False),  # (R, B)
        reset=True,
    )


def _outputs(model: nn.Module, batch: Batch, window: int, state: State | None = None):
    """Yield (rows, outputs (T, B, O)) window by window: eval mode, state carried, resets
    applied, no graph."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for start in range(0, batch.inputs.shape[0], window):
                rows = slice(start, start + window)
                resets = batch.resets[rows] if batch.resets is not None else None
                if resets is not None and bool(resets.any()):
                    outputs, state = model(batch.inputs[rows], state, resets=resets)
                else:
                    outputs, state = model(batch.inputs[rows], state)  # (T, B, O)
                yield rows, outputs
    finally:
        model.train(was_training)


def evaluate(
    model: nn.Module,
    batch: Batch,
    *,
    objective: Objective | None = None,
    window: int = 256,
    state: State | None = None,
) -> dict[str, float]:
    """The objective's summed statistics over ``batch`` (e.g. from :func:`evaluation_batch`).

    The state is carried from window to window (``state``: the one entering the
    first row; None: fresh); ``batch.resets`` restart a stream's state where a
    document starts; rows where ``batch.mask`` is False are not counted.
    """
    objective = objective or LanguageModel()
    sums: dict[str, float] = {}
    for rows, outputs in _outputs(model, batch, window, state):
        mask = batch.mask[rows] if batch.mask is not None else None
        for key, value in objective.statistics(outputs, batch.targets[rows], mask).items():
            sums[key] = sums.get(key, 0.0) + value
    return sums


def score(
    model: nn.Module,
    split: StreamData | torch.Tensor,
    *,
    objective: Objective | None = None,
    batch_size: int = 16,
    window: int = 256,
    context: torch.Tensor | None = None,
) -> dict[str, float]:
    """The objective's metrics (``{"loss", "ppl", "bpt"}`` for a language model) on a whole
    split, scored as validation is: laid into ``batch_size`` columns, state carried,
    every row counted; ``context`` (a next-token split) the token before its first one,
    e.g. the last validation token for a test file that follows it."""
    objective = objective or LanguageModel()
    device = next(model.parameters()).device
    batch = evaluation_batch(split, batch_size, context=context).to(device)
    return objective.summary(evaluate(model, batch, objective=objective, window=window))


def predict(
    model: nn.Module, split: StreamData, *, batch_size: int = 16, window: int = 256
) -> torch.Tensor:
    """The model's outputs (N, O) for an aligned split's N rows, in row order, computed
    exactly as :func:`evaluate` scores them (the same columns, state carried, resets), so
    predictions and reported metrics agree."""
    batch = evaluation_batch(split, batch_size)
    outputs = torch.cat([out for _, out in _outputs(model, batch, window)])  # (R, B, O)
    return outputs.transpose(0, 1).reshape(-1, outputs.shape[-1])[: len(split)]  # (N, O)


def validation_batch(train, valid, batch_size: int, device) -> Batch | None:
    """The whole validation split laid out once (None: nothing to score); a next-token
    split's first token is predicted from the last training token."""
    if not (valid.pairs > 0 or (valid.next_token and len(valid) > 0)):
        return None
    context = train.inputs[-1].cpu() if train.next_token else None
    return evaluation_batch(valid, batch_size, context=context).to(device)
