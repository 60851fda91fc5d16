"""`tbptt analyze` on streams that are not text: a time series, tasks, their checkpoints."""

import json
import math
from pathlib import Path

import pytest
import torch

from tbptt.cli import main

TINY = ["--model", "gru", "--hidden-size", "4", "--num-layers", "1", "--threads", "1"]
WINDOW = ["--length", "16", "--streams", "2", "--draws", "3"]


@pytest.fixture
def series(tmp_path) -> Path:
    rows = [f"d{i},{math.sin(i / 5) * 10 + (i * 7) % 3:.3f}" for i in range(120)]
    path = tmp_path / "temps.csv"
    path.write_text("\n".join(["Date,Temp", *rows]) + "\n")
    return path


def _finite(value) -> bool:
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


def _bias(argv, out) -> dict:
    assert main(["analyze", "bias", *argv, "--out", str(out)]) == 0
    payload = json.loads((out / "bias.json").read_text())
    assert _finite(payload)
    return payload


def _refused(argv, capsys) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_bias_on_a_series_uses_regression(series, tmp_path, capsys):
    payload = _bias(
        [
            "--data",
            str(series),
            "--target",
            "Temp",
            *TINY,
            *WINDOW,
            "--warmup",
            "0",
            "--ks",
            "3,16",
            "--families",
            "regular,randomized,full",
        ],  # fmt: skip
        tmp_path / "a",
    )
    rows = {r["spec"]: r for r in payload["results"]}
    assert payload["objective"] == "regress"
    assert payload["model"]["input_size"] == 1 and payload["model"]["output_size"] == 1
    assert payload["counted_rows"] == 2 * 16 and payload["restarts"] == 0
    # from zeros, full:16 is one sequence of the whole window: the exact gradient itself
    assert rows["full:16"]["relative_bias"] < 1e-12 and rows["regular:16"]["relative_bias"] < 1e-12
    assert rows["regular:3"]["relative_bias"] > 1e-4  # truncation is biased
    assert "objective regress" in capsys.readouterr().out


def test_bias_on_the_adding_task_honours_episodes_and_the_mask(tmp_path):
    T = 8
    payload = _bias(
        [
            "--task",
            f"adding:T={T},episodes=40,valid_episodes=4",
            *TINY,
            *WINDOW,
            "--warmup",
            str(T),
            "--ks",
            "3,16",
            "--families",
            "regular,full",
        ],  # fmt: skip
        tmp_path / "a",
    )
    rows = {r["spec"]: r for r in payload["results"]}
    # windows of 16 rows starting at an episode start: two episodes per stream, each scored once
    assert payload["counted_rows"] == 2 * 2 and payload["restarts"] == 2 * 2
    # full:16 starts from zeros, the exact gradient from the warm-up's state; they agree only
    # because the window's first row restarts every stream
    assert rows["full:16"]["relative_bias"] < 1e-12
    assert rows["regular:3"]["relative_bias"] > 1e-4


def test_a_series_checkpoint_is_analyzed_with_its_own_data_and_weights(series, tmp_path):
    run = tmp_path / "run"
    argv = ["train", "--data", str(series), "--target", "Temp", "--out", str(run), *TINY,
            "--epochs", "1", "--batch-size", "2", "--strategy", "regular:10", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    common = ["--checkpoint", str(run), "--streams", "2", "--warmup", "4"]
    payload = _bias([*common, "--length", "12", "--ks", "2,12", "--draws", "3"], tmp_path / "b")
    assert payload["objective"] == "regress" and payload["model"]["hidden_size"] == 4
    assert len(payload["results"]) == 4
    # spectrum reads the trained weights: the singular values of the checkpoint's W_hh blocks
    assert (
        main(["analyze", "spectrum", "--checkpoint", str(run), "--out", str(tmp_path / "s")]) == 0
    )
    blocks = json.loads((tmp_path / "s" / "spectrum.json").read_text())["blocks"]
    saved = torch.load(run / "checkpoint.pt", weights_only=True)["trainer"]["model"]
    # (a series run's model is a forecaster: its core's blocks are the recurrence)
    (key,) = [k for k in saved if k.endswith("recurrent.core.weight_hh_l0")]
    w_hh = saved[key].double()  # (3 H, H): reset, update, candidate
    for block, matrix in zip(blocks, w_hh.chunk(3, 0)):
        expected = torch.linalg.svdvals(matrix).tolist()
        assert block["singular_values"] == pytest.approx(expected, abs=1e-6)
    # and jacobian runs on its float inputs
    assert (
        main(["analyze", "jacobian", *common, "--length", "10", "--out", str(tmp_path / "j")]) == 0
    )
    jacobian = json.loads((tmp_path / "j" / "jacobian.json").read_text())
    assert len(jacobian["log_norms"]) == 2 and len(jacobian["log_norms"][0]) == 11


def test_influence_balancing_bias_runs_and_jacobian_is_refused(tmp_path, capsys):
    task = ["--task", "influence:steps=200,valid_steps=20"]
    payload = _bias(
        [
            *task,
            "--length",
            "20",
            "--streams",
            "2",
            "--warmup",
            "5",
            "--ks",
            "2,20",
            "--families",
            "regular",
            "--draws",
            "2",
        ],  # fmt: skip
        tmp_path / "a",
    )
    rows = {r["spec"]: r for r in payload["results"]}
    assert payload["model"] == {"module": "InfluenceBalancing", "parameters": 1}
    assert rows["regular:20"]["relative_bias"] < 1e-12
    err = _refused(["analyze", "jacobian", *task, "--out", str(tmp_path / "j")], capsys)
    assert "RecurrentNet" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["linear", "--target", "Temp"], "closed form for a one-hot linear RNN"),
        (["bias", "--target", "Temp", "--objective", "lm"], "does not fit"),
        (["bias", "--target", "Temp", "--length", "100"], "fewer than"),
    ],
)
def test_bad_input_on_a_series_is_one_line(argv, message, series, tmp_path, capsys):
    err = _refused(["analyze", *argv, "--data", str(series), "--out", str(tmp_path / "o")], capsys)
    assert message in err


def test_a_checkpoint_refuses_model_flags(series, tmp_path, capsys):
    run = tmp_path / "run"
    argv = ["train", "--data", str(series), "--target", "Temp", "--out", str(run), *TINY,
            "--epochs", "1", "--batch-size", "2", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    err = _refused(
        ["analyze", "bias", "--checkpoint", str(run), "--hidden-size", "8", "--out", str(tmp_path)],
        capsys,
    )
    assert "drop --hidden-size" in err
