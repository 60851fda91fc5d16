"""The carried-state verdict (stateful entries against ``windows:K``) on hand-made runs,
its figures recomputed here from the per-seed values; and the report around a windows entry."""

import json
import math
import statistics

import pytest

from tbptt.report import verdicts, write_report
from tbptt.report.carried import carried_state
from tbptt.train import TrainConfig
from tbptt.train.compare import CompareConfig, Comparison, RunResult
from tests.report.conftest import tiny_comparison

REGRESS = {"name": "regress", "primary": "rmse", "higher_is_better": False}


def final(value: float) -> list[dict]:
    """The records of a run whose final validation rmse is ``value``."""
    return [
        {"event": "epoch", "epoch": 1, "seconds": 1.0, "tokens": 100, "fraction": 1.0,
         "train_loss": 0.5, "val_loss": 0.5, "val_rmse": value},
        {"event": "run", "peak_memory_mb": 1.0, "wall_seconds": 1.0, "stop": "epochs"},
    ]  # fmt: skip


def comparison(values: dict[str, list[float]], sampling: str = "sequential") -> Comparison:
    """``{entry: [final rmse of seed 0, seed 1, ...]}`` as a comparison of a series."""
    seeds = tuple(range(len(next(iter(values.values())))))
    runs = [
        RunResult(spec, seed, None, "", final(value))
        for spec, per_seed in values.items()
        for seed, value in zip(seeds, per_seed)
    ]
    return Comparison(
        config=CompareConfig(strategies=tuple(values), seeds=seeds, budget_epochs=1),
        model=None,
        train=TrainConfig(sampling=sampling),
        data={"kind": "series", "targets": ["y"], "horizon": 1},
        opening=[],
        separator="",
        stream_steps=20,
        runs=runs,
        objective=REGRESS,
    )


def test_carried_state_won_by_the_paired_mean_with_its_spread():
    regular, windows = [2.20, 2.25, 2.21], [2.50, 2.44, 2.60]
    c = comparison({"regular:35": regular, "full:checkpoint": [2.3] * 3, "windows:35": windows})
    verdict = carried_state(c)
    # The reference: per-seed differences (windows - regular), their mean and sample spread.
    gains = [w - r for r, w in zip(regular, windows)]
    mean, std = statistics.fmean(gains), statistics.stdev(gains)
    noise = 2 * std / math.sqrt(3)
    assert verdict.outcome == "supported" and mean > noise
    assert f"regular:35 better by {mean:.4g} ± {std:.2g} rmse" in verdict.text
    assert f"({mean / statistics.fmean(windows):.1%} of windows:35's)" in verdict.text
    assert "regular:35 ahead in 3 of 3 seeds" in verdict.text
    assert f"paired differences, {noise:.3g}" in verdict.text
    assert f"windows:35 {statistics.fmean(windows):.4g} ± {statistics.stdev(windows):.2g}" in (
        verdict.text
    )
    assert "in the data's units" in verdict.text and "Best mean: regular:35." in verdict.text


def test_fresh_windows_that_win_are_said_to():
    c = comparison({"regular:8": [1.5, 1.6, 1.55], "windows:8": [1.2, 1.25, 1.22]})
    verdict = carried_state(c)
    assert verdict.outcome == "not supported"
    assert "windows:8 better by" in verdict.text and "regular:8 ahead in 0 of 3" in verdict.text
    assert verdict.text.endswith("The fresh windows of windows:8 won.")


def test_a_difference_within_the_noise_is_inconclusive():
    # Paired differences +0.3, -0.3, +0.1: mean 0.033, well inside twice its standard error.
    c = comparison({"regular:8": [1.0, 1.6, 1.2], "windows:8": [1.3, 1.3, 1.3]})
    verdict = carried_state(c)
    assert verdict.outcome == "inconclusive" and "No difference beyond the noise" in verdict.text


def test_one_seed_counts_two_percent_as_no_difference():
    assert carried_state(comparison({"regular:8": [1.00], "windows:8": [1.01]})).outcome == (
        "inconclusive"
    )
    verdict = carried_state(comparison({"regular:8": [1.00], "windows:8": [1.03]}))
    assert verdict.outcome == "supported" and "2% of regular:8's rmse, 0.02" in verdict.text


def test_windows_face_the_stateful_entry_of_the_same_windows_else_the_best():
    c = comparison({"full": [1.0], "regular:5": [2.0], "windows:5": [2.5]})
    assert "regular:5 (the state carried) against windows:5" in carried_state(c).text
    assert "Best mean: full." in carried_state(c).text
    c = comparison({"randomized:9": [2.0], "full": [1.0], "windows:5": [2.5]})
    assert "full (the state carried) against windows:5" in carried_state(c).text


def test_without_a_stateful_or_a_windows_entry_it_is_not_evaluated():
    # Every entry drew random windows (sampling random): no state was carried anywhere.
    c = comparison({"regular:5": [1.0], "windows:5": [2.0]}, sampling="random")
    verdict = carried_state(c)
    assert verdict.outcome == "not evaluated" and "state carried" in verdict.text
    verdict = carried_state(comparison({"regular:5": [1.0], "full": [2.0]}))
    assert verdict.outcome == "not evaluated" and "no windows:K entry" in verdict.text
    # ... and the verdict is only listed where a windows entry is compared.
    assert len(verdicts(comparison({"regular:5": [1.0], "full": [2.0]}))) == 4


def test_a_windows_entry_never_stands_for_regular_in_the_lecture_claims():
    found = verdicts(comparison({"full": [1.0], "windows:5": [2.0]}))
    assert [v.outcome for v in found[:3]] == ["not evaluated"] * 3  # need full and regular
    assert found[-1].claim.startswith("Carrying the state")


@pytest.fixture(scope="module")
def windows_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("windows")
    c = tiny_comparison(out, seeds=(0,), strategies=("regular:6", "windows:6"), budget_tokens=200)
    return c, write_report(c, out), out


def test_text_report_with_a_windows_entry(windows_report):
    c, paths, out = windows_report
    md = paths.markdown.read_text()
    assert (
        "sequential sampling (the state carried from window to window), windows:6: windows "
        "at random offsets, each from a fresh state" in md
    )
    assert "| windows:6 |" in md and "Carrying the state along the stream" in md
    assert (out / "runs" / "windows-6-seed0" / "metrics.jsonl").is_file()
    summary = json.loads(paths.summary.read_text())
    assert summary["verdicts"][-1]["claim"].startswith("Carrying the state")
    assert next(r for r in c.runs if r.strategy == "windows:6").sample  # text: it samples


def test_the_cuts_picture_shows_only_the_entries_that_cut_in_order(
    windows_report, tmp_path, monkeypatch
):
    import tbptt.report.compare as report

    drawn = []
    real = report.plot_cuts

    def spy(strategies, *args, **kwargs):
        drawn.append(list(strategies))
        return real(strategies, *args, **kwargs)

    monkeypatch.setattr(report, "plot_cuts", spy)
    c, _, _ = windows_report
    paths = write_report(c, tmp_path)
    assert drawn == [["regular:6"]] and paths.figures["cuts"].is_file()
