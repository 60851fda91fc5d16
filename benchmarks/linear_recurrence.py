"""minGRU on the gated scan (sequential and parallel path) against the fused GRU and LSTM.

One process times, interleaved (A B C D A B C D ...), one training step of one layer of width
H -- forward over a (T, B, H) window from a carried state, backward of a fixed linear function
of the outputs -- for:

- ``mingru seq`` / ``mingru par``: :class:`tbptt.models.minimal.LinearRecurrent` on the
  sequential and on the parallel (blocked associative) scan path;
- ``gru fused`` / ``lstm fused``: :class:`tbptt.models.Recurrent` on PyTorch's fused kernels.

tokens/s = T * B / seconds, median over repeats; each ratio is the median of the per-repeat
ratios of neighbouring runs (robust to a shared, busy machine). The load (``os.getloadavg``)
is recorded before and after every configuration.

Usage::

    python benchmarks/linear_recurrence.py                       # the table of the docs
    python benchmarks/linear_recurrence.py --quick               # a smoke run
    python benchmarks/linear_recurrence.py --crossover           # seq vs par over T (threshold)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch

from tbptt.models import Recurrent
from tbptt.models.minimal import LinearRecurrent

ROOT = Path(__file__).resolve().parents[1]
RUNS = ("mingru seq", "mingru par", "gru fused", "lstm fused")


def _make(name: str, H: int, device: str):
    torch.manual_seed(0)
    if name.startswith("mingru"):
        rec = LinearRecurrent("mingru", input_size=H, hidden_size=H).to(device)
        path = "sequential" if name.endswith("seq") else "parallel"
    else:
        rec = Recurrent(name.split()[0], input_size=H, hidden_size=H).to(device)
        path = "fused"
    return rec, path


def _step(rec, path, x, state, weight):
    out, _ = rec(x, state, path=path)
    (out * weight).sum().backward()


def measure(T: int, B: int, H: int, *, runs=RUNS, repeats: int, device: str = "cpu") -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(T, B, H, generator=g).to(device)
    weight = torch.randn(T, B, H, generator=g).to(device)
    models = {name: _make(name, H, device) for name in runs}
    states = {n: m.initial_state(B) for n, (m, _) in models.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for repeat in range(repeats + 1):  # the first round warms up
        for name in runs:
            rec, path = models[name]
            rec.zero_grad(set_to_none=True)
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            _step(rec, path, x, states[name], weight)
            if device == "cuda":
                torch.cuda.synchronize()
            if repeat:
                times[name].append(time.perf_counter() - start)
    tokens = {n: T * B / statistics.median(ts) for n, ts in times.items()}
    base = runs[0]
    ratios = {
        n: statistics.median(a / b for a, b in zip(times[base], times[n])) for n in runs[1:]
    }  # > 1: the run is faster than the first one
    return {"tokens_per_s": tokens, "speed_vs_" + base.replace(" ", "_"): ratios}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--crossover", action="store_true", help="mingru seq vs par over T")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--device", default="cpu")
    p.add_argument("--repeats", type=int, help="timed repeats (default: 15, 5 for big windows)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "linrec.json")
    args = p.parse_args(argv)
    B = 32
    if args.crossover:
        shapes = [(T, H) for H in (16, 64, 128, 256) for T in (35, 64, 256, 1000)]
        runs = RUNS[:2]
    else:
        shapes = [(T, H) for H in (256, 512) for T in (35, 1000)]
        runs = RUNS
    if args.quick:
        shapes = [(35, 64), (200, 64)]
    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for T, H in shapes:
            reps = 3 if args.quick else (5 if T * H >= 256_000 else 15)
            reps = args.repeats or reps
            load_before = os.getloadavg()[0]
            result = measure(T, B, H, runs=runs, repeats=reps, device=args.device)
            row = dict(threads=threads, T=T, B=B, H=H, repeats=reps, **result)
            row["load"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
            rows.append(row)
            args.out.parent.mkdir(parents=True, exist_ok=True)  # after every row: a partial table
            args.out.write_text(json.dumps({"device": args.device, "rows": rows}, indent=1) + "\n")
            tok = "  ".join(f"{n} {v:9.0f}" for n, v in result["tokens_per_s"].items())
            key = next(k for k in result if k.startswith("speed_vs"))
            rat = "  ".join(f"{n} x{v:.2f}" for n, v in result[key].items())
            print(
                f"threads {threads} T {T:5d} H {H:4d} | {tok} | vs {runs[0]}: {rat} | load {row['load']}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": args.device, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
