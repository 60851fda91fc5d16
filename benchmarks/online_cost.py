"""Time and peak memory per step of the online estimators beside truncated and full BPTT.

For a GRU (1 layer, float inputs of width I, a linear head) at hidden sizes H
and batch sizes B, each estimator computes the gradient of a stretch of steps
at fixed weights, and the script reports per step:

- ``ms/step``: wall time of the stretch divided by its steps (median of
  ``--repeats``, after one warm-up stretch);
- ``peak MB``: the process's peak resident set during the stretch above the
  resident set before it (VmHWM reset through /proc/self/clear_refs, as
  benchmarks/checkpoint_memory.py does);
- ``GEMM ms``: the time the estimator's dense multiply-adds would take at the
  machine's measured matrix-multiply rate (one thread, float32): its floor.

Estimators: ``rtrl``, ``snap:1``, ``snap:2``, ``uoro`` (tbptt.train.online), and
``regular:35`` and ``full`` (tbptt.train.sequence_gradient over ``--length``
steps). Multiply-adds per step counted for the floor, with G = 3H(I + H) the
GRU's recurrent product per stream: ``full``/``regular`` 3 G B (forward and
backward), ``uoro`` about 4 G B, ``rtrl``/``snap`` 2 B H G B + B H² P (B H
reverse products of the batch's step, then the product A J; P parameters).

Usage::

    python benchmarks/online_cost.py                  # H 16 32 64 128, B 1 32
    python benchmarks/online_cost.py --hidden 16 32 --batch 1 --json out.json

It prints a Markdown table and writes JSON (default
benchmarks/results/online_cost.json), with the load average at the start and end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from tbptt.models import ModelConfig, RecurrentNet
from tbptt.train import sequence_gradient
from tbptt.train.objectives import Regression
from tbptt.train.online import build_estimator, rtrl_bytes
from tbptt.truncation import parse_strategy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkpoint_memory import _reset_peak_rss, _status_mb  # noqa: E402

ONLINE = ("rtrl", "snap:1", "snap:2", "uoro")
BACKWARD = ("regular:35", "full")


def gemm_rate(threads: int = 1, size: int = 512, repeats: int = 20) -> float:
    """Multiply-adds per second of a float32 (size x size) @ (size x size) product."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return repeats * size**3 / (time.perf_counter() - start)


def build(hidden: int, inputs: int, outputs: int) -> RecurrentNet:
    torch.manual_seed(0)
    config = ModelConfig(
        kind="gru",
        hidden_size=hidden,
        num_layers=1,
        input_size=inputs,
        output_size=outputs,
        embedding_size=0,
        dropout=0.0,
    )
    return RecurrentNet(config).eval()


def multiply_adds(spec: str, hidden: int, inputs: int, batch: int, params: int) -> float:
    g = 3 * hidden * (inputs + hidden)
    if spec in BACKWARD:
        return 3 * g * batch
    if spec == "uoro":
        return 4 * g * batch
    # B S reverse products of a batch-B step (about 2 g B each), then A J (B S^2 P)
    return 2 * batch * hidden * g * batch + batch * hidden**2 * params


def measure(spec, model, x, y, repeats) -> dict:
    """Seconds per step (median over ``repeats``) and peak MB above the level before.

    An online estimator is built and started once per repeat (its sensitivities count
    in the peak) and takes one untimed step first (SnAp finds its pattern there); the
    timed steps follow. ``regular``/``full`` time their whole stretch of steps.
    """
    strategy = parse_strategy(spec)
    objective, generator = Regression(), torch.Generator().manual_seed(0)
    times, peak = [], 0.0
    for _ in range(repeats):
        before = _reset_peak_rss()
        if spec in ONLINE:
            estimator = build_estimator(strategy, model, objective)
            estimator.start(model.initial_state(x.shape[1]))
            estimator.step(x[:1], y[:1], generator=generator)
            start = time.perf_counter()
            for t in range(1, x.shape[0]):
                estimator.step(x[t : t + 1], y[t : t + 1], generator=generator)
            times.append((time.perf_counter() - start) / (x.shape[0] - 1))
            del estimator
        else:
            sequence_gradient(model, strategy, x[:2], y[:2], objective=objective)  # warm-up
            start = time.perf_counter()
            sequence_gradient(model, strategy, x, y, objective=objective, generator=generator)
            times.append((time.perf_counter() - start) / x.shape[0])
        peak = max(peak, _status_mb("VmHWM") - before)
    return {"seconds_per_step": statistics.median(times), "peak_mb": peak}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    p.add_argument("--inputs", type=int, default=8, help="input width I (default: 8)")
    p.add_argument("--length", type=int, default=70, help="steps for regular/full (default: 70)")
    p.add_argument(
        "--online-steps",
        type=int,
        default=4,
        help="steps timed for the online estimators (default: 4)",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-gb", type=float, default=6.0, help="skip RTRL needing more (default: 6)")
    p.add_argument("--json", default="benchmarks/results/online_cost.json")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    rate = gemm_rate(args.threads)
    rows = []
    # One untimed pass over every estimator first: the process's one-time allocations
    # (torch.func, the allocator's pools) do not land in the first row's peak.
    warm = build(4, args.inputs, 1)
    xw, yw = torch.randn(3, 2, args.inputs), torch.randn(3, 2, 1)
    for spec in (*BACKWARD, *ONLINE):
        measure(spec, warm, xw, yw, 1)
    print(
        f"load {load_start[0]:.2f}; GEMM {rate / 1e9:.1f} G multiply-adds/s ({args.threads} thread)"
    )
    print("| H | B | P | estimator | ms/step | peak MB | GEMM ms |")
    print("| ---: | ---: | ---: | --- | ---: | ---: | ---: |")
    for hidden in args.hidden:
        model = build(hidden, args.inputs, 1)
        params = sum(q.numel() for q in model.parameters())
        for batch in args.batch:
            g = torch.Generator().manual_seed(1)
            x = torch.randn(args.length, batch, args.inputs, generator=g)
            y = torch.randn(args.length, batch, 1, generator=g)
            for spec in (*BACKWARD, *ONLINE):
                steps = args.length if spec in BACKWARD else args.online_steps + 1
                row = {"hidden": hidden, "batch": batch, "parameters": params, "spec": spec}
                need = rtrl_bytes(params, batch, hidden, 4) / 1e9
                if spec.startswith(("rtrl", "snap")) and need > args.max_gb:
                    row.update(skipped=f"needs about {need:.1f} GB")
                else:
                    row.update(measure(spec, model, x[:steps], y[:steps], args.repeats))
                row["gemm_seconds"] = multiply_adds(spec, hidden, args.inputs, batch, params) / rate
                rows.append(row)
                shown = (
                    f"{1e3 * row['seconds_per_step']:.3g} | {row['peak_mb']:.0f}"
                    if "skipped" not in row
                    else f"{row['skipped']} | -"
                )
                print(
                    f"| {hidden} | {batch} | {params} | {spec} | {shown} | "
                    f"{1e3 * row['gemm_seconds']:.3g} |",
                    flush=True,
                )
    load_end = os.getloadavg()
    print(f"load {load_end[0]:.2f} at the end")
    payload = {
        "gemm_multiply_adds_per_s": rate,
        "threads": args.threads,
        "load_start": load_start,
        "load_end": load_end,
        "torch": torch.__version__,
        "rows": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
