"""Token streams: the split, B parallel streams, and windows cut from them.

Shapes are time-major: a window is ``(T, B)`` (T steps, B streams).

Sequential sampling lays the corpus into B contiguous columns and hands out
windows in order, so the state at the end of one window is the right state at
the start of the next (for a corpus ``a b c ... x`` and B = 4)::

        stream 0   stream 1   stream 2   stream 3
        ┌─────┐    ┌─────┐    ┌─────┐    ┌─────┐
    t=0 │  a  │    │  g  │    │  m  │    │  s  │  ┐
    t=1 │  b  │    │  h  │    │  n  │    │  t  │  │ window 1 (length 3)
    t=2 │  c  │    │  i  │    │  o  │    │  u  │  ┘
    t=3 │  d  │    │  j  │    │  p  │    │  v  │  ┐ window 2 (length 2)
    t=4 │  e  │    │  k  │    │  q  │    │  w  │  ┘  state carried from window 1
    t=5 │  f  │    │  l  │    │  r  │    │  x  │    (targets only: the last row)
        └─────┘    └─────┘    └─────┘    └─────┘

The targets of a window are its inputs shifted one step down, so a window of
length n reads n + 1 rows. Tokens that do not fill the last row are dropped.
Window lengths come from the truncation strategy, not from this module.

Random sampling hands out windows at random offsets of the corpus, each
starting from a fresh state (``reset=True``): the alternative the lecture
contrasts with sequential sampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tbptt.errors import DataError

__all__ = ["Batch", "split_stream", "batchify", "SequentialStream", "RandomStream"]


@dataclass(frozen=True)
class Batch:
    """One window of B streams.

    Attributes:
        inputs: (T, B) token indices.
        targets: (T, B) the next tokens.
        reset: True when the window must start from a fresh state (a stream
            restarted, or random sampling), False when the previous window's
            final state carries over.
        position: index of the window's first row in its stream.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    reset: bool
    position: int


def split_stream(
    tokens: torch.Tensor, valid_fraction: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a (N,) token stream contiguously: the last ``valid_fraction`` is validation."""
    if not 0.0 <= valid_fraction < 1.0:
        raise DataError(f"valid fraction must be in [0, 1), got {valid_fraction}")
    n_valid = int(round(len(tokens) * valid_fraction))
    return tokens[: len(tokens) - n_valid], tokens[len(tokens) - n_valid :]


def batchify(tokens: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Lay a (N,) stream into ``batch_size`` contiguous columns: (N // B, B)."""
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {batch_size}")
    rows = len(tokens) // batch_size
    if rows < 2:
        raise DataError(
            f"{len(tokens)} tokens cannot fill {batch_size} streams of at least 2 tokens; "
            "use a longer text or a smaller --batch-size"
        )
    return tokens[: rows * batch_size].view(batch_size, rows).t().contiguous()  # (N/B, B)


class SequentialStream:
    """Windows in order over B contiguous streams; state carries between windows.

    ``position`` is the row the next window starts at; it is part of the run's
    state (save it to resume). ``next(length)`` returns None at the end of the
    epoch; ``restart()`` goes back to row 0 and the next window has ``reset=True``.
    """

    def __init__(self, tokens: torch.Tensor, batch_size: int):
        self.data = batchify(tokens, batch_size)  # (N/B, B)
        self.position = 0

    @property
    def batch_size(self) -> int:
        return self.data.shape[1]

    @property
    def steps(self) -> int:
        """Input rows per epoch (the last row only serves as a target)."""
        return self.data.shape[0] - 1

    def remaining(self) -> int:
        return self.steps - self.position

    def restart(self) -> None:
        self.position = 0

    def next(self, length: int) -> Batch | None:
        if length < 1:
            raise DataError(f"window length must be at least 1, got {length}")
        if self.position >= self.steps:
            return None
        start = self.position
        n = min(length, self.steps - start)
        self.position = start + n
        return Batch(
            inputs=self.data[start : start + n],  # (T, B)
            targets=self.data[start + 1 : start + n + 1],  # (T, B)
            reset=start == 0,
            position=start,
        )


class RandomStream:
    """Windows at random offsets, each from a fresh state (random sampling).

    An epoch hands out about as many tokens as the sequential stream would.
    Each of the B columns of a window starts at its own uniformly drawn offset.
    """

    def __init__(self, tokens: torch.Tensor, batch_size: int, generator: torch.Generator):
        if batch_size < 1:
            raise DataError(f"batch size must be at least 1, got {batch_size}")
        if len(tokens) < 2:
            raise DataError("random sampling needs at least 2 tokens")
        self.tokens = tokens
        self.generator = generator
        self._batch_size = batch_size
        self.position = 0

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def steps(self) -> int:
        return len(self.tokens) // self._batch_size - 1

    def remaining(self) -> int:
        return self.steps - self.position

    def restart(self) -> None:
        self.position = 0

    def next_rows(self, length: int) -> tuple[torch.Tensor, int] | None:
        """Corpus indices (T + 1, B) of the next window and its position, or None at the end."""
        if length < 1:
            raise DataError(f"window length must be at least 1, got {length}")
        if self.position >= self.steps:
            return None
        n = min(length, self.steps - self.position, len(self.tokens) - 1)
        starts = torch.randint(
            0, len(self.tokens) - n, (self._batch_size,), generator=self.generator
        )
        rows = starts[None, :] + torch.arange(n + 1)[:, None]  # (T + 1, B)
        position = self.position
        self.position += n
        return rows.to(self.tokens.device), position

    def next(self, length: int) -> Batch | None:
        drawn = self.next_rows(length)
        if drawn is None:
            return None
        rows, position = drawn
        window = self.tokens[rows]  # (T + 1, B)
        return Batch(inputs=window[:-1], targets=window[1:], reset=True, position=position)
