"""Evaluation with carried state and no graph, and the unigram baseline.

Perplexity is token-weighted: exp(total negative log-likelihood / number of
tokens), with every validation token scored, the first one included (it is
predicted from the last training token).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tbptt.models.gating import State

__all__ = ["evaluation_streams", "evaluation_resets", "evaluate", "unigram_perplexity"]


def evaluation_streams(
    context_token: int, tokens: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lay (N,) target tokens into ``batch_size`` columns, padding the last with -100.

    Returns inputs and targets of shape (ceil(N / B), B); inputs are the
    targets shifted by one, starting with ``context_token``.
    """
    n = len(tokens)
    batch_size = max(1, min(batch_size, n))
    rows = math.ceil(n / batch_size)
    inputs = torch.cat([tokens.new_tensor([context_token]), tokens[:-1]])
    pad = rows * batch_size - n
    targets = torch.cat([tokens, tokens.new_full((pad,), -100)])
    inputs = torch.cat([inputs, inputs.new_zeros(pad)])
    return inputs.view(batch_size, rows).t(), targets.view(batch_size, rows).t()  # (N/B, B)


def evaluation_resets(starts: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The (ceil(N / B), B) reset mask matching :func:`evaluation_streams` for documents.

    ``starts`` (N,) marks validation tokens that begin a document. The state is
    reset just before such a token is *read*, i.e. one row after it is
    predicted, as in training.
    """
    n = len(starts)
    batch_size = max(1, min(batch_size, n))
    rows = math.ceil(n / batch_size)
    read = torch.cat([starts.new_zeros(1), starts[:-1]])  # input row i reads token i - 1
    read = torch.cat([read, read.new_zeros(rows * batch_size - n)])
    return read.view(batch_size, rows).t()  # (N/B, B)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    *,
    window: int = 256,
    state: State | None = None,
    resets: torch.Tensor | None = None,
) -> tuple[float, int]:
    """Total negative log-likelihood (nats) and token count over (T, B) streams.

    The state is carried from window to window; targets of -100 are not counted.
    ``resets`` (T, B) bool restarts a stream's state where a document starts.
    """
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        for start in range(0, inputs.shape[0], window):
            x, y = inputs[start : start + window], targets[start : start + window]
            if resets is not None and bool(resets[start : start + window].any()):
                logits, state = model(x, state, resets=resets[start : start + window])
            else:
                logits, state = model(x, state)  # (T, B, V)
            nll = F.cross_entropy(
                logits.flatten(0, 1), y.flatten(), reduction="sum", ignore_index=-100
            )
            total += float(nll)
            count += int((y != -100).sum())
    finally:
        model.train(was_training)
    return total, count


def unigram_perplexity(train: torch.Tensor, valid: torch.Tensor, vocab_size: int) -> float:
    """Perplexity on ``valid`` of token frequencies counted on ``train`` (add-one smoothed)."""
    counts = torch.bincount(train, minlength=vocab_size).double() + 1.0
    log_p = torch.log(counts / counts.sum())
    return math.exp(-float(log_p[valid].mean()))
