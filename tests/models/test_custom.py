"""Your own module under every strategy: the adapter against RecurrentLM with the same weights
(whose gates and resets are tested against the naive reference), and tuple / list / dict states."""

import pytest
import torch
from torch import nn

from tbptt.errors import ConfigError
from tbptt.models.custom import CustomLM, StatefulModule
from tbptt.train import sequence_gradient
from tbptt.truncation import parse_strategy
from tests.reference import tiny_batch, tiny_lm

SPECS = [
    "full",
    "full:4",
    "full:checkpoint",
    "regular:3",
    "randomized:3",
    "randomized:3,alpha=4",
    "k1k2:2,5",
    "variable:4",
]


class TorchCore(nn.Module):
    """A plain nn.LSTM / nn.GRU as a user would write it: (inputs, state) -> (outputs, state)."""

    def __init__(self, kind, size, hidden, layers):
        super().__init__()
        self.rnn = (nn.LSTM if kind == "lstm" else nn.GRU)(size, hidden, layers)

    def forward(self, inputs, state):
        return self.rnn(inputs, state)


def _twin(kind):
    """A RecurrentLM and a CustomLM over nn.LSTM/GRU with the same weights (float64)."""
    lm = tiny_lm(kind, layers=2)
    L, H = 2, 4

    def init(B):
        z = torch.zeros(L, B, H, dtype=torch.float64)
        return (z, z.clone()) if kind == "lstm" else z

    custom = CustomLM(
        TorchCore(kind, 3, H, L), vocab_size=7, input_size=3, output_size=H, initial_state=init
    ).double()
    custom.embedding.weight.data.copy_(lm.embedding.weight)
    custom.core.module.rnn.load_state_dict(lm.recurrent.core.state_dict())
    custom.head.load_state_dict(lm.head.state_dict())
    return lm, custom


@pytest.mark.parametrize("kind", ["gru", "lstm"])
@pytest.mark.parametrize("spec", SPECS)
def test_custom_module_gradient_equals_the_builtin_model(kind, spec):
    lm, custom = _twin(kind)
    inputs, targets = tiny_batch(T=11)
    resets = torch.zeros(11, 3, dtype=torch.bool)
    resets[6, 0] = resets[2, 2] = True
    for r in (None, resets):
        expected = sequence_gradient(
            lm, parse_strategy(spec), inputs, targets, resets=r,
            generator=torch.Generator().manual_seed(2),
        )  # fmt: skip
        got = sequence_gradient(
            custom, parse_strategy(spec), inputs, targets, resets=r,
            generator=torch.Generator().manual_seed(2),
        )  # fmt: skip
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


class DictCell(nn.Module):
    """A state that is a dict holding a tensor and a list of tensors (batch on dim 0)."""

    def __init__(self, size):
        super().__init__()
        self.cell = nn.GRUCell(size, size)
        self.mix = nn.Linear(size, size)

    def forward(self, inputs, state):
        h, (m,) = state["h"], state["memory"]
        outputs = []
        for x in inputs:
            h = self.cell(x + torch.tanh(self.mix(m)), h)
            m = 0.5 * m + 0.5 * h
            outputs.append(h)
        return torch.stack(outputs), {"h": h, "memory": [m]}


def _dict_lm():
    torch.manual_seed(0)

    def init(B):
        return {"h": torch.zeros(B, 4), "memory": [torch.zeros(B, 4)]}

    return CustomLM(
        DictCell(4), vocab_size=7, input_size=4, output_size=4, initial_state=init
    ).double()


def _naive_dict_loss(model, inputs, targets, cut_at=(), scales=None, resets=None):
    """The dict-state model step by step: detach at ``cut_at``, hooks for ``scales``,
    zero stream b before step t where ``resets[t, b]``."""
    T, B = inputs.shape
    core = model.core.module
    h = torch.zeros(B, 4, dtype=torch.float64)
    m = torch.zeros(B, 4, dtype=torch.float64)
    total = 0.0
    for t in range(T):
        if t in cut_at:
            h, m = h.detach(), m.detach()
        elif scales and t in scales:
            h, m = h * 1.0, m * 1.0
            for v in (h, m):
                v.register_hook(lambda g, xi=scales[t]: g * xi)
        if resets is not None:
            keep = (~resets[t]).double().unsqueeze(1)
            h, m = h * keep, m * keep
        x = model.embedding(inputs[t])
        h = core.cell(x + torch.tanh(core.mix(m)), h)
        m = 0.5 * m + 0.5 * h
        total = total + nn.functional.cross_entropy(model.head(h), targets[t], reduction="sum")
    return total / (T * B)


def test_dict_state_randomized_gates_and_resets_equal_a_naive_loop():
    model = _dict_lm()
    T = 12
    inputs, targets = tiny_batch(T=T)
    resets = torch.zeros(T, 3, dtype=torch.bool)
    resets[5, 1] = resets[9, 0] = True
    strategy = parse_strategy("randomized:3")
    g = torch.Generator().manual_seed(5)
    cuts, scales, pos = set(), {}, 0
    while pos < T:
        w = strategy.plan(T - pos, g)
        cuts.add(pos)
        scales.update({pos + i: xi for i, xi in enumerate(w.gates) if i > 0 and xi != 1.0})
        pos += w.length
    assert len(cuts) > 1 and scales
    got = sequence_gradient(
        model, strategy, inputs, targets, resets=resets, generator=torch.Generator().manual_seed(5)
    )
    ref = _naive_dict_loss(model, inputs, targets, cuts, scales, resets)
    for a, b in zip(got, torch.autograd.grad(ref, list(model.parameters()))):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-10)


def test_adapter_needs_an_initial_state_and_a_batch_dimension():
    with pytest.raises(ConfigError, match="initial_state"):
        StatefulModule(DictCell(4))
    adapter = StatefulModule(DictCell(4), initial_state=lambda B: {"h": torch.zeros(B, 4), "memory": [torch.zeros(B, 4)]}, batch_dim=-1)  # fmt: skip
    resets = torch.zeros(3, 2, dtype=torch.bool)
    resets[1, 0] = True
    with pytest.raises(ConfigError, match="batch_dim"):
        adapter(torch.zeros(3, 2, 4), None, resets=resets)
