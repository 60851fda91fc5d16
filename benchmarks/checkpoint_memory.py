"""Peak memory of full BPTT, plain vs checkpointed, at growing sequence length T.

For each T the exact full-BPTT gradient of a RecurrentLM over T steps of B
streams is computed twice, with ``full`` and with ``full:checkpoint``
(segments of ceil(sqrt T) steps), and the script reports:

- ``saved MB``: the high-water mark of the tensors autograd holds for backward
  (saved-tensor hooks; deterministic, the same on every machine);
- ``peak MB``: the process's real peak: on CUDA ``torch.cuda.max_memory_allocated``
  above the memory held before the run; on CPU (Linux) the peak resident set
  (VmHWM, reset through /proc/self/clear_refs just before the run) above the
  resident set at that moment, each measurement in a fresh subprocess;
- ``seconds`` for forward and backward, and the largest gradient difference
  between the two (they compute the same gradient).

Usage::

    python benchmarks/checkpoint_memory.py                   # CPU, LSTM H128, B32, T 500 2000 8000
    python benchmarks/checkpoint_memory.py --device cuda --lengths 2000 8000 32000
    python benchmarks/checkpoint_memory.py --json results.json

It prints a table and writes JSON (default benchmarks/results/checkpoint_memory-<device>.json).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from tbptt.models import ModelConfig, RecurrentLM
from tbptt.train import sequence_gradient
from tbptt.train.memory import SavedTensorBytes
from tbptt.truncation import parse_strategy

SPECS = ("full", "full:checkpoint")


def _model_and_data(args, T):
    torch.manual_seed(0)
    model = RecurrentLM(
        ModelConfig(
            vocab_size=args.vocab,
            kind=args.kind,
            hidden_size=args.hidden,
            num_layers=args.layers,
            embedding_size=args.embedding,
            dropout=0.0,
        )
    ).to(args.device)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, args.vocab, (T + 1, args.batch), generator=g).to(args.device)
    return model, tokens[:-1], tokens[1:]


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> float:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS and return it, in MiB."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # not Linux, or not allowed: the peak then includes earlier transients
        pass
    return _status_mb("VmRSS")


def measure(args, spec: str, T: int, *, saved: bool) -> dict:
    """One gradient computation; returns its peak memory and time."""
    model, inputs, targets = _model_and_data(args, T)
    strategy = parse_strategy(spec)
    cuda = args.device.startswith("cuda")
    # Warm up on a short sequence: one-time allocations (kernels, caches) are not the run's.
    warm_model, warm_inputs, warm_targets = _model_and_data(args, 16)
    sequence_gradient(warm_model, strategy, warm_inputs, warm_targets)
    del warm_model
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        before = _reset_peak_rss()
    meter = SavedTensorBytes()
    start = time.perf_counter()
    if saved:
        with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
            grads = sequence_gradient(model, strategy, inputs, targets)
    else:
        grads = sequence_gradient(model, strategy, inputs, targets)
    if cuda:
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    else:
        peak = _status_mb("VmHWM") - before
    seconds = time.perf_counter() - start
    return {
        "spec": spec,
        "T": T,
        "peak_mb": peak,
        "saved_mb": meter.peak / 2**20 if saved else None,
        "seconds": seconds,
        "grads": [g.detach().cpu() for g in grads],
    }


def measure_both(args, spec: str, T: int) -> dict:
    """Peak memory and time without hooks (they add bookkeeping of their own), then the
    saved-tensor high-water mark with them."""
    plain = measure(args, spec, T, saved=False)
    plain["saved_mb"] = measure(args, spec, T, saved=True)["saved_mb"]
    return plain


def _in_subprocess(args, spec, T) -> dict:
    """CPU peak RSS must be measured in a fresh process (ru_maxrss only grows)."""
    cmd = [sys.executable, __file__, "--worker", spec, str(T), *args.passthrough]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--kind", default="lstm")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--embedding", type=int, default=32)
    p.add_argument("--vocab", type=int, default=28)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lengths", type=int, nargs="+", default=[500, 2000, 8000])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default=None)
    p.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    args.passthrough = [
        "--device", args.device, "--kind", args.kind, "--hidden", str(args.hidden),
        "--layers", str(args.layers), "--embedding", str(args.embedding), "--vocab", str(args.vocab),
        "--batch", str(args.batch), "--threads", str(args.threads),
    ]  # fmt: skip
    if args.worker:
        spec, T = args.worker
        r = measure_both(args, spec, int(T))
        r["grads"] = None
        print(json.dumps(r))
        return 0

    cuda = args.device.startswith("cuda")
    rows = []
    for T in args.lengths:
        results = {}
        for spec in SPECS:
            if cuda:
                results[spec] = measure_both(args, spec, T)
            else:
                results[spec] = _in_subprocess(args, spec, T)
                # the gradients themselves, compared in this process at the shortest length
                if T == args.lengths[0]:
                    results[spec]["grads"] = measure(args, spec, T, saved=False)["grads"]
        a, b = results["full"]["grads"], results["full:checkpoint"]["grads"]
        diff = max((x - y).abs().max().item() for x, y in zip(a, b)) if a and b else None
        for spec in SPECS:
            r = results[spec]
            rows.append(
                {
                    "T": T,
                    "spec": spec,
                    "segment": parse_strategy(spec).plan(T, torch.Generator()).checkpoint,
                    "peak_mb": round(r["peak_mb"], 1),
                    "saved_mb": round(r["saved_mb"], 2),
                    "seconds": round(r["seconds"], 3),
                    "max_grad_diff": diff,
                }
            )

    device = torch.cuda.get_device_name() if cuda else "cpu"
    print(
        f"full BPTT vs full:checkpoint: {args.kind} {args.layers}x{args.hidden}, batch {args.batch}, "
        f"vocab {args.vocab}, {device}, torch {torch.__version__}, {args.threads} thread(s)"
    )
    header = (
        f"{'T':>7}  {'strategy':<16} {'segment':>7} {'peak MB':>9} {'saved MB':>9} {'seconds':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['T']:>7}  {r['spec']:<16} {r['segment']:>7} {r['peak_mb']:>9.1f} "
            f"{r['saved_mb']:>9.2f} {r['seconds']:>8.2f}"
        )
    diffs = [r["max_grad_diff"] for r in rows if r["max_grad_diff"] is not None]
    if diffs:
        print(f"largest |gradient difference| between the two: {max(diffs):.2e}")
    path = Path(
        args.json or f"benchmarks/results/checkpoint_memory-{'cuda' if cuda else 'cpu'}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k not in ("worker", "passthrough", "json")}
    path.write_text(json.dumps({"config": config, "device": device, "rows": rows}, indent=2) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
