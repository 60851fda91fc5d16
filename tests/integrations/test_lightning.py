"""tbptt's strategies in a Lightning 2.x LightningModule (tbptt.integrations.lightning).

References: a naive loop written out here (the GRU equations, gates as gradient hooks, SGD;
nothing of tbptt's model or engine), tbptt's own Trainer on the same weights and data
(gradients of every window, float64), the state the module carried (entering batch 2 =
leaving batch 1), and an uninterrupted Lightning run (a resumed run must repeat its losses
and weights).
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch

L = pytest.importorskip("lightning", reason="the lightning extra is not installed")

import tbptt  # noqa: E402
from tbptt.data import StreamData  # noqa: E402
from tbptt.integrations.lightning import CHECKPOINT_KEY, StreamBatches, TruncatedBPTT  # noqa: E402

V, H, B, LENGTH = 7, 4, 3, 70  # a batch is 70 rows of 3 streams: 2 windows of regular:35

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def pattern(rows_per_column: int = 2 * LENGTH + 1) -> torch.Tensor:
    """A learnable token stream (a period-7 cycle with a few random tokens), (N,)."""
    n = rows_per_column * B
    g = torch.Generator().manual_seed(3)
    tokens = torch.arange(n) % V
    noise = torch.rand(n, generator=g) < 0.1
    return torch.where(noise, torch.randint(0, V, (n,), generator=g), tokens)


def lm(dtype=torch.float32) -> tbptt.RecurrentLM:
    torch.manual_seed(0)
    config = tbptt.ModelConfig(
        vocab_size=V, kind="gru", hidden_size=H, num_layers=1, embedding_size=3, dropout=0.0
    )
    return tbptt.RecurrentLM(config).to(dtype)


class Recording(torch.optim.SGD):
    """SGD that keeps a copy of the gradients it steps with."""

    def __init__(self, params, lr):
        super().__init__(params, lr=lr)
        self.seen: list[list[torch.Tensor]] = []

    def step(self, closure=None):
        self.seen.append([p.grad.clone() for g in self.param_groups for p in g["params"]])
        return super().step(closure)


class LitLM(TruncatedBPTT, L.LightningModule):
    def __init__(self, strategy: str, model=None, *, lr=0.5, clip=1.0, carry=False):
        super().__init__()
        self.model = model if model is not None else lm()
        self.lr = lr
        self.configure_tbptt(strategy, clip=clip, seed=0, carry_across_epochs=carry)
        self.entering, self.leaving, self.losses = [], [], []

    def configure_optimizers(self):
        self.recording = Recording(self.parameters(), lr=self.lr)
        return self.recording

    def training_step(self, batch, batch_idx):
        self.entering.append(copy.deepcopy(self.tbptt_state))
        loss = super().training_step(batch, batch_idx)
        self.leaving.append(self.tbptt_state)
        self.losses.append(self.tbptt_record["loss"])
        return loss


def fit(module, data, *, epochs=1, ckpt_path=None, precision="32-true", valid=None, length=LENGTH):
    loader = torch.utils.data.DataLoader(StreamBatches(data, B, length), batch_size=None)
    if valid is not None:
        valid = torch.utils.data.DataLoader(StreamBatches(valid, B, 10), batch_size=None)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        devices=1,
        precision=precision,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, loader, valid, ckpt_path=ckpt_path)
    return trainer


@pytest.mark.parametrize("strategy", ["regular:35", "randomized:35", "k1k2:10,35"])
def test_trains_one_step_per_window(strategy):
    data = pattern(8 * LENGTH + 1)
    module = LitLM(strategy, lr=2.0)
    trainer = fit(module, data, epochs=3)
    # One optimizer step per planned window: regular: 2 per batch, k1k2: 7, randomized: >= 1.
    steps = len(module.recording.seen)
    assert trainer.global_step == steps
    per_batch = {"regular:35": 2, "k1k2:10,35": 7}.get(strategy)
    batches = len(module.losses)
    assert batches == 3 * 8
    if per_batch:
        assert steps == per_batch * batches
    else:
        assert steps > batches
    # It learns the cycle: the last epoch's loss is well below the first batch's (about log V).
    assert module.losses[0] > 0.9 * math.log(V)
    assert sum(module.losses[-8:]) / 8 < 0.7 * module.losses[0]


def test_state_entering_batch_two_is_state_leaving_batch_one_detached():
    module = LitLM("regular:35")
    fit(module, pattern())
    assert module.entering[0] is None  # the first batch starts every stream afresh
    entering, leaving = module.entering[1], module.leaving[0]
    assert entering.grad_fn is None and not entering.requires_grad
    assert entering.shape == (1, B, H)
    assert torch.equal(entering, leaving)
    assert entering.abs().sum() > 0  # a real state, not a fresh zero one


def documents(tokens: torch.Tensor) -> StreamData:
    """The stream with a document starting every 23 tokens (each stream resets there)."""
    starts = torch.arange(len(tokens)) % 23 == 0
    return StreamData(tokens, starts=starts)


@pytest.mark.parametrize(
    "strategy, docs",
    [("regular:35", False), ("k1k2:10,35", False), ("randomized:35", False),
     ("variable:35", False), ("regular:35", True), ("k1k2:10,35", True),
     ("randomized:35", "whole"), ("variable:35", "whole")],
)  # fmt: skip
def test_window_gradients_equal_tbptt_trainer(strategy, docs):
    data = pattern()  # 140 rows per column: 2 batches of 70
    if docs is True:
        data = documents(data)
    model = lm(torch.float64)
    module = LitLM(strategy, copy.deepcopy(model), lr=0.3, clip=0)
    # "whole": one batch holding the whole stream, so even random windows are the trainer's
    fit(module, data, precision="64-true", length=None if docs == "whole" else LENGTH)
    config = tbptt.TrainConfig(
        strategy=strategy, batch_size=B, epochs=1, optimizer="sgd", lr=0.3,
        lr_schedule="constant", clip=0, seed=0,
    )  # fmt: skip
    trainer = tbptt.Trainer(model, data, torch.zeros(0, dtype=torch.long), config)
    trainer.optimizer = Recording(model.parameters(), lr=0.3)
    lengths = []
    while (remaining := trainer.stream.remaining()) > 0:
        window = trainer.strategy.plan(remaining, trainer.generator)
        batch = trainer.stream.next(window.length)
        trainer.train_step(
            batch.inputs, batch.targets, window, batch.reset, resets=batch.resets, mask=batch.mask
        )
        lengths.append(window.length)
    ours, theirs = module.recording.seen, trainer.optimizer.seen
    if trainer.strategy.stochastic and docs != "whole":
        # Windows are drawn inside each batch: the same draws up to the first batch end.
        ends = torch.tensor(lengths).cumsum(0)
        same = int((ends < LENGTH).sum())
        assert same >= 1
        ours, theirs = ours[:same], theirs[:same]
    assert len(ours) == len(theirs)
    for a, b in zip(ours, theirs):
        for ga, gb in zip(a, b):
            assert ga.dtype == torch.float64
            torch.testing.assert_close(ga, gb, rtol=0, atol=1e-9)


# -- an independent reference: the documented loop, written out step by step ------------


def _scale_gradient(h: torch.Tensor, xi: float) -> torch.Tensor:
    """h itself, with the gradient flowing back through it multiplied by xi (a hook)."""
    h = h * 1.0
    h.register_hook(lambda g: g * xi)
    return h


def naive_gradients(weights: dict, tokens: torch.Tensor, spec: str, *, lr: float) -> list:
    """Every optimizer step's gradients of what TruncatedBPTT's docstring promises, written
    without tbptt's model, engine or gates: the stream laid into B columns, cut into batches
    of LENGTH rows; in each batch, windows planned by the strategy from a generator seeded 0;
    each window runs the GRU equations from the carried state detached (zeros at the
    start), its gates as gradient hooks on the state edges, loss = summed cross-entropy /
    (B K) with K = 35; then SGD at lr times the window's lr_scale, as Recording steps.

    weights: named_parameters of a float64 lm(); tokens (N,); returns [[grad per weight]].
    """
    w = {k: v.detach().clone().requires_grad_(True) for k, v in weights.items()}
    strategy, generator = tbptt.parse_strategy(spec), torch.Generator().manual_seed(0)
    laid = tokens.view(B, -1).T  # (N / B, B): column b is the b-th contiguous stream
    inputs, targets = laid[:-1], laid[1:]  # (T, B)
    h = torch.zeros(B, H, dtype=torch.float64)
    steps = []
    for start in range(0, inputs.shape[0], LENGTH):
        batch_x, batch_y = inputs[start : start + LENGTH], targets[start : start + LENGTH]
        position = 0
        while position < batch_x.shape[0]:
            window = strategy.plan(batch_x.shape[0] - position, generator)
            h, loss = h.detach(), 0.0
            for t in range(position, position + window.length):
                xi = window.gates[t - position] if window.gates is not None else 1.0
                if t > position and xi != 1.0:
                    h = _scale_gradient(h, xi)
                x = torch.nn.functional.embedding(batch_x[t], w["embedding.weight"])  # (B, E)
                gi = x @ w["recurrent.core.weight_ih_l0"].T + w["recurrent.core.bias_ih_l0"]
                gh = h @ w["recurrent.core.weight_hh_l0"].T + w["recurrent.core.bias_hh_l0"]
                (i_r, i_z, i_n), (h_r, h_z, h_n) = gi.chunk(3, 1), gh.chunk(3, 1)  # (B, H) each
                r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
                h = (1 - z) * torch.tanh(i_n + r * h_n) + z * h
                logits = h @ w["head.weight"].T + w["head.bias"]  # (B, V)
                loss = loss + torch.nn.functional.cross_entropy(logits, batch_y[t], reduction="sum")
            grads = torch.autograd.grad(loss / (B * 35), list(w.values()))
            steps.append(list(grads))
            with torch.no_grad():
                for p, g in zip(w.values(), grads):
                    p -= lr * window.lr_scale * g
            position += window.length
    return steps


@pytest.mark.parametrize("strategy", ["regular:35", "randomized:35"])
def test_every_window_gradient_equals_the_naive_loop(strategy):
    tokens = pattern()  # 140 rows per column: 2 batches of 70
    model = lm(torch.float64)
    reference = naive_gradients(dict(model.named_parameters()), tokens, strategy, lr=0.3)
    module = LitLM(strategy, model, lr=0.3, clip=0)
    fit(module, tokens, precision="64-true")
    seen = module.recording.seen
    # every window of both batches (regular: 4; randomized: 5 draws), the weights moving
    assert len(seen) == len(reference) >= 4
    for step, (ours, theirs) in enumerate(zip(seen, reference)):
        for name, a, b in zip(dict(model.named_parameters()), ours, theirs):
            assert a.dtype == torch.float64
            torch.testing.assert_close(a, b, rtol=0, atol=1e-10, msg=f"{name}, step {step + 1}")


def _weights(module):
    return [p.detach().clone() for p in module.parameters()]


def test_checkpoint_resumes_to_the_same_metrics(tmp_path):
    # The state is carried across epochs, so a resumed run needs the saved state, and the
    # randomized windows need the saved generator.
    data = pattern(4 * LENGTH + 1)
    straight = LitLM("randomized:35", carry=True)
    fit(straight, data, epochs=2)

    first = LitLM("randomized:35", carry=True)
    trainer = fit(first, data, epochs=1)
    path = tmp_path / "epoch1.ckpt"
    trainer.save_checkpoint(path)
    saved = torch.load(path, weights_only=False)[CHECKPOINT_KEY]
    assert saved["strategy"] == "randomized:35" and saved["state"] is not None

    resumed = LitLM("randomized:35", carry=True)
    fit(resumed, data, epochs=2, ckpt_path=path)
    half = len(straight.losses) // 2
    assert resumed.losses == straight.losses[half:]
    for a, b in zip(_weights(resumed), _weights(straight)):
        assert torch.equal(a, b)

    # Without the saved state the same resume gives other losses: the check can fail.
    broken = torch.load(path, weights_only=False)
    broken[CHECKPOINT_KEY]["state"] = None
    torch.save(broken, tmp_path / "broken.ckpt")
    other = LitLM("randomized:35", carry=True)
    fit(other, data, epochs=2, ckpt_path=tmp_path / "broken.ckpt")
    assert other.losses[0] != straight.losses[half]


def test_checkpoint_of_another_strategy_is_refused(tmp_path):
    data = pattern()
    trainer = fit(LitLM("regular:35"), data)
    trainer.save_checkpoint(tmp_path / "a.ckpt")
    with pytest.raises(tbptt.ConfigError, match="regular:35"):
        fit(LitLM("k1k2:10,35"), data, epochs=2, ckpt_path=tmp_path / "a.ckpt")


@pytest.mark.slow
def test_docs_example_runs(time_machine, tmp_path, monkeypatch, capsys):
    import re
    from pathlib import Path

    document = Path(__file__).resolve().parents[2] / "docs" / "lightning.md"
    block = re.findall(r"```python\n(.*?)```", document.read_text(), flags=re.S)[0]
    monkeypatch.chdir(tmp_path)
    code = block.replace("path/to/timemachine.txt", str(time_machine))
    # One epoch of The Time Machine takes seconds; the test stops after 20 batches.
    code = code.replace("max_epochs=1,", "max_epochs=1, limit_train_batches=20,")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exec(compile(code, str(document), "exec"), {})
    line = capsys.readouterr().out.strip().splitlines()[-1]
    loss = float(re.match(r"train loss (\S+) nats per character", line).group(1))
    assert loss < math.log(28)  # below the uniform guess after 20 batches


def test_validation_carries_the_state_and_scores_every_row():
    valid = documents(pattern(41))  # 40 steps per stream: 4 batches of 10
    module = LitLM("regular:35")
    fit(module, pattern(), valid=valid)
    # Reference: each stream's 40 steps in one forward from a fresh state, reset at its
    # document starts, every next-token loss counted.
    laid = valid.inputs.view(B, 41).T  # (41, B)
    resets = valid.starts.view(B, 41).T[:-1]
    with torch.no_grad():
        logits, _ = module.model(laid[:-1], None, None, resets=resets)  # (40, B, V)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), laid[1:].flatten())
    assert module.tbptt_val["loss"] == pytest.approx(float(loss), rel=1e-5)
    assert module.tbptt_val["ppl"] == pytest.approx(math.exp(float(loss)), rel=1e-5)


class GRUCore(torch.nn.Module):
    """A user's module: (T, B, I), state (1, B, H) -> (T, B, H), state."""

    def __init__(self):
        super().__init__()
        self.gru = torch.nn.GRU(3, H)

    def forward(self, inputs, state):
        return self.gru(inputs, state)


def test_a_users_own_module_trains_with_state_carried():
    torch.manual_seed(0)
    model = tbptt.CustomLM(
        GRUCore(),
        vocab_size=V,
        input_size=3,
        output_size=H,
        initial_state=lambda batch_size: torch.zeros(1, batch_size, H),
    )
    module = LitLM("k1k2:10,35", model, lr=2.0)
    fit(module, pattern(8 * LENGTH + 1), epochs=2)
    assert len(module.recording.seen) == 7 * len(module.losses)
    assert torch.equal(module.entering[1], module.leaving[0])
    assert sum(module.losses[-8:]) / 8 < 0.8 * module.losses[0]


def test_a_non_finite_loss_stops_before_the_step():
    module = LitLM("regular:35")
    with torch.no_grad():
        for p in module.model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(tbptt.NonFiniteError, match="no step was taken"):
        fit(module, pattern())
    assert module.recording.seen == []


def test_batches_as_tuples_or_time_major():
    module = LitLM("regular:35")
    inputs, targets = torch.arange(12).view(3, 4), torch.arange(12).view(3, 4) + 1  # (B, T)
    resets = torch.zeros(3, 4, dtype=torch.bool)
    parts = module.tbptt_unpack((inputs, targets, resets))
    assert torch.equal(parts["inputs"], inputs.T) and torch.equal(parts["resets"], resets.T)
    assert parts["reset"] is False
    module.configure_tbptt("regular:35", batch_first=False)
    parts = module.tbptt_unpack({"inputs": inputs, "targets": targets, "reset": True})
    assert torch.equal(parts["inputs"], inputs) and parts["reset"] is True
    with pytest.raises(tbptt.ConfigError, match="Expected a batch as a dict"):
        module.tbptt_unpack(inputs)
    with pytest.raises(tbptt.ConfigError, match="no targets"):
        module.tbptt_unpack({"inputs": inputs})
