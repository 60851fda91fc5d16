"""What a run trains on: a :class:`Dataset` (train and validation splits, the shape of its
inputs and targets, its trivial baselines), and text as one: a vocabulary and token streams."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Protocol, runtime_checkable

import torch

from tbptt.data.identity import ids_sha256, split_digest, text_identity
from tbptt.data.streams import StreamData, split_stream
from tbptt.data.tokenize import EOS, TokenIndexer, Vocab, compact_dtype, normalize, tokenize
from tbptt.errors import DataError

__all__ = [
    "DataShape",
    "Dataset",
    "DatasetBase",
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
    """What a run trains on, and everything about it that depends on its kind.

    The code above the data layer asks; the kind answers. :class:`TextData`
    (and its documents and prepared forms), :class:`~tbptt.data.series.SeriesData`,
    :class:`~tbptt.data.tasks.Task` and :class:`StreamDataset` (your own splits) are
    datasets; :class:`DatasetBase` gives the answers most kinds share.

    Attributes:
        unit: what one row is, in words for a log line ("char tokens", "rows").
        outputs: what a run writes at its end besides curves and summary:
            "sample" (a text continued) and/or "predictions" (a series' validation
            forecasts, in its own units).
        model: a built-in model the data requires (a task such as influence balancing
            names its own), else None.
    """

    unit: str
    outputs: tuple[str, ...]
    model: str | None

    @property
    def shape(self) -> DataShape: ...

    def train_split(self) -> StreamData: ...

    def valid_split(self) -> StreamData: ...

    def test_split(self) -> StreamData | None:
        """A held-out test split (None: the data has none)."""
        ...

    def baselines(self, split: str = "valid") -> dict[str, dict[str, float]]:
        """Trivial predictors' metrics on ``split``, e.g. ``{"unigram": {"ppl": 16.7}}``."""
        ...

    def describe(self) -> dict:
        """A JSON-ready summary (kind, sizes, options) for configurations and reports."""
        ...

    def identity(self) -> str:
        """A digest of the rows a run trains and is scored on: equal for the same data in any
        form (a text and its preparation, a CSV and its prepared series)."""
        ...

    def vocabulary(self) -> list[str] | None:
        """The token of each id (None: the rows are not tokens)."""
        ...

    def with_vocabulary(self, itos: list[str]) -> Dataset:
        """The same data indexed by ``itos`` (a trained run's vocabulary)."""
        ...

    def reading(self) -> str:
        """How the source was read, in words (e.g. the normalization), or ""."""
        ...

    def output_prior(self) -> torch.Tensor | None:
        """(O,) training counts of each output a model should start from (a word-level
        vocabulary: the unigram baseline), else None."""
        ...

    def target_scale(self) -> torch.Tensor | None:
        """(D,) the factor from the targets as trained to the data's own units (a
        standardized series), else None."""
        ...

    def recipe(self) -> dict[str, object]:
        """The run options that measure best on this kind of data, as dotted keys
        (``{"model.hidden_size": 32}``): a run's defaults where its user chose nothing."""
        ...


class DatasetBase:
    """The answers most kinds share: no test split, no vocabulary, no outputs of its own,
    an identity that is the digest of its splits' tensors."""

    unit = "rows"
    outputs: tuple[str, ...] = ()
    # ``model`` (the Protocol's) is each kind's own: a task's is a dataclass field.

    def test_split(self) -> StreamData | None:
        return None

    def baselines(self, split: str = "valid") -> dict[str, dict[str, float]]:
        return {}

    def identity(self) -> str:
        splits = [self.train_split(), self.valid_split(), self.test_split()]
        return split_digest(type(self).__name__, [s for s in splits if s is not None])

    def vocabulary(self) -> list[str] | None:
        return None

    def with_vocabulary(self, itos: list[str]):
        return self

    def reading(self) -> str:
        return ""

    def output_prior(self) -> torch.Tensor | None:
        return None

    def target_scale(self) -> torch.Tensor | None:
        return None

    def recipe(self) -> dict[str, object]:
        return {}

    #: (order, ridge penalty) of the linear highway a forecaster starts from (a series), else None
    highway: tuple[int, float] | None = None
    #: the evaluation columns the data must be scored in (a series: 1), else None (the config's)
    eval_columns: int | None = None


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


_NORMALIZATIONS = {
    "letters": "normalization letters (lowercase letters only, the lecture's)",
    "none": "text read as it is (no normalization)",
}


@dataclass
class TextData(DatasetBase):
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
    min_freq: int = field(default=1, kw_only=True)
    max_vocab: int = field(default=0, kw_only=True)
    gutenberg_stripped: bool = field(default=False, kw_only=True)

    outputs = ("sample",)
    model = None

    @property
    def unit(self) -> str:
        return f"{self.level} tokens"

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

    def baselines(self, split: str = "valid") -> dict[str, dict[str, float]]:
        """The unigram model's perplexity on ``split`` (token frequencies of the training split)."""
        tokens = self.test if split == "test" else self.valid
        if tokens is None or len(tokens) == 0:
            return {}
        return {"unigram": {"ppl": unigram_perplexity(self.train, tokens, len(self.vocab))}}

    def starts(self) -> list[torch.Tensor]:
        """(N,) bool document starts of each split ([]: not documents)."""
        marks = [self.train_split().starts, self.valid_split().starts]
        if all(m is None for m in marks):
            return []
        return [
            m if m is not None else torch.zeros(n, dtype=torch.bool)
            for m, n in zip(marks, (len(self.train), len(self.valid)))
        ]

    def identity(self) -> str:
        """Its vocabulary, split sizes and ids: the same for a text and its preparation."""
        parts = [self.train, self.valid] + ([self.test] if self.test is not None else [])
        starts = self.starts()
        return text_identity(
            self.vocab.itos,
            tuple(len(p) for p in parts),
            ids_sha256(parts, len(self.vocab)),
            ids_sha256(starts, 2) if starts else "",
        )

    def vocabulary(self) -> list[str]:
        return list(self.vocab.itos)

    def with_vocabulary(self, itos: list[str]) -> TextData:
        """Its tokens indexed by ``itos`` (tokens ``itos`` lacks become ``<unk>``)."""
        if list(itos) == self.vocab.itos:
            return self
        vocab = Vocab(itos=list(itos))
        lookup = vocab.encode(self.vocab.itos).to(compact_dtype(len(vocab)))  # (V_self,)
        # .long(): the ids are stored compact, and a uint8 index would be read as a mask
        return replace(
            self,
            vocab=vocab,
            train=lookup[self.train.long()],
            valid=lookup[self.valid.long()],
            test=lookup[self.test.long()] if self.test is not None else None,
        )

    def reading(self) -> str:
        """``normalization letters (...)`` or ``text read as it is``, and the word options."""
        parts = [_NORMALIZATIONS.get(self.normalize, f"normalization {self.normalize}")]
        if self.eos:
            parts.append("<eos> at line ends")
        if self.min_freq > 1:
            parts.append(f"tokens seen < {self.min_freq} times are <unk>")
        if self.max_vocab:
            parts.append(f"at most {self.max_vocab} tokens")
        if self.gutenberg_stripped:
            parts.append("Gutenberg header and footer removed")
        return ", ".join(parts)

    def output_prior(self) -> torch.Tensor | None:
        """Word level: the training count of each token (a model starts at the unigram)."""
        if self.level != "word":
            return None
        return torch.bincount(self.train.long(), minlength=len(self.vocab))

    def opening(self, n: int = 10) -> torch.Tensor:
        """The first ``n`` validation tokens (the training ones if validation is shorter)."""
        return self.valid[:n] if len(self.valid) >= n else self.train[:n]

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
        letters = normalization == "letters"
        advice = (
            "try the normalization 'none', or a longer file" if letters else "pass a longer text"
        )
        raise DataError(
            f"the text has {n} {level} token(s) after normalization {normalization!r}; "
            f"it needs many more ({advice})",
            options=("data.normalize", "data.path") if letters else ("data.path",),
        )
    if not 0.0 <= valid_fraction < 1.0:
        raise DataError(f"valid fraction must be in [0, 1), got {valid_fraction}")
    n_valid = int(round(n * valid_fraction))
    vocab, indices = indexer.finish(n - n_valid, min_freq=min_freq, max_size=max_vocab)
    train, valid = split_stream(indices, valid_fraction)
    return TextData(
        vocab=vocab,
        train=train,
        valid=valid,
        level=level,
        normalize=normalization,
        eos=eos,
        min_freq=min_freq,
        max_vocab=max_vocab,
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
        min_freq=min_freq,
        max_vocab=max_vocab,
    )
