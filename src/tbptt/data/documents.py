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

The mask becomes the ``starts`` of the split's :class:`~tbptt.data.StreamData`
(``data.train_split()``), which the streams of :mod:`tbptt.data.streams` lay
into the same B columns as the tokens, so each window of inputs (T, B) comes
with its own (T, B) ``resets`` mask: each stream resets its state at its own
boundaries, wherever they fall inside the window, and no gradient crosses them.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from tbptt.data.corpus import absent, read_text
from tbptt.data.dataset import TextData
from tbptt.data.streams import StreamData, split_stream
from tbptt.data.tokenize import TokenIndexer, Vocab, compact_dtype, normalize
from tbptt.errors import DataError

__all__ = ["DOC", "DocumentData", "document_files", "read_documents", "prepare_documents"]

log = logging.getLogger(__name__)

DOC = "<doc>"


def document_files(path: Path) -> tuple[list[Path], list[str]]:
    """The documents of the directory ``path``: every non-hidden file under it, in sorted
    path order (links to directories are not entered), and the subdirectories skipped
    because ``tbptt prepare`` wrote them (a preparation beside its documents is not one:
    its ``starts.bin`` is no text), as paths relative to ``path``."""
    from tbptt.data.prepared.format import is_prepared  # the prepared layer builds on this one

    files, skipped = [], []
    for top, dirs, names in os.walk(path):
        here = Path(top)
        kept = []
        for d in sorted(dirs):
            if d.startswith(".") or (here / d).is_symlink():
                continue  # hidden, or a link: not entered (as rglob does not)
            if is_prepared(here / d):
                skipped.append((here / d).relative_to(path).as_posix())
            else:
                kept.append(d)
        dirs[:] = kept
        files += [here / n for n in names if not n.startswith(".") and (here / n).is_file()]
    return sorted(files), sorted(skipped)


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
        files, skipped = document_files(path)
        if skipped:
            log.warning(
                "skipping %s under %s: prepared by tbptt prepare, not documents",
                ", ".join(skipped),
                path,
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
        raise DataError(f"documents path {path} {absent(path)}; pass a directory or a text file")
    if not separator:
        raise DataError(
            f"{path} is a single file: give the separator that ends each document "
            "(e.g. '\\n\\n\\n'), or pass a directory with one file per document",
            options=("data.separator",),
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

    def train_split(self) -> StreamData:
        return StreamData(self.train, starts=self.train_starts)

    def valid_split(self) -> StreamData:
        return StreamData(self.valid, starts=self.valid_starts)

    def describe(self) -> dict:
        return {**super().describe(), "documents": self.documents}


def prepare_documents(
    documents: list[str],
    *,
    level: str = "char",
    normalization: str = "letters",
    valid_fraction: float = 0.1,
    min_freq: int = 1,
    max_vocab: int = 0,
    eos: bool = False,
) -> DocumentData:
    """Normalize and tokenize each document, join them with ``<doc>``, split and index.

    The split is contiguous (the last ``valid_fraction`` of the tokens is held
    out); the vocabulary comes from the training part and always holds ``<doc>``.
    """
    eos = eos and level == "word"
    indexer = TokenIndexer(level, specials=(DOC,), eos=eos)
    first: list[int] = []  # where each document's <doc> is
    for doc in documents:
        text = normalize(doc, normalization, keep_lines=eos)
        if not text or (level == "word" and not text.split()):
            continue
        first.append(indexer.length)
        indexer.add_token(DOC)
        indexer.add(text)
    n = indexer.length
    if n < 2:
        raise DataError(
            f"the documents have {n} {level} token(s) after normalization "
            f"{normalization!r}; they need many more"
        )
    if not 0.0 <= valid_fraction < 1.0:
        raise DataError(f"valid fraction must be in [0, 1), got {valid_fraction}")
    n_valid = int(round(n * valid_fraction))
    vocab, indices = indexer.finish(n - n_valid, min_freq=min_freq, max_size=max_vocab)
    if DOC not in vocab:
        # <doc> only in the validation part: finish() mapped it to <unk>; append it
        vocab = Vocab(itos=[*vocab.itos, DOC])
        indices = indices.to(compact_dtype(len(vocab)))
        indices[torch.tensor(first, dtype=torch.int64)] = len(vocab) - 1
    starts = torch.zeros(n, dtype=torch.bool)
    starts[torch.tensor(first, dtype=torch.int64)] = True
    train, valid = split_stream(indices, valid_fraction)
    train_starts, valid_starts = split_stream(starts, valid_fraction)
    return DocumentData(
        vocab=vocab,
        train=train,
        valid=valid,
        level=level,
        normalize=normalization,
        train_starts=train_starts,
        valid_starts=valid_starts,
        documents=len(first),
        eos=eos,
        min_freq=min_freq,
        max_vocab=max_vocab,
    )
