"""The one place the flags of the verbs that build data, a model and a training setup
(train, compare, analyze; defined in :mod:`tbptt.cli.arguments`) become a
:class:`~tbptt.train.RunConfig`, and what those verbs share beside it.

Every flag defaults to None, so a flag given explicitly is always known (even at
its default value); the defaults live in the configuration dataclasses, and
:func:`run_config_from_args` applies only the flags that were given.
"""

from __future__ import annotations

import math

import torch

from tbptt.errors import ConfigError
from tbptt.train import RunConfig
from tbptt.train.build import build_model, build_objective, model_config_for
from tbptt.train.config import device_problem

__all__ = [
    "FLAG_KEYS",
    "run_config_from_args",
    "given_flags",
    "with_recipe",
    "flag_hint",
    "model_config_for",
    "check_device",
    "format_metric",
    "build_model",
    "build_objective",
]

# flag dest -> dotted configuration key. The one table from the command line to a RunConfig.
FLAG_KEYS = {
    "data": "data.path",
    "task": "data.task",
    "documents": "data.documents",
    "separator": "data.separator",
    "tokens": "data.tokens",
    "normalize": "data.normalize",
    "valid_fraction": "data.valid_fraction",
    "train": "data.train_file",
    "valid": "data.valid_file",
    "test": "data.test_file",
    "eos": "data.eos",
    "min_freq": "data.min_freq",
    "max_vocab": "data.max_vocab",
    "strip_gutenberg": "data.strip_gutenberg",
    "cache_dir": "data.cache_dir",
    "target": "data.target",
    "inputs": "data.inputs",
    "horizon": "data.horizon",
    "series_id": "data.series_id",
    "time_column": "data.time_column",
    "missing": "data.missing",
    "direct": "data.direct",
    "season": "data.season",
    "categorical": "data.categorical",
    "calendar": "data.calendar",
    "warm_up": "data.warm_up",
    "highway": "model.highway",
    "model": "model.kind",
    "hidden_size": "model.hidden_size",
    "num_layers": "model.num_layers",
    "embedding_size": "model.embedding_size",
    "dropout": "model.dropout",
    "embedding_dropout": "model.embedding_dropout",
    "output_dropout": "model.output_dropout",
    "zoneout": "model.zoneout",
    "zoneout_cell": "model.zoneout_cell",
    "spectral_norm": "model.spectral_norm",
    "adaptive_softmax": "model.adaptive_softmax",
    "tie_weights": "model.tie_weights",
    "objective": "objective.name",
    "strategy": "train.strategy",
    "batch_size": "train.batch_size",
    "epochs": "train.epochs",
    "max_steps": "train.max_steps",
    "optimizer": "train.optimizer",
    "lr": "train.lr",
    "lr_schedule": "train.lr_schedule",
    "weight_decay": "train.weight_decay",
    "momentum": "train.momentum",
    "clip": "train.clip",
    "sampling": "train.sampling",
    "nonfinite": "train.nonfinite",
    "seed": "train.seed",
    "device": "train.device",
    "checkpoint_every": "checkpoint.every",
    "keep_checkpoints": "checkpoint.keep",
    "prefix": "output.prefix",
    "sample_length": "output.sample_length",
    "temperature": "output.temperature",
    "no_progress": "output.progress",  # inverted
    "threads": "output.threads",
    "tensorboard": "output.tensorboard",
}


def flag_hint(options: tuple[str, ...]) -> str:
    """`` (flags: --lr, --clip)`` for the configuration keys a library error names."""
    flags = [
        f"--{d.replace('_', '-')}" for key in options for d, k in FLAG_KEYS.items() if k == key
    ]
    return f" (flags: {', '.join(flags)})" if flags else ""


def with_recipe(config: RunConfig, data, given: set[str]) -> RunConfig:
    """``config`` with the data's recipe (:meth:`tbptt.data.Dataset.recipe`) for every option
    no flag set: a time series trains with the series recipe unless told otherwise."""
    chosen = {FLAG_KEYS[dest] for dest in given if dest in FLAG_KEYS}
    changes: dict[str, dict] = {}
    for key, value in data.recipe().items():
        if key not in chosen:
            section, name = key.split(".")
            changes.setdefault(section, {})[name] = value
    return config.replace(**changes) if changes else config


def given_flags(args) -> set[str]:
    """The flags of :data:`FLAG_KEYS` given on this command line (whatever their value)."""
    # Identity, not equality: 0, 0.0 and False (--no-eos) are given values; store_true
    # flags default to None, so an absent one is None.
    return {dest for dest in FLAG_KEYS if getattr(args, dest, None) is not None}


def run_config_from_args(args, base: RunConfig | None = None) -> RunConfig:
    """``base`` (default: the defaults) with every flag given on the command line applied."""
    base = base or RunConfig()
    changes: dict[str, dict] = {}
    for dest in given_flags(args):
        section, key = FLAG_KEYS[dest].split(".")
        value = getattr(args, dest)
        if dest == "no_progress":
            value = not value
        changes.setdefault(section, {})[key] = value
    try:
        return base.replace(**changes)
    except TypeError as e:  # a flag this configuration does not know: a programming error
        raise ConfigError(str(e)) from None


def check_device(name: str) -> torch.device:
    """``name`` as a device torch can train on, on this machine (else one ConfigError)."""
    if problem := device_problem(name):
        raise ConfigError(problem, options=("train.device",))
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r} asked for, but this torch sees no CUDA device; use cpu",
            options=("train.device",),
        )
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(
            f"device {name!r} asked for, but this torch sees {torch.cuda.device_count()} CUDA "
            f"device(s) (cuda:0 .. cuda:{torch.cuda.device_count() - 1})",
            options=("train.device",),
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            f"device {name!r} asked for, but this torch sees no MPS device; use cpu",
            options=("train.device",),
        )
    return device


def format_metric(value: float, *, digits: int = 3, limit: float = 1e6) -> str:
    """A metric as a person reads it: ``12.345``, ``inf``, ``nan``, or ``> 1e+06``.

    Perplexities overflow (exp of a large loss is inf, or a float with hundreds of
    digits in fixed-point notation); anything beyond ``limit`` in magnitude prints
    as a bound instead of its digits.
    """
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if abs(value) > limit:
        bound = f"{limit:g}".replace("e+0", "e").replace("e+", "e")  # 1e6, not 1e+06
        return f"> {bound}" if value > 0 else f"< -{bound}"
    return f"{value:.{digits}f}"
