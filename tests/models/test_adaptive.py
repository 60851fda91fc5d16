"""Adaptive softmax and weight tying: an exactly normalized distribution, the same loss in
training (per target) and evaluation (full log-probabilities), every strategy."""

from __future__ import annotations

import math

import pytest
import torch

from tbptt.errors import ConfigError
from tbptt.models import ModelConfig, RecurrentNet
from tbptt.models.adaptive import AdaptiveOutputs, frequency_cutoffs, parse_cutoffs
from tbptt.train import TrainConfig, Trainer
from tbptt.train.objectives import LanguageModel

V, H, T, B = 11, 16, 6, 3


def adaptive_net(**changes) -> RecurrentNet:
    config = ModelConfig(
        vocab_size=V,
        kind="lstm",
        hidden_size=H,
        num_layers=1,
        embedding_size=3,
        dropout=0.0,
        adaptive_softmax="3,7",
        **changes,
    )
    return RecurrentNet(config).double()


def test_adaptive_log_probabilities_sum_to_one_over_the_vocabulary():
    net = adaptive_net().eval()
    inputs = torch.randint(0, V, (T, B))
    log_p, _ = net(inputs)  # (T, B, V)
    assert log_p.shape == (T, B, V)
    total = log_p.exp().sum(-1)  # (T, B)
    torch.testing.assert_close(total, torch.ones_like(total), rtol=0, atol=1e-12)


def test_training_loss_is_the_evaluation_cross_entropy_and_has_its_gradient():
    # Reference: -sum log p(target) from the full log-probabilities (a different code path:
    # log_prob over every cluster, then a gather), in float64.
    net = adaptive_net()
    inputs, targets = torch.randint(0, V, (T, B)), torch.randint(0, V, (T, B))
    mask = torch.rand(T, B) > 0.3
    objective = LanguageModel()
    outputs, _ = net(inputs)
    assert isinstance(outputs, AdaptiveOutputs)
    loss = objective.loss_sum(outputs, targets, mask)
    grads = torch.autograd.grad(loss, list(net.parameters()), retain_graph=True)

    full = outputs.log_probs()  # (T, B, V)
    reference = -(full.gather(-1, targets.unsqueeze(-1)).squeeze(-1) * mask).sum()
    ref_grads = torch.autograd.grad(reference, list(net.parameters()))
    torch.testing.assert_close(loss, reference, rtol=1e-12, atol=1e-12)
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)

    # evaluation mode: full log-probabilities, scored by the same objective, same sum
    net.eval()
    log_p, _ = net(inputs)
    stats = objective.statistics(log_p.detach(), targets, mask)
    assert math.isclose(stats["loss_sum"], reference.item(), rel_tol=1e-10)
    assert stats["count"] == float(mask.sum())


def test_a_full_softmax_is_not_normalized_when_read_as_log_probabilities():
    # The check above can fail: raw logits of a linear head do not sum to 1 when exponentiated.
    config = ModelConfig(vocab_size=V, hidden_size=H, num_layers=1, embedding_size=3)
    logits, _ = RecurrentNet(config).double().eval()(torch.randint(0, V, (T, B)))
    assert not torch.allclose(logits.exp().sum(-1), torch.ones(T, B, dtype=torch.float64))


def test_frequency_cutoffs_follow_the_token_coverage():
    counts = torch.tensor([50, 30, 10, 5, 3, 1, 1])  # 100 tokens, sorted by falling frequency
    # 80 % of the text: the first 2 ids; 95 %: the first 4
    assert frequency_cutoffs(counts) == (2, 4)
    assert frequency_cutoffs(torch.tensor([1, 1, 1])) == (1,)  # too small to cut by coverage
    assert parse_cutoffs("2,5", 7) == (2, 5)
    for bad in ("5,2", "0,3", "2,7", "a,b"):
        with pytest.raises(ConfigError):
            parse_cutoffs(bad, 7)


def test_weight_tying_shares_one_parameter():
    config = ModelConfig(vocab_size=V, hidden_size=H, num_layers=1, embedding_size=H)
    net = RecurrentNet(config)
    tied = RecurrentNet(ModelConfig(**{**config.to_dict(), "tie_weights": True}))
    assert tied.head.weight is tied.embedding.weight
    n = sum(p.numel() for p in net.parameters())
    assert sum(p.numel() for p in tied.parameters()) == n - V * H
    with pytest.raises(ConfigError, match="embedding size equal to the hidden size"):
        RecurrentNet(ModelConfig(**{**config.to_dict(), "tie_weights": True, "embedding_size": 3}))
    with pytest.raises(ConfigError, match="not an adaptive one"):
        RecurrentNet(
            ModelConfig(**{**config.to_dict(), "tie_weights": True, "adaptive_softmax": "3"})
        )


@pytest.mark.parametrize(
    "strategy", ["full", "regular:3", "randomized:3", "k1k2:2,4", "variable:4", "full:checkpoint"]
)
@pytest.mark.parametrize("head", ["adaptive", "tied"])
def test_every_strategy_trains_with_an_adaptive_or_tied_head(strategy, head):
    torch.manual_seed(0)
    changes = {"adaptive_softmax": "3,7"} if head == "adaptive" else {"tie_weights": True}
    config = ModelConfig(
        vocab_size=V, hidden_size=H, num_layers=1, embedding_size=H, dropout=0.0, **changes
    )
    net = RecurrentNet(config)
    tokens = torch.randint(0, V, (120,))
    trainer = Trainer(
        net,
        tokens[:100],
        tokens[100:],
        TrainConfig(
            strategy=strategy, batch_size=B, epochs=1, eval_batch_size=2, lr_schedule="constant"
        ),
    )
    before = [p.detach().clone() for p in net.parameters()]
    record = trainer.train_epoch()
    assert math.isfinite(record["train_loss"]) and math.isfinite(record["val_ppl"])
    assert any(not torch.equal(b, p) for b, p in zip(before, net.parameters(), strict=True))


@pytest.mark.parametrize("head", ["", "3,7"])
def test_a_word_model_can_start_at_the_unigram_distribution(head):
    counts = torch.tensor([9, 40, 20, 12, 7, 5, 3, 2, 1, 1, 0])  # (V,)
    expected = torch.log((counts.double() + 1) / (counts.sum() + V))  # add-one smoothed
    config = ModelConfig(vocab_size=V, hidden_size=H, num_layers=1, embedding_size=3,
                         adaptive_softmax=head)  # fmt: skip
    net = RecurrentNet(config).double().eval()
    net.start_at_unigram(counts)
    with torch.no_grad():  # a head that reads nothing from the hidden state: its bias alone
        for name, p in net.head.named_parameters():
            if "weight" in name:
                p.zero_()
    out, _ = net(torch.randint(0, V, (T, B)))
    log_p = torch.log_softmax(out, -1)[0, 0]  # (V,)
    if not head:
        torch.testing.assert_close(log_p, expected)
        return
    torch.testing.assert_close(log_p[:3], expected[:3])  # the shortlist: its own frequencies
    for a, b in ((3, 7), (7, V)):  # a cluster: its total mass, spread evenly
        torch.testing.assert_close(log_p[a:b].logsumexp(0), expected[a:b].logsumexp(0))
        assert torch.allclose(log_p[a:b], log_p[a])
