"""Full BPTT is refused before its first window when its graph or its step will not fit.

The estimate is checked against an independent measurement: the saved tensors of a
whole window (not the probe's slope) are measured with the same hooks and compared.
"""

from __future__ import annotations

import pytest
import torch

from tbptt.data.streams import SequentialStream
from tbptt.errors import ConfigError
from tbptt.models.lm import ModelConfig, RecurrentNet
from tbptt.train import budget
from tbptt.train.budget import check_full_memory, check_step_time, estimate_window_memory
from tbptt.train.memory import SavedTensorBytes
from tbptt.truncation import parse_strategy


@pytest.fixture
def setup(monkeypatch):
    monkeypatch.setattr(budget, "MIN_STEPS", 50)
    torch.manual_seed(0)
    model = RecurrentNet(ModelConfig(vocab_size=7, hidden_size=4, embedding_size=3, num_layers=1))
    tokens = torch.randint(0, 7, (3 * 201,))
    return model, SequentialStream(tokens, 3)  # 3 streams of 200 steps


def test_the_estimate_scales_the_probe_to_the_whole_window(setup):
    model, stream = setup
    estimate = estimate_window_memory(model, parse_strategy("full"), stream)
    assert estimate.steps == 200 and stream.position == 0
    meter = SavedTensorBytes()  # the reference: the saved tensors of the whole window
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
        outputs, _ = model(stream.data[:200], None)
        outputs.float().log_softmax(-1).sum()
    # within 25 %, and never under: a refusal must not let through what will not fit
    assert meter.peak <= estimate.total / budget.MARGIN <= 1.25 * meter.peak


def test_full_bptt_that_does_not_fit_is_refused_in_one_line(setup):
    model, stream = setup
    with pytest.raises(ConfigError) as e:
        check_full_memory(model, parse_strategy("full"), stream, available=1000)
    message = str(e.value)
    assert "\n" not in message and "full:checkpoint" in message and "200 steps" in message
    assert "GB" in message and e.value.options == ("train.strategy",)
    # what fits passes; a checkpointed strategy and a short window are not measured
    assert check_full_memory(model, parse_strategy("full"), stream, available=10**12) is not None
    assert check_full_memory(model, parse_strategy("full:checkpoint"), stream, available=1) is None
    assert check_full_memory(model, parse_strategy("regular:10"), stream, available=1) is None


def test_a_step_longer_than_the_budget_is_refused_before_starting(setup):
    model, stream = setup
    with pytest.raises(ConfigError, match="more than the budget of 1e-06 training seconds") as e:
        check_step_time(model, parse_strategy("full"), stream, 1e-6)
    assert "\n" not in str(e.value)
    assert check_step_time(model, parse_strategy("full"), stream, 1e6) > 0
    assert check_step_time(model, parse_strategy("regular:10"), stream, 1e-6) is None


def test_the_memory_probe_leaves_every_random_draw_as_it_was():
    from tbptt.data.streams import RandomStream
    from tbptt.models import ModelConfig, RecurrentNet
    from tbptt.train.budget import check_full_memory
    from tbptt.truncation import FullBPTT

    model = RecurrentNet(ModelConfig(vocab_size=5, kind="gru", hidden_size=4, num_layers=1,
                                     embedding_size=3, dropout=0.5))  # fmt: skip
    generator = torch.Generator().manual_seed(3)
    stream = RandomStream(torch.randint(0, 5, (3 * 4000,)), 3, generator)
    torch.manual_seed(11)
    before = (torch.get_rng_state(), generator.get_state())
    estimate = check_full_memory(model, FullBPTT(), stream, available=10**12)
    assert estimate is not None  # the probe ran (dropout and the random stream's offsets)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert torch.equal(generator.get_state(), before[1])
