"""What a run trains on: a :class:`Dataset` (train and validation splits, the shape of its
inputs and targets, its trivial baselines), and text as one: a vocabulary and token streams."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from tbptt.data.streams import StreamData, split_stream
from tbptt.data.tokenize import EOS, TokenIndexer, Vocab, normalize, tokenize
from tbptt.errors import DataError

__all__ = [
    "DataShape",
    "Dataset",
    "TextData",
    "prepare_text",
    "prepare_corpus",
    "unigram_perplexity",
    "unigram_perplexity_from_counts",
]


@dataclass(frozen=True)
class DataShape:
    """What a model and an objective need to know of a dataset's rows.

    Attributes:
        vocab_size: V for token-id inputs (0: float features).
        input_size: F for float-feature inputs (0: token ids).
        output_size: C classes or D values the model must output (0: ``vocab_size``,
            next-token prediction).
        objective: the objective the targets imply (``lm``, ``classify``, ``regress``).
    """

    vocab_size: int = 0
    input_size: int = 0
    output_size: int = 0
    objective: str = "lm"


@runtime_checkable
class Dataset(Protocol):
    """A training and a validation split, their shape, and baselines to beat.

    :class:`TextData`, :class:`~tbptt.data.series.SeriesData` and
    :class:`~tbptt.data.tasks.Task` are datasets.
    """

    @property
    def shape(self) -> DataShape: ...

    def train_split(self) -> StreamData: ...

    def valid_split(self) -> StreamData: ...

    def baselines(self) -> dict[str, dict[str, float]]:
        """Trivial predictors' validation metrics, e.g. ``{"unigram": {"ppl": 16.7}}``."""
        ...

    def describe(self) -> dict:
        """A JSON-ready summary (kind, sizes, options) for configurations and reports."""
        ...


def unigram_perplexity(train: torch.Tensor, valid: torch.Tensor, vocab_size: int) -> float:
    """Perplexity on ``valid`` of token frequencies counted on ``train`` (add-one smoothed)."""
    # counts of the ids (not ``log_p[valid]``: a uint8 index would be a mask)
    return unigram_perplexity_from_counts(
        torch.bincount(train.long(), minlength=vocab_size),
        torch.bincount(valid.long(), minlength=vocab_size),
    )


def unigram_perplexity_from_counts(train_counts: torch.Tensor, valid_counts: torch.Tensor) -> float:
    """:func:`unigram_perplexity` from (V,) counts of each id in the two splits."""
    counts = train_counts.double() + 1.0
    log_p = torch.log(counts / counts.sum())
    valid_counts = valid_counts.double()
    return math.exp(-float((valid_counts * log_p).sum() / valid_counts.sum()))


@dataclass
class TextData:
    """A tokenized corpus.

    Attributes:
        vocab: built from the training split only (unseen validation tokens are ``<unk>``).
        train: (N_train,) token indices, in the smallest integer type that holds the
            vocabulary (:func:`~tbptt.data.tokenize.compact_dtype`: one byte per token
            for a character vocabulary), so a corpus costs about a byte per token.
        valid: (N_valid,) token indices, the contiguous tail of the corpus.
        level: ``"char"`` or ``"word"``.
        normalize: the normalisation applied before tokenizing.
        test: (N_test,) token indices of a test file (None: none was given).
        eos: word level: each line end is the token ``<eos>``.
    """

    vocab: Vocab
    train: torch.Tensor
    valid: torch.Tensor
    level: str
    normalize: str
    test: torch.Tensor | None = field(default=None, kw_only=True)
    eos: bool = field(default=False, kw_only=True)

    @property
    def separator(self) -> str:
        return "" if self.level == "char" else " "

    def encode(self, text: str) -> torch.Tensor:
        text = normalize(text, self.normalize, keep_lines=self.eos)
        return self.vocab.encode(tokenize(text, self.level, eos=self.eos))

    def decode(self, indices) -> str:
        """Token ids -> text; with ``eos`` each ``<eos>`` is a line end again."""
        if not self.eos:
            return self.vocab.decode(indices, self.separator)
        itos = self.vocab.itos
        lines, words = [], []
        for i in indices:
            token = itos[int(i)]
            if token == EOS:
                lines.append(" ".join(words))
                words = []
            else:
                words.append(token)
        return "\n".join([*lines, " ".join(words)])

    def test_split(self) -> StreamData | None:
        """The test tokens as a next-token :class:`~tbptt.data.StreamData` (None: no test file)."""
        return StreamData(self.test) if self.test is not None else None

    def train_split(self) -> StreamData:
        """The training tokens as a next-token :class:`~tbptt.data.StreamData` (int64 ids)."""
        return StreamData(self.train)

    def valid_split(self) -> StreamData:
        """The validation tokens as a next-token :class:`~tbptt.data.StreamData` (int64 ids)."""
        return StreamData(self.valid)

    @property
    def shape(self) -> DataShape:
        return DataShape(vocab_size=len(self.vocab))

    def baselines(self) -> dict[str, dict[str, float]]:
        """The unigram model's validation perplexity (token frequencies of the training split)."""
        if len(self.valid) == 0:
            return {}
        return {"unigram": {"ppl": unigram_perplexity(self.train, self.valid, len(self.vocab))}}

    def describe(self) -> dict:
        return {
            "kind": "text",
            "level": self.level,
            "normalize": self.normalize,
            "vocab_size": len(self.vocab),
            "train_tokens": len(self.train),
            "valid_tokens": len(self.valid),
            **({"test_tokens": len(self.test)} if self.test is not None else {}),
            **({"eos": True} if self.eos else {}),
        }


def _lines_closed(text: str, eos: bool) -> str:
    """With an end-of-line token, a last line without its line end still ends one."""
    return text + "\n" if eos and text and not text.endswith("\n") else text


def prepare_text(
    text: str,
    *,
    level: str = "char",
    normalization: str = "letters",
    valid_fraction: float = 0.1,
    min_freq: int = 1,
    max_vocab: int = 0,
    eos: bool = False,
) -> TextData:
    """Normalize, tokenize, split (last ``valid_fraction`` for validation) and index ``text``.

    The same as ``Vocab(tokens[:n_train], min_freq=min_freq, max_size=max_vocab).encode(tokens)``
    with ``tokens = tokenize(normalize(text, normalization), level, eos=eos)``, without the
    list of tokens: the ids are built a piece of the text at a time (see :class:`TokenIndexer`).
    """
    eos = eos and level == "word"
    indexer = TokenIndexer(level, eos=eos)
    n = indexer.add(_lines_closed(normalize(text, normalization, keep_lines=eos), eos))
    if n < 2:
        raise DataError(
            f"the text has {n} {level} token(s) after normalization "
            f"{normalization!r}; it needs many more (try the normalization 'none', or a longer file)",
            options=("data.normalize", "data.path"),
        )
    if not 0.0 <= valid_fraction < 1.0:
        raise DataError(f"valid fraction must be in [0, 1), got {valid_fraction}")
    n_valid = int(round(n * valid_fraction))
    vocab, indices = indexer.finish(n - n_valid, min_freq=min_freq, max_size=max_vocab)
    train, valid = split_stream(indices, valid_fraction)
    return TextData(
        vocab=vocab, train=train, valid=valid, level=level, normalize=normalization, eos=eos
    )


def prepare_corpus(
    train: str,
    valid: str,
    test: str | None = None,
    *,
    level: str = "word",
    normalization: str = "none",
    min_freq: int = 1,
    max_vocab: int = 0,
    eos: bool = True,
) -> TextData:
    """A corpus given as separate training, validation and (optional) test texts (the PTB /
    WikiText layout): each normalized and tokenized alike, the vocabulary built from the
    training text only (validation and test tokens it lacks are ``<unk>``).
    """
    eos = eos and level == "word"
    indexer = TokenIndexer(level, eos=eos)
    sizes = []
    for name, text in (("training", train), ("validation", valid), ("test", test)):
        if text is None:
            continue
        n = indexer.add(_lines_closed(normalize(text, normalization, keep_lines=eos), eos))
        if n < (2 if name == "training" else 1):
            raise DataError(
                f"the {name} text has {n} {level} token(s) after normalization "
                f"{normalization!r}; it needs more",
                options=("data.normalize",),
            )
        sizes.append(n)
    vocab, indices = indexer.finish(sizes[0], min_freq=min_freq, max_size=max_vocab)
    parts = list(torch.split(indices, sizes))
    return TextData(
        vocab=vocab,
        train=parts[0],
        valid=parts[1],
        level=level,
        normalize=normalization,
        test=parts[2] if test is not None else None,
        eos=eos,
    )
