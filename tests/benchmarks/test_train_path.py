"""Smoke test of benchmarks/train_path.py at tiny sizes: the command's own path, every case
timed in one worker process per setting, the table and JSON written."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_path.py"


def _load():
    spec = importlib.util.spec_from_file_location("tbptt_train_path", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_cases_are_strategies_or_named_flags():
    tp = _load()
    cases = tp.parse_cases("regular:35,k1k2:10,35,mingru=--model mingru --hidden-size 8")
    assert cases == [
        ("regular:35", ["--strategy", "regular:35"]),
        ("k1k2:10,35", ["--strategy", "k1k2:10,35"]),
        ("mingru", ["--model", "mingru", "--hidden-size", "8"]),
    ]


@pytest.mark.slow
def test_train_path_times_the_commands_path_per_setting(small_text, tmp_path, capsys):
    tp = _load()
    out = tmp_path / "r.json"
    flags = "--hidden-size 8 --num-layers 1 --embedding-size 4 --batch-size 4"
    tp.main(["--cases", "regular:5,randomized:5", "--settings", "default,1", "--rounds", "1",
             "--repeats", "1", "--windows", "1", "--warmup", "1", "--data", str(small_text),
             "--flags", flags, "--out", str(out)])  # fmt: skip
    saved = json.loads(out.read_text())
    rows = saved["rows"]
    assert [r["setting"] for r in rows] == ["default", "1"]
    assert all(set(r["rates"]) == {"regular:5", "randomized:5"} for r in rows)
    assert all(rate > 0 for r in rows for rates in r["rates"].values() for rate in rates)
    assert rows[1]["threads"] == 1 and rows[1]["threads_used"] == [1]
    assert rows[0]["wait_policy"] and rows[0]["threads_reason"]
    table = capsys.readouterr().out
    assert "| 1 | 1 | randomized:5 |" in table and "| default |" in table
