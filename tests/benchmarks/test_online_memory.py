"""benchmarks/online_memory.py at tiny sizes: it runs every case, writes JSON, and its two
claims hold in shape -- truncation at K <= P/2 leaves the marker's weights exactly where they
were, and online RTRL's peak memory does not grow with the period P while full BPTT's grows
by at least half of what autograd saves for the longer window (measured independently with
saved-tensor hooks)."""

import importlib.util
import json
from pathlib import Path

import torch

from tbptt.train.memory import SavedTensorBytes
from tbptt.train.objectives import Regression

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "online_memory.py"


def _module():
    spec = importlib.util.spec_from_file_location("tbptt_online_memory_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _saved_mb(module, period: int, batch: int, hidden: int) -> float:
    """What autograd holds for one full-BPTT window of ``period`` rows (the reference)."""
    model = module.build_model(hidden, period, init="chrono", seed=0)
    data = module.recall_stream(period, batch, torch.Generator().manual_seed(0))
    inputs = data.inputs.view(batch, period, 2).transpose(0, 1)  # (P, B, 2)
    targets = data.targets.view(batch, period, 1).transpose(0, 1)  # (P, B, 1)
    mask = data.mask.view(batch, period).t()  # (P, B)
    meter = SavedTensorBytes()
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
        outputs, _ = model(inputs, None)
        Regression().loss_sum(outputs, targets, mask)
    return meter.peak / 2**20


def test_the_recall_stream_is_what_the_docstring_says():
    module = _module()
    data = module.recall_stream(6, 3, torch.Generator().manual_seed(0))
    inputs, targets = data.inputs.view(3, 6, 2), data.targets.view(3, 6)
    assert data.starts is None  # a stream with no episode ends
    assert inputs[:, :, 1].tolist() == [[1, 0, 0, 0, 0, 0]] * 3
    for period in range(3):
        assert torch.equal(targets[period], inputs[period, 0, 0].expand(6))
    assert data.mask.view(3, 6).tolist() == [[False] * 3 + [True] * 3] * 3


def test_the_online_memory_benchmark_runs_and_its_claims_hold_in_shape(tmp_path, capsys):
    module = _module()
    out = tmp_path / "online_memory.json"
    module.main(["--quick", "--in-process", "--out", str(out)])
    result = json.loads(out.read_text())
    assert "load average" in result["uptime_start"]
    learning = {(r["case"], r["init"]): r for r in result["learning"]}
    assert set(learning) == {
        ("rtrl", "chrono"),
        ("rtrl", "default"),
        ("regular:4", "chrono"),
        ("regular:32", "chrono"),
        ("full:32", "chrono"),
    }
    for row in learning.values():
        assert row["rows"] > 0 and row["rows_per_s"] > 0 and row["command"].startswith("python ")
    # K = 4 <= P/2 = 16: no window holds a marker and a counted row of its period
    assert learning["regular:4", "chrono"]["marker_weight_change"] == 0.0
    assert learning["rtrl", "chrono"]["marker_weight_change"] > 0.0
    assert learning["full:32", "chrono"]["marker_weight_change"] > 0.0

    peak = {(r["case"].replace(str(r["period"]), "P"), r["period"]): r["peak_mb"]
            for r in result["memory"]}  # fmt: skip
    small, large = 32, 1024
    saved_growth = _saved_mb(module, large, 256, 4) - _saved_mb(module, small, 256, 4)
    assert saved_growth > 20  # the reference itself grows (about 31 MiB)
    assert peak["full:P", large] - peak["full:P", small] >= 0.5 * saved_growth
    assert peak["rtrl", large] - peak["rtrl", small] <= 0.1 * saved_growth
    assert "| rtrl | chrono |" in capsys.readouterr().out
