"""From a run's configuration and its data to the objects a run trains: the model's sizes,
the model, the objective. The command line, the laboratory and your scripts build them here."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection

import torch
from torch import nn

from tbptt.data.dataset import Dataset
from tbptt.data.streams import ids
from tbptt.models.adaptive import frequency_cutoffs
from tbptt.models.custom import StatefulModule
from tbptt.models.forecast import ForecastNet
from tbptt.models.influence import InfluenceBalancing
from tbptt.models.lm import ModelConfig, RecurrentNet
from tbptt.train.config import RunConfig
from tbptt.train.objectives import Objective, check_fits, make_objective

__all__ = ["DATA_MODELS", "model_title", "model_config_for", "build_model", "build_objective"]


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
    config = dataclasses.replace(base or ModelConfig(), **changes)
    if config.highway == -1:  # the data's choice: a series' regularized AR order, else none
        chosen = data.highway
        config = dataclasses.replace(config, highway=chosen[0] if chosen else 0)
    return _resolved_output(config, data, explicit=set(options) | set(given))


def _resolved_output(config: ModelConfig, data: Dataset, *, explicit: Collection[str]):
    """An adaptive softmax's ``auto`` cut-offs chosen from the training token counts; weight
    tying's embedding width set to the hidden size unless it was given."""
    changes = {}
    if config.adaptive_softmax == "auto" and config.vocab_size and not config.output_size:
        tokens = ids(data.train_split().inputs)
        counts = torch.bincount(tokens.long(), minlength=config.vocab_size)  # (V,)
        changes["adaptive_softmax"] = ",".join(map(str, frequency_cutoffs(counts)))
    if config.tie_weights and "embedding_size" not in explicit:
        changes["embedding_size"] = config.hidden_size
    return dataclasses.replace(config, **changes) if changes else config


def _influence(task) -> nn.Module:
    params = task.params
    return StatefulModule(InfluenceBalancing(n=params["n"], p=params["p"]), batch_dim=-2)


#: The models a dataset may name as its own (``Dataset.model``): name -> (title, ``build(data)``).
DATA_MODELS: dict[str, tuple[str, Callable[[Dataset], nn.Module]]] = {
    "influence": ("influence balancing", _influence),
}


def model_title(config: RunConfig, data: Dataset) -> str:
    """The model a run trains, in a few words: ``lstm 2x256``, or the data's own model."""
    if data.model is not None:
        return DATA_MODELS[data.model][0]
    m = config.model
    highway = f" + AR({m.highway}) highway" if m.highway > 0 else ""
    return f"{m.kind} {m.num_layers}x{m.hidden_size}{highway}"


def build_model(config: RunConfig, data: Dataset) -> nn.Module:
    """The model a run trains: the one a task requires (influence balancing), else the built-in
    model of ``config.model`` (at word level, with its output bias at the training unigram
    log-frequencies)."""
    if data.model is not None:
        return DATA_MODELS[data.model][1](data)
    if config.model.highway > 0:  # a series forecaster: starts as its regularized AR
        model = ForecastNet(config.model, ar_order=config.model.highway)
        chosen = data.highway
        penalty = chosen[1] if chosen and chosen[0] == config.model.highway else 0.0
        train = data.train_split()
        model.fit_highway(train.inputs, train.targets, train.starts, train.mask, penalty=penalty)
        return model
    model = RecurrentNet(config.model)
    prior = data.output_prior()
    if prior is not None and not config.model.output_size:
        # a word vocabulary: start from the unigram baseline (RecurrentNet.start_at_unigram)
        model.start_at_unigram(prior)
    return model


def build_objective(config: RunConfig, data: Dataset) -> Objective:
    """The run's objective: ``config.objective`` or the data's own, checked against the data;
    a standardized series reports RMSE and MAE back in its own units."""
    name = config.objective.name or data.shape.objective
    check_fits(name, data.train_split())
    if name == "regress":
        scale = data.target_scale()
        return make_objective(name, scale=tuple(scale.tolist()) if scale is not None else None)
    return make_objective(name)
