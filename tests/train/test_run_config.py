"""RunConfig: one typed description of a run, one comparison on resume, one list of what may change."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tbptt.errors import ConfigError
from tbptt.train import RunConfig
from tbptt.train.config import RESUMABLE, TrainConfig, resumable_fields

# A value different from the default, for every option of every section.
OTHER = {
    "data.path": "elsewhere.txt",
    "data.kind": "text",
    "data.task": "adding",
    "data.documents": "docs/",
    "data.separator": "###",
    "data.tokens": "word",
    "data.normalize": "none",
    "data.target": ("Temp",),
    "data.inputs": ("Temp", "Rain"),
    "data.horizon": 3,
    "data.series_id": "station",
    "data.time_column": "Date",
    "data.missing": "ffill",
    "data.valid_fraction": 0.2,
    "data.train_file": "train.txt",
    "data.valid_file": "valid.txt",
    "data.test_file": "test.txt",
    "data.eos": False,
    "data.min_freq": 2,
    "data.max_vocab": 100,
    "data.strip_gutenberg": True,
    "data.cache_dir": "cache/",
    "data.direct": True,
    "data.season": 12,
    "data.categorical": ("Wind",),
    "data.calendar": ("month",),
    "data.warm_up": 10,
    "model.highway": 4,
    "model.adaptive_softmax": "5,10",
    "model.tie_weights": True,
    "model.vocab_size": 30,
    "model.kind": "gru",
    "model.hidden_size": 8,
    "model.num_layers": 1,
    "model.embedding_size": 4,
    "model.dropout": 0.0,
    "model.embedding_dropout": 0.05,
    "model.output_dropout": 0.3,
    "model.zoneout": 0.1,
    "model.zoneout_cell": 0.2,
    "model.spectral_norm": 1.0,
    "model.input_size": 3,
    "model.output_size": 2,
    "objective.name": "regress",
    "train.strategy": "randomized:35",
    "train.batch_size": 4,
    "train.epochs": 3,
    "train.max_steps": 3,
    "train.optimizer": "sgd",
    "train.lr": 0.1,
    "train.lr_schedule": "constant",
    "train.weight_decay": 0.01,
    "train.momentum": 0.9,
    "train.clip": 0.5,
    "train.sampling": "random",
    "train.eval_batch_size": 4,
    "train.eval_window": 8,
    "train.nonfinite": "skip",
    "train.seed": 7,
    "train.device": "cuda",
    "checkpoint.every": "30s",
    "checkpoint.keep": 5,
    "output.prefix": "the",
    "output.sample_length": 10,
    "output.temperature": 0.0,
    "output.progress": False,
    "output.threads": 1,
    "output.tensorboard": "runs/tb",
}
MAY_CHANGE = {
    "data.path",
    "data.documents",
    "data.train_file",
    "data.valid_file",
    "data.test_file",
    "data.cache_dir",
    "train.epochs",
    "train.max_steps",
    "train.nonfinite",
    "train.device",
    "train.eval_batch_size",
    "train.eval_window",
    "checkpoint.every",
    "checkpoint.keep",
    "output.prefix",
    "output.sample_length",
    "output.temperature",
    "output.progress",
    "output.threads",
    "output.tensorboard",
}


def _changed(key: str) -> RunConfig:
    section, name = key.split(".")
    return RunConfig().replace(**{section: {name: OTHER[key]}})


def test_every_option_is_covered_here():
    keys = {f"{k}.{f}" for k, v in RunConfig().to_dict().items() for f in v}
    assert keys == set(OTHER)


@pytest.mark.parametrize("key", sorted(OTHER))
def test_each_option_either_may_change_on_resume_or_is_refused(key):
    saved = RunConfig()
    diffs = _changed(key).differences(saved)
    if key in MAY_CHANGE:
        assert diffs == []
    else:
        assert len(diffs) == 1 and diffs[0].startswith(f"{key} is ")
    assert _changed(key).differences(saved, resumable=True) != []  # it did change


def test_the_list_of_what_may_change_lives_on_the_fields():
    assert RunConfig.resumable_keys() == MAY_CHANGE
    assert resumable_fields(TrainConfig) == {
        "epochs", "max_steps", "nonfinite", "device", "eval_batch_size", "eval_window"
    }  # fmt: skip
    epochs = next(f for f in dataclasses.fields(TrainConfig) if f.name == "epochs")
    assert epochs.metadata == RESUMABLE


def test_round_trip_through_json():
    config = RunConfig().replace(data={"target": ("a", "b")}, train={"lr": 0.25})
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_from_dict_reports_every_unknown_or_invalid_key_at_once():
    with pytest.raises(ConfigError) as e:
        RunConfig.from_dict(
            {
                "train": {"epochs": "ten", "learning_rate": 1, "lr": 0.1},
                "model": {"hidden_size": 2.5},
                "extra": {},
                "data": {"target": [1, 2]},
            }
        )
    message = str(e.value)
    for part in (
        "unknown section 'extra'",
        "unknown key train.learning_rate",
        "train.epochs must be int",
        "model.hidden_size must be int",
        "data.target must be a list of strings",
    ):
        assert part in message, message
    assert "\n" not in message


def test_check_lists_every_invalid_option():
    config = RunConfig().replace(
        train={"batch_size": 0, "lr": -1.0}, checkpoint={"keep": 0}, data={"horizon": 0}
    )
    with pytest.raises(ConfigError) as e:
        config.check()
    for part in ("batch size", "learning rate", "keep at least 1", "horizon"):
        assert part in str(e.value)
