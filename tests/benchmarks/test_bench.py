"""Smoke test of benchmarks/bench.py at tiny sizes: it runs, times every method, writes JSON."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench.py"


def _load():
    spec = importlib.util.spec_from_file_location("tbptt_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_bench_runs_every_method_and_writes_json(small_text, tmp_path, capsys):
    bench = _load()
    out = tmp_path / "r.json"
    argv = ["--quick", "--threads", "1", "--data", str(small_text), "--kinds", "gru",
            "--hidden", "8", "--batch", "4", "--k", "5", "--windows", "1", "--repeats", "1",
            "--full-lengths", "12", "--full-hidden", "8", "--gemm-size", "64", "--stretch",
            "--out", str(out)]  # fmt: skip
    result = bench.main(argv)
    saved = json.loads(out.read_text())
    assert saved["throughput"] == json.loads(json.dumps(result["throughput"]))
    methods = {r["method"] for r in saved["throughput"]}
    assert {"fused loop", "cell loop", "tbptt regular:5", "tbptt randomized:5"} <= methods
    for row in saved["throughput"]:
        if "unavailable" not in row:
            assert row["tokens_per_s"] > 0 and row["peak_mb"] > 0
    fused = next(r for r in saved["throughput"] if r["method"] == "fused loop")
    assert fused["vs_fused"] == 1.0
    full = {r["method"]: r for r in saved["full"]}
    assert full["tbptt regular:5"]["peak_rss_mb"] > 0
    assert "tbptt full:12" in full and "tbptt full:12,checkpoint" in full
    assert saved["stretch"] and saved["machine"]["gemm_gflops"] > 0
    table = capsys.readouterr().out
    assert "| char GRU 8x1 | tbptt regular:5 |" in table


def test_hand_written_loops_train_the_same_model_as_tbptt(small_text):
    """The fused and cell baselines start from the same weights and give the same first loss."""
    import torch

    bench = _load()
    args = bench.parse_args(["--data", str(small_text), "--batch", "3", "--k", "4"])
    setup = bench.make_setup(args, "char", "lstm", 6, 2)
    fused, cells = bench.HandLoop(setup, cells=False), bench.HandLoop(setup, cells=True)
    for layer, cell in enumerate(cells.model.cells):  # copy the fused weights into the cells
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).data.copy_(getattr(fused.model.rnn, f"{name}_l{layer}"))
    cells.model.embedding.load_state_dict(fused.model.embedding.state_dict())
    cells.model.head.load_state_dict(fused.model.head.state_dict())
    x = fused.data[:4]
    a, _ = fused.model(x, fused.fresh_state())
    b, _ = cells.model(x, cells.fresh_state())
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert fused.window() == 4 * 3 and cells.window() == 4 * 3
