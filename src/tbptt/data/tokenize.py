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

import numpy as np
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
    "UNK",
    "EOS",
    "vocab_difference",
]

TOKENIZERS = ("char", "word")
NORMALIZERS = ("letters", "none")
UNK = "<unk>"
EOS = "<eos>"
_NON_LETTERS = re.compile(r"[^A-Za-z]+")
_LETTER_BYTES = bytes(
    b + 32 if 65 <= b <= 90 else b if 97 <= b <= 122 else 32 for b in range(256)
)  # A-Z -> a-z, a-z kept, every other byte -> space
# the same, with line ends kept (word level with an end-of-line token)
_LETTER_LINE_BYTES = _LETTER_BYTES[:10] + b"\n" + _LETTER_BYTES[11:]


def _collapse_spaces(raw: bytes) -> bytes | bytearray:
    """Every run of spaces in ``raw`` as one space (``re.sub(rb" {2,}", b" ", raw)``, ~10x faster)."""
    if b"  " not in raw:
        return raw  # nothing to collapse: no copy
    codes = np.frombuffer(raw, dtype=np.uint8)
    out = bytearray(len(raw))
    at, step = 0, 1 << 18
    for start in range(0, len(codes), step):  # a piece at a time: small temporaries
        part = codes[start : start + step]
        before = codes[start - 1 : start - 1 + len(part)] if start else np.r_[0, part[:-1]]
        keep = part != 32
        keep |= before != 32  # a space right after a space goes
        kept = part[keep]
        out[at : at + len(kept)] = memoryview(kept)
        at += len(kept)
    del out[at:]
    return out


_PIECE = 1 << 23  # characters indexed at a time: bounds the temporary memory of one piece


def normalize(text: str, how: str = "letters", *, keep_lines: bool = False) -> str:
    """Apply the named normalisation (see the module docstring).

    ``keep_lines``: "letters" keeps line ends (``\\n``) for an end-of-line token.
    """
    if how == "letters":
        return _letters(text, _LETTER_LINE_BYTES if keep_lines else _LETTER_BYTES)
    if how == "none":
        return text
    raise ConfigError(f"unknown normalization {how!r}; expected one of {', '.join(NORMALIZERS)}")


def _letters(text: str, table: bytes = _LETTER_BYTES) -> str:
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
        piece = _collapse_spaces(raw.translate(table)).decode("ascii")
        if after_space:
            piece = piece.lstrip(" ")
        if piece:
            out.append(piece)
            after_space = piece.endswith(" ")
    return "".join(out).rstrip(" ")


def _words(text: str, eos: bool) -> list[str]:
    """Whitespace-separated words; with ``eos``, each line end (``\\n``) is the token ``<eos>``."""
    return text.replace("\n", f" {EOS} ").split() if eos else text.split()


def tokenize(text: str, level: str = "char", *, eos: bool = False) -> list[str]:
    """Split text into characters (``"char"``) or whitespace-separated words (``"word"``).

    ``eos`` (word level): every line end becomes the token ``<eos>``, as the classic
    word-level language models read PTB and WikiText.
    """
    if level == "char":
        return list(text)
    if level == "word":
        return _words(text, eos)
    raise ConfigError(f"unknown tokenizer {level!r}; expected one of {', '.join(TOKENIZERS)}")


class Vocab:
    """Token <-> index map. Index 0 is ``<unk>``; the rest are sorted by falling frequency.

    Tokens seen fewer than ``min_freq`` times map to ``<unk>``, and so do all but the
    ``max_size - 1`` most frequent ones (``max_size`` 0: no limit; ties broken by the
    token's text). A corpus's own ``<unk>`` (PTB, WikiText) *is* index 0: its count and
    the words left out share the one unknown token, as the corpus intends.
    """

    def __init__(
        self,
        tokens: Iterable[str] = (),
        *,
        min_freq: int = 1,
        max_size: int = 0,
        itos: Sequence[str] = (),
    ):
        if itos:
            self.itos = list(itos)
        else:
            self.itos = _ranked(Counter(tokens), min_freq, max_size)
        if self.itos[0] != UNK or len(set(self.itos)) != len(self.itos):
            raise DataError("a vocabulary must start with <unk> and have no duplicate tokens")
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    @classmethod
    def from_counts(cls, counts: dict[str, int], *, min_freq: int = 1, max_size: int = 0) -> Vocab:
        """The vocabulary ``Vocab(tokens, min_freq=..., max_size=...)`` builds, from token counts."""
        return cls(itos=_ranked(counts, min_freq, max_size))

    def encode(self, tokens: Iterable[str]) -> torch.Tensor:
        """Tokens -> int64 tensor of shape (N,); unknown tokens become 0."""
        get = self.stoi.get
        return torch.tensor([get(t, 0) for t in tokens], dtype=torch.long)

    def decode(self, indices: Iterable[int], sep: str = "") -> str:
        return sep.join(self.itos[int(i)] for i in indices)


def _few(tokens: list[str], shown: int = 3) -> str:
    listed = ", ".join(repr(t) for t in tokens[:shown])
    return listed + (f" and {len(tokens) - shown} more" if len(tokens) > shown else "")


def vocab_difference(
    there: Sequence[str], here: Sequence[str], *, names: tuple[str, str] = ("there", "here")
) -> str:
    """What differs between two vocabularies (id order), in a few words for a message: the
    tokens only one of them holds, or else the first id they give different tokens.
    ``names``: how the message calls the two.

    >>> vocab_difference(["<unk>", "a", "b"], ["<unk>", "b", "a"])
    "the same 3 tokens in another order (id 1 is 'a' there, 'b' here)"
    """
    there, here = list(there), list(here)
    in_there, in_here = set(there), set(here)
    only_there = [t for t in there if t not in in_here]
    only_here = [t for t in here if t not in in_there]
    parts = [f"{_few(only_there)} only {names[0]}"] if only_there else []
    parts += [f"{_few(only_here)} only {names[1]}"] if only_here else []
    if parts:
        return "; ".join(parts)
    first = next((i for i, (a, b) in enumerate(zip(there, here)) if a != b), None)
    if first is None:
        return "none"
    return (
        f"the same {len(there)} tokens in another order (id {first} is {there[first]!r} "
        f"{names[0]}, {here[first]!r} {names[1]})"
    )


def _ranked(counts: dict[str, int], min_freq: int, max_size: int) -> list[str]:
    """``<unk>`` and the kept tokens by falling count (see :class:`Vocab`)."""
    kept = sorted(
        (t for t, c in counts.items() if c >= max(1, min_freq) and t != UNK),
        key=lambda t: (-counts[t], t),
    )
    if max_size > 0:
        kept = kept[: max_size - 1]
    return [UNK, *kept]


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

    ``specials`` (e.g. ``<doc>``) are tokens added with :meth:`add_token`. ``eos``
    (word level): each line end is the token ``<eos>`` (see :func:`tokenize`).
    """

    def __init__(self, level: str = "char", specials: Sequence[str] = (), *, eos: bool = False):
        if level not in TOKENIZERS:
            raise ConfigError(
                f"unknown tokenizer {level!r}; expected one of {', '.join(TOKENIZERS)}"
            )
        self.level = level
        self.eos = eos and level == "word"
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
                ids = [index.setdefault(w, len(index)) for w in _words(piece, self.eos)]
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

    def finish(
        self, train_tokens: int, *, min_freq: int = 1, max_size: int = 0
    ) -> tuple[Vocab, torch.Tensor]:
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
            max_size=max_size,
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
