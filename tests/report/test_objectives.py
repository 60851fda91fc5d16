"""The report for objectives other than a language model: hand-made records, hand-made Comparison."""

import math

import pytest

from tbptt.report import table_rows, verdicts, write_report
from tbptt.report.claims import LEARNED
from tbptt.report.compare import baseline_line
from tbptt.report.summary import (
    epoch_curve,
    run_summary,
    strategy_rows,
    time_to_reach,
    val_curve,
)
from tbptt.train import TrainConfig
from tbptt.train.compare import CompareConfig, Comparison, RunResult

REGRESS = {"name": "regress", "primary": "rmse", "higher_is_better": False}
CLASSIFY = {"name": "classify", "primary": "acc", "higher_is_better": True}
BASELINES = {"persistence": {"rmse": 2.582, "mae": 2.025}, "mean": {"rmse": 3.1, "mae": 2.6}}


def records(epochs, metric="rmse", evals=(), steps=None):
    """epochs: (train_loss or None, val_loss, val_<metric>); evals: (epochs_done, seconds, value)."""
    steps = steps if steps is not None else [(0.5, False, False)] * 12
    out = [
        {"event": "step", "step": i + 1, "grad_norm": n, "clipped": c, "skipped": s, "tokens": 4}
        for i, (n, c, s) in enumerate(steps)
    ]
    done = 0.0
    for i, (train_loss, val_loss, value) in enumerate(epochs):
        for e in evals:
            if done < e[0] < done + 1:
                out.append(
                    {
                        "event": "eval",
                        "epochs_done": e[0],
                        "train_seconds": e[1],
                        f"val_{metric}": e[2],
                    }
                )
        done += 1
        record = {"event": "epoch", "epoch": i + 1, "seconds": 1.0, "tokens": 100, "fraction": 1.0}
        if train_loss is not None:
            record["train_loss"] = train_loss
        record |= {"val_loss": val_loss, f"val_{metric}": value}
        out.append(record)
    out.append({"event": "run", "peak_memory_mb": 3.0, "wall_seconds": 5.0, "stop": "epochs"})
    return out


def comparison(runs, objective=REGRESS, baselines=BASELINES, kind="series"):
    return Comparison(
        config=CompareConfig(strategies=tuple(runs), seeds=(0,), budget_epochs=2),
        model=None,
        train=TrainConfig(),
        data={
            "kind": kind,
            "targets": ["y"],
            "horizon": 1,
            "train_rows": 100,
            "valid_rows": 20,
            "baselines": baselines,
        },
        opening=[],
        separator="",
        stream_steps=20,
        runs=[RunResult(spec, 0, None, "", recs) for spec, recs in runs.items()],
        objective=objective,
    )


def by_claim(found, word):
    return next(v for v in found if word in v.claim)


def test_summary_has_the_metric_and_nan_for_missing_train_keys():
    s = run_summary(records([(1.0, 2.0, 1.5), (None, 1.0, 0.9)]), metric="rmse")
    assert s["val_rmse"] == 0.9 and s["best_val_rmse"] == 0.9 and s["val_loss"] == 1.0
    assert math.isnan(s["train_loss"]) and math.isnan(s["gap"])  # last epoch: every step skipped
    assert "train_ppl" not in s and "gap_nats" not in s
    curve = epoch_curve(records([(None, 1.0, 0.9)]), metric="rmse")
    assert math.isnan(curve["train_loss"][0]) and curve["val_rmse"] == [0.9]


def test_table_has_the_metric_columns():
    full = records([(0.5, 0.4, 0.6)])
    header, rows = table_rows(comparison({"full": full, "regular:10": full}))
    assert "val rmse" in header and "val loss" in header and "train loss" in header
    assert "train ppl" not in header and "val ppl" not in header
    assert rows[0][header.index("val rmse")] == "0.600"


def test_higher_is_better_accuracy():
    recs = records(
        [(0.9, 0.8, 0.55), (0.5, 0.6, 0.9), (0.6, 0.7, 0.7)],
        metric="acc",
        evals=[(0.5, 0.5, 0.4), (1.5, 1.5, 0.8)],
    )
    s = run_summary(recs, metric="acc", higher_is_better=True)
    assert s["best_val_acc"] == 0.9 and s["val_acc"] == 0.7
    assert val_curve(recs, metric="acc")["val_acc"] == [0.4, 0.55, 0.8, 0.9, 0.7]
    assert time_to_reach(recs, 0.75, metric="acc", higher_is_better=True) == 1.5
    assert time_to_reach(recs, 0.5, metric="acc", higher_is_better=True) == 1.0
    assert math.isnan(time_to_reach(recs, 0.95, metric="acc", higher_is_better=True))
    # Regularization: regular's higher accuracy is the better one.
    better = records([(0.5, 0.55, 0.95)], metric="acc")
    worse = records([(0.5, 0.6, 0.7)], metric="acc")
    found = verdicts(
        comparison(
            {"full": worse, "regular:10": better},
            objective=CLASSIFY,
            baselines={"always predict 1": {"loss": 0.69, "acc": 0.5}},
            kind="task",
        )
    )
    reg = by_claim(found, "regularizes")
    assert reg.outcome == "supported" and "validation acc" in reg.text
    rows = {r["strategy"]: r for r in strategy_rows(comparison({"full": worse}, CLASSIFY))}
    assert rows["full"]["best_val_acc"].mean == 0.7


def test_learned_verdict_supported_when_only_full_learns():
    # Baselines without a loss: compared by rmse; best baseline persistence 2.582.
    full = records([(0.1, 0.1, 1.0)])  # rmse 1.0 <= 0.5 * 2.582
    regular = records([(2.0, 2.0, 2.4)])  # 2.4 > 1.291: did not learn
    found = verdicts(comparison({"full": full, "regular:10": regular}))
    assert len(found) == 5
    v = by_claim(found, "learned only")
    assert v.outcome == "supported"
    assert "full learned" in v.text and "regular:10 did not learn" in v.text
    assert "persistence" in v.text and "2.582" in v.text
    assert LEARNED == 0.5


def test_learned_verdict_not_supported_when_all_learn_and_diverged_counts():
    good = records([(0.1, 0.1, 1.0)])
    v = by_claim(verdicts(comparison({"full": good, "regular:10": good})), "learned only")
    assert v.outcome == "not supported" and "All strategies learned" in v.text
    # With a loss baseline the loss decides; a NaN loss or non-finite steps mean diverged.
    baselines = {"always predict 1": {"loss": 0.1667, "rmse": 0.408}}
    learned = records([(0.01, 0.05, 0.2)])
    nan = records([(0.01, math.nan, 0.2)])
    skipped = records(
        [(0.01, 0.05, 0.2)], steps=[(math.inf, False, True)] + [(0.5, False, False)] * 11
    )
    v = by_claim(
        verdicts(
            comparison(
                {"full": learned, "regular:10": nan, "randomized:10": skipped}, baselines=baselines
            )
        ),
        "learned only",
    )
    assert v.outcome == "supported"
    assert "regular:10 diverged" in v.text and "randomized:10 diverged" in v.text
    assert "always predict 1" in v.text and "loss 0.1667" in v.text


def test_no_learned_verdict_for_text():
    good = records([(0.1, 0.1, 1.0)])
    assert len(verdicts(comparison({"full": good}, kind="text"))) == 4


@pytest.mark.parametrize(
    "objective", [REGRESS, {"name": "custom", "primary": "loss", "higher_is_better": False}]
)
def test_write_report_with_custom_model_and_no_opening(tmp_path, objective):
    metric = objective["primary"]
    full = records([(1.0, 0.9, 1.2), (0.4, 0.3, 0.8)], metric=metric, evals=[(0.5, 0.5, 1.5)])
    regular = records([(1.0, 1.1, 2.0), (0.9, 1.0, 1.9)], metric=metric)
    c = comparison({"full": full, "regular:10": regular}, objective=objective)
    paths = write_report(c, tmp_path)
    md = paths.markdown.read_text()
    assert "custom model" in md and f"val {metric}" in md
    assert "cuts.png" not in md and "cuts" not in paths.figures and "## Samples" not in md
    assert "Baselines: persistence: rmse 2.582, mae 2.025; mean: rmse 3.100, mae 2.600." in md
    assert "learned only" in md or "The task is learned" in md
    assert paths.html.is_file() and set(paths.figures) == {"validation", "gap", "grad_norms"}


def test_baseline_line_for_text():
    c = comparison({}, baselines={"unigram": {"ppl": 16.7312}}, kind="text")
    assert baseline_line(c) == "Baselines: unigram ppl 16.73"
