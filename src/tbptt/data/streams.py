"""Streams: one split of the data, B parallel streams, and windows cut from them.

Shapes are time-major: a window's inputs are ``(T, B)`` token ids or
``(T, B, F)`` features, its targets ``(T, B)`` ids or ``(T, B, D)`` values,
its ``resets`` and ``mask`` ``(T, B)`` bool.

A split of the data is a :class:`StreamData`: rows of inputs, the targets that
go with them, and optional per-row marks (a document / series / episode starts
here; the loss counts here). Two layouts of targets:

- **next token** (``targets=None``, language models): the target of row t is
  the input of row t + 1, so one tensor serves both and a window of length n
  reads n + 1 rows;
- **aligned** (time series, per-step labels, synthetic tasks): ``targets[t]``
  is the target after reading ``inputs[t]``.

Sequential sampling lays the rows into B contiguous columns and hands out
windows in order, so the state at the end of one window is the right state at
the start of the next (for a corpus ``a b c ... x``, next-token layout, B = 4)::

        stream 0   stream 1   stream 2   stream 3
        ┌─────┐    ┌─────┐    ┌─────┐    ┌─────┐
    t=0 │  a  │    │  g  │    │  m  │    │  s  │  ┐
    t=1 │  b  │    │  h  │    │  n  │    │  t  │  │ window 1 (length 3)
    t=2 │  c  │    │  i  │    │  o  │    │  u  │  ┘
    t=3 │  d  │    │  j  │    │  p  │    │  v  │  ┐ window 2 (length 2)
    t=4 │  e  │    │  k  │    │  q  │    │  w  │  ┘  state carried from window 1
    t=5 │  f  │    │  l  │    │  r  │    │  x  │    (targets only: the last row)
        └─────┘    └─────┘    └─────┘    └─────┘

Rows that do not fill the last row of columns are dropped. Window lengths come
from the truncation strategy, not from this module. Marks (``starts``,
``mask``) are laid into the same columns, so each window carries its own
``(T, B)`` ``resets`` (each stream restarts its state at its own document
boundaries, wherever they fall in the window) and loss ``mask``.

Random sampling hands out windows at random offsets of the split, each
starting from a fresh state (``reset=True``): the alternative the lecture
contrasts with sequential sampling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from tbptt.errors import DataError

__all__ = [
    "StreamData",
    "as_stream_data",
    "Batch",
    "Stream",
    "split_stream",
    "ids",
    "batchify",
    "SequentialStream",
    "RandomStream",
]


@dataclass(frozen=True)
class StreamData:
    """One split (training or validation) of a stream.

    Attributes:
        inputs: (N,) int64 token ids, or (N, F) float features.
        targets: None for next-token prediction (the target of row t is
            ``inputs[t + 1]``: N - 1 pairs); else (N,) int64 class ids or
            (N, D) floats, aligned with ``inputs`` (N pairs).
        starts: (N,) bool or None; True where a document, series or episode
            starts: the state is reset just before that row is read.
        mask: (N,) bool or None; the loss of row t counts only where True
            (aligned layout: the row's target; next-token: the target of row t).
    """

    inputs: torch.Tensor
    targets: torch.Tensor | None = None
    starts: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def __post_init__(self):
        n = len(self.inputs)
        if self.targets is not None and len(self.targets) != n:
            raise DataError(
                f"Expected as many target rows as input rows ({n}), got {len(self.targets)}"
            )
        for name in ("starts", "mask"):
            marks = getattr(self, name)
            if marks is not None and (marks.dtype != torch.bool or tuple(marks.shape) != (n,)):
                raise DataError(
                    f"Expected {name} to be a bool tensor of shape ({n},), got "
                    f"{marks.dtype} {tuple(marks.shape)}"
                )

    @property
    def next_token(self) -> bool:
        """True for the next-token layout (``targets is None``)."""
        return self.targets is None

    @property
    def pairs(self) -> int:
        """How many (input, target) pairs the split holds."""
        return len(self.inputs) - 1 if self.next_token else len(self.inputs)

    def __len__(self) -> int:
        return len(self.inputs)

    def to(self, device) -> StreamData:
        move = lambda t: t.to(device) if t is not None else None  # noqa: E731
        return StreamData(move(self.inputs), move(self.targets), move(self.starts), move(self.mask))


def ids(t: torch.Tensor | None) -> torch.Tensor | None:
    """Token / class ids as int64 for the model and the loss; a split may store them in the
    smallest integer type (uint8 for a character vocabulary), a window is widened."""
    if t is None or t.is_floating_point() or t.dtype in (torch.bool, torch.int64):
        return t
    return t.long()


def as_stream_data(data: StreamData | torch.Tensor) -> StreamData:
    """A (N,) token tensor is a next-token :class:`StreamData`; a StreamData is itself."""
    return data if isinstance(data, StreamData) else StreamData(torch.as_tensor(data))


@dataclass(frozen=True)
class Batch:
    """One window of B streams.

    Attributes:
        inputs: (T, B) token ids or (T, B, F) features.
        targets: (T, B) ids or (T, B, D) values.
        resets: (T, B) bool or None; True where stream b starts afresh at row t
            (its state is zeroed just before reading that row).
        mask: (T, B) bool or None; the loss counts only where True.
        reset: True when the window must start from a fresh state (a stream
            restarted, or random sampling), False when the previous window's
            final state carries over.
        position: index of the window's first row in its stream.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    resets: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    reset: bool = False
    position: int = 0

    def to(self, device) -> Batch:
        move = lambda t: t.to(device) if t is not None else None  # noqa: E731
        return Batch(
            move(self.inputs),
            move(self.targets),
            move(self.resets),
            move(self.mask),
            self.reset,
            self.position,
        )


class Stream(Protocol):
    """What the trainer draws windows from (:class:`SequentialStream`, :class:`RandomStream`).

    ``position`` (the rows handed out this epoch) is run state: save it to resume.
    """

    position: int

    @property
    def batch_size(self) -> int: ...

    @property
    def steps(self) -> int:
        """Input rows per epoch."""
        ...

    def remaining(self) -> int: ...

    def restart(self) -> None: ...

    def next(self, length: int) -> Batch | None: ...


def split_stream(
    tokens: torch.Tensor, valid_fraction: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a (N, ...) stream contiguously: the last ``valid_fraction`` is validation."""
    if not 0.0 <= valid_fraction < 1.0:
        raise DataError(f"valid fraction must be in [0, 1), got {valid_fraction}")
    n_valid = int(round(len(tokens) * valid_fraction))
    return tokens[: len(tokens) - n_valid], tokens[len(tokens) - n_valid :]


def batchify(
    rows: torch.Tensor, batch_size: int, *, min_rows: int = 2, copy: bool = True
) -> torch.Tensor:
    """Lay (N, ...) rows into ``batch_size`` contiguous columns: (N // B, B, ...).

    ``copy=False``: a strided view of ``rows`` instead of a contiguous copy (no memory
    beyond ``rows``, which may be a memory map; slice it, then make the slice contiguous).
    """
    if batch_size < 1:
        raise DataError(f"batch size must be at least 1, got {batch_size}")
    per_column = len(rows) // batch_size
    if per_column < min_rows:
        raise DataError(
            f"{len(rows)} rows cannot fill {batch_size} streams of at least {min_rows} rows; "
            "use more data or a smaller batch size"
        )
    laid = rows[: per_column * batch_size].reshape(batch_size, per_column, *rows.shape[1:])
    laid = laid.transpose(0, 1)  # (N/B, B, ...)
    return laid.contiguous() if copy else laid


class SequentialStream:
    """Windows in order over B contiguous streams; state carries between windows.

    ``position`` is the row the next window starts at; it is part of the run's
    state (save it to resume). ``next(length)`` returns None at the end of the
    epoch; ``restart()`` goes back to row 0 and the next window has ``reset=True``.

    ``data``: a :class:`StreamData`, or a (N,) token tensor (next-token layout).

    The columns are strided views of the split (``batchify(..., copy=False)``), each
    window made contiguous as it is handed out, so a split on a memory map
    (:mod:`tbptt.data.prepared`) is read a window at a time and never copied whole.
    """

    def __init__(self, data: StreamData | torch.Tensor, batch_size: int):
        data = as_stream_data(data)
        self.next_token = data.next_token
        lay = lambda t, rows: batchify(t, batch_size, min_rows=rows, copy=False)  # noqa: E731
        self.data = lay(data.inputs, 2 if data.next_token else 1)
        self.targets = None if data.next_token else lay(data.targets, 1)
        self.starts = lay(data.starts, 1) if data.starts is not None else None
        self.mask = lay(data.mask, 1) if data.mask is not None else None
        self.position = 0

    @property
    def batch_size(self) -> int:
        return self.data.shape[1]

    @property
    def steps(self) -> int:
        """Input rows per epoch (next-token layout: the last row only serves as a target)."""
        return self.data.shape[0] - 1 if self.next_token else self.data.shape[0]

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
        stop = start + min(length, self.steps - start)
        self.position = stop

        def rows(t, shift=0):
            return t[start + shift : stop + shift].contiguous() if t is not None else None

        if self.next_token:
            targets, mask = rows(self.data, 1), rows(self.mask, 1)  # (T, B)
        else:
            targets, mask = rows(self.targets), rows(self.mask)  # (T, B, ...)
        return Batch(
            inputs=ids(rows(self.data)),  # (T, B, ...)
            targets=ids(targets),
            resets=rows(self.starts),  # (T, B)
            mask=mask,
            reset=start == 0,
            position=start,
        )


class RandomStream:
    """Windows at random offsets, each from a fresh state (random sampling).

    An epoch hands out about as many rows as the sequential stream would.
    Each of the B columns of a window starts at its own uniformly drawn offset.
    """

    def __init__(
        self, data: StreamData | torch.Tensor, batch_size: int, generator: torch.Generator
    ):
        data = as_stream_data(data)
        if batch_size < 1:
            raise DataError(f"batch size must be at least 1, got {batch_size}")
        if data.pairs < 1:
            raise DataError("random sampling needs at least one (input, target) pair")
        self.source = data
        self.generator = generator
        self._batch_size = batch_size
        self.position = 0

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @property
    def steps(self) -> int:
        rows = len(self.source.inputs) // self._batch_size
        return rows - 1 if self.source.next_token else rows

    def remaining(self) -> int:
        return self.steps - self.position

    def restart(self) -> None:
        self.position = 0

    def next_rows(self, length: int) -> tuple[torch.Tensor, int] | None:
        """Row indices (T, B) of the next window's inputs and its position, or None at the end."""
        if length < 1:
            raise DataError(f"window length must be at least 1, got {length}")
        if self.position >= self.steps:
            return None
        pairs = self.source.pairs
        n = min(length, self.steps - self.position, pairs)
        starts = torch.randint(0, pairs - n + 1, (self._batch_size,), generator=self.generator)
        rows = starts[None, :] + torch.arange(n)[:, None]  # (T, B)
        position = self.position
        self.position += n
        return rows.to(self.source.inputs.device), position

    def next(self, length: int) -> Batch | None:
        drawn = self.next_rows(length)
        if drawn is None:
            return None
        rows, position = drawn
        data = self.source
        target_rows = rows + 1 if data.next_token else rows
        targets = data.inputs[target_rows] if data.next_token else data.targets[rows]
        return Batch(
            inputs=ids(data.inputs[rows]),  # (T, B, ...)
            targets=ids(targets),
            resets=data.starts[rows] if data.starts is not None else None,
            mask=data.mask[target_rows] if data.mask is not None else None,
            reset=True,
            position=position,
        )
