"""Corpora made of documents, and streams that mark where each document starts.

A corpus of documents (a directory of text files, or one file cut at a
separator string) becomes one token stream in which every document begins
with the boundary token ``<doc>``, plus a (N,) bool mask that is True at those
positions: "a document starts here". The model's state is reset *just before
reading* ``<doc>``, so the boundary token, read from a fresh state, predicts
the document's first token, and the last token of the previous document
predicts ``<doc>`` (the end of its document)::

    documents      "ab"  "cde"
    tokens         <doc> a b <doc> c d e
    starts           1   0 0   1   0 0 0

The stream and the mask are laid into the same B columns (see
:mod:`tbptt.data.streams`), so each window of inputs (T, B) comes with its own
(T, B) ``resets`` mask: each stream resets its state at its own boundaries,
wherever they fall inside the window, and no gradient crosses them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from tbptt.data.corpus import read_text
from tbptt.data.dataset import TextData
from tbptt.data.streams import Batch, RandomStream, SequentialStream, batchify, split_stream
from tbptt.data.tokenize import Vocab, normalize, tokenize
from tbptt.errors import DataError

__all__ = [
    "DOC",
    "DocumentBatch",
    "DocumentData",
    "read_documents",
    "prepare_documents",
    "DocumentStream",
    "RandomDocumentStream",
]

DOC = "<doc>"


def read_documents(path: str | Path, *, separator: str | None = None) -> list[str]:
    """The documents of a corpus.

    ``path`` a directory: every non-hidden file under it (recursively, in sorted
    path order) is one document; files with only whitespace are skipped.
    ``path`` a file: it is cut at each occurrence of ``separator`` (required),
    and empty pieces are dropped.

    Raises:
        DataError: missing path, unreadable or non-UTF-8 file, no separator for a
            file, or no document at all.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        documents = []
        for f in files:
            if not f.read_bytes().strip():
                continue
            documents.append(read_text(f))
        if not documents:
            raise DataError(
                f"directory {path} holds no non-empty text file; pass a directory of documents"
            )
        return documents
    if not path.exists():
        raise DataError(f"documents path {path} does not exist; pass a directory or a text file")
    if not separator:
        raise DataError(
            f"{path} is a single file: give the separator that ends each document "
            "(e.g. --separator '\\n\\n\\n'), or pass a directory with one file per document"
        )
    documents = [d for d in read_text(path).split(separator) if d.strip()]
    if not documents:
        raise DataError(f"{path} has no text between its separators {separator!r}")
    return documents


@dataclass
class DocumentData(TextData):
    """A tokenized corpus of documents (see the module docstring).

    Attributes (besides :class:`~tbptt.data.TextData`'s):
        train_starts: (N_train,) bool, True where a document starts (at its ``<doc>``).
        valid_starts: (N_valid,) bool, the same for the validation tail.
        documents: how many documents the corpus has.
    """

    train_starts: torch.Tensor
    valid_starts: torch.Tensor
    documents: int


def prepare_documents(
    documents: list[str],
    *,
    level: str = "char",
    normalization: str = "letters",
    valid_fraction: float = 0.1,
    min_freq: int = 1,
) -> DocumentData:
    """Normalize and tokenize each document, join them with ``<doc>``, split and index.

    The split is contiguous (the last ``valid_fraction`` of the tokens is held
    out); the vocabulary comes from the training part and always holds ``<doc>``.
    """
    tokens: list[str] = []
    starts: list[bool] = []
    for doc in documents:
        body = tokenize(normalize(doc, normalization), level)
        if not body:
            continue
        tokens += [DOC, *body]
        starts += [True] + [False] * len(body)
    if len(tokens) < 2:
        raise DataError(
            f"the documents have {len(tokens)} {level} token(s) after normalization "
            f"{normalization!r}; they need many more"
        )
    n_valid = int(round(len(tokens) * valid_fraction))
    vocab = Vocab(tokens[: len(tokens) - n_valid], min_freq=min_freq)
    if DOC not in vocab:
        vocab = Vocab(itos=[*vocab.itos, DOC])
    indices = vocab.encode(tokens)
    train, valid = split_stream(indices, valid_fraction)
    train_starts, valid_starts = split_stream(torch.tensor(starts), valid_fraction)
    return DocumentData(
        vocab=vocab,
        train=train,
        valid=valid,
        level=level,
        normalize=normalization,
        train_starts=train_starts,
        valid_starts=valid_starts,
        documents=sum(starts),
    )


@dataclass(frozen=True)
class DocumentBatch(Batch):
    """A :class:`~tbptt.data.Batch` with ``resets`` (T, B) bool: True where stream b's
    document starts at row t (its state is zeroed just before reading that row)."""

    resets: torch.Tensor | None = None


def _check_starts(tokens: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    starts = torch.as_tensor(starts)
    if starts.shape != tokens.shape or starts.dtype != torch.bool:
        raise DataError(
            f"document starts must be a bool tensor shaped like the tokens {tuple(tokens.shape)}, "
            f"got {starts.dtype} {tuple(starts.shape)}"
        )
    return starts


class DocumentStream(SequentialStream):
    """:class:`~tbptt.data.SequentialStream` whose batches carry per-stream ``resets``.

    ``starts`` (N,) bool is laid into the same (N / B, B) columns as the tokens.
    """

    def __init__(self, tokens: torch.Tensor, starts: torch.Tensor, batch_size: int):
        super().__init__(tokens, batch_size)
        self.starts = batchify(_check_starts(tokens, starts).to(tokens.device), batch_size)

    def next(self, length: int) -> DocumentBatch | None:
        batch = super().next(length)
        if batch is None:
            return None
        T = batch.inputs.shape[0]
        resets = self.starts[batch.position : batch.position + T]  # (T, B)
        return DocumentBatch(
            inputs=batch.inputs,
            targets=batch.targets,
            reset=batch.reset,
            position=batch.position,
            resets=resets,
        )


class RandomDocumentStream(RandomStream):
    """:class:`~tbptt.data.RandomStream` whose batches carry per-stream ``resets``."""

    def __init__(
        self,
        tokens: torch.Tensor,
        starts: torch.Tensor,
        batch_size: int,
        generator: torch.Generator,
    ):
        super().__init__(tokens, batch_size, generator)
        self.starts = _check_starts(tokens, starts).to(tokens.device)

    def next(self, length: int) -> DocumentBatch | None:
        drawn = self.next_rows(length)
        if drawn is None:
            return None
        rows, position = drawn
        window = self.tokens[rows]  # (T + 1, B)
        return DocumentBatch(
            inputs=window[:-1],
            targets=window[1:],
            reset=True,
            position=position,
            resets=self.starts[rows[:-1]],  # (T, B)
        )
