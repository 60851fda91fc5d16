"""From a run's configuration and its data to the objects a run trains: the model's sizes,
the model, the objective. The command line, the laboratory and your scripts build them here."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection

from torch import nn

from tbptt.data.dataset import Dataset
from tbptt.models.custom import StatefulModule
from tbptt.models.influence import InfluenceBalancing
from tbptt.models.lm import ModelConfig, RecurrentNet
from tbptt.train.config import RunConfig
from tbptt.train.objectives import Objective, check_fits, make_objective

__all__ = ["model_config_for", "build_model", "build_objective"]


def model_config_for(
    data: Dataset, base: ModelConfig | None = None, *, given: Collection[str] = (), **options
) -> ModelConfig:
    """``base`` (default: ``ModelConfig()``) with ``options`` and the sizes ``data`` implies
    (vocabulary, features, outputs).

    Float features are fed to the recurrent stack as they are (``embedding_size`` 0) unless
    ``embedding_size`` is among ``options`` or named in ``given`` (options set explicitly).
    """
    shape = data.shape
    changes = dict(
        options,
        vocab_size=shape.vocab_size,
        input_size=shape.input_size,
        output_size=shape.output_size,
    )
    if not shape.vocab_size and "embedding_size" not in options and "embedding_size" not in given:
        changes["embedding_size"] = 0
    return dataclasses.replace(base or ModelConfig(), **changes)


def build_model(config: RunConfig, data: Dataset) -> nn.Module:
    """The model a run trains: the one a task requires (influence balancing), else the built-in
    model of ``config.model``."""
    if getattr(data, "model", None) == "influence":
        params = data.params
        return StatefulModule(InfluenceBalancing(n=params["n"], p=params["p"]), batch_dim=-2)
    return RecurrentNet(config.model)


def build_objective(config: RunConfig, data: Dataset) -> Objective:
    """The run's objective: ``config.objective`` or the data's own, checked against the data;
    a standardized series reports RMSE and MAE back in its own units."""
    name = config.objective.name or data.shape.objective
    check_fits(name, data.train_split())
    if name == "regress":
        scaler = getattr(data, "targets_scaler", None)
        return make_objective(name, scale=scaler.std if scaler is not None else None)
    return make_objective(name)
