"""tbptt train on streams that are not text: a real time series, synthetic tasks, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tbptt.cli import main
from tbptt.train import read_metrics
from tests.conftest import TEMPERATURES

SMALL = ["--model", "gru", "--hidden-size", "8", "--num-layers", "1", "--epochs", "1",
         "--no-progress", "--threads", "1", "--batch-size", "4", "--strategy", "regular:5"]  # fmt: skip


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.write_text("\n".join(",".join(map(str, r)) for r in [header, *rows]) + "\n")
    return path


@pytest.fixture
def series(tmp_path) -> Path:
    rows = [[f"d{i}", f"{(i * 7) % 13 + 0.5 * i:.2f}", f"{i % 5}"] for i in range(200)]
    return write_csv(tmp_path / "s.csv", ["Date", "Temp", "Rain"], rows)


@pytest.mark.slow
@pytest.mark.skipif(not TEMPERATURES.is_file(), reason="needs daily-min-temperatures.csv")
def test_temperatures_forecast_beats_persistence_in_degrees(tmp_path, capsys):
    out = tmp_path / "temps"
    code = main(
        [
            "train",
            "--data",
            str(TEMPERATURES),
            "--target",
            "Temp",
            "--out",
            str(out),
            "--model",
            "gru",
            "--hidden-size",
            "32",
            "--num-layers",
            "1",
            "--dropout",
            "0",
            "--batch-size",
            "8",
            "--epochs",
            "20",
            "--lr",
            "0.01",
            "--no-progress",
        ]  # fmt: skip
    )
    assert code == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    persistence = summary["baselines"]["persistence"]
    assert summary["val_rmse"] < persistence["rmse"] and summary["val_mae"] < persistence["mae"]
    assert f"RMSE {summary['val_rmse']:.4f}" in printed and "persistence: RMSE" in printed
    with open(out / "predictions.csv") as f:
        rows = list(csv.reader(f))
    # the time column names the first column; lines end with \n as any other tbptt file
    assert rows[0] == ["Date", "Temp", "Temp_predicted", "Temp_persistence"]
    assert b"\r" not in (out / "predictions.csv").read_bytes()
    assert len(rows) == 1 + 365 and rows[1][0] == "1990-01-01"
    # The CSV's errors are the reported ones, in degrees (independent recomputation).
    errors = [float(r[2]) - float(r[1]) for r in rows[1:]]
    rmse = (sum(e * e for e in errors) / len(errors)) ** 0.5
    assert rmse == pytest.approx(summary["val_rmse"], rel=1e-3)
    assert (out / "predictions.png").stat().st_size > 0
    # Standardization was fitted on the training rows only (1981-1989).
    scaler = json.loads((out / "config.json").read_text())["dataset"]["targets_scaler"]
    with open(TEMPERATURES) as f:
        temps = [float(r["Temp"]) for r in csv.DictReader(f)]
    train = temps[: len(temps) - 365]
    mean = sum(train) / len(train)
    assert scaler["mean"][0] == pytest.approx(mean, rel=1e-9)


def test_a_series_run_writes_predictions_and_resumes(series, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data", str(series), "--target", "Temp", "--inputs", "Temp,Rain",
            "--horizon", "2", "--out", str(out), *SMALL]  # fmt: skip
    assert main(argv) == 0
    records = read_metrics(out / "metrics.jsonl")
    epoch = [r for r in records if r["event"] == "epoch"][0]
    assert {"val_rmse", "val_mae", "val_loss", "train_loss"} <= set(epoch)
    assert "val_ppl" not in epoch
    assert main(["train", "--resume", str(out), "--epochs", "2", "--no-progress"]) == 0
    epochs = [r["epoch"] for r in read_metrics(out / "metrics.jsonl") if r["event"] == "epoch"]
    assert epochs == [1, 2]
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--horizon", "3"]) == 2
    err = capsys.readouterr().err
    assert "--horizon 3 differs from the run's 2" in err and err.count("\n") == 1


def test_a_task_trains_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "copy"
    code = main(["train", "--task", "copy:T=5,episodes=40,valid_episodes=8", "--out", str(out),
                 *SMALL])  # fmt: skip
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["objective"] == "classify" and 0 <= summary["val_acc"] <= 1
    code = main(["train", "--task", "influence:steps=400,valid_steps=50", "--out",
                 str(tmp_path / "inf"), "--optimizer", "sgd", "--lr", "0.01", "--clip", "0",
                 *SMALL])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "influence balancing (1 parameters)" in printed


@pytest.mark.parametrize(
    "extra, match",
    [
        (["--target", "Wind"], "Wind"),
        (["--target", "Temp", "--objective", "lm"], "does not fit"),
        (["--target", "Temp", "--horizon", "500"], "horizon"),
        (
            ["--target", "Temp", "--batch-size", "64", "--strategy", "regular:35"],
            "shorter than one",
        ),
        (["--target", "Temp", "--horizon", "0"], "horizon"),
    ],
)
def test_bad_series_input_is_one_line_and_exit_2(series, extra, match, tmp_path, capsys):
    argv = ["train", "--data", str(series), "--out", str(tmp_path / "o"), *SMALL, *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err and match in lines[0], err
    assert not (tmp_path / "o" / "checkpoint.pt").exists()


@pytest.mark.parametrize(
    "cells, extra, match",
    [
        ([["d0", "1.0"], ["d1", "abc"]], [], "line 3"),
        ([["d0", "1.0"], ["d1", ""], ["d2", "2.0"]], [], "missing"),
    ],
)
def test_bad_cells_name_line_and_column(cells, extra, match, tmp_path, capsys):
    path = write_csv(
        tmp_path / "bad.csv", ["Date", "Temp"], cells + [[f"e{i}", i] for i in range(50)]
    )
    argv = ["train", "--data", str(path), "--target", "Temp", "--out", str(tmp_path / "o"), *SMALL]
    assert main(argv + extra) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and match in err and "Temp" in err, err


@pytest.mark.parametrize(
    "task, match",
    [
        ("sorting", "unknown task"),
        ("adding:T=1", "T"),
        ("adding:T=x", "T"),
        ("copy:depth=3", "depth"),
    ],
)
def test_bad_task_is_one_line_and_exit_2(task, match, tmp_path, capsys):
    assert main(["train", "--task", task, "--out", str(tmp_path / "o"), *SMALL]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and match in err, err


def test_resuming_a_finished_run_says_it_is_complete(series, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--data", str(series), "--target", "Temp", "--out", str(out), *SMALL]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "is complete (1 of 1 epochs" in printed and "epoch 2" not in printed


@pytest.mark.slow
@pytest.mark.skipif(not TEMPERATURES.is_file(), reason="needs daily-min-temperatures.csv")
def test_the_readmes_series_example_prints_what_the_readme_shows(tmp_path, capsys):
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    command = "tbptt train --data daily-min-temperatures.csv --target Temp"
    assert f"```bash\n{command}\n```" in readme
    shown = readme.split(f"{command}\n```", 1)[1].split("\n\n", 2)[1]
    shown = " ".join(line.strip() for line in shown.splitlines())
    argv = command.split()[1:]
    argv[argv.index("--data") + 1] = str(TEMPERATURES)
    assert main([*argv, "--out", str(tmp_path / "r"), "--no-progress"]) == 0
    printed = next(
        line for line in capsys.readouterr().out.splitlines() if line.startswith("validation")
    )
    assert printed == shown
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    for name in ("persistence", "seasonal", "ar", "mean"):  # the recipe beats every baseline
        assert summary["val_rmse"] < summary["baselines"][name]["rmse"], name
