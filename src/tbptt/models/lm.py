"""The built-in model: an input adapter, a recurrent stack, a head.

Shapes: inputs (T, B) token ids or (T, B, F) float features; outputs
(T, B, O) -- logits over V tokens or C classes, or D values; state as in
:mod:`tbptt.models.recurrent`.

    tokens   (T, B)     -> embedding (or one-hot)  -> (T, B, I)
    features (T, B, F)  -> linear (or identity)    -> (T, B, I)
                           Recurrent               -> (T, B, H)
                           dropout, linear head    -> (T, B, O)

A language model's head may instead be an adaptive softmax
(:mod:`tbptt.models.adaptive`: log-probabilities (T, B, V) in evaluation, per-target
scoring in training) or share the embedding's weights (``tie_weights``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from tbptt.errors import ConfigError, DataError
from tbptt.models.adaptive import AdaptiveHead, parse_cutoffs
from tbptt.models.constraints import constrain_spectral_norm
from tbptt.models.gating import State
from tbptt.models.minimal import LINEAR_KINDS, LinearRecurrent
from tbptt.models.recurrent import KINDS, Recurrent
from tbptt.models.zoneout import check_rates, zoneout_forward

__all__ = ["MODEL_KINDS", "ModelConfig", "RecurrentLM", "RecurrentNet"]

# the classic cells (tbptt.models.recurrent), then the linear recurrences (tbptt.models.minimal)
MODEL_KINDS = KINDS + LINEAR_KINDS


# The most parameters a built-in model may hold (8 GiB of float32 weights).
MAX_PARAMETERS = 2**31


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
    # the rate on the embedded inputs and on the head's inputs (AWD-LSTM's dropouti and
    # dropout); None: ``dropout``, which also applies between the recurrent layers
    embedding_dropout: float | None = None
    output_dropout: float | None = None
    zoneout: float = 0.0
    zoneout_cell: float | None = None
    # > 0: bound the spectral norm of every recurrent block (tbptt.models.constraints)
    spectral_norm: float = 0.0
    input_size: int = 0
    output_size: int = 0
    # language models: "" = a full softmax; "C1,C2,..." = an adaptive softmax cut at those
    # token ids (tbptt.models.adaptive); tie_weights: the output layer reuses the embedding
    adaptive_softmax: str = ""
    tie_weights: bool = False
    # float features (a series): the lags of a linear autoregressive highway added to the
    # output (tbptt.models.forecast.ForecastNet); -1: the order the data chose (a series'
    # regularized AR, else none), 0: none
    highway: int = -1

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

    def parameter_bound(self) -> int:
        """About the built model's parameter count (four gates a layer: an LSTM's, at most)."""
        width = self.embedding_size or self.vocab_size or self.input_size
        hidden, layers = max(self.hidden_size, 1), max(self.num_layers, 1)
        stack = 4 * hidden * (width + hidden + 2) + (layers - 1) * 4 * hidden * (2 * hidden + 2)
        embedding = self.vocab_size * self.embedding_size
        head = (hidden + 1) * max(self.output_size or self.vocab_size, 1)
        return int(stack + embedding + head)

    def check(self) -> None:
        """Raise one :class:`ConfigError` listing every invalid option."""
        problems = []
        if self.kind not in MODEL_KINDS:
            problems.append(
                f"unknown model {self.kind!r}; expected one of {', '.join(MODEL_KINDS)}"
            )
        if self.kind in LINEAR_KINDS and self.spectral_norm:
            problems.append(
                f"spectral_norm bounds a recurrent weight matrix, which the {self.kind} model "
                f"has none of (its recurrence is element-wise, |a_t| <= 1); got spectral_norm="
                f"{self.spectral_norm}, use 0"
            )
        if self.kind in LINEAR_KINDS and self.zoneout_cell:
            problems.append(
                f"zoneout_cell applies to the LSTM's cell state; the {self.kind} model has one "
                f"state (use zoneout), got zoneout_cell={self.zoneout_cell}"
            )
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
        problems += self._output_problems()
        options = []  # the keys named, so the command line can name their flags
        for name in ("embedding_dropout", "output_dropout"):
            rate = getattr(self, name)
            if rate is not None and not 0.0 <= rate < 1.0:
                problems.append(f"{name.replace('_', ' ')} must be in [0, 1), got {rate}")
                options.append(f"model.{name}")
        if self.highway < -1 or (self.highway > 0 and self.tokens):
            problems.append(
                "a highway reads the last P float inputs (a time series): P >= 1, 0 (none) or "
                f"-1 (the data's choice), got {self.highway}"
            )
            options.append("model.highway")
        if self.embedding_size < 0:
            problems.append(
                f"embedding size must be >= 0 (0 = one-hot or identity), got {self.embedding_size}"
            )
        if not problems and (n := self.parameter_bound()) > MAX_PARAMETERS:
            # checked before anything is allocated (a configuration read from a file too)
            problems.append(
                f"the model would hold about {n:.3g} parameters ({4 * n / 2**30:,.0f} GiB), "
                f"more than the {MAX_PARAMETERS:.3g} tbptt builds; use smaller sizes"
            )
            options += ["model.hidden_size", "model.num_layers", "model.embedding_size"]
        if problems:
            raise ConfigError("; ".join(problems), options=tuple(options))

    def _output_problems(self) -> list[str]:
        """What is wrong with the adaptive softmax and weight-tying options."""
        problems = []
        lm = self.tokens and not self.output_size
        if self.adaptive_softmax:
            if not lm:
                problems.append("an adaptive softmax is an output layer over a vocabulary (lm)")
            else:
                try:
                    parse_cutoffs(self.adaptive_softmax, self.vocab_size)
                except ConfigError as e:
                    problems.append(str(e))
        if self.tie_weights:
            if not lm:
                problems.append(
                    "weight tying shares a vocabulary's embedding with its output layer"
                )
            elif self.adaptive_softmax:
                problems.append("weight tying applies to the full softmax, not an adaptive one")
            elif self.embedding_size != self.hidden_size:
                problems.append(
                    f"weight tying needs the embedding size equal to the hidden size "
                    f"{self.hidden_size}, got {self.embedding_size}"
                )
        return problems


class RecurrentNet(nn.Module):
    """Input adapter -> :class:`Recurrent` -> linear head (see the module docstring).

    ``forward(inputs, state, gates, *, resets)`` takes inputs (T, B) ids or
    (T, B, F) features, a state (or None for zeros), optional per-step gates
    (T,) and per-stream resets (T, B), and returns outputs (T, B, O) and the
    final state. Dropout applies to the adapted inputs (``embedding_dropout``),
    between layers (``dropout``) and before the head (``output_dropout``), at
    training time only.
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
        linear = config.kind in LINEAR_KINDS  # zoneout runs inside its scan
        self.recurrent = (LinearRecurrent if linear else Recurrent)(
            config.kind,
            input_size=width,
            hidden_size=config.hidden_size,
            num_layers=config.num_layers,
            dropout=config.dropout,
            **({"zoneout": config.zoneout} if linear else {}),
        )
        if config.spectral_norm:
            constrain_spectral_norm(self.recurrent, config.spectral_norm)
        if config.adaptive_softmax:
            cutoffs = parse_cutoffs(config.adaptive_softmax, config.vocab_size)
            self.head = AdaptiveHead(config.hidden_size, config.vocab_size, cutoffs)
        else:
            self.head = nn.Linear(config.hidden_size, config.head_size)
        if config.tie_weights:  # Press & Wolf 2017, Inan et al. 2017: (V, H) is (V, E)
            self.head.weight = self.embedding.weight
        self.drop = nn.Dropout(_rate(config.embedding_dropout, config.dropout))  # inputs
        self.drop_output = nn.Dropout(_rate(config.output_dropout, config.dropout))

    @torch.no_grad()
    def start_at_unigram(self, counts: torch.Tensor) -> None:
        """Set a language model's output bias to the add-one smoothed log-frequencies of the
        training tokens, ``counts`` (V,): before any step its prediction is about the unigram
        baseline, which an optimizer moving each weight by ~lr per step would otherwise need
        thousands of steps to learn at a word vocabulary."""
        log_p = torch.log((counts.double() + 1) / (counts.sum() + len(counts)))  # (V,)
        if isinstance(self.head, AdaptiveHead):
            self.head.init_bias(log_p.to(self.head.weight.dtype))
        else:
            self.head.bias.copy_(log_p)

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
        zoned = self.config.zoneout > 0 or (self.config.zoneout_cell or 0) > 0
        if zoned and self.config.kind not in LINEAR_KINDS:
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
        return self.head(self.drop_output(outputs)), state  # (T, B, O)


def _rate(rate: float | None, default: float) -> float:
    return default if rate is None else rate


RecurrentLM = RecurrentNet  # the name of the language-model use, kept for existing code
