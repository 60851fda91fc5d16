"""The training batches of a Lightning run: a stream cut into windows, in order, whose
position is saved with every checkpoint (:class:`StreamBatches`)."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from tbptt.data.streams import SequentialStream, StreamData, as_stream_data
from tbptt.errors import ConfigError

__all__ = ["StreamBatches"]


class StreamBatches(torch.utils.data.Dataset):
    """A split cut into consecutive batches of ``length`` rows of ``batch_size`` streams
    (``length=None``: one batch holding every stream's whole length).

    Item i is the i-th window of :class:`~tbptt.data.streams.SequentialStream` over the
    split, as a dict of batch-first tensors: ``inputs`` (B, T[, F]), ``targets`` (B, T[, D]),
    ``resets`` / ``mask`` (B, T) when the split has them. (Every stream starts afresh at
    the first batch because the module resets its state at each epoch start.)

    Hand it to ``fit`` itself: iterating it yields the batches in order, and it is a
    stateful iterable (``state_dict`` / ``load_state_dict``), so Lightning saves its
    position with every checkpoint and a resumed run continues at the next batch,
    mid-epoch too. ``DataLoader(StreamBatches(...), batch_size=None)`` (no shuffling: the
    order carries the state) works as well, but a ``DataLoader`` has no position to save:
    :class:`TruncatedBPTT` refuses to resume it from a mid-epoch checkpoint.
    """

    def __init__(self, data: StreamData | torch.Tensor, batch_size: int, length: int | None):
        if length is not None and length < 1:
            raise ConfigError(
                f"Expected a batch length >= 1 (None: the whole stream), got {length}"
            )
        self.stream = SequentialStream(as_stream_data(data), batch_size)
        self.length = length or self.stream.steps
        self.position = 0  # batches of the current pass handed out: the next one's index
        self._resume_at = 0  # where the next pass starts (set by load_state_dict)

    def __len__(self) -> int:
        return -(-self.stream.steps // self.length)  # the last batch may be shorter

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(index)
        # Cut when asked (no copy of the split held): the stream's window at that position.
        self.stream.position = index * self.length
        batch = self.stream.next(self.length)
        item = {"inputs": batch.inputs, "targets": batch.targets}
        for name in ("resets", "mask"):
            if getattr(batch, name) is not None:
                item[name] = getattr(batch, name)
        return {k: _swap(v) for k, v in item.items()}

    def __iter__(self) -> Iterator[dict]:
        """One pass over the batches: from the first, or from the restored position."""
        # A generator: nothing runs (and the restored position is not used up) until the
        # first batch is asked for, so an iterator made only to probe iterability is harmless.
        start, self._resume_at = self._resume_at, 0
        self.position = start
        for index in range(start, len(self)):
            self.position = index + 1
            yield self[index]

    def rewind(self) -> None:
        """The next pass starts at the first batch (an epoch starts afresh)."""
        self._resume_at = 0

    def _shape(self) -> dict:
        return {"batches": len(self), "batch_size": self.stream.batch_size, "length": self.length}

    def state_dict(self) -> dict:
        """The index of the next batch of this pass (0 once every batch was handed out),
        and the cut, to check against the loader that resumes."""
        return {"batch": self.position if self.position < len(self) else 0, **self._shape()}

    def load_state_dict(self, state: dict) -> None:
        if {k: state.get(k) for k in self._shape()} != self._shape():
            raise ConfigError(
                f"the checkpoint's training batches were {_describe(state)}, these are "
                f"{_describe(self._shape())}; resume with the StreamBatches the run was "
                "trained with"
            )
        self._resume_at = self.position = state["batch"]


def _describe(shape: dict) -> str:
    return (
        f"{shape.get('batches')} batches of {shape.get('batch_size')} streams x "
        f"{shape.get('length')} rows"
    )


def _swap(value):
    """(T, B, ...) <-> (B, T, ...); other values as they are."""
    return value.transpose(0, 1) if isinstance(value, torch.Tensor) else value
