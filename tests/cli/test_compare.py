"""``tbptt compare`` end to end on tiny sizes, in process; bad input is one line and exit 2."""

import json
import re
from pathlib import Path

import pytest

from tbptt.cli import main
from tests.report.conftest import tiny_text

TINY = [
    "--model", "gru", "--hidden-size", "4", "--num-layers", "1", "--embedding-size", "3",
    "--batch-size", "4", "--sample-length", "10", "--no-progress",
]  # fmt: skip


@pytest.fixture
def text_file(tmp_path) -> Path:
    path = tmp_path / "tiny.txt"
    path.write_text(tiny_text())
    return path


def test_compare_end_to_end_under_a_seconds_budget(text_file, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--data", str(text_file), "--budget-seconds", "0.3", "--out", str(out)]
    argv += ["--strategies", "full", "regular:6", "randomized:6", *TINY]
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    for name in ("cuts.png", "validation.png", "gap.png", "grad_norms.png"):
        assert (out / name).stat().st_size > 5000
    assert (out / "report.md").is_file() and (out / "report.html").is_file()
    # The printed table has one row per strategy, and every verdict is printed.
    assert re.search(r"^\| full \| \d", stdout, flags=re.M)
    assert re.search(r"^\| randomized:6 \| \d", stdout, flags=re.M)
    outcomes = re.findall(
        r"^- (?:Regular|Randomized) truncation .*?\. ([A-Z ]+):", stdout, flags=re.M
    )
    assert len(outcomes) == 4
    assert set(outcomes) <= {"SUPPORTED", "PARTLY SUPPORTED", "NOT SUPPORTED", "INCONCLUSIVE"}
    summary = json.loads((out / "summary.json").read_text())
    for run in summary["runs"]:
        # A training-seconds budget stops between windows (full: one window per epoch).
        assert run["stop"] == "seconds" or run["strategy"] == "full"
    assert len(summary["verdicts"]) == 4


def test_compare_token_budget_and_seeds(text_file, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--data", str(text_file), "--budget-tokens", "60", "--out", str(out)]
    argv += ["--strategies", "regular:6", "randomized:6", "--seeds", "0", "1", *TINY]
    assert main(argv) == 0
    capsys.readouterr()
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        "randomized-6-seed0", "randomized-6-seed1", "regular-6-seed0", "regular-6-seed1",
    ]  # fmt: skip
    assert "±" in (out / "report.md").read_text()  # two seeds: mean ± spread


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--strategies", "sometimes"], "unknown strategy"),
        (["--budget-seconds", "-1"], "seconds budget must be > 0"),
        (["--strategies", "regular:5", "regular:5"], "each strategy once"),
        (["--seeds", "1", "1"], "each seed once"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(text_file, tmp_path, capsys, extra, message):
    argv = ["compare", "--data", str(text_file), "--out", str(tmp_path / "x"), *TINY, *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and err[0].startswith("tbptt compare: error:")
    assert not (tmp_path / "x").exists()


def test_missing_data_file_is_one_line(tmp_path, capsys):
    argv = ["compare", "--data", str(tmp_path / "nope.txt"), "--budget-epochs", "1", *TINY]
    assert main(argv) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_interrupt_reports_the_finished_runs(text_file, tmp_path, capsys, monkeypatch):
    import tbptt.cli.compare as cli

    real = cli.run_comparison

    def interrupted_after_first_run(*args, on_run_end, **kwargs):
        def end(run):
            on_run_end(run)
            raise KeyboardInterrupt  # as Ctrl-C would, between runs

        return real(*args, on_run_end=end, **kwargs)

    monkeypatch.setattr(cli, "run_comparison", interrupted_after_first_run)
    out = tmp_path / "cmp"
    argv = ["compare", "--data", str(text_file), "--budget-tokens", "30", "--out", str(out)]
    assert main([*argv, "--strategies", "regular:6", "randomized:6", *TINY]) == 130
    assert "1 finished run(s)" in capsys.readouterr().err
    assert "regular:6" in (out / "report.md").read_text()
    assert "randomized:6" not in (out / "report.md").read_text()


def test_compare_on_a_time_series_and_on_a_task(tmp_path, capsys):
    series = tmp_path / "s.csv"
    rows = [f"d{i},{(i * 7) % 13 + 0.5 * i:.2f}" for i in range(160)]
    series.write_text("Date,Temp\n" + "\n".join(rows) + "\n")
    out = tmp_path / "cmp"
    argv = ["compare", "--data", str(series), "--target", "Temp", "--budget-epochs", "1",
            "--strategies", "full", "regular:5", "--out", str(out), *TINY]  # fmt: skip
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert re.search(r"^\| strategy \| val rmse \|", stdout, flags=re.M)
    report = (out / "report.md").read_text()
    assert "persistence" in report and "val rmse" in report
    assert not (out / "cuts.png").exists()  # no text to draw the cuts on
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["objective"]["primary"] == "rmse"
    assert set(comparison["data"]["baselines"]) == {"persistence", "mean", "seasonal", "ar"}

    out = tmp_path / "task"
    argv = ["compare", "--task", "adding:T=6,episodes=40,valid_episodes=8", "--budget-epochs",
            "1", "--strategies", "regular:2", "regular:6", "--out", str(out), *TINY]  # fmt: skip
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    # The learned-or-not verdict is computed against the task's baseline.
    assert "The task is learned only by strategies" in stdout and "always predict 1" in stdout


def tiny_series(tmp_path) -> Path:
    series = tmp_path / "s.csv"
    rows = [f"2000-01-{1 + i % 28:02d},{(i * 7) % 13 + 0.5 * i:.2f}" for i in range(120)]
    series.write_text("Date,Temp\n" + "\n".join(rows) + "\n")
    return series


SERIES_ENTRIES = ["regular:35", "randomized:35", "full:checkpoint", "windows:35"]


def test_compare_on_a_series_defaults_to_stateful_against_random_windows(tmp_path, capsys):
    # A tiny CSV: the series recipe's entries (K = 35, its regular:35), the forecaster
    # with its highway, and the carried-state verdict.
    out = tmp_path / "cmp"
    argv = ["compare", "--data", str(tiny_series(tmp_path)), "--target", "Temp", "--out",
            str(out), "--hidden-size", "3", "--budget-epochs", "2", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    stdout = capsys.readouterr().out
    assert stdout.startswith(f"tbptt compare: {' '.join(SERIES_ENTRIES)} x seeds 0; gru 1x3 + AR(")
    assert sorted(p.name for p in (out / "runs").iterdir()) == sorted(
        f"{e.replace(':', '-')}-seed0" for e in SERIES_ENTRIES
    )
    assert re.search(r"^\| windows:35 \| \d", stdout, flags=re.M)
    verdict = re.search(
        r"^- Carrying the state along the stream beats random windows with a fresh state\. "
        r"(SUPPORTED|NOT SUPPORTED|INCONCLUSIVE): Final validation rmse, in the data's units",
        stdout,
        flags=re.M,
    )
    assert verdict, stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["verdicts"][-1]["outcome"] == verdict.group(1).lower()
    records = [json.loads(line) for line in (out / "runs/windows-35-seed0/metrics.jsonl").open()]
    assert records[-1]["sampling"] == "random"
    report = (out / "report.md").read_text()
    assert "windows:35: windows at random offsets, each from a fresh state" in report
    assert "highway (ForecastNet)" in report


def test_a_series_without_a_budget_trains_its_recipe_epochs(tmp_path, capsys, monkeypatch):
    import tbptt.cli.compare as cli

    asked = []

    def before_training(data, config, **kwargs):
        asked.append(config)
        raise KeyboardInterrupt  # nothing trained: only what would have been

    monkeypatch.setattr(cli, "run_comparison", before_training)
    argv = ["compare", "--data", str(tiny_series(tmp_path)), "--target", "Temp", "--out",
            str(tmp_path / "cmp"), "--no-progress"]  # fmt: skip
    assert main(argv) == 130
    assert "budget per run: 30 epochs" in capsys.readouterr().out
    (config,) = asked
    assert list(config.strategies) == SERIES_ENTRIES
    assert (config.budget_epochs, config.budget_seconds) == (30, None)
    # --strategies and a budget flag, once given, are what runs.
    argv += ["--strategies", "regular:5", "windows:5", "--budget-seconds", "2"]
    assert main(argv) == 130
    assert list(asked[-1].strategies) == ["regular:5", "windows:5"]
    assert (asked[-1].budget_epochs, asked[-1].budget_seconds) == (None, 2)


def test_windows_entries_in_help_and_errors(text_file, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    help_text = capsys.readouterr().out
    assert "windows:K" in help_text and "fresh state" in help_text
    argv = ["compare", "--data", str(text_file), "--out", str(tmp_path / "x"), *TINY]
    assert main([*argv, "--strategies", "regular:6", "windows:0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "windows takes one window length" in err[0]
    assert main([*argv, "--strategies", "windows:6", "windows:6"]) == 2
    assert "each strategy once" in capsys.readouterr().err
