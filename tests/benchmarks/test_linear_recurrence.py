"""Smoke test of benchmarks/linear_recurrence.py at tiny sizes: it runs every path and writes JSON."""

import importlib.util
import json
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "linear_recurrence.py"


def test_the_linear_recurrence_benchmark_runs_and_writes_json(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("tbptt_linrec_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "r.json"
    module.main(["--quick", "--threads", "1", "--repeats", "1", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [(r["T"], r["H"]) for r in rows] == [(35, 64), (200, 64)]
    for row in rows:
        assert set(row["tokens_per_s"]) == set(module.RUNS)
        assert all(v > 0 for v in row["tokens_per_s"].values())
    assert "mingru par" in capsys.readouterr().out
