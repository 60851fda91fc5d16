"""The language model: token input, a recurrent stack, a vocabulary head.

Shapes: inputs (T, B) token indices, logits (T, B, V), state as in
:mod:`tbptt.models.recurrent`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from tbptt.errors import ConfigError
from tbptt.models.constraints import constrain_spectral_norm
from tbptt.models.gating import State
from tbptt.models.recurrent import KINDS, Recurrent
from tbptt.models.zoneout import check_rates, zoneout_forward

__all__ = ["ModelConfig", "RecurrentLM"]


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a :class:`RecurrentLM` (saved with checkpoints).

    ``embedding_size = 0`` feeds one-hot vectors, as the lecture does.
    ``zoneout`` > 0 (or ``zoneout_cell`` > 0) runs the recurrent stack with
    zoneout (:mod:`tbptt.models.zoneout`): z_h = ``zoneout``, z_c =
    ``zoneout_cell`` (None: the same as ``zoneout``; LSTM only).
    """

    vocab_size: int
    kind: str = "lstm"
    hidden_size: int = 256
    num_layers: int = 2
    embedding_size: int = 64
    dropout: float = 0.1
    zoneout: float = 0.0
    zoneout_cell: float | None = None
    # > 0: bound the spectral norm of every recurrent block (tbptt.models.constraints)
    spectral_norm: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class RecurrentLM(nn.Module):
    """Embedding (or one-hot) -> :class:`Recurrent` -> linear head over the vocabulary.

    ``forward(inputs, state, gates)`` takes inputs (T, B), a state (or None for
    zeros) and optional per-step gates (T,), and returns logits (T, B, V) and
    the final state. Dropout applies to the embedding, between layers and
    before the head, at training time only.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.kind not in KINDS:
            raise ConfigError(f"unknown model {config.kind!r}; expected one of {', '.join(KINDS)}")
        if config.vocab_size < 2:
            raise ConfigError(f"vocabulary size must be at least 2, got {config.vocab_size}")
        if config.embedding_size < 0:
            raise ConfigError(
                f"embedding size must be >= 0 (0 = one-hot), got {config.embedding_size}"
            )
        cell_rate = config.zoneout if config.zoneout_cell is None else config.zoneout_cell
        check_rates(config.zoneout, cell_rate)
        self.config = config
        input_size = config.embedding_size or config.vocab_size
        self.embedding = (
            nn.Embedding(config.vocab_size, config.embedding_size)
            if config.embedding_size
            else None
        )
        self.recurrent = Recurrent(
            config.kind,
            input_size=input_size,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout,
        )
        if config.spectral_norm:
            constrain_spectral_norm(self.recurrent, config.spectral_norm)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        self.drop = nn.Dropout(config.dropout)

    def initial_state(self, batch_size: int) -> State:
        return self.recurrent.initial_state(batch_size)

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        """(T, B) indices -> (T, B, I) input vectors."""
        if self.embedding is None:
            return F.one_hot(inputs, self.config.vocab_size).to(self.head.weight.dtype)
        return self.drop(self.embedding(inputs))

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
        return self.head(self.drop(outputs)), state  # (T, B, V)
