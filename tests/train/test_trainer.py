import math

import pytest
import torch
import torch.nn.functional as F

from tbptt.models import ModelConfig, RecurrentLM
from tbptt.train import (
    TrainConfig,
    Trainer,
    evaluate,
    evaluation_batch,
    generate,
    unigram_perplexity,
)
from tbptt.truncation import Strategy, Window, register
from tests.reference import reference_loss, tiny_lm


def _tokens(n=400, vocab=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (n,), generator=g)


@pytest.mark.parametrize("kind", ["gru", "lstm"])
def test_first_sgd_step_is_minus_lr_times_the_reference_window_gradient(kind):
    model = tiny_lm(kind, layers=2)
    tokens = _tokens()
    cfg = TrainConfig(
        strategy="regular:5",
        batch_size=3,
        optimizer="sgd",
        lr=0.1,
        clip=0.0,
        lr_schedule="constant",
    )
    trainer = Trainer(model, tokens, tokens[:0], cfg)
    before = [p.detach().clone() for p in model.parameters()]
    data = trainer.stream.data  # (N/B, B)
    ref = reference_loss(model, data[:5], data[1:6])  # mean over the 5 x 3 window tokens
    grads = torch.autograd.grad(ref, list(model.parameters()))
    trainer.train_step(data[:5], data[1:6], Window(5), reset=True)
    for p, p0, g in zip(model.parameters(), before, grads):
        torch.testing.assert_close(p.detach(), p0 - 0.1 * g, rtol=0, atol=1e-12)


def test_state_carries_between_windows_and_resets_at_epoch_start():
    model = tiny_lm("gru")
    tokens = _tokens(100)
    trainer = Trainer(
        model, tokens, tokens[:0], TrainConfig(strategy="regular:4", batch_size=3, lr=1e-9)
    )
    seen = []
    original = model.forward

    def spy(inputs, state=None, gates=None, **kw):
        seen.append(None if state is None else state.clone())
        return original(inputs, state, gates, **kw)

    model.forward = spy
    trainer.train_epoch()
    assert torch.count_nonzero(seen[0]) == 0  # fresh state at the start of the stream
    assert all(torch.count_nonzero(s) > 0 for s in seen[1:])  # carried afterwards
    assert trainer.state is None  # dropped at the epoch's end


class _HalfLr(Strategy):
    name = "halflr"

    def reference_length(self, total_steps):
        return 4

    @property
    def spec(self):
        return "halflr"

    def plan(self, remaining, generator):
        return Window(min(4, remaining), lr_scale=0.5)


def test_window_lr_scale_reaches_the_optimizer_and_is_restored():
    register("halflr", lambda *a, **k: _HalfLr())
    model = tiny_lm("gru")
    tokens = _tokens(60)
    trainer = Trainer(
        model,
        tokens,
        tokens[:0],
        TrainConfig(
            strategy="halflr", batch_size=3, optimizer="sgd", lr=0.2, clip=0, lr_schedule="constant"
        ),
    )
    p0 = [p.detach().clone() for p in model.parameters()]
    data = trainer.stream.data
    grads = torch.autograd.grad(
        reference_loss(model, data[:4], data[1:5]), list(model.parameters())
    )
    record = trainer.train_step(
        data[:4], data[1:5], trainer.strategy.plan(10, trainer.generator), reset=True
    )
    assert record["lr"] == pytest.approx(0.1)
    for p, a, g in zip(model.parameters(), p0, grads):
        torch.testing.assert_close(p.detach(), a - 0.1 * g, rtol=0, atol=1e-12)


def test_cosine_schedule_decays_to_zero_over_the_run():
    model = tiny_lm("gru")
    tokens = _tokens(200)
    trainer = Trainer(
        model, tokens, tokens[:0], TrainConfig(strategy="regular:6", batch_size=3, epochs=2, lr=0.5)
    )
    steps = []
    trainer.fit(on_step=steps.append)
    lrs = [r["lr"] for r in steps]
    n = trainer.stream.steps
    for r in (
        steps
    ):  # lr = 0.5 * (1 + cos(pi * done)) / 2, done = fraction of the run at the window's end
        pos = min(n, 6 * (1 + (r["step"] - 1) % math.ceil(n / 6)))
        done = (r["epoch"] - 1 + pos / n) / 2
        assert r["lr"] == pytest.approx(0.25 * (1 + math.cos(math.pi * done)))
    assert lrs == sorted(lrs, reverse=True) and lrs[-1] == pytest.approx(0.0, abs=1e-12)


def test_evaluation_is_token_weighted_carries_state_and_scores_every_token():
    model = tiny_lm("lstm", layers=2)
    valid = _tokens(23, seed=3)
    batch = evaluation_batch(valid, 4, context=torch.tensor(5))  # 4 columns of 6, the last padded
    inputs, targets, mask = batch.inputs, batch.targets, batch.mask
    assert int(mask.sum()) == 23 and inputs[0, 0] == 5
    assert (
        targets[:, 0].tolist() == valid[:6].tolist()
        and inputs[1:, 0].tolist() == valid[:5].tolist()
    )
    sums = evaluate(model, batch, window=2)
    # reference: each column in one pass from a zero state
    ref = 0.0
    for b in range(4):
        keep = mask[:, b]
        logits, _ = model(inputs[:, b : b + 1][keep])
        ref += F.cross_entropy(logits[:, 0], targets[:, b][keep], reduction="sum").item()
    assert sums["count"] == 23
    assert sums["loss_sum"] == pytest.approx(ref, abs=1e-9)


def test_unigram_perplexity_closed_form():
    train = torch.tensor([0, 0, 1, 2])  # counts + 1: 3, 2, 2 over a vocabulary of 3
    valid = torch.tensor([0, 1])
    expected = math.exp(-(math.log(3 / 7) + math.log(2 / 7)) / 2)
    assert unigram_perplexity(train, valid, 3) == pytest.approx(expected)


def test_training_learns_a_repeating_pattern():
    pattern = torch.tensor([0, 1, 2, 3, 4, 5, 6] * 200)
    torch.manual_seed(0)
    model = RecurrentLM(
        ModelConfig(
            vocab_size=7, kind="gru", hidden_size=16, num_layers=1, embedding_size=4, dropout=0
        )
    )
    cfg = TrainConfig(strategy="randomized:5", batch_size=4, epochs=3, lr=0.02)
    trainer = Trainer(model, pattern[:1200], pattern[1200:], cfg)
    records = trainer.fit()
    assert records[-1]["val_ppl"] < 1.2 < records[0]["train_ppl"]
    assert generate(model, torch.tensor([3, 4]), 5) == [5, 6, 0, 1, 2]


def test_sampled_generation_is_reproducible_from_its_generator():
    model = tiny_lm("gru").float()
    a = generate(
        model, torch.tensor([1]), 30, temperature=1.0, generator=torch.Generator().manual_seed(4)
    )
    b = generate(
        model, torch.tensor([1]), 30, temperature=1.0, generator=torch.Generator().manual_seed(4)
    )
    assert a == b and len(set(a)) > 1


def test_validation_restarts_state_at_document_starts():
    from tbptt.data import StreamData

    model = tiny_lm("lstm", layers=2)
    valid = _tokens(14, seed=5)
    starts = torch.zeros(14, dtype=torch.bool)
    starts[[0, 6]] = True  # documents valid[0:6] and valid[6:14]
    batch = evaluation_batch(StreamData(valid, starts=starts), 1, context=torch.tensor(3))
    inputs, targets = batch.inputs, batch.targets  # one column: (14, 1)
    total = evaluate(model, batch, window=4)["loss_sum"]
    # reference: the first document read after the context token (its first input is the
    # context, reset before reading valid[0]); the second from a fresh state from valid[6] on
    ref = 0.0
    logits, _ = model(inputs[:1])
    ref += F.cross_entropy(logits[:, 0], targets[:1, 0], reduction="sum").item()
    logits, _ = model(inputs[1:7])  # reads valid[0..5] from a fresh state
    ref += F.cross_entropy(logits[:, 0], targets[1:7, 0], reduction="sum").item()
    logits, _ = model(inputs[7:])  # reads valid[6..12] from a fresh state
    ref += F.cross_entropy(logits[:, 0], targets[7:, 0], reduction="sum").item()
    assert total == pytest.approx(ref, abs=1e-9)
    carried = evaluate(model, evaluation_batch(valid, 1, context=torch.tensor(3)), window=4)
    assert abs(carried["loss_sum"] - total) > 1e-6  # the resets matter


def test_a_built_strategy_must_match_the_configuration():
    from tbptt.errors import ConfigError
    from tbptt.truncation import RegularTruncation

    tokens = _tokens(200)
    config = TrainConfig(strategy="regular:5", batch_size=3)
    trainer = Trainer(tiny_lm("gru"), tokens, tokens[:0], config, strategy=RegularTruncation(5))
    assert trainer.strategy.spec == "regular:5"
    with pytest.raises(
        ConfigError, match="the strategy regular:7 differs from the configuration's regular:5"
    ):
        Trainer(tiny_lm("gru"), tokens, tokens[:0], config, strategy=RegularTruncation(7))


def test_top_k_and_top_p_keep_the_closed_form_distribution():
    from tbptt.train.generate import _truncated

    probs = torch.tensor([0.15, 0.5, 0.05, 0.3], dtype=torch.float64)
    top3 = torch.tensor([0.15, 0.5, 0.0, 0.3], dtype=torch.float64) / 0.95
    assert torch.allclose(_truncated(probs, 3, None), top3)
    nucleus = torch.tensor([0.0, 0.5, 0.0, 0.3], dtype=torch.float64) / 0.8  # 0.5 + 0.3 >= 0.7
    assert torch.allclose(_truncated(probs, None, 0.7), nucleus)
    assert torch.allclose(_truncated(probs, 3, 0.7), nucleus)
    assert torch.equal(_truncated(probs, None, None), probs)
    assert torch.allclose(_truncated(probs, None, 1.0), probs)


def test_top_k_1_and_a_tiny_nucleus_generate_greedily():
    model = tiny_lm("gru").float()
    greedy = generate(model, torch.tensor([1, 2]), 25)
    for extra in ({"top_k": 1}, {"top_p": 1e-9}):
        g = torch.Generator().manual_seed(7)
        assert (
            generate(model, torch.tensor([1, 2]), 25, temperature=3.0, generator=g, **extra)
            == greedy
        )


def test_top_k_sampling_draws_only_among_the_k_most_likely_tokens():
    model = tiny_lm("gru")
    prefix = torch.tensor([3])
    out = generate(
        model, prefix, 40, temperature=5.0, top_k=2, generator=torch.Generator().manual_seed(0)
    )
    # reference: run the model token by token on what was drawn, check each draw is in the top 2
    logits, state = model(prefix.view(-1, 1))
    for token in out:
        assert token in logits[-1, 0].topk(2).indices.tolist()
        logits, state = model(torch.tensor([[token]]), state)
    assert out != generate(model, prefix, 40)  # it sampled: not the greedy path


@pytest.mark.parametrize(
    "options",
    [{"top_k": 0}, {"top_k": 1.5}, {"top_p": 0.0}, {"top_p": 1.01}, {"temperature": -0.1}],
)
def test_generate_refuses_sampling_settings_that_define_no_distribution(options):
    from tbptt.errors import ConfigError

    with pytest.raises(ConfigError, match="Expected"):
        generate(tiny_lm("gru"), torch.tensor([1]), 3, **options)
