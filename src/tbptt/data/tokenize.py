"""Tokenizers and the vocabulary.

Character level is the lecture's setting; word level is the classic language
modelling one. The lecture's normalisation (``normalize="letters"``) lowercases
letters and turns every run of anything else into one space; ``"none"`` keeps
the text as it is (any UTF-8 text).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import torch

from tbptt.errors import ConfigError, DataError

__all__ = ["TOKENIZERS", "NORMALIZERS", "normalize", "tokenize", "Vocab"]

TOKENIZERS = ("char", "word")
NORMALIZERS = ("letters", "none")
UNK = "<unk>"
_NON_LETTERS = re.compile(r"[^A-Za-z]+")


def normalize(text: str, how: str = "letters") -> str:
    """Apply the named normalisation (see the module docstring)."""
    if how == "letters":
        return _NON_LETTERS.sub(" ", text).lower().strip()
    if how == "none":
        return text
    raise ConfigError(f"unknown normalization {how!r}; expected one of {', '.join(NORMALIZERS)}")


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

    def encode(self, tokens: Iterable[str]) -> torch.Tensor:
        """Tokens -> int64 tensor of shape (N,); unknown tokens become 0."""
        get = self.stoi.get
        return torch.tensor([get(t, 0) for t in tokens], dtype=torch.long)

    def decode(self, indices: Iterable[int], sep: str = "") -> str:
        return sep.join(self.itos[int(i)] for i in indices)
