"""`tbptt evaluate RUN`, `tbptt generate --num-samples`, and forecasts of a series run.

The forecast reference is the naive loop of :func:`tbptt.train.generate.forecast`'s
docstring: every forecast row from a fresh state over the whole history plus the
forecasts fed back so far (no carried state), in the data's units.
"""

import json
import math

import pytest
import torch

from tbptt.analysis import load_model
from tbptt.cli import main

TEXT = ["--model", "gru", "--hidden-size", "8", "--num-layers", "1", "--embedding-size", "4",
        "--epochs", "1", "--batch-size", "4", "--strategy", "regular:10", "--no-progress",
        "--sample-length", "5"]  # fmt: skip
SERIES = ["--model", "gru", "--hidden-size", "4", "--num-layers", "1", "--dropout", "0",
          "--epochs", "1", "--batch-size", "4", "--strategy", "regular:10", "--no-progress"]  # fmt: skip


@pytest.fixture
def text_run(small_text, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(small_text), "--out", str(out), *TEXT]) == 0
    capsys.readouterr()
    return out


def test_evaluate_takes_the_run_positionally(text_run, tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["evaluate", str(text_run), "--json", str(a)]) == 0
    assert main(["evaluate", "--checkpoint", str(text_run), "--json", str(b)]) == 0
    assert main(["evaluate", str(text_run / "checkpoint.pt"), "--checkpoint",
                 str(text_run / "checkpoint.pt")]) == 0  # fmt: skip
    capsys.readouterr()
    assert json.loads(a.read_text())["ppl"] == json.loads(b.read_text())["ppl"]


@pytest.mark.parametrize(
    "argv, message",
    [(["evaluate"], "Expected a run directory"), (["generate", "x", "--checkpoint", "y"], "name it once")],
)  # fmt: skip
def test_no_run_or_two_runs_is_one_line(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err


def test_generate_several_samples(text_run, capsys):
    flags = ["generate", str(text_run), "--prefix", "the time", "--length", "30"]
    flags += ["--temperature", "1.5", "--seed", "4"]
    assert main([*flags, "--num-samples", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0::2] == ["[sample 1/3]", "[sample 2/3]", "[sample 3/3]"]
    samples = lines[1::2]
    assert len(set(samples)) == 3  # three draws, not one repeated
    assert main(flags) == 0  # the first of several is the single sample of the same seed
    assert capsys.readouterr().out.splitlines() == [samples[0]]
    assert main([*flags, "--num-samples", "3"]) == 0  # and a seed gives the same set
    assert capsys.readouterr().out.splitlines() == lines


def _series_file(tmp_path, rows=240):
    t = torch.arange(rows, dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    level = 10 + 5 * torch.sin(2 * math.pi * t / 24) + 0.3 * torch.randn(rows, generator=g)
    other = torch.cos(2 * math.pi * t / 24)
    path = tmp_path / "series.csv"
    lines = ["level,other"] + [f"{a:.4f},{b:.4f}" for a, b in zip(level.tolist(), other.tolist())]
    path.write_text("\n".join(lines) + "\n")
    return path


def _reference(run, steps):
    """The naive loop: a fresh state over the history and the forecasts fed back so far."""
    model, data, config = load_model(run)
    model.eval()
    h = data.horizon
    import numpy as np

    from tbptt.data.series import read_table

    table = read_table(config.data.path)
    raw = np.stack([table.numbers(c) for c in data.input_columns], axis=1)
    rows = data.inputs_scaler.transform(torch.from_numpy(raw)).float()  # (P, F)
    P, out = len(rows), []
    with torch.no_grad():
        for j in range(steps):
            outputs, _ = model(rows[:, None])  # (len, 1, D), fresh state
            out.append(outputs[P + j - h, 0])
            if j + 1 >= h:
                rows = torch.cat([rows, out[j + 1 - h].view(1, -1)])
    return data.targets_scaler.inverse(torch.stack(out).double())  # (steps, D)


def _printed(out: str) -> tuple[list[str], torch.Tensor]:
    lines = out.strip().splitlines()
    values = [[float(v) for v in line.split(",")[1:]] for line in lines[1:]]
    return lines, torch.tensor(values, dtype=torch.float64)


@pytest.mark.parametrize("horizon", [1, 3])
def test_forecast_the_next_steps_of_a_series(horizon, tmp_path, capsys):
    data, out = _series_file(tmp_path), tmp_path / f"h{horizon}"
    argv = ["train", "--data", str(data), "--target", "level", "--horizon", str(horizon)]
    assert main([*argv, "--out", str(out), *SERIES]) == 0
    capsys.readouterr()
    assert main(["generate", str(out), "--length", "7"]) == 0
    lines, got = _printed(capsys.readouterr().out)
    assert lines[0] == "step,level" and lines[1].startswith("+1,") and len(lines) == 8
    torch.testing.assert_close(got, _reference(out, 7), rtol=1e-5, atol=1e-4)
    # the default is the run's horizon; --history names another table (here: the same)
    assert main(["generate", str(out), "--history", str(data)]) == 0
    lines, default = _printed(capsys.readouterr().out)
    assert len(lines) == 1 + horizon
    torch.testing.assert_close(default, got[:horizon])


def test_forecast_beyond_the_horizon_needs_the_targets_as_inputs(tmp_path, capsys):
    data, out = _series_file(tmp_path), tmp_path / "two"
    argv = ["train", "--data", str(data), "--target", "level", "--inputs", "level,other"]
    assert main([*argv, "--horizon", "2", "--out", str(out), *SERIES]) == 0
    capsys.readouterr()
    assert main(["generate", str(out)]) == 0  # two steps: read from the history alone
    assert len(capsys.readouterr().out.strip().splitlines()) == 3
    assert main(["generate", str(out), "--length", "3"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at most 2" in err
