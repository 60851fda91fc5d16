"""What makes two datasets the same data: digests of their rows, equal for a source and its
preparation (:meth:`tbptt.data.Dataset.identity`)."""

from __future__ import annotations

import hashlib

import numpy as np
import torch

from tbptt.data.streams import StreamData

__all__ = ["split_digest", "text_identity", "ids_sha256"]


def split_digest(kind: str, splits: list[StreamData]) -> str:
    """SHA-256 of ``kind`` and the tensors of ``splits`` (their values, types and shapes)."""
    h = hashlib.sha256(kind.encode())
    for split in splits:
        for t in (split.inputs, split.targets, split.starts, split.mask):
            h.update(b"-" if t is None else t.detach().cpu().contiguous().numpy().tobytes())
            h.update(str(None if t is None else (t.dtype, tuple(t.shape))).encode())
    return h.hexdigest()


def text_identity(
    itos: list[str], sizes: tuple[int, ...], tokens_sha256: str, starts_sha256: str
) -> str:
    """The identity of a tokenized text: its vocabulary, its split sizes and the SHA-256 of
    its ids laid end to end in their file type (``tokens.bin`` of its preparation) and of
    its document starts (``starts.bin``; "" for none)."""
    h = hashlib.sha256(b"text")
    h.update("\x00".join(itos).encode("utf-8", "surrogatepass"))
    h.update(f"|{sizes}|{tokens_sha256}|{starts_sha256}".encode())
    return h.hexdigest()


def ids_sha256(parts: list[torch.Tensor], vocab_size: int) -> str:
    """SHA-256 of token ids laid end to end in the file type of a vocabulary of that size."""
    from tbptt.data.prepared.format import file_dtype

    dtype = file_dtype(vocab_size)
    h = hashlib.sha256()
    for part in parts:
        array = part.cpu().numpy()
        for i in range(0, len(array), 1 << 24):  # a block at a time: a mapped corpus stays mapped
            h.update(np.ascontiguousarray(array[i : i + (1 << 24)].astype(dtype, copy=False)))
    return h.hexdigest()
