"""The comparison runner: same start for every strategy, budgets, records, bad input."""

import math
import resource
import time

import pytest
import torch

from tbptt.data import prepare_text
from tbptt.errors import ConfigError, DataError, SpecError
from tbptt.models import ModelConfig, RecurrentLM
from tbptt.train import TrainConfig, Trainer
from tbptt.train.compare import CompareConfig, load_comparison, run_comparison
from tests.report.conftest import tiny_comparison, tiny_text


def first_step(run):
    return next(r for r in run.records if r["event"] == "step")


def test_every_strategy_of_a_seed_starts_from_the_same_weights_and_dropout():
    # regular:6 and full:6 both train their first window of 6 steps from a fresh state with
    # every gate 1: identical weights and dropout masks give identical first losses and norms.
    c = tiny_comparison(None, seeds=(0, 1), strategies=("regular:6", "full:6"), budget_tokens=20)
    by = {(r.strategy, r.seed): first_step(r) for r in c.runs}
    for seed in (0, 1):
        a, b = by[("regular:6", seed)], by[("full:6", seed)]
        assert a["loss"] == b["loss"] and a["grad_norm"] == b["grad_norm"]
    assert by[("regular:6", 0)]["loss"] != by[("regular:6", 1)]["loss"]  # seeds differ


def test_initial_weights_are_those_of_the_seeded_model():
    c = tiny_comparison(None, seeds=(5,), strategies=("regular:6",), budget_tokens=20)
    torch.manual_seed(5)
    model = RecurrentLM(c.model)
    trainer = Trainer(
        model,
        prepare_text(tiny_text()).train_split(),
        torch.empty(0, dtype=torch.long),
        TrainConfig(strategy="regular:6", batch_size=4, seed=5),
    )
    torch.manual_seed(5)
    record = trainer.train_epoch(stop=lambda: True)  # one window, then the budget stops it
    step = first_step(c.runs[0])
    assert math.isclose(record["train_loss"], step["loss"], rel_tol=1e-6)


def test_token_budget_stops_between_windows():
    c = tiny_comparison(
        None, seeds=(0,), strategies=("regular:6", "randomized:6"), budget_tokens=100
    )
    for run in c.runs:
        steps = [r for r in run.records if r["event"] == "step"]
        tokens = sum(r["tokens"] for r in steps)
        assert tokens >= 100 and tokens - steps[-1]["tokens"] < 100
        assert run.run_record["stop"] == "tokens" and run.run_record["tokens"] == tokens
        epoch = [r for r in run.records if r["event"] == "epoch"][-1]
        assert 0 < epoch["fraction"] < 1 and "val_ppl" in epoch


def test_epoch_budget_and_evaluations_inside_epochs():
    c = tiny_comparison(None, seeds=(0,), strategies=("full", "regular:20"), budget_epochs=2)
    for run in c.runs:
        epochs = [r for r in run.records if r["event"] == "epoch"]
        assert [r["fraction"] for r in epochs] == [1.0, 1.0]
        assert run.run_record["stop"] == "epochs"
        evals = [r for r in run.records if r["event"] == "eval"]
        assert evals[0]["epochs_done"] == 0 and evals[0]["train_seconds"] == 0  # the start
        assert evals[0]["val_ppl"] == c.runs[0].records[0]["val_ppl"]  # the same for all
        # Two evaluations per epoch: one halfway (not for full: one window per epoch), one at the end.
        evals = evals[1:]
        assert len(evals) == (0 if run.strategy == "full" else 2)
        for e in evals:
            assert e["epochs_done"] % 1 >= 0.5 and e["train_seconds"] > 0


def test_seconds_budget_and_peak_memory():
    from tbptt.train.memory import rss_bytes

    # A GRU of 512 units (3 MiB of weights, built before the run): Adam's two moment
    # buffers per weight are new memory the run holds at its end, a floor the figure must
    # reach; the process's own peak resident size (ru_maxrss, KiB on Linux, measured by the
    # kernel rather than by the sampler) is a ceiling it cannot pass.
    data = prepare_text(tiny_text())
    model = ModelConfig(vocab_size=len(data.vocab), kind="gru", hidden_size=512, num_layers=1,
                        embedding_size=3)  # fmt: skip
    config = CompareConfig(strategies=("regular:6",), budget_seconds=1e-9, sample_length=0)
    c = run_comparison(data, config, model=model, train=TrainConfig(batch_size=4))
    run = c.runs[0]
    assert run.run_record["stop"] == "seconds"
    assert len([r for r in run.records if r["event"] == "step"]) == 1  # one window, then stop
    memory = float(run.run_record["peak_memory_mb"])  # a record may write NaN as "nan"
    if rss_bytes() is None:  # no /proc/self/statm: no figure, and it says so
        assert math.isnan(memory)
        return
    weights_mb = sum(p.numel() * 4 for p in RecurrentLM(model).parameters()) / 2**20
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert 2 * weights_mb <= memory < peak_rss_mb, (memory, weights_mb, peak_rss_mb)


def test_written_comparison_reads_back(tmp_path):
    c = tiny_comparison(tmp_path, seeds=(0,), strategies=("regular:6",), budget_tokens=50)
    back = load_comparison(tmp_path)
    assert back.config == c.config and back.model == c.model and back.opening == c.opening
    assert [r.records for r in back.runs] == [r.records for r in c.runs]
    assert (tmp_path / "runs" / "regular-6-seed0" / "metrics.jsonl").is_file()


def test_bad_configurations_are_reported_before_training(tmp_path):
    data = prepare_text(tiny_text())
    with pytest.raises(ConfigError, match="give a budget"):
        run_comparison(data, CompareConfig())
    with pytest.raises(ConfigError, match="each strategy once"):
        run_comparison(data, CompareConfig(strategies=("regular:5", "regular:5"), budget_epochs=1))
    with pytest.raises(SpecError):
        run_comparison(data, CompareConfig(strategies=("sometimes",), budget_epochs=1))
    with pytest.raises(ConfigError, match="vocab_size=3"):
        run_comparison(data, CompareConfig(budget_epochs=1), model=ModelConfig(vocab_size=3))
    with pytest.raises(DataError, match="shorter than one regular:5000 window"):
        run_comparison(
            data,
            CompareConfig(strategies=("regular:5", "regular:5000"), budget_epochs=1),
            out=tmp_path,
        )
    assert not (tmp_path / "comparison.json").exists()  # nothing trained


def test_load_comparison_of_an_empty_directory(tmp_path):
    with pytest.raises(DataError, match="no comparison.json"):
        load_comparison(tmp_path)


def test_trainer_stop_hook_ends_the_epoch_with_its_fraction():
    torch.manual_seed(0)
    model = RecurrentLM(
        ModelConfig(vocab_size=7, kind="gru", hidden_size=4, num_layers=1, embedding_size=3)
    )
    tokens = torch.randint(0, 7, (303,))
    trainer = Trainer(
        model, tokens, tokens[:40], TrainConfig(strategy="regular:5", batch_size=3, epochs=3)
    )
    seen = []
    records = trainer.fit(on_step=seen.append, stop=lambda: len(seen) >= 25)
    # 100 steps per stream: 20 windows make epoch 1, five more are a quarter of epoch 2.
    assert [r["fraction"] for r in records] == [1.0, 0.25]
    assert trainer.epoch == 2 and trainer.step == 25 and trainer.stream.position == 0


def test_peak_memory_sees_a_transient_allocation():
    from tbptt.train.memory import PeakMemory, release_memory, rss_bytes

    if rss_bytes() is None:
        pytest.skip("no /proc/self/statm on this system")
    release_memory()
    with PeakMemory(0.002) as memory:
        block = torch.ones(25_000_000)  # 100 MB, every page touched
        # Hold it until the sampling thread has seen it, however busy the machine: the
        # behaviour is that a sample lands on the peak, not that it lands within 0.3 s.
        # The 30 s only bound a sampler that never runs (the interval is 2 ms).
        give_up = time.monotonic() + 30
        while memory.megabytes < 80 and time.monotonic() < give_up:
            time.sleep(0.01)
        del block
    assert 80 <= memory.megabytes < 1000, "the sampler never saw the 100 MB block"


def test_evaluations_every_few_training_seconds():
    c = tiny_comparison(
        None, seeds=(0,), strategies=("regular:6",), budget_tokens=200, eval_seconds=1e-9
    )
    evals = [r for r in c.runs[0].records if r["event"] == "eval"]
    steps = [r for r in c.runs[0].records if r["event"] == "step"]
    assert len(evals) == len(steps)  # the start, then after every window but the last


def test_a_strategy_whose_one_step_overruns_the_budget_is_skipped_with_its_reason(tmp_path):
    # 2 streams of ~5,000 steps: one full step is a whole epoch, far beyond a 0.05 s budget;
    # regular:5 fits, runs, and the report says why full did not.
    data = prepare_text("the time traveller held in his hand " * 300)
    model = ModelConfig(vocab_size=len(data.vocab), kind="gru", hidden_size=4, num_layers=1,
                        embedding_size=3, dropout=0.0)  # fmt: skip
    config = CompareConfig(strategies=("full", "regular:5"), budget_seconds=0.05, sample_length=0)
    comparison = run_comparison(
        data, config, model=model, train=TrainConfig(batch_size=2, nonfinite="skip"), out=tmp_path
    )
    assert [r.strategy for r in comparison.runs] == ["regular:5"]
    assert set(comparison.skipped) == {"full"} and "budget" in comparison.skipped["full"]
    assert load_comparison(tmp_path).skipped == comparison.skipped
    from tbptt.report import write_report

    write_report(comparison, tmp_path)
    assert "Not run: **full**" in (tmp_path / "report.md").read_text()
    with pytest.raises(ConfigError, match="no strategy fits"):
        run_comparison(data, CompareConfig(strategies=("full",), budget_seconds=0.05),
                       model=model, train=TrainConfig(batch_size=2))  # fmt: skip
