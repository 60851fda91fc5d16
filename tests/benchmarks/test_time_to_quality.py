"""Smoke tests of benchmarks/recipes.py (time to quality) and benchmarks/busy.py (a busy
machine) at tiny sizes: they run the real commands, write their JSON, tables and plot."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"tbptt_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_time_and_target_of_a_curve():
    recipes = _load("recipes")
    curve = [[10.0, 4.5], [20.0, 3.9], [30.0, 3.6]]
    assert recipes.at(curve, 25.0) == 3.9 and recipes.at(curve, 5.0) is None
    assert recipes.reached(curve, 3.85) == 30.0 and recipes.reached(curve, 3.5) is None
    runs = [{"config": "a", "curve": curve}, {"config": "a", "curve": [[15.0, 3.8]]}]
    row = recipes.table(runs).splitlines()[2]
    assert row.startswith("| a | 2 | - | 3.700 |")  # no machine rate; at 30 s: 3.6 and 3.8
    runs = [{**run, "gemm_gflops": rate} for run, rate in zip(runs, (100.0, 150.0))]
    assert recipes.table(runs).splitlines()[2].startswith("| a | 2 | 125 | 3.700 |")


@pytest.mark.slow
def test_recipes_runs_tbptt_and_the_example_and_writes_curves(small_text, tmp_path, capsys):
    recipes = _load("recipes")
    out = tmp_path / "r.json"
    tiny = ("tiny=--epochs 2 --hidden-size 8 --num-layers 1 --embedding-size 4 --batch-size 4 "
            "--strategy regular:5 --sample-length 0")  # fmt: skip
    recipes.main(["--configs", "--config", tiny, "--data", str(small_text), "--threads", "1",
                  "--example-seconds", "0.01", "--out", str(out)])  # fmt: skip
    runs = json.loads(out.read_text())["runs"]
    assert [r["config"] for r in runs] == ["tiny", "PyTorch example (fused loop)"]
    assert all(r["gemm_gflops"] > 0 for r in runs)  # the machine's rate before each run
    seconds = [s for s, _ in runs[0]["curve"]]
    assert len(seconds) == 2 and 0 < seconds[0] < seconds[1]
    assert len(runs[1]["curve"]) == 1 and runs[1]["curve"][0][1] > 1.0
    assert out.with_suffix(".png").stat().st_size > 0
    assert "| tiny | 1 |" in capsys.readouterr().out


@pytest.mark.slow
def test_busy_times_each_setting_in_its_own_process(small_text, tmp_path, monkeypatch):
    busy = _load("busy")
    full = busy.settings(2)
    assert {"1 thread", busy.DEFAULT} <= set(full)
    keep = ("1 thread", busy.DEFAULT)
    monkeypatch.setattr(busy, "settings", lambda cores: {k: full[k] for k in keep})
    out = tmp_path / "b.json"
    busy.main(["--loads", "idle", "--rounds", "1", "--seconds", "0.2", "--data", str(small_text),
               "--out", str(out)])  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert [r["setting"] for r in rows] == list(keep)
    assert rows[0]["threads"] == 1 and all(r["tokens_per_s"] > 0 for r in rows)
    assert rows[1]["wait_policy"] and rows[1]["threads_reason"]  # tbptt's choice, reported
