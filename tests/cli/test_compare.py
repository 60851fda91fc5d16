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
