"""A tiny comparison, run once per module: real training, real files, tiny sizes."""

import pytest
import torch

from tbptt.data import prepare_text
from tbptt.models import ModelConfig
from tbptt.report import write_report
from tbptt.train import TrainConfig
from tbptt.train.compare import CompareConfig, run_comparison

WORDS = "the time traveller held in his hand a glittering metallic framework".split()
STRATEGIES = ("full", "regular:6", "randomized:6")


def tiny_text(n_words: int = 250) -> str:
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(0, len(WORDS), (n_words,), generator=g).tolist()
    return " ".join(WORDS[i] for i in idx)


def tiny_comparison(out, *, seeds=(0, 1), strategies=STRATEGIES, eval_seconds=None, **budget):
    data = prepare_text(tiny_text(), level="char")
    model = ModelConfig(
        vocab_size=len(data.vocab), kind="gru", hidden_size=4, num_layers=1, embedding_size=3
    )
    train = TrainConfig(batch_size=4, nonfinite="skip", eval_batch_size=2)
    config = CompareConfig(
        strategies=strategies,
        seeds=seeds,
        sample_length=12,
        evals_per_epoch=2,
        eval_seconds=eval_seconds,
        **(budget or {"budget_tokens": 400}),
    )
    return run_comparison(data, config, model=model, train=train, out=out)


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory):
    """(comparison, report paths, directory) of a two-seed, three-strategy run of 400 tokens."""
    out = tmp_path_factory.mktemp("compare")
    comparison = tiny_comparison(out)
    return comparison, write_report(comparison, out), out
