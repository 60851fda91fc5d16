"""Adaptive truncation: the policy (pure), the bias it is fed (against the laboratory's
own measurement) and the trainer's re-choice of K per epoch, saved with the run."""

import pytest
import torch

from tbptt.analysis.estimator import estimator_quality
from tbptt.data.streams import Batch
from tbptt.errors import SpecError
from tbptt.train.adaptive import truncation_bias
from tbptt.truncation import parse_strategy
from tests.reference import tiny_batch, tiny_lm
from tests.train.test_resume import make_trainer, one_thread  # noqa: F401 (a fixture)


def test_the_policy_takes_the_smallest_k_under_delta_else_the_largest():
    s = parse_strategy("adaptive:0.1,k=2,max=20")
    assert s.candidates() == [2, 4, 8, 16, 20]
    assert s.choose({2: 0.5, 4: 0.2, 8: 0.09, 16: 0.01, 20: 0.0}) == 8 and s.bias == 0.09
    assert s.plan(100, torch.Generator()).length == 8
    assert s.plan(100, torch.Generator()).loss_length == 8  # normalized by the current K
    assert s.choose({2: 0.5, 4: 0.4}) == 4  # none is good enough: the longest
    again = parse_strategy(s.spec)
    again.load_state_dict(s.state_dict())
    assert again.k == 4 and again.spec == "adaptive:0.1,k=2,max=20"


@pytest.mark.parametrize(
    "spec", ["adaptive", "adaptive:1.5", "adaptive:0.1,k=0", "adaptive:0.1,x=2"]
)
def test_bad_adaptive_specs_are_refused(spec):
    with pytest.raises(SpecError):
        parse_strategy(spec)


def test_the_bias_it_measures_is_the_laboratorys():
    model = tiny_lm("gru").eval()
    inputs, targets = tiny_batch(T=8)
    probe = Batch(inputs, targets)
    ks = [1, 2, 4, 8]
    got = truncation_bias(model, probe, ks)
    lab = estimator_quality(model, inputs, targets, [f"regular:{k}" for k in ks])
    want = {int(r["spec"].split(":")[1]): r["relative_bias"] for r in lab["results"]}
    assert got == pytest.approx(want, rel=1e-9)
    assert got[8] < 1e-12 < got[1]  # one window of the whole probe is exact


def test_the_trainer_rechooses_k_each_epoch_and_records_it(tmp_path):
    trainer = make_trainer("adaptive:0.2,k=2,max=16", epochs=2)
    records = trainer.fit()
    for r in records:
        assert r["adaptive_k"] in (2, 4, 8, 16) and r["adaptive_bias"] is not None
        assert r["adaptive_bias"] <= 0.2 or r["adaptive_k"] == 16
    steps = [r for r in trainer.metrics.records if r["event"] == "step"]
    assert {r["length"] for r in steps[:-1]} <= {records[0]["adaptive_k"], records[1]["adaptive_k"]}
