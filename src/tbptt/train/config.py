"""The run's configuration: one typed description, built once, saved once.

A :class:`RunConfig` has one frozen section per concern::

    RunConfig
    ├── data        DataConfig      where the rows come from and how they are read
    ├── model       ModelConfig     the built-in model (sizes filled in from the data)
    ├── objective   ObjectiveConfig the loss and metrics (None: what the data implies)
    ├── train       TrainConfig     strategy, batch, optimizer, schedule, seed, device
    ├── checkpoint  CheckpointConfig how often to checkpoint and how many to keep
    └── output      OutputConfig    the sample printed at the end, the progress bar

It is saved as ``config.json`` and inside every checkpoint, and a resumed run
compares the two in one place (:meth:`RunConfig.differences`). Which options
may change on resume is marked on the fields themselves
(``field(metadata=RESUMABLE)``): the ones that do not alter what was computed
up to the checkpoint (more or fewer epochs, the device, the non-finite policy,
checkpointing and output options, the data file's path -- the data itself is
checked by digest).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch

from tbptt.data.config import DataConfig
from tbptt.errors import ConfigError
from tbptt.models.lm import ModelConfig
from tbptt.train.checkpoint.compat import flatten_keys, same_value
from tbptt.train.objectives import OBJECTIVES

__all__ = [
    "RESUMABLE",
    "OPTIMIZERS",
    "TrainConfig",
    "scheduled_lr",
    "ObjectiveConfig",
    "CheckpointConfig",
    "OutputConfig",
    "RunConfig",
    "build_optimizer",
    "resumable_fields",
    "device_problem",
]

# Field metadata: this option may change when a run is resumed.
RESUMABLE = {"resumable": True}

OPTIMIZERS = ("adam", "adamw", "sgd")
SAMPLING = ("sequential", "random")
NONFINITE = ("stop", "skip")
LR_SCHEDULES = ("cosine", "constant")
# Device types torch can train on (meta holds no data; others are not supported here).
DEVICE_TYPES = ("cpu", "cuda", "mps")
# The largest learning rate whose update a float32 weight can hold (torch refuses larger).
MAX_LR = float(torch.finfo(torch.float32).max)


def device_problem(name: str) -> str | None:
    """Why ``name`` is not a device torch can train on here, or None.

    Only the name is checked (``cuda:1``, not ``meta`` or ``banana``); whether this
    machine has the device is the front end's check (``tbptt.cli.common.check_device``).
    """
    if not isinstance(name, str):
        return f"device must be a name such as cpu or cuda:0, got {name!r}"
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        return f"unknown device {name!r}, expected cpu, cuda, cuda:N or mps"
    if device.type not in DEVICE_TYPES:
        return f"cannot train on device {name!r}, expected cpu, cuda, cuda:N or mps"
    return None


def resumable_fields(cls) -> frozenset[str]:
    """Names of the fields of dataclass ``cls`` marked :data:`RESUMABLE`."""
    return frozenset(f.name for f in fields(cls) if f.metadata.get("resumable"))


@dataclass(frozen=True)
class TrainConfig:
    """Training options (saved with every run and checkpoint).

    ``clip = 0`` turns gradient clipping off. ``nonfinite``: on a NaN/inf loss
    or gradient, ``"stop"`` raises :class:`NonFiniteError`, ``"skip"`` drops
    the step and counts it; either way the optimizer never applies it.
    ``lr_schedule="cosine"`` decays over ``epochs``; changing ``epochs`` on resume
    stretches it over the new total (see :meth:`Trainer.current_lr`).
    """

    strategy: str = "regular:35"
    batch_size: int = 32
    epochs: int = field(default=10, metadata=RESUMABLE)  # extends or shortens the run
    max_steps: int = field(default=0, metadata=RESUMABLE)  # > 0: stop after this many steps
    optimizer: str = "adam"
    lr: float = 5e-3
    lr_schedule: str = "cosine"
    weight_decay: float = 0.0
    momentum: float = 0.0
    clip: float = 1.0
    sampling: str = "sequential"
    # how validation is laid out and scored (columns, rows per forward): never the training
    eval_batch_size: int = field(default=16, metadata=RESUMABLE)
    eval_window: int = field(default=256, metadata=RESUMABLE)
    nonfinite: str = field(default="stop", metadata=RESUMABLE)  # acts only on a NaN
    seed: int = 0
    device: str = field(default="cpu", metadata=RESUMABLE)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def problems(self) -> list[str]:
        problems = []
        if self.batch_size < 1:
            problems.append(f"batch size must be >= 1, got {self.batch_size}")
        if self.epochs < 0:
            problems.append(f"epochs must be >= 0, got {self.epochs}")
        if self.max_steps < 0:
            problems.append(f"max steps must be >= 0 (0: no limit), got {self.max_steps}")
        if self.optimizer not in OPTIMIZERS:
            problems.append(
                f"unknown optimizer {self.optimizer!r}, expected one of {', '.join(OPTIMIZERS)}"
            )
        if not (0 < self.lr <= MAX_LR):
            problems.append(
                f"learning rate must be a positive number up to {MAX_LR:g} "
                f"(what a float32 weight update holds), got {self.lr}"
            )
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            problems.append(f"weight decay must be a finite number >= 0, got {self.weight_decay}")
        if not (self.momentum >= 0 and math.isfinite(self.momentum)):
            problems.append(f"momentum must be a finite number >= 0, got {self.momentum}")
        if not (-(2**63) <= self.seed < 2**63):
            problems.append(f"seed must fit a 64-bit integer (|seed| < 2**63), got {self.seed}")
        if problem := device_problem(self.device):
            problems.append(problem)
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(
                f"unknown learning-rate schedule {self.lr_schedule!r}, expected one of {', '.join(LR_SCHEDULES)}"
            )
        if not (self.clip >= 0 and math.isfinite(self.clip)):
            problems.append(f"clip must be >= 0 (0 = off), got {self.clip}")
        if self.sampling not in SAMPLING:
            problems.append(
                f"unknown sampling {self.sampling!r}, expected one of {', '.join(SAMPLING)}"
            )
        if self.nonfinite not in NONFINITE:
            problems.append(
                f"unknown non-finite policy {self.nonfinite!r}, expected {' or '.join(NONFINITE)}"
            )
        if self.eval_batch_size < 1 or self.eval_window < 1:
            problems.append("evaluation batch size and window must be >= 1")
        return problems

    def check(self) -> None:
        """Raise one :class:`ConfigError` listing every invalid option."""
        if problems := self.problems():
            raise ConfigError("; ".join(problems))


def scheduled_lr(config: TrainConfig, done: float) -> float:
    """The learning rate after ``done`` epochs (a fraction within the epoch under way).

    ``cosine`` decays from ``lr`` to 0 over ``epochs`` (by the fraction of the run done, so
    it needs no state of its own); ``constant`` keeps ``lr``.

    Extending a run (resuming with more ``epochs``) stretches the schedule over the new
    total, it does not restart it: the rate continues at the value the longer schedule has
    at this point -- the rate a run started with that many epochs would have now. A
    finished run (rate 0) extended from 3 to 6 epochs therefore continues at
    lr * 0.5 * (1 + cos(pi / 2)) = lr / 2 and decays to 0 again at epoch 6 (the trainer's
    ``load_state_dict`` logs a warning saying so).
    """
    if config.lr_schedule == "constant" or config.epochs == 0:
        return config.lr
    progress = min(1.0, done / config.epochs)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(config: TrainConfig, params) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


@dataclass(frozen=True)
class ObjectiveConfig:
    """``name``: ``lm``, ``classify`` or ``regress``; None: the one the data implies."""

    name: str | None = None

    def problems(self) -> list[str]:
        if self.name is not None and self.name not in OBJECTIVES:
            return [f"unknown objective {self.name!r}, expected one of {', '.join(OBJECTIVES)}"]
        return []


@dataclass(frozen=True)
class CheckpointConfig:
    """``every``: N optimizer steps, Ns / Nm / Nh, or ``epoch``; ``keep``: step files kept."""

    every: str = field(default="10m", metadata=RESUMABLE)
    keep: int = field(default=3, metadata=RESUMABLE)

    def problems(self) -> list[str]:
        from tbptt.train.checkpoint import parse_interval

        problems = []
        try:
            parse_interval(self.every)
        except ConfigError as e:
            problems.append(str(e))
        if self.keep < 1:
            problems.append(f"keep at least 1 checkpoint, got {self.keep}")
        return problems


@dataclass(frozen=True)
class OutputConfig:
    """What a run shows besides its metrics: the generated sample, the progress bar."""

    prefix: str | None = field(default=None, metadata=RESUMABLE)  # None: the data's own opening
    sample_length: int = field(default=120, metadata=RESUMABLE)
    temperature: float = field(default=0.7, metadata=RESUMABLE)
    progress: bool = field(default=True, metadata=RESUMABLE)
    threads: int | None = field(default=None, metadata=RESUMABLE)
    tensorboard: str | None = field(default=None, metadata=RESUMABLE)  # a log directory

    def problems(self) -> list[str]:
        problems = []
        if self.sample_length < 0:
            problems.append(f"sample length must be >= 0, got {self.sample_length}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if self.threads is not None and self.threads < 1:
            problems.append(f"threads must be >= 1, got {self.threads}")
        return problems


_SECTIONS = {
    "data": DataConfig,
    "model": ModelConfig,
    "objective": ObjectiveConfig,
    "train": TrainConfig,
    "checkpoint": CheckpointConfig,
    "output": OutputConfig,
}
# Options that may change on resume beyond the marked fields: the data file may have moved
# (the data's digest is compared instead).
_RESUMABLE_EXTRA = frozenset({"data.path", "data.documents"})


@dataclass(frozen=True)
class RunConfig:
    """The whole description of a run (see the module docstring)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> RunConfig:
        """From :meth:`to_dict`'s output (or part of it: missing keys take their defaults).

        Raises:
            ConfigError: every unknown section or key, and every value of the wrong
                type, reported at once.
        """
        problems = [f"unknown section {k!r}" for k in d if k not in _SECTIONS]
        sections = {}
        for name, cls_ in _SECTIONS.items():
            given = d.get(name) or {}
            if not isinstance(given, dict):
                problems.append(f"section {name!r} must be a mapping, got {type(given).__name__}")
                continue
            known = {f.name: f for f in fields(cls_)}
            problems += [f"unknown key {name}.{k}" for k in given if k not in known]
            values = {}
            for key, value in given.items():
                if key in known:
                    converted, problem = _convert(value, known[key], f"{name}.{key}")
                    values[key] = converted
                    if problem:
                        problems.append(problem)
            sections[name] = values
        if "normalize" in sections["data"] and "eos" not in sections["data"]:
            # saved before the end-of-line token existed: that run had none
            sections["data"]["eos"] = False
        if problems:
            raise ConfigError("invalid run configuration: " + "; ".join(problems))
        return cls(**{name: _SECTIONS[name](**values) for name, values in sections.items()})

    def problems(self) -> list[str]:
        """Every invalid option of every section (the model's sizes are checked once known)."""
        return [
            *self.data.problems(),
            *self.objective.problems(),
            *self.train.problems(),
            *self.checkpoint.problems(),
            *self.output.problems(),
        ]

    def check(self) -> None:
        """Raise one :class:`ConfigError` listing every invalid option (and naming the data
        options a data kind does not read, for a front end to name its flags)."""
        if problems := self.problems():
            raise ConfigError("; ".join(problems), options=self.data.refused_options())

    def replace(self, **changes: dict) -> RunConfig:
        """A copy with ``section={key: value}`` changes applied (``replace(train={"epochs": 5})``)."""
        updated = {
            name: dataclasses.replace(getattr(self, name), **values)
            for name, values in changes.items()
        }
        return dataclasses.replace(self, **updated)

    @staticmethod
    def resumable_keys() -> frozenset[str]:
        """Dotted keys (``train.epochs``) a resumed run may change."""
        keys = {f"{name}.{f}" for name, cls_ in _SECTIONS.items() for f in resumable_fields(cls_)}
        return frozenset(keys | _RESUMABLE_EXTRA)

    def differences(self, saved: RunConfig, *, resumable: bool = False) -> list[str]:
        """``key is X there but Y here`` for every option that differs from ``saved``
        (only the options a resumed run may not change, unless ``resumable``)."""
        allowed = set() if resumable else self.resumable_keys()
        mine, theirs = flatten_keys(self.to_dict()), flatten_keys(saved.to_dict())
        return [
            f"{key} is {theirs.get(key)!r} there but {mine.get(key)!r} here"
            for key in sorted(set(mine) | set(theirs))
            if key not in allowed and not same_value(mine.get(key), theirs.get(key))
        ]


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _convert(value: Any, f: dataclasses.Field, key: str) -> tuple[Any, str | None]:
    """``value`` as the field's declared type (JSON gives lists for tuples), or a problem."""
    kind = str(f.type)
    if value is None:
        return value, None if "None" in kind else f"{key} must not be null"
    if "tuple" in kind:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            return value, f"{key} must be a list of strings, got {value!r}"
        return tuple(value), None
    if kind.startswith("bool"):
        ok = isinstance(value, bool)
    elif kind.startswith("int"):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind.startswith("float"):
        ok = _number(value)
        value = float(value) if ok else value
    elif kind.startswith("str"):
        ok = isinstance(value, str)
    else:
        ok = True
    return value, None if ok else f"{key} must be {kind.split(' ')[0]}, got {value!r}"
