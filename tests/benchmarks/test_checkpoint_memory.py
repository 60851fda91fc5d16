"""Smoke test of benchmarks/checkpoint_memory.py at tiny sizes: both measurements run and agree."""

import argparse
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "checkpoint_memory.py"


def _load():
    spec = importlib.util.spec_from_file_location("tbptt_checkpoint_memory", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_plain_and_checkpointed_measurements_agree_and_differ_in_memory():
    bench = _load()
    args = argparse.Namespace(
        device="cpu", kind="gru", hidden=8, layers=1, embedding=4, vocab=7, batch=2, threads=1
    )
    plain = bench.measure_both(args, "full", 64)
    ckpt = bench.measure_both(args, "full:checkpoint", 64)
    for a, b in zip(plain["grads"], ckpt["grads"]):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    assert ckpt["saved_mb"] < plain["saved_mb"] / 2
    assert plain["peak_mb"] >= 0 and plain["seconds"] > 0


@pytest.mark.slow
def test_the_script_prints_a_table_and_writes_json(tmp_path, capsys):
    bench = _load()
    out = tmp_path / "r.json"
    argv = ["--kind", "gru", "--hidden", "8", "--embedding", "4", "--batch", "2",
            "--lengths", "16", "--json", str(out)]  # fmt: skip
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    assert "full:checkpoint" in printed and "largest |gradient difference|" in printed
    assert out.stat().st_size > 0
