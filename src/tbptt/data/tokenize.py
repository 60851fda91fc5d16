"""Tokenizers and the vocabulary.

Character level is the lecture's setting; word level is the classic language
modelling one. The lecture's normalisation (``normalize="letters"``) lowercases
letters and turns every run of anything else into one space; ``"none"`` keeps
the text as it is (any UTF-8 text).

A long text is indexed without a Python object per token: :func:`index_text` turns
it, a piece at a time, into a tensor of token ids in the smallest integer type
that holds the vocabulary (:func:`compact_dtype`; one byte per token for a
character vocabulary under 256), so a corpus costs a few bytes per token, not
the ~32 bytes per character of a list of one-character strings.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import torch

from tbptt.errors import ConfigError, DataError

__all__ = [
    "TOKENIZERS",
    "NORMALIZERS",
    "normalize",
    "tokenize",
    "Vocab",
    "compact_dtype",
    "TokenIndexer",
]

TOKENIZERS = ("char", "word")
NORMALIZERS = ("letters", "none")
UNK = "<unk>"
_NON_LETTERS = re.compile(r"[^A-Za-z]+")
_LETTER_BYTES = bytes(
    b + 32 if 65 <= b <= 90 else b if 97 <= b <= 122 else 32 for b in range(256)
)  # A-Z -> a-z, a-z kept, every other byte -> space
_SPACES = re.compile(rb" {2,}")
_PIECE = 1 << 23  # characters indexed at a time: bounds the temporary memory of one piece


def normalize(text: str, how: str = "letters") -> str:
    """Apply the named normalisation (see the module docstring)."""
    if how == "letters":
        return _letters(text)
    if how == "none":
        return text
    raise ConfigError(f"unknown normalization {how!r}; expected one of {', '.join(NORMALIZERS)}")


def _letters(text: str) -> str:
    """``_NON_LETTERS.sub(" ", text).lower().strip()``, a piece at a time on UTF-8 bytes.

    Every byte of a non-ASCII character is >= 0x80, so a non-letter, and the
    bytes of a run of non-letters collapse to one space just as its characters
    would. A byte table maps letters to lower case and the rest to spaces; only
    runs of two or more spaces are then collapsed (the regular expression
    matches every gap between two words, and takes ~10x longer on a long text).
    """
    out = []
    after_space = True  # drops the leading spaces (strip)
    for start in range(0, len(text), _PIECE):
        raw = text[start : start + _PIECE].encode("utf-8", "surrogatepass")
        piece = _SPACES.sub(b" ", raw.translate(_LETTER_BYTES)).decode("ascii")
        if after_space:
            piece = piece.lstrip(" ")
        if piece:
            out.append(piece)
            after_space = piece.endswith(" ")
    return "".join(out).rstrip(" ")


def tokenize(text: str, level: str = "char") -> list[str]:
    """Split text into characters (``"char"``) or whitespace-separated words (``"word"``)."""
    if level == "char":
        return list(text)
    if level == "word":
        return text.split()
    raise ConfigError(f"unknown tokenizer {level!r}; expected one of {', '.join(TOKENIZERS)}")


class Vocab:
    """Token <-> index map. Index 0 is ``<unk>``; the rest are sorted by falling frequency.

    Tokens seen fewer than ``min_freq`` times map to ``<unk>``.
    """

    def __init__(self, tokens: Iterable[str] = (), *, min_freq: int = 1, itos: Sequence[str] = ()):
        if itos:
            self.itos = list(itos)
        else:
            counts = Counter(tokens)
            kept = sorted(
                (t for t, c in counts.items() if c >= min_freq and t != UNK),
                key=lambda t: (-counts[t], t),
            )
            self.itos = [UNK, *kept]
        if self.itos[0] != UNK or len(set(self.itos)) != len(self.itos):
            raise DataError("a vocabulary must start with <unk> and have no duplicate tokens")
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    @classmethod
    def from_counts(cls, counts: dict[str, int], *, min_freq: int = 1) -> Vocab:
        """The vocabulary ``Vocab(tokens, min_freq=min_freq)`` builds, from token counts."""
        kept = sorted(
            (t for t, c in counts.items() if c >= max(1, min_freq) and t != UNK),
            key=lambda t: (-counts[t], t),
        )
        return cls(itos=[UNK, *kept])

    def encode(self, tokens: Iterable[str]) -> torch.Tensor:
        """Tokens -> int64 tensor of shape (N,); unknown tokens become 0."""
        get = self.stoi.get
        return torch.tensor([get(t, 0) for t in tokens], dtype=torch.long)

    def decode(self, indices: Iterable[int], sep: str = "") -> str:
        return sep.join(self.itos[int(i)] for i in indices)


def compact_dtype(vocab_size: int) -> torch.dtype:
    """The smallest integer type that holds the ids 0 .. vocab_size - 1."""
    if vocab_size <= 1 << 8:
        return torch.uint8
    if vocab_size <= 1 << 15:
        return torch.int16
    if vocab_size <= 1 << 31:
        return torch.int32
    return torch.int64


def _pieces(text: str, level: str) -> Iterable[str]:
    # Cut at whitespace for words, so no word is split between two pieces.
    start = 0
    while start < len(text):
        stop = min(len(text), start + _PIECE)
        if level == "word" and stop < len(text):
            while stop < len(text) and not text[stop].isspace():
                stop += 1
        yield text[start:stop]
        start = stop


class TokenIndexer:
    """Indexes texts into one stream of token ids without a Python object per token.

    Tokens get provisional ids in the order they are first seen; :meth:`finish`
    counts them over the training part, builds the :class:`Vocab` (the same one
    ``Vocab(training tokens, min_freq=...)`` builds) and returns the stream
    re-indexed by it, in :func:`compact_dtype` of the vocabulary. Characters
    are indexed by code point, a piece of the text at a time; words one piece's
    ``split()`` at a time.

    ``specials`` (e.g. ``<doc>``) are tokens added with :meth:`add_token`.
    """

    def __init__(self, level: str = "char", specials: Sequence[str] = ()):
        if level not in TOKENIZERS:
            raise ConfigError(
                f"unknown tokenizer {level!r}; expected one of {', '.join(TOKENIZERS)}"
            )
        self.level = level
        self.index: dict[str, int] = {t: i for i, t in enumerate(specials)}
        self.chunks: list[torch.Tensor] = []
        self.length = 0

    def _store(self, ids: torch.Tensor) -> None:
        self.chunks.append(ids.to(compact_dtype(len(self.index))))
        self.length += len(ids)

    def add_token(self, token: str) -> None:
        self._store(torch.tensor([self.index.setdefault(token, len(self.index))]))

    def add(self, text: str) -> int:
        """Append the tokens of ``text``; return how many there were."""
        before = self.length
        for piece in _pieces(text, self.level):
            if self.level == "word":
                index = self.index
                ids = [index.setdefault(w, len(index)) for w in piece.split()]
                if ids:
                    self._store(torch.tensor(ids, dtype=torch.int64))
                continue
            # (n,) code points: one byte per character for ASCII, else utf-32's 4 bytes
            if piece.isascii():
                points = torch.frombuffer(bytearray(piece.encode("ascii")), dtype=torch.uint8)
            else:
                raw = bytearray(piece.encode("utf-32-le", "surrogatepass"))
                points = torch.frombuffer(raw, dtype=torch.int32)
            points = points.int()  # an index, not a uint8 mask
            seen = torch.bincount(points).nonzero().flatten().tolist()
            lookup = torch.zeros(seen[-1] + 1, dtype=torch.int64)
            for point in seen:
                lookup[point] = self.index.setdefault(chr(point), len(self.index))
            self._store(lookup[points])
        return self.length - before

    def finish(self, train_tokens: int, *, min_freq: int = 1) -> tuple[Vocab, torch.Tensor]:
        """The vocabulary of the first ``train_tokens`` tokens and the (N,) re-indexed stream."""
        provisional = list(self.index)
        counts = torch.zeros(len(provisional), dtype=torch.int64)
        seen = 0
        for chunk in self.chunks:
            take = min(len(chunk), train_tokens - seen)
            if take <= 0:
                break
            counts += torch.bincount(chunk[:take].long(), minlength=len(provisional))
            seen += take
        vocab = Vocab.from_counts(
            {t: int(c) for t, c in zip(provisional, counts.tolist(), strict=True)},
            min_freq=min_freq,
        )
        # provisional id -> final id (0, <unk>, for tokens not kept)
        lookup = torch.tensor([vocab.stoi.get(t, 0) for t in provisional], dtype=torch.int64)
        lookup = lookup.to(compact_dtype(len(vocab)))
        out = torch.empty(self.length, dtype=compact_dtype(len(vocab)))
        chunks, self.chunks, self.length = self.chunks, [], 0
        at = 0
        for i, chunk in enumerate(chunks):
            chunks[i] = None  # freed as soon as it is copied
            out[at : at + len(chunk)] = lookup[chunk.long()]
            at += len(chunk)
        return vocab, out
