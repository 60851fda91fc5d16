"""A trained run, back for measuring: its model with the checkpoint's weights, its data rebuilt.

A checkpoint of ``tbptt train`` holds the run's whole configuration (data,
model, objective, seed) and the model's weights; :func:`load_model` rebuilds
the dataset from that configuration (text, documents, a time series, a task
from the run's seed) and the model from it, so any run can be analyzed on the
very rows it was trained on.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

from torch import nn

from tbptt.data import Dataset
from tbptt.data.config import DataConfig, load_dataset
from tbptt.data.kinds import family_of
from tbptt.errors import CheckpointError, ConfigError, DataError
from tbptt.models import ModelConfig
from tbptt.train import RunConfig, load_checkpoint
from tbptt.train.build import build_model

__all__ = ["load_model"]


def load_model(
    path: str | Path,
    *,
    build: Callable[[RunConfig, Dataset], nn.Module] = build_model,
    data_path: str | None = None,
) -> tuple[nn.Module, Dataset, RunConfig]:
    """(model with the checkpoint's weights, the run's dataset, the run's configuration).

    The dataset is rebuilt from the run's data section (a task from the run's
    seed); ``data_path`` reads the run's data file or directory from another
    place (for a run trained on separate files, it is read as the test file). A text is indexed by the checkpoint's vocabulary (tokens it lacks
    become ``<unk>``). ``build(config, data)`` makes the untrained model
    (default: :func:`tbptt.train.build.build_model`: the built-in model of
    ``config.model``, or the model a task brings, such as influence balancing).

    Raises:
        CheckpointError: missing or unreadable file, or weights that do not fit the saved config.
        DataError / ConfigError: the run's data cannot be read again.
    """
    payload = load_checkpoint(path)
    try:
        config = RunConfig.from_dict(payload["config"])
        weights = payload["trainer"]["model"]
    except (KeyError, TypeError, ConfigError) as e:
        raise CheckpointError(f"{path} lacks the run's model config or weights ({e})") from None
    try:  # a file's configuration is checked as flags are, before anything is allocated
        config.check()
        config.model.check()
    except ConfigError as e:
        raise CheckpointError(f"the configuration in {path} is invalid: {e}") from None
    if data_path is not None:
        config = dataclasses.replace(config, data=_reading(config.data, data_path, path))
    data = load_dataset(config.data, seed=config.train.seed)
    vocab = payload.get("vocab")
    if vocab is not None and data.vocabulary() is not None:
        data = data.with_vocabulary(list(vocab))
    _check_inputs(config.model, data, path)
    model = build(config, data)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(
            f"the weights in {path} do not fit its model config: {_mismatch(str(e))}"
        ) from None
    return model, data, config


def _mismatch(message: str) -> str:
    """What torch's 'Error(s) in loading state_dict' says differs, in one line: the first
    tensors whose sizes differ, else the missing and unexpected names."""
    details = [line.strip() for line in message.splitlines()[1:] if line.strip()]
    sizes = [d.removeprefix("size mismatch for ") for d in details if d.startswith("size mismatch")]
    if sizes:
        more = f" (and {len(sizes) - 2} more)" if len(sizes) > 2 else ""
        return "; ".join(s.rstrip(".") for s in sizes[:2]) + more
    return " ".join(details)[:300] or message.strip().splitlines()[0]


def _reading(config: DataConfig, data_path: str, path) -> DataConfig:
    """The run's data section reading ``data_path``, refused when that is data of another
    family than the run's (a series given to a text run, or the other way round)."""
    other = config.reading(data_path)
    try:
        mine, theirs = family_of(config), family_of(other)
    except DataError:
        return other  # loading it says what is wrong
    if mine != theirs:
        raise DataError(
            f"{data_path} is {_WHAT[theirs]}, but the run in {path} was trained on "
            f"{_WHAT[mine]}; give it {_WHAT[mine]} (its own data, or the same kind of data)"
        )
    return other


_WHAT = {"text": "text", "series": "a time series", "task": "a synthetic task"}


def _check_inputs(config: ModelConfig, data: Dataset, path) -> None:
    """Refuse data whose rows the saved built-in model cannot read (another --data)."""
    if data.model is not None:
        return
    shape = data.shape

    def reads(tokens: bool, width: int) -> str:
        return "token ids" if tokens else f"{width} float feature(s) per row"

    model, given = (
        reads(config.tokens, config.input_size),
        reads(shape.vocab_size > 0, shape.input_size),
    )
    if model != given:
        raise CheckpointError(
            f"the model in {path} reads {model}, but the data gives {given}; analyze the "
            "checkpoint on its run's own data"
        )
