"""The online strategies through the command line: compare, train, and bad specs."""

import json

import pytest

from tbptt.cli import main


@pytest.mark.slow
def test_compare_runs_online_strategies_beside_truncated_ones(tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", "--task", "influence:steps=120,valid_steps=20", "--strategies", "rtrl",
            "uoro:update_every=5", "regular:10", "--optimizer", "sgd", "--lr", "0.0001",
            "--lr-schedule", "constant", "--clip", "0", "--batch-size", "1",
            "--budget-epochs", "1", "--threads", "1", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    runs = {r["strategy"]: r for r in json.loads((out / "summary.json").read_text())["runs"]}
    assert set(runs) == {"rtrl", "uoro:update_every=5", "regular:10"}
    assert "| rtrl |" in printed
    # rtrl steps every row, uoro every 5 rows, regular every 10
    assert [runs[s]["steps"] for s in ("rtrl", "uoro:update_every=5", "regular:10")] == [
        120,
        24,
        12,
    ]


@pytest.mark.parametrize(
    "spec, words",
    [
        ("rtrl:3", "rtrl takes no arguments"),
        ("snap", "snap takes an order"),
        ("snap:0", "order N >= 1"),
        ("uoro:update_every=0", "update_every must be at least 1"),
        ("rtrl:every=3", "rtrl takes no arguments but update_every"),
    ],
)
def test_a_bad_online_spec_is_one_line_and_exit_2(spec, words, tmp_path, capsys):
    argv = ["train", "--task", "influence:steps=100", "--strategy", spec, "--out",
            str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and words in err, err


@pytest.mark.parametrize("spec", ["rtrl", "adaptive:0.1"])
def test_random_sampling_is_refused_for_strategies_that_follow_the_stream(spec, tmp_path, capsys):
    argv = ["train", "--task", "influence:steps=100", "--strategy", spec, "--sampling", "random",
            "--batch-size", "1",
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "use sequential sampling" in err, err
