"""Online strategies (rtrl, uoro, snap) train, checkpoint and resume bit for bit.

The machinery is tests/train/test_resume.py's, run here with the online strategies:
their sensitivities (or UORO's rank-one factors, and the generator of its signs)
are part of the run state.
"""

import math
import random

import pytest

from tests.train import test_resume as resume
from tests.train.test_resume import WORDS, make_trainer, one_thread  # noqa: F401 (a fixture)


@pytest.fixture
def text(tmp_path):
    """A text a quarter of test_resume's: every row is a forward-mode step here."""
    g = random.Random(3)
    path = tmp_path / "text.txt"
    path.write_text(" ".join(g.choice(WORDS) for _ in range(70)) + "\n")
    return path


ONLINE = ["rtrl", "uoro:update_every=3", "snap:1,update_every=2"]
# adaptive truncation's chosen K is the strategy's own state, saved with the run too
RESUMED = [*ONLINE, "adaptive:0.2,k=2,max=16"]


def test_an_online_run_steps_every_update_every_rows_and_never_truncates():
    trainer = make_trainer("rtrl:update_every=4", epochs=1)
    records = trainer.fit()
    steps = [r for r in trainer.metrics.records if r["event"] == "step"]
    assert {r["length"] for r in steps[:-1]} == {4}
    assert len(steps) == -(-trainer.stream.steps // 4)
    assert all(r["grad_norm"] > 0 for r in steps)
    assert math.isfinite(records[0]["val_loss"])  # evaluated, neither NaN nor inf


@pytest.mark.parametrize("strategy", RESUMED)
def test_online_trainer_resumes_bitwise_from_any_step(strategy, tmp_path):
    resume.test_trainer_resumes_bitwise_from_any_step(strategy, "sequential", "gru", tmp_path)


@pytest.mark.parametrize("strategy", ["rtrl", "uoro"])
def test_everything_an_online_trainer_holds_is_saved_or_rebuilt(strategy, tmp_path):
    resume.test_everything_the_trainer_holds_is_saved_or_rebuilt(strategy, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("strategy, mode", [("rtrl", "after-metrics"), ("uoro", "external")])
def test_sigkill_then_resume_of_an_online_run_is_bitwise_identical(strategy, mode, text, tmp_path):
    resume.test_sigkill_at_a_random_step_then_resume_is_bitwise_identical(
        strategy, mode, text, tmp_path
    )
