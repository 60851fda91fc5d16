"""From raw text to a vocabulary and train / validation token streams."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tbptt.data.streams import StreamData, split_stream
from tbptt.data.tokenize import Vocab, normalize, tokenize
from tbptt.errors import DataError

__all__ = ["TextData", "prepare_text"]


@dataclass
class TextData:
    """A tokenized corpus.

    Attributes:
        vocab: built from the training split only (unseen validation tokens are ``<unk>``).
        train: (N_train,) token indices.
        valid: (N_valid,) token indices, the contiguous tail of the corpus.
        level: ``"char"`` or ``"word"``.
        normalize: the normalisation applied before tokenizing.
    """

    vocab: Vocab
    train: torch.Tensor
    valid: torch.Tensor
    level: str
    normalize: str

    @property
    def separator(self) -> str:
        return "" if self.level == "char" else " "

    def encode(self, text: str) -> torch.Tensor:
        return self.vocab.encode(tokenize(normalize(text, self.normalize), self.level))

    def decode(self, indices) -> str:
        return self.vocab.decode(indices, self.separator)

    def train_split(self) -> StreamData:
        """The training tokens as a next-token :class:`~tbptt.data.StreamData`."""
        return StreamData(self.train)

    def valid_split(self) -> StreamData:
        """The validation tokens as a next-token :class:`~tbptt.data.StreamData`."""
        return StreamData(self.valid)


def prepare_text(
    text: str,
    *,
    level: str = "char",
    normalization: str = "letters",
    valid_fraction: float = 0.1,
    min_freq: int = 1,
) -> TextData:
    """Normalize, tokenize, split (last ``valid_fraction`` for validation) and index ``text``."""
    tokens = tokenize(normalize(text, normalization), level)
    if len(tokens) < 2:
        raise DataError(
            f"the text has {len(tokens)} {level} token(s) after normalization "
            f"{normalization!r}; it needs many more (try --normalize none, or a longer file)"
        )
    n_valid = int(round(len(tokens) * valid_fraction))
    train_tokens = tokens[: len(tokens) - n_valid]
    vocab = Vocab(train_tokens, min_freq=min_freq)
    indices = vocab.encode(tokens)
    train, valid = split_stream(indices, valid_fraction)
    return TextData(vocab=vocab, train=train, valid=valid, level=level, normalize=normalization)
