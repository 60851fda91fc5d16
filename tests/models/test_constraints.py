"""The spectral-norm bound: exact after optimizer steps, gradients of the constrained model."""

import pytest
import torch

from tbptt.errors import ConfigError
from tbptt.models import ModelConfig, RecurrentLM
from tbptt.models.constraints import SpectralNormBound, recurrent_spectral_norms
from tbptt.train import TrainConfig, Trainer, sequence_gradient
from tbptt.truncation import FullBPTT
from tests.reference import reference_loss, tiny_batch

KINDS = ["gru", "lstm", "rnn", "linear"]


@pytest.fixture(autouse=True)
def _one_thread():
    # Tiny matrices: one thread is faster, and steadier on a shared 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _lm(kind, bound, *, layers=2, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    config = ModelConfig(
        vocab_size=7,
        kind=kind,
        hidden_size=5,
        num_layers=layers,
        embedding_size=3,
        dropout=0.0,
        spectral_norm=bound,
    )
    return RecurrentLM(config).to(dtype)


def test_parametrization_rescales_only_blocks_outside_the_ball():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(3 * 4, 4, generator=g, dtype=torch.float64)
    v[:4] *= 1e-3  # the first block is well inside the ball
    sigma = torch.linalg.svdvals(v.view(3, 4, 4))[:, 0]
    w = SpectralNormBound(1.0, 3)(v).view(3, 4, 4)
    torch.testing.assert_close(w[0], v[:4], rtol=0, atol=0)
    for i in (1, 2):
        assert sigma[i] > 1.0
        torch.testing.assert_close(w[i], v.view(3, 4, 4)[i] / sigma[i], rtol=1e-14, atol=0)
        assert torch.linalg.svdvals(w[i])[0] == pytest.approx(1.0, rel=1e-12)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_bound_holds_after_optimizer_steps(kind, optimizer):
    bound = 0.6
    tokens = torch.randint(0, 7, (300,), generator=torch.Generator().manual_seed(1))
    config = TrainConfig(
        strategy="regular:3", batch_size=4, epochs=1, optimizer=optimizer, lr=0.3, clip=0
    )
    norms = {}
    for b in (0.0, bound):
        model = _lm(kind, b, dtype=torch.float32)
        trainer = Trainer(model, tokens, tokens[:0], config)
        trainer.fit()
        assert trainer.step > 20
        norms[b] = recurrent_spectral_norms(model.recurrent)  # (L, G)
    assert norms[bound].max() <= bound * (1 + 1e-5)
    assert norms[bound].max() >= bound * (1 - 1e-5)  # the large steps push against the bound
    assert norms[0.0].max() > bound * 1.5  # without the bound the same run leaves the ball


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_of_the_constrained_model_matches_the_naive_reference(kind):
    model = _lm(kind, 0.5)
    inputs, targets = tiny_batch(T=7)
    got = sequence_gradient(model, FullBPTT(), inputs, targets)
    ref = torch.autograd.grad(reference_loss(model, inputs, targets), list(model.parameters()))
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)
    # and the rescaling is differentiated through: finite differences on one entry of V
    v = model.recurrent.core.parametrizations.weight_hh_l0.original
    index = [p is v for p in model.parameters()].index(True)
    eps = 1e-6
    with torch.no_grad():
        v[0, 0] += eps
        up = reference_loss(model, inputs, targets)
        v[0, 0] -= 2 * eps
        down = reference_loss(model, inputs, targets)
        v[0, 0] += eps
    assert float(got[index][0, 0]) == pytest.approx(float((up - down) / (2 * eps)), abs=1e-8)


def test_constrained_checkpoint_round_trip_and_bad_bound():
    model = _lm("lstm", 0.9)
    clone = RecurrentLM(ModelConfig(**model.config.to_dict())).double()
    clone.load_state_dict(model.state_dict())
    inputs, _ = tiny_batch()
    torch.testing.assert_close(clone(inputs)[0], model(inputs)[0], rtol=0, atol=0)
    with pytest.raises(ConfigError, match="spectral norm"):
        _lm("gru", -1.0)
