"""The laboratory measures the online estimators beside the truncated ones (float64)."""

import json

from tbptt.analysis.estimator import estimator_quality
from tbptt.cli import main
from tests.reference import tiny_batch, tiny_lm


def test_rtrl_is_exact_snap_1_biased_and_uoro_within_its_noise_floor():
    model = tiny_lm("gru", seed=3).eval()
    inputs, targets = tiny_batch(T=6, seed=4)
    specs = ["rtrl", "snap:1", "snap:2", "uoro", "regular:2"]
    result = estimator_quality(model, inputs, targets, specs, draws=30)
    rows = {r["spec"]: r for r in result["results"]}
    assert rows["rtrl"]["relative_bias"] < 1e-10 and rows["rtrl"]["draws"] == 1
    assert rows["snap:2"]["relative_bias"] < 1e-10  # one step connects every GRU unit
    assert rows["snap:1"]["relative_bias"] > 1e-4
    uoro = rows["uoro"]
    assert uoro["draws"] == 30 and uoro["relative_variance"] > 0
    assert uoro["relative_bias"] < 4 * uoro["noise_floor"]  # unbiased: noise only
    assert all(r["seconds_per_step"] > 0 for r in rows.values())


def test_analyze_bias_takes_online_strategies(tmp_path, capsys):
    out = tmp_path / "bias"
    argv = ["analyze", "bias", "--task", "adding:T=4", "--model", "gru", "--hidden-size", "3",
            "--length", "8", "--streams", "2", "--warmup", "2", "--ks", "2",
            "--families", "regular", "--strategies", "rtrl", "uoro", "--draws", "5",
            "--threads", "1", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "ms/step" in printed and "rtrl" in printed
    rows = {r["spec"]: r for r in json.loads((out / "bias.json").read_text())["results"]}
    assert set(rows) == {"regular:2", "rtrl", "uoro"}
    # float32 model: exact up to rounding
    assert rows["rtrl"]["relative_bias"] < 1e-4 < rows["regular:2"]["relative_bias"]
    assert "| rtrl |" in (out / "bias.md").read_text()
