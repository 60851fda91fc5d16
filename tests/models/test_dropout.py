"""Where the built-in model drops: the embedded inputs, between layers, the head's inputs."""

from __future__ import annotations

import pytest
import torch

from tbptt.errors import ConfigError
from tbptt.models.lm import ModelConfig, RecurrentNet


def _outputs(train: bool, **rates) -> torch.Tensor:
    torch.manual_seed(0)
    config = ModelConfig(vocab_size=7, kind="gru", hidden_size=6, num_layers=1, embedding_size=5)
    model = RecurrentNet(ModelConfig(**{**config.to_dict(), **rates})).double()
    model.train(train)
    torch.manual_seed(1)
    inputs = torch.randint(0, 7, (4, 3))
    return model(inputs)[0]


@pytest.mark.parametrize(
    "rates, drops",
    [
        ({"dropout": 0.5, "embedding_dropout": 0.0, "output_dropout": 0.0}, False),  # 1 layer
        ({"dropout": 0.0, "embedding_dropout": 0.5, "output_dropout": 0.0}, True),
        ({"dropout": 0.0, "embedding_dropout": 0.0, "output_dropout": 0.5}, True),
        ({"dropout": 0.5}, True),  # the embedding and output rates default to dropout
        ({"dropout": 0.0}, False),
    ],
)
def test_each_rate_drops_where_it_says(rates, drops):
    trained, evaluated = _outputs(True, **rates), _outputs(False, **rates)
    assert torch.equal(trained, evaluated) is not drops


def test_separate_rates_default_to_dropout_and_are_checked():
    model = RecurrentNet(ModelConfig(vocab_size=7, dropout=0.3, output_dropout=0.1))
    assert (model.drop.p, model.drop_output.p) == (0.3, 0.1)
    with pytest.raises(ConfigError, match=r"embedding dropout must be in \[0, 1\), got 1.0") as e:
        ModelConfig(vocab_size=7, embedding_dropout=1.0).check()
    assert e.value.options == ("model.embedding_dropout",)  # the command line names the flag
    # a configuration saved before these options existed still loads (both None = dropout)
    saved = ModelConfig(vocab_size=7).to_dict()
    del saved["embedding_dropout"], saved["output_dropout"]
    assert ModelConfig.from_dict(saved) == ModelConfig(vocab_size=7)
