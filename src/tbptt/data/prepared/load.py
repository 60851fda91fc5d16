"""A prepared directory as a dataset whose splits read straight from the memory map.

The token ids stay in ``tokens.bin``: the splits are torch views of one copy-on-write
``np.memmap`` (nothing is copied; pages are read when a window touches them). Training
streams lay them into B columns without copying (:class:`~tbptt.data.SequentialStream`
slices one window at a time), and the unigram baseline and the data digest come from
``meta.json``, so no step of a run reads the whole corpus. The validation split is laid
out in memory for evaluation (8 bytes a token): keep it to what evaluation can afford.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tbptt.data.dataset import TextData, unigram_perplexity_from_counts
from tbptt.data.prepared.format import STARTS, TOKENS, read_meta, verify
from tbptt.data.series import SeriesData
from tbptt.data.streams import StreamData
from tbptt.data.tokenize import Vocab, vocab_difference
from tbptt.errors import DataError

__all__ = ["PreparedText", "load_prepared"]


@dataclass
class PreparedText(TextData):
    """A text or a corpus of documents read from a prepared directory (see the module docstring).

    Attributes (besides :class:`~tbptt.data.TextData`'s, whose ``train`` / ``valid`` here
    are views of the memory map in its on-disk type):
        path: the prepared directory.
        sha256: the SHA-256 of its ``tokens.bin``.
        train_counts, valid_counts: (V,) how often each id occurs in each split.
        train_starts, valid_starts: (N,) bool views, True where a document starts (None:
            not documents).
        documents: how many documents (0: a plain text).
    """

    path: str = field(default="", kw_only=True)
    sha256: str = field(default="", kw_only=True)
    train_counts: tuple[int, ...] = field(default=(), kw_only=True)
    valid_counts: tuple[int, ...] = field(default=(), kw_only=True)
    train_starts: torch.Tensor | None = field(default=None, kw_only=True)
    valid_starts: torch.Tensor | None = field(default=None, kw_only=True)
    documents: int = field(default=0, kw_only=True)
    min_freq: int = field(default=1, kw_only=True)
    max_vocab: int = field(default=0, kw_only=True)

    def token_options(self) -> dict:
        """The options it was tokenized with, as :class:`~tbptt.data.config.DataConfig` fields."""
        return {
            "tokens": self.level,
            "normalize": self.normalize,
            "eos": self.eos,
            "min_freq": self.min_freq,
            "max_vocab": self.max_vocab,
        }

    def train_split(self) -> StreamData:
        return StreamData(self.train, starts=self.train_starts)

    def valid_split(self) -> StreamData:
        return StreamData(self.valid, starts=self.valid_starts)

    def baselines(self) -> dict[str, dict[str, float]]:
        """The unigram model's validation perplexity, from the counts in ``meta.json``."""
        if len(self.valid) == 0:
            return {}
        ppl = unigram_perplexity_from_counts(
            torch.tensor(self.train_counts), torch.tensor(self.valid_counts)
        )
        return {"unigram": {"ppl": ppl}}

    def digest(self) -> str:
        """SHA-1 of the vocabulary, the split and the token file's SHA-256 (no pass over it)."""
        h = hashlib.sha1()
        h.update("\x00".join(self.vocab.itos).encode("utf-8", "surrogatepass"))
        h.update(f"{len(self.train)}:{len(self.valid)}:{self.sha256}".encode())
        return h.hexdigest()

    def with_vocabulary(self, itos: list[str]) -> PreparedText:
        """Itself when ``itos`` is its vocabulary; refused otherwise (its ids are fixed on
        disk: re-indexing would copy the whole corpus into memory)."""
        if list(itos) == self.vocab.itos:
            return self
        differ = vocab_difference(itos, self.vocab.itos, names=("in the run", "in the corpus"))
        raise DataError(
            f"the prepared corpus {self.path} has another vocabulary than the run ({differ}); "
            "use the run's own preparation, or a text file (read with the run's vocabulary)"
        )

    def describe(self) -> dict:
        out = {**super().describe(), "prepared": self.path, "sha256": self.sha256}
        if self.documents:
            out.update(kind="docs", documents=self.documents)
        return out


def _mapped(file: Path, dtype, n: int) -> torch.Tensor:
    """(n,) tensor on a copy-on-write map of ``file`` (writable for torch, never written)."""
    if n == 0:
        return torch.from_numpy(np.zeros(0, dtype=dtype))
    return torch.from_numpy(np.memmap(file, dtype=dtype, mode="c", shape=(n,)))


def load_prepared(path: str | Path, *, verify_checksum: bool = True) -> PreparedText | SeriesData:
    """The dataset in the prepared directory ``path`` (made by :func:`prepare`, or
    :func:`~tbptt.data.prepared.series.prepare_series_file` for a time series).

    ``verify_checksum``: check the SHA-256 of the .bin files first (one sequential read
    of them, about a second per GB).

    Raises:
        DataError: a missing or damaged ``meta.json``, a truncated or changed .bin file.
    """
    path = Path(path).expanduser()
    meta = read_meta(path)
    if meta["kind"] == "series":
        from tbptt.data.prepared.series import load_series

        data = load_series(path, meta)  # sizes checked before the digests are read
        if verify_checksum:
            verify(path, meta)
        return data
    if verify_checksum:
        verify(path, meta)
    n, n_train = meta["tokens"], meta["train_tokens"]
    tokens = _mapped(path / TOKENS, np.dtype(meta["dtype"]), n)  # (N,)
    starts = _mapped(path / STARTS, np.bool_, n) if meta["kind"] == "docs" else None  # (N,)
    return PreparedText(
        vocab=Vocab(itos=meta["vocab"]),
        train=tokens[:n_train],
        valid=tokens[n_train:],
        level=meta["level"],
        normalize=meta["normalize"],
        eos=meta["eos"],
        path=str(path),
        sha256=meta["files"][TOKENS]["sha256"],
        train_counts=tuple(meta["train_counts"]),
        valid_counts=tuple(meta["valid_counts"]),
        train_starts=starts[:n_train] if starts is not None else None,
        valid_starts=starts[n_train:] if starts is not None else None,
        documents=meta["documents"],
        min_freq=int(meta.get("min_freq", 1)),
        max_vocab=int(meta.get("max_vocab", 0)),
    )
