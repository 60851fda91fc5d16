"""The built-in model: an input adapter, a recurrent stack, a head.

Shapes: inputs (T, B) token ids or (T, B, F) float features; outputs
(T, B, O) -- logits over V tokens or C classes, or D values; state as in
:mod:`tbptt.models.recurrent`.

    tokens   (T, B)     -> embedding (or one-hot)  -> (T, B, I)
    features (T, B, F)  -> linear (or identity)    -> (T, B, I)
                           Recurrent               -> (T, B, H)
                           dropout, linear head    -> (T, B, O)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from tbptt.errors import ConfigError, DataError
from tbptt.models.constraints import constrain_spectral_norm
from tbptt.models.gating import State
from tbptt.models.recurrent import KINDS, Recurrent
from tbptt.models.zoneout import check_rates, zoneout_forward

__all__ = ["ModelConfig", "RecurrentLM", "RecurrentNet"]


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a :class:`RecurrentNet` (saved with checkpoints).

    Inputs are token ids when ``vocab_size`` > 0 (``embedding_size = 0`` feeds
    one-hot vectors, as the lecture does), float features of width
    ``input_size`` otherwise (``embedding_size`` > 0 projects them linearly,
    0 feeds them as they are). ``output_size`` is the head's width: 0 means
    ``vocab_size`` (a language model); C classes or D values otherwise.
    ``zoneout`` > 0 (or ``zoneout_cell`` > 0) runs the recurrent stack with
    zoneout (:mod:`tbptt.models.zoneout`): z_h = ``zoneout``, z_c =
    ``zoneout_cell`` (None: the same as ``zoneout``; LSTM only).
    """

    vocab_size: int = 0
    kind: str = "lstm"
    hidden_size: int = 256
    num_layers: int = 2
    embedding_size: int = 64
    dropout: float = 0.1
    zoneout: float = 0.0
    zoneout_cell: float | None = None
    # > 0: bound the spectral norm of every recurrent block (tbptt.models.constraints)
    spectral_norm: float = 0.0
    input_size: int = 0
    output_size: int = 0

    @property
    def tokens(self) -> bool:
        """True when the inputs are token ids (``vocab_size`` > 0)."""
        return self.vocab_size > 0

    @property
    def head_size(self) -> int:
        return self.output_size or self.vocab_size

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        """From :meth:`to_dict`'s output; every unknown key is reported at once."""
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(
                f"unknown model option(s) {', '.join(unknown)}; expected some of {', '.join(sorted(names))}"
            )
        return cls(**d)

    def check(self) -> None:
        """Raise one :class:`ConfigError` listing every invalid option."""
        problems = []
        if self.kind not in KINDS:
            problems.append(f"unknown model {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.vocab_size < 0 or self.vocab_size == 1:
            problems.append(f"vocabulary size must be at least 2, got {self.vocab_size}")
        if (self.vocab_size > 0) == (self.input_size > 0):
            problems.append(
                "give exactly one of vocab_size (token inputs) and input_size (float features), "
                f"got vocab_size={self.vocab_size}, input_size={self.input_size}"
            )
        if self.output_size < 0 or self.head_size < 1:
            problems.append(
                f"output size must be at least 1 (0 = the vocabulary size), got {self.output_size}"
            )
        if self.embedding_size < 0:
            problems.append(
                f"embedding size must be >= 0 (0 = one-hot or identity), got {self.embedding_size}"
            )
        if problems:
            raise ConfigError("; ".join(problems))


class RecurrentNet(nn.Module):
    """Input adapter -> :class:`Recurrent` -> linear head (see the module docstring).

    ``forward(inputs, state, gates, *, resets)`` takes inputs (T, B) ids or
    (T, B, F) features, a state (or None for zeros), optional per-step gates
    (T,) and per-stream resets (T, B), and returns outputs (T, B, O) and the
    final state. Dropout applies to the adapted inputs, between layers and
    before the head, at training time only.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.check()
        cell_rate = config.zoneout if config.zoneout_cell is None else config.zoneout_cell
        check_rates(config.zoneout, cell_rate)
        self.config = config
        self.embedding: nn.Module | None = None
        if config.tokens and config.embedding_size:
            self.embedding = nn.Embedding(config.vocab_size, config.embedding_size)
        elif not config.tokens and config.embedding_size:
            self.embedding = nn.Linear(config.input_size, config.embedding_size)
        width = config.embedding_size or (config.vocab_size if config.tokens else config.input_size)
        self.recurrent = Recurrent(
            config.kind,
            input_size=width,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout,
        )
        if config.spectral_norm:
            constrain_spectral_norm(self.recurrent, config.spectral_norm)
        self.head = nn.Linear(config.hidden_size, config.head_size)
        self.drop = nn.Dropout(config.dropout)

    def initial_state(self, batch_size: int) -> State:
        return self.recurrent.initial_state(batch_size)

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        """(T, B) ids or (T, B, F) features -> (T, B, I) input vectors."""
        dtype = self.head.weight.dtype
        if self.config.tokens:
            if inputs.is_floating_point():
                raise ConfigError(
                    f"Expected token ids (T, B) for a model with a vocabulary, got "
                    f"{inputs.dtype} {tuple(inputs.shape)}; float features need input_size"
                )
            self._check_token_ids(inputs)
            inputs = (
                inputs.long()
            )  # ids may be stored compactly (uint8, int16); torch indexes int64
            if self.embedding is None:
                return F.one_hot(inputs, self.config.vocab_size).to(dtype)
            return self.drop(self.embedding(inputs))
        if inputs.dim() != 3 or inputs.shape[-1] != self.config.input_size:
            raise ConfigError(
                f"Expected float inputs of shape (T, B, {self.config.input_size}), got "
                f"{inputs.dtype} {tuple(inputs.shape)}"
            )
        inputs = inputs.to(dtype)
        return self.drop(self.embedding(inputs)) if self.embedding is not None else inputs

    def _check_token_ids(self, inputs: torch.Tensor) -> None:
        """Refuse ids outside [0, vocab_size) in one line, before the embedding's IndexError
        (or a device-side assert on CUDA). One min/max reduction per call."""
        if inputs.numel() == 0:
            return
        low, high = (int(v) for v in torch.aminmax(inputs))
        if low < 0 or high >= self.config.vocab_size:
            bad = low if low < 0 else high
            raise DataError(
                f"Expected token ids in [0, {self.config.vocab_size - 1}] (the vocabulary's "
                f"{self.config.vocab_size} tokens), got {bad}; encode the data with the "
                "vocabulary the model was built for, or build the model with a larger "
                "vocab_size",
                options=("model.vocab_size",),
            )

    def forward(
        self,
        inputs: torch.Tensor,
        state: State | None = None,
        gates: Sequence[float] | None = None,
        *,
        resets: torch.Tensor | None = None,
        path: str = "auto",
    ) -> tuple[torch.Tensor, State]:
        if self.config.zoneout > 0 or (self.config.zoneout_cell or 0) > 0:
            outputs, state = zoneout_forward(
                self.recurrent,
                self.embed(inputs),
                state,
                gates,
                resets=resets,
                hidden_rate=self.config.zoneout,
                cell_rate=self.config.zoneout_cell,
            )  # (T, B, H)
        else:
            outputs, state = self.recurrent(
                self.embed(inputs), state, gates, resets=resets, path=path
            )  # (T, B, H)
        return self.head(self.drop(outputs)), state  # (T, B, O)


RecurrentLM = RecurrentNet  # the name of the language-model use, kept for existing code
