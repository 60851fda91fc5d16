"""Checks that need a CUDA device: marked ``gpu``, so where there is none (as in CI) they
skip and the run's summary lists them.

Run on a GPU machine with ``python -m pytest -q -m gpu`` (these and the other ``gpu`` tests).
"""

import json

import pytest
import torch

from tbptt.cli import main
from tbptt.train import sequence_gradient
from tests.reference import reference_loss, tiny_batch, tiny_lm

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("kind", ["gru", "lstm", "rnn"])
def test_cuda_fused_and_step_paths_match_the_naive_reference(kind):
    model = tiny_lm(kind, layers=2).cuda()
    inputs, targets = (t.cuda() for t in tiny_batch(T=8))
    gates = [1.0, 1.0, 1.5, 0.0, 1.0, 1.0, 1.0, 2.0]
    params = list(model.parameters())
    ref = reference_loss(model, inputs, targets, cuts={3}, scales={2: 1.5, 7: 2.0})
    ref_grads = torch.autograd.grad(ref, params)
    for path in ("fused", "steps"):
        logits, _ = model(inputs, None, gates, path=path)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
        torch.testing.assert_close(loss, ref, rtol=0, atol=1e-10)
        for a, b in zip(torch.autograd.grad(loss, params), ref_grads):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "spec", ["full", "regular:3", "randomized:3", "k1k2:2,5", "variable:4", "full:checkpoint"]
)
def test_cuda_strategy_gradients_equal_cpu(spec):
    from tbptt.truncation import parse_strategy

    model = tiny_lm("lstm", layers=2)
    inputs, targets = tiny_batch(T=12)
    cpu = sequence_gradient(
        model, parse_strategy(spec), inputs, targets, generator=torch.Generator().manual_seed(1)
    )
    gpu_model = tiny_lm("lstm", layers=2).cuda()
    gpu = sequence_gradient(
        gpu_model,
        parse_strategy(spec),
        inputs.cuda(),
        targets.cuda(),
        generator=torch.Generator().manual_seed(1),
    )
    for a, b in zip(cpu, gpu):
        torch.testing.assert_close(b.cpu(), a, rtol=0, atol=1e-9)


@pytest.mark.parametrize(
    "spec", ["regular:35", "randomized:35", "k1k2:10,35", "variable:35", "full:checkpoint"]
)
def test_train_on_cuda_then_resume_on_cpu(spec, time_machine, tmp_path, capsys):
    out = tmp_path / "run"
    common = [
        "--data",
        str(time_machine),
        "--model",
        "lstm",
        "--hidden-size",
        "64",
        "--no-progress",
    ]
    assert (
        main(
            [
                "train",
                *common,
                "--strategy",
                spec,
                "--device",
                "cuda",
                "--epochs",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    if not spec.startswith("full"):  # full BPTT takes one optimizer step per epoch
        assert summary["val_ppl"] < summary["unigram_ppl"]
    assert (
        main(["train", "--resume", str(out), "--device", "cpu", "--epochs", "2", "--no-progress"])
        == 0
    )
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs if r["event"] == "epoch"] == [1, 2]
