"""Your own splits as a :class:`~tbptt.data.Dataset` (:class:`StreamDataset`): what a run of
your own module on your own stream trains on (``tbptt.Run``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tbptt.data.dataset import DatasetBase, DataShape
from tbptt.data.streams import StreamData

__all__ = ["StreamDataset"]


@dataclass
class StreamDataset(DatasetBase):
    """Your own splits as a :class:`Dataset`: a training and a validation
    :class:`~tbptt.data.StreamData` (or token tensors), optionally a test split.

    Example::

        data = StreamDataset(StreamData(x_train, y_train), StreamData(x_valid, y_valid))
    """

    train: StreamData
    valid: StreamData
    test: StreamData | None = None
    name: str = "stream"
    model = None

    def __post_init__(self):
        from tbptt.data.streams import as_stream_data

        self.train = as_stream_data(self.train)
        self.valid = as_stream_data(self.valid)
        self.test = as_stream_data(self.test) if self.test is not None else None

    def train_split(self) -> StreamData:
        return self.train

    def valid_split(self) -> StreamData:
        return self.valid

    def test_split(self) -> StreamData | None:
        return self.test

    @property
    def shape(self) -> DataShape:
        x, y = self.train.inputs, self.train.targets
        tokens = not torch.is_floating_point(x)
        classes = y is not None and not torch.is_floating_point(y)
        ids = [t.inputs for t in (self.train, self.valid, self.test) if t is not None and len(t)]
        vocab = max(int(t.max()) + 1 for t in ids) if tokens and ids else 0
        if y is None:  # next-token
            return DataShape(vocab_size=vocab)
        width = 1 if y.dim() == 1 else y.shape[-1]
        return DataShape(
            vocab_size=vocab,
            input_size=0 if tokens else (1 if x.dim() == 1 else x.shape[-1]),
            output_size=int(y.max()) + 1 if classes and len(y) else width,
            objective="classify" if classes else "regress",
        )

    def describe(self) -> dict:
        out = {"kind": self.name, "train_rows": len(self.train), "valid_rows": len(self.valid)}
        if self.test is not None:
            out["test_rows"] = len(self.test)
        return out
