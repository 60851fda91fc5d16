"""Document boundaries: no gradient crosses a per-stream reset, under every strategy and model;
the trainer passes each window's (T, B) reset mask from a document stream."""

import copy

import pytest
import torch

from tbptt.data.documents import prepare_documents
from tbptt.data.streams import SequentialStream
from tbptt.models import ModelConfig, RecurrentLM
from tbptt.models.custom import CustomLM
from tbptt.train import TrainConfig, Trainer, sequence_gradient
from tbptt.truncation import parse_strategy
from tests.models.test_custom import TorchCore
from tests.reference import tiny_lm

SPECS = [
    "full",
    "full:4",
    "full:checkpoint",
    "full:6,checkpoint=2",
    "regular:3",
    "randomized:3",
    "randomized:3,alpha=4",
    "k1k2:2,8",
    "k1k2:3,3",
    "variable:4",
]
# Strategies whose window (or lookback) surely reaches from the loss back over the boundary.
REACHES_BACK = {"full", "full:4", "full:checkpoint", "full:6,checkpoint=2", "regular:3", "k1k2:2,8"}

T, B, X, BOUNDARY, STREAM = 12, 3, 6, 5, 1


def _models():
    yield "gru", tiny_lm("gru", layers=2)
    yield "lstm", tiny_lm("lstm", layers=2)
    yield "linear", tiny_lm("linear", layers=1)
    torch.manual_seed(0)
    yield (
        "lstm+zoneout",
        RecurrentLM(
            ModelConfig(
                vocab_size=7,
                kind="lstm",
                hidden_size=4,
                num_layers=2,
                embedding_size=3,
                zoneout=0.3,
            )
        ).double(),
    )

    def init(batch_size):
        z = torch.zeros(2, batch_size, 4, dtype=torch.float64)
        return (z, z.clone())

    torch.manual_seed(0)
    yield (
        "custom",
        CustomLM(
            TorchCore("lstm", 3, 4, 2),
            vocab_size=7,
            input_size=3,
            output_size=4,
            initial_state=init,
        ).double(),
    )


def _data():
    """Token X (6) appears only in stream 1 before its boundary; the loss only after it."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, X, (T + 1, B), generator=g)
    tokens[:BOUNDARY, STREAM] = X
    inputs, targets = tokens[:-1], tokens[1:].clone()
    targets[:] = -100
    targets[BOUNDARY:, STREAM] = tokens[BOUNDARY + 1 :, STREAM]
    resets = torch.zeros(T, B, dtype=torch.bool)
    resets[BOUNDARY, STREAM] = True
    return inputs, targets, resets


def _x_grad(model, spec, resets):
    inputs, targets, _ = _data()
    model.train()
    torch.manual_seed(3)  # zoneout masks
    grads = sequence_gradient(
        model,
        parse_strategy(spec),
        inputs,
        targets,
        resets=resets,
        generator=torch.Generator().manual_seed(1),
    )
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    return grads[names.index("embedding.weight")][X]


@pytest.mark.parametrize("spec", SPECS)
def test_no_gradient_crosses_a_document_boundary(spec):
    _, _, resets = _data()
    for name, model in _models():
        cut = _x_grad(model, spec, resets)
        assert torch.equal(cut, torch.zeros_like(cut)), (name, cut)  # exactly zero
        if spec in REACHES_BACK:
            # without the reset the same loss does reach the tokens before the boundary
            assert _x_grad(model, spec, None).abs().max() > 1e-8, name


def test_trainer_passes_each_window_its_reset_mask():
    docs = ["the time traveller", "was expounding", "a recondite matter to us", "his grey eyes"]
    data = prepare_documents(docs, valid_fraction=0.0)
    vocab = len(data.vocab)
    torch.manual_seed(0)
    model = RecurrentLM(
        ModelConfig(
            vocab_size=vocab, kind="gru", hidden_size=4, num_layers=1, embedding_size=3, dropout=0.0
        )
    ).double()
    before = copy.deepcopy(model)
    config = TrainConfig(
        strategy="full",
        batch_size=2,
        epochs=1,
        optimizer="sgd",
        lr=1.0,
        lr_schedule="constant",
        clip=0,
    )
    trainer = Trainer(model, data.train_split(), data.valid, config)
    trainer.fit()
    stream = SequentialStream(data.train_split(), 2)
    inputs, targets = stream.data[:-1], stream.data[1:]
    resets = stream.starts[:-1]
    assert resets[1:].any()  # boundaries inside the window
    expected = sequence_gradient(before, parse_strategy("full"), inputs, targets, resets=resets)
    no_resets = sequence_gradient(before, parse_strategy("full"), inputs, targets)
    for p0, p1, g in zip(before.parameters(), model.parameters(), expected):
        torch.testing.assert_close(p0 - p1, g, rtol=0, atol=1e-12)  # one SGD step of lr 1
    assert any((g - g0).abs().max() > 1e-8 for g, g0 in zip(expected, no_resets))
