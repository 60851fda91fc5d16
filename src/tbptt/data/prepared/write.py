"""``prepare``: a text (or a directory of documents) into a prepared directory, streaming.

Two passes over the input, a block at a time (:class:`~tbptt.data.prepared.source.TextSource`),
so memory is bounded by one block and the vocabulary, whatever the size of the input:

1. **vocabulary**: count every token and the tokens of each block. The training part
   is the first ``N - round(N * valid_fraction)`` tokens, as in
   :func:`~tbptt.data.prepare_text`, and its vocabulary is built from the training
   tokens only; the blocks from the one holding the first validation token to the end
   are read once more and their counts taken off (about ``valid_fraction`` of the input).
2. **ids**: read again and write each token's id to ``tokens.bin`` (and, for documents,
   a ``starts.bin`` of one byte per token, 1 where a document starts), hashing as it goes.

Everything is written into a temporary directory beside the target and renamed into
place at the end, so the target holds a complete preparation or none; what ``prepare``
may replace or remove there is :mod:`tbptt.data.prepared.directory`'s to decide.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tbptt.data.documents import DOC
from tbptt.data.prepared.directory import Writer, check_target, write_prepared
from tbptt.data.prepared.format import FORMAT, STARTS, TOKENS, VERSION, file_dtype, vocab_sha256
from tbptt.data.prepared.source import BLOCK, TextSource
from tbptt.data.tokenize import Vocab
from tbptt.errors import DataError

__all__ = ["prepare"]

Progress = Callable[[str, int, int], None]  # (phase, bytes just read, bytes the phase reads)


def _no_counts(level: str):
    """Empty token counts: (P,) int64 by code point for characters, a Counter for words."""
    return np.zeros(0, np.int64) if level == "char" else Counter()


def _add(counts, tokens):
    """``counts`` with ``tokens`` (code points (n,), or words) counted in; grown as needed."""
    if isinstance(counts, Counter):
        counts.update(tokens)
        return counts
    if len(tokens):
        top = 256 if tokens.dtype == np.uint8 else int(tokens.max()) + 1
        if top > len(counts):
            counts = np.concatenate([counts, np.zeros(top - len(counts), np.int64)])
        counts[:top] += np.bincount(tokens, minlength=top)
    return counts


def _count(source: TextSource, progress: Progress | None):
    """Pass 1: the counts of every token, the number of tokens and of documents, and each
    item's (position, cursor, length)."""
    counts, n, documents, index = _no_counts(source.level), 0, 0, []
    for item in source.items():
        index.append((n, item.cursor, len(item)))
        n += len(item)
        documents += item.doc
        counts = _add(counts, item.tokens)
        if progress is not None:
            progress("vocabulary", item.bytes, source.total_bytes)
    return counts, n, documents, index


def _tail_counts(source: TextSource, index, n_train: int, progress: Progress | None):
    """The counts of the tokens at positions >= ``n_train`` (read again from their block)."""
    k = max(i for i, (pos, _, _) in enumerate(index) if pos <= n_train)
    pos, cursor, _ = index[k]
    skip = n_train - pos
    counts, documents = _no_counts(source.level), 0
    total = source.total_bytes - sum(source.sizes[: cursor.file]) - cursor.offset
    first = True
    for item in source.items(cursor):
        tokens, doc = item.tokens, item.doc
        if first:  # drop the training tokens of the first block
            first = False
            if doc and skip > 0:
                doc, skip = False, skip - 1
            tokens = tokens[skip:]
        documents += doc
        counts = _add(counts, tokens)
        if progress is not None:
            progress("validation tail", item.bytes, total)
    return counts, documents


def _as_dict(counts, documents: int, level: str) -> dict[str, int]:
    if level == "char":
        out = {chr(p): int(c) for p, c in enumerate(counts.tolist()) if c}
    else:
        out = dict(counts)
    if documents:
        out[DOC] = out.get(DOC, 0) + documents
    return out


class _Ids(dict):
    """token -> id, 0 (``<unk>``) for a token not in the vocabulary."""

    def __missing__(self, token: str) -> int:
        return 0


def _write_ids(source: TextSource, vocab: Vocab, tmp: Path, dtype, progress: Progress | None):
    """Pass 2: every token's id into tokens.bin (documents: starts.bin); their descriptions."""
    stoi = _Ids(vocab.stoi)
    doc_id = stoi[DOC]
    if source.level == "char":  # code point -> id (0, <unk>, for characters not kept)
        points = [ord(t) for t in vocab.itos[1:] if len(t) == 1]
        lookup = np.zeros(max(max(points, default=0) + 1, 256), dtype=dtype)
        for p in points:
            lookup[p] = stoi[chr(p)]
    tokens = Writer(tmp / TOKENS)
    starts = Writer(tmp / STARTS) if source.documents else None
    try:
        for item in source.items():
            if source.level == "char":
                points = item.tokens
                if points.dtype == np.uint8 or not len(points) or points.max() < len(lookup):
                    ids = lookup[points]
                else:  # characters beyond every kept one: <unk>
                    inside = points < len(lookup)
                    ids = np.zeros(len(points), dtype=dtype)
                    ids[inside] = lookup[points[inside]]
            else:
                words = item.tokens
                ids = np.fromiter(map(stoi.__getitem__, words), dtype=dtype, count=len(words))
            if item.doc:
                ids = np.concatenate([np.array([doc_id], dtype=dtype), ids])
            tokens.write(ids)
            if starts is not None:
                marks = np.zeros(len(ids), dtype=np.bool_)
                marks[:1] = item.doc
                starts.write(marks)
            if progress is not None:
                progress("ids", item.bytes, source.total_bytes)
    finally:
        files = {TOKENS: tokens.close()}
        if starts is not None:
            files[STARTS] = starts.close()
    return files


def _id_counts(counts: dict[str, int], vocab: Vocab) -> list[int]:
    """(V,) counts by id (every token not kept counted as <unk>)."""
    out = [0] * len(vocab)
    for token, c in counts.items():
        out[vocab.stoi.get(token, 0)] += c
    return out


def prepare(
    source: str | Path,
    out: str | Path,
    *,
    level: str = "char",
    normalization: str = "letters",
    valid_fraction: float = 0.1,
    min_freq: int = 1,
    max_vocab: int = 0,
    eos: bool = False,
    documents: bool = False,
    overwrite: bool = False,
    progress: Progress | None = None,
    block: int = BLOCK,
) -> dict:
    """Tokenize ``source`` (a text file, or a directory of documents) into the prepared
    directory ``out`` (see :mod:`tbptt.data.prepared`); returns its metadata.

    The token ids equal those :func:`~tbptt.data.prepare_text` (or
    :func:`~tbptt.data.documents.prepare_documents`) makes with the same options.
    ``progress(phase, bytes, phase_bytes)`` is called after every block of ``block`` bytes read.

    Raises:
        DataError: the input cannot be read or has too few tokens, or ``out`` exists
            (and is not a preparation ``overwrite`` may replace), or cannot be written.
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise DataError(f"valid fraction must be in [0, 1), got {valid_fraction}")
    eos = eos and level == "word"
    text = TextSource(
        source, level=level, normalization=normalization, eos=eos, documents=documents, block=block
    )
    out = Path(out).expanduser()
    check_target(out, overwrite, Path(source))  # before any work
    counts, n, docs, index = _count(text, progress)
    if n < 2:
        if normalization == "letters":
            advice, options = (
                "try the normalization 'none', or a longer file",
                ("data.normalize", "data.path"),
            )
        else:
            advice, options = "pass a longer file", ("data.path",)
        raise DataError(
            f"{source} has {n} {level} token(s) after normalization {normalization!r}; "
            f"it needs many more ({advice})",
            options=options,
        )
    n_valid = int(round(n * valid_fraction))
    n_train = n - n_valid
    if n_valid:
        tail, tail_docs = _tail_counts(text, index, n_train, progress)
    else:
        tail, tail_docs = _no_counts(level), 0
    del index
    if level == "char":
        train_counts = counts.copy()
        train_counts[: len(tail)] -= tail
        train_counts = _as_dict(train_counts, docs - tail_docs, level)
    else:
        train_counts = _as_dict(counts - tail, docs - tail_docs, level)
    valid_counts = _as_dict(tail, tail_docs, level)
    vocab = Vocab.from_counts(train_counts, min_freq=min_freq, max_size=max_vocab)
    if documents and DOC not in vocab:  # <doc> only in the validation tail: appended
        vocab = Vocab(itos=[*vocab.itos, DOC])
    dtype = file_dtype(len(vocab))

    def fill(tmp: Path) -> dict:
        files = _write_ids(text, vocab, tmp, dtype, progress)
        return {
            "format": FORMAT,
            "version": VERSION,
            "kind": "docs" if documents else "text",
            "level": level,
            "normalize": normalization,
            "eos": eos,
            "valid_fraction": valid_fraction,
            "min_freq": min_freq,
            "max_vocab": max_vocab,
            "dtype": np.dtype(dtype).name,
            "tokens": n,
            "train_tokens": n_train,
            "valid_tokens": n_valid,
            "documents": docs,
            "source": {"path": str(Path(source).expanduser().resolve()), "bytes": text.total_bytes},
            "files": files,
            "skipped": text.skipped,
            "vocab": vocab.itos,
            "vocab_sha256": vocab_sha256(vocab.itos),
            "train_counts": _id_counts(train_counts, vocab),
            "valid_counts": _id_counts(valid_counts, vocab),
        }

    return write_prepared(out, overwrite, fill, Path(source))
