"""Summaries and verdicts on hand-made records: every verdict follows the numbers."""

import math

import pytest

from tbptt.models import ModelConfig
from tbptt.report.claims import verdicts
from tbptt.report.summary import run_summary, time_to_reach, val_curve
from tbptt.train import TrainConfig
from tbptt.train.compare import CompareConfig, Comparison, RunResult


def records(epochs, steps=(), evals=(), peak=10.0):
    """epochs: (seconds, tokens, train_ppl, val_ppl[, fraction]); steps: (norm, clipped, skipped);
    evals: (epochs_done, train_seconds, val_ppl)."""
    out = [
        {
            "event": "step",
            "step": i + 1,
            "grad_norm": n,
            "clipped": c,
            "skipped": s,
            "tokens": 4,
            "length": 1,
        }
        for i, (n, c, s) in enumerate(steps)
    ]
    done = seconds = 0.0
    for i, (sec, tokens, train_ppl, val_ppl, *fraction) in enumerate(epochs):
        fraction = fraction[0] if fraction else 1.0
        for e in evals:
            if done < e[0] < done + fraction:
                out.append(
                    {
                        "event": "eval",
                        "epochs_done": e[0],
                        "train_seconds": e[1],
                        "val_ppl": e[2],
                        "val_loss": math.log(e[2]),
                    }
                )
        done += fraction
        seconds += sec
        out.append(
            {
                "event": "epoch",
                "epoch": i + 1,
                "seconds": sec,
                "tokens": tokens,
                "train_loss": math.log(train_ppl),
                "train_ppl": train_ppl,
                "val_loss": math.log(val_ppl),
                "val_ppl": val_ppl,
                "fraction": fraction,
            }
        )
    out.append(
        {"event": "run", "peak_memory_mb": peak, "wall_seconds": seconds + 1, "stop": "epochs"}
    )
    return out


def comparison(runs: dict[str, list[list[dict]]]) -> Comparison:
    seeds = tuple(range(len(next(iter(runs.values())))))
    return Comparison(
        config=CompareConfig(strategies=tuple(runs), seeds=seeds, budget_epochs=2),
        model=ModelConfig(vocab_size=5),
        train=TrainConfig(),
        data={"vocab_size": 5, "train_tokens": 100, "valid_tokens": 10, "level": "char"},
        opening=list("abc"),
        separator="",
        stream_steps=20,
        runs=[
            RunResult(spec, seed, None, "", recs)
            for spec, per_seed in runs.items()
            for seed, recs in enumerate(per_seed)
        ],
    )


def by_claim(found, word):
    return next(v for v in found if word in v.claim)


def test_run_summary_from_records():
    recs = records(
        [(2.0, 100, 9.0, 10.0), (1.0, 40, 7.0, 8.0, 0.4)],
        steps=[
            (0.5, False, False),
            (2.0, True, False),
            (math.inf, False, True),
            (0.7, False, False),
        ],
    )
    s = run_summary(recs)
    assert s["tokens_per_s"] == 140 / 3.0
    assert s["epochs"] == 1.4 and s["seconds_per_epoch"] == 3.0 / 1.4
    assert s["steps"] == 4 and s["nonfinite"] == 1 and s["clip_rate"] == 0.25
    # The 0.4-epoch tail is too little for a training figure: epoch 1 gives it (defect 12).
    assert s["val_ppl"] == 8.0 and s["train_ppl"] == 9.0 and s["best_val_ppl"] == 8.0
    assert math.isclose(s["gap_nats"], math.log(10.0) - math.log(9.0))
    assert s["grad_norm_max"] == 2.0 and s["grad_norm_median"] == 0.7  # inf left out
    assert s["peak_memory_mb"] == 10.0


def test_val_curve_puts_evaluations_between_epochs():
    recs = records(
        [(4.0, 100, 9.0, 10.0), (4.0, 100, 7.0, 8.0)], evals=[(0.5, 2.0, 12.0), (1.5, 6.0, 9.0)]
    )
    curve = val_curve(recs)
    assert curve["epochs"] == [0.5, 1.0, 1.5, 2.0]
    assert curve["seconds"] == [2.0, 4.0, 6.0, 8.0]
    assert curve["val_ppl"] == [12.0, 10.0, 9.0, 8.0]
    assert time_to_reach(recs, 9.5) == 6.0 and math.isnan(time_to_reach(recs, 1.0))


def speed_case(regular_seconds: float):
    full = records(
        [(10.0, 1000, 20.0, 20.0), (10.0, 1000, 15.0, 15.0)], steps=[(0.3, False, False)] * 2
    )
    regular = records(
        [(regular_seconds, 1000, 16.0, 14.0), (regular_seconds, 1000, 12.0, 11.0)],
        steps=[(0.4, False, False)] * 60,
        evals=[(0.5, regular_seconds / 2, 18.0)],
    )
    return comparison({"full": [full], "regular:35": [regular]})


def test_speed_verdict_follows_time_to_quality():
    fast = by_claim(verdicts(speed_case(2.0)), "faster")
    # full reached 15 after 20 s; regular reached it at its first epoch end, after 2 s.
    assert fast.outcome == "supported" and "10.0 times" in fast.text
    slow = by_claim(verdicts(speed_case(30.0)), "faster")
    # regular needs 30 s to beat 15: 20 / 30 < 1.
    assert slow.outcome == "not supported" and "0.7 times" in slow.text
    middle = by_claim(verdicts(speed_case(15.0)), "faster")
    assert middle.outcome == "partly supported"


def stability_case(full_norms, regular_norms):
    full = records([(1.0, 100, 9.0, 9.0)], steps=full_norms)
    regular = records([(1.0, 100, 9.0, 9.0)], steps=regular_norms)
    return by_claim(verdicts(comparison({"full": [full], "regular:35": [regular]})), "stable")


def test_stability_verdict_follows_clipping_and_norms():
    wild = [(50.0, True, False), (math.nan, False, True), (30.0, True, False), (0.5, False, False)]
    calm = [(0.4, False, False)] * 10
    assert stability_case(wild, calm).outcome == "supported"
    assert stability_case(calm, wild).outcome == "not supported"
    few = [(0.3, False, False)] * 3
    assert stability_case(few, calm).outcome == "inconclusive"  # 3 full steps, all finite
    assert stability_case(few + wild, calm).outcome == "supported"  # a NaN decides it
    v = stability_case(wild, calm)
    assert "50.0% of full" in v.text and "0.0% of regular" in v.text  # 2 of 4, 0 of 10


@pytest.mark.parametrize(
    "regular_train, regular_val, outcome",
    [(8.0, 8.5, "supported"), (6.0, 8.5, "partly supported"), (6.0, 12.0, "not supported")],
)
def test_regularization_verdict_follows_gap_and_validation(regular_train, regular_val, outcome):
    full = records([(1.0, 100, 9.0, 10.0)])  # gap log(10/9) = 0.105 nats
    regular = records([(1.0, 100, regular_train, regular_val)])
    v = by_claim(verdicts(comparison({"full": [full], "regular:35": [regular]})), "regularizes")
    assert v.outcome == outcome


@pytest.mark.parametrize(
    "randomized_val, outcome", [(10.1, "supported"), (12.0, "supported"), (9.0, "not supported")]
)
def test_randomized_verdict_one_seed_tolerance(randomized_val, outcome):
    regular = records([(1.0, 100, 9.0, 10.0)])  # tolerance: 2% of 10 = 0.2
    randomized = records([(1.0, 100, 9.0, randomized_val)])
    found = verdicts(comparison({"regular:35": [regular], "randomized:35": [randomized]}))
    assert by_claim(found, "unbiased").outcome == outcome
    assert by_claim(found, "faster").outcome == "not evaluated"  # no full strategy given


def test_randomized_verdict_uses_seed_spread():
    def run(val):
        return records([(1.0, 100, 9.0, val)])

    noisy = comparison(
        {"regular:35": [run(10.0), run(12.0)], "randomized:35": [run(9.0), run(11.0)]}
    )
    # difference -1, twice the standard error 2*sqrt(2/2 + 2/2) = 2.83: no difference.
    assert by_claim(verdicts(noisy), "unbiased").outcome == "supported"
    tight = comparison(
        {"regular:35": [run(10.0), run(10.2)], "randomized:35": [run(9.0), run(9.2)]}
    )
    assert by_claim(verdicts(tight), "unbiased").outcome == "not supported"


def test_training_figures_skip_a_budget_cut_fragment_of_an_epoch():
    """A trailing 1 % of an epoch (2 windows) is no training loss: the last epoch with at
    least half an epoch of tokens gives it, and the gap is taken at that same point."""
    recs = records([(10.0, 1000, 3.0, 4.0), (0.3, 20, 2.0, 3.9, 0.01)])
    s = run_summary(recs)
    assert s["train_ppl"] == 3.0 and s["train_loss"] == pytest.approx(math.log(3.0))
    assert s["gap"] == pytest.approx(math.log(4.0) - math.log(3.0))
    assert s["train_fraction"] == 1.0
    assert s["val_ppl"] == 3.9  # validation is over the whole text: the last one stands
    # A half epoch is enough; with no such epoch, the last one is reported with its fraction.
    half = run_summary(records([(10.0, 1000, 3.0, 4.0), (5.0, 500, 2.5, 3.8, 0.5)]))
    assert half["train_ppl"] == 2.5 and half["train_fraction"] == 0.5
    short = run_summary(records([(0.3, 20, 2.0, 3.9, 0.2)]))
    assert short["train_ppl"] == 2.0 and short["train_fraction"] == 0.2


def test_regularization_verdict_is_inconclusive_on_a_fragment_of_an_epoch():
    steps = [(0.3, False, False)] * 20
    full = records([(1.0, 100, 9.0, 10.0)], steps=steps)
    regular = records([(0.2, 20, 8.0, 8.5, 0.3)], steps=steps)  # would be "supported"
    v = by_claim(verdicts(comparison({"full": [full], "regular:35": [regular]})), "regularizes")
    assert v.outcome == "inconclusive"
    assert "regular:35" in v.text and "half an epoch" in v.text


def test_regularization_verdict_is_inconclusive_on_too_few_steps():
    full = records([(1.0, 100, 9.0, 10.0)], steps=[(0.3, False, False)] * 20)
    regular = records([(1.0, 100, 8.0, 8.5)], steps=[(0.3, False, False)] * 3)
    v = by_claim(verdicts(comparison({"full": [full], "regular:35": [regular]})), "regularizes")
    assert v.outcome == "inconclusive"
    assert "regular:35" in v.text and "steps" in v.text


def test_the_gap_curve_leaves_out_a_budget_cut_fragment():
    from tbptt.report.summary import epoch_curve

    records = [
        {"event": "epoch", "fraction": 1.0, "train_loss": 2.0, "val_loss": 2.5, "val_ppl": 12.0},
        {"event": "epoch", "fraction": 0.05, "train_loss": 1.0, "val_loss": 2.4, "val_ppl": 11.0},
    ]
    curve = epoch_curve(records)
    assert curve["gap"][0] == pytest.approx(0.5) and math.isnan(curve["gap"][1])
    assert curve["val_ppl"] == [12.0, 11.0] and curve["epochs"] == [1.0, 1.05]


def test_a_step_with_no_scored_rows_is_left_out_of_the_loss_curve(tmp_path):
    import json
    import math

    from tbptt.report import plot_training
    from tbptt.report.plots import _moving_average, _number
    from tbptt.train import MetricsWriter, read_metrics

    path = tmp_path / "metrics.jsonl"
    writer = MetricsWriter(path)
    for step, loss in enumerate([1.0, math.nan, 3.0, math.inf, 5.0], start=1):
        writer.write({"event": "step", "epoch": 1, "step": step, "loss": loss, "grad_norm": 1.0,
                      "lr": 0.1, "tokens": 4})  # fmt: skip
    writer.write({"event": "epoch", "epoch": 1, "step": 5, "train_loss": 3.0})
    writer.close()
    assert '"nan"' in path.read_text()  # JSON has no NaN: written as a string
    records = read_metrics(path)
    assert records[1]["loss"] == "nan" and records[3]["loss"] == "inf"
    losses = [_number(r["loss"]) for r in records[:5]]
    assert _moving_average(losses, 2) == [1.0, 1.0, 3.0, 3.0, 5.0]
    plot_training(records, tmp_path / "curves.png", metric="loss")
    assert (tmp_path / "curves.png").stat().st_size > 1000
    json.loads(path.read_text().splitlines()[0])
