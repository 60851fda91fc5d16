"""What only online learning gives: a 500-to-999-row dependency learned with memory independent of it.

**The task: delayed recall on a stream with no episode ends.** Inputs (N, 2) as the adding
task's: channel 0 a value u_t ~ U[0, 1) at every row, channel 1 a marker, 1 at the first row
of every period of P rows (``--period``, default 1000) and 0 elsewhere. The target of every
row is the value read at the latest marker; only the rows P/2 .. P-1 rows after their marker
count. The state is never reset: each marker must overwrite what the last one wrote. Always
predicting 1/2 scores Var(u) = 1/12 ~ 0.0833.

**Why regular:K with K <= P/2 cannot learn it.** A window of K rows that holds a marker
holds no counted row of that marker's period (those are at least P/2 rows later), and a
window that holds counted rows holds no marker. So the marker channel's input weights -- the
only way to write the value *because* the marker came -- get a gradient of exactly zero,
for any such K, and Adam leaves a weight whose gradient is always zero where it is. The
benchmark checks it: ``marker dw`` is the largest change of those weights over training.

**What can learn it.** ``rtrl`` on a one-layer minGRU runs the diagonal engine
(tbptt.train.online.diagonal): exact, forward in time, B x P_params sensitivities and
nothing stored per row, so its memory does not depend on P. ``regular:P`` (windows of a whole
period, the state carried) sees each marker with its counted rows and stores P rows of
activations. ``full:P`` stores as much and starts every period from a fresh state: the exact
gradient of the task *with* a reset at each marker, which never has to overwrite (the stream's
own exact gradient would backpropagate through the whole stream). Each case is scored on the
validation stream as it is (state carried) and with a reset at each marker
(``val MSE, reset``).

**The model**: a one-layer minGRU (``--hidden``, default 16) with a linear head, float32.
Its update-gate bias starts at -log(tau), tau ~ U[1, P] (the chrono initialization of Tallec
& Ollivier 2018 for a horizon of P rows: z ~ 1/tau, memories spread up to P rows). With the
default initialization (gate bias ~ U(-0.7, 0.7): a memory of about two rows) the gradient
of a 500-row dependency vanishes as (1 - z)^500 for every estimator, the exact ones included;
the ``rtrl, default`` row measures it.

**Protocol.** Each case runs in a fresh process (its command is recorded): seed 0, B = 128
streams, Adam (lr 0.01, constant, clip 1), one torch thread. ``rtrl`` (an optimizer step per
row, as an online learner runs) reads ``--online-periods`` periods per stream (one epoch);
each backward strategy gets the wall-clock time the first ``rtrl`` case took (training and
the validation after each epoch), as many epochs of the same stream as fit. Validation: 64
periods in 16 streams, fixed weights. Peak MB is the process's peak resident set during
training above its resident set when training started (VmHWM reset through
/proc/self/clear_refs, as benchmarks/checkpoint_memory.py does); rows/s is the trainer's own
(rows x streams per second of training).

The second table, **memory against P**, runs each strategy for a few steps at P = 1000 to
8000 (``--memory-periods``): ``rtrl`` and ``regular:50`` 1000 rows, ``full:P`` one window
of P rows.

Usage::

    python benchmarks/online_memory.py                  # both tables, 3 to 6 minutes
    python benchmarks/online_memory.py --quick --in-process --out /tmp/om.json   # tiny (the test)
    python benchmarks/online_memory.py --case regular:1000 --seconds 120 --epochs 1000000

It prints Markdown tables and writes JSON (default benchmarks/results/online_memory.json)
with the load average and ``uptime`` at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from tbptt.data.streams import StreamData
from tbptt.models import ModelConfig, RecurrentNet
from tbptt.train import TrainConfig, Trainer
from tbptt.train.evaluate import evaluate, validation_batch
from tbptt.train.memory import release_memory

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkpoint_memory import _reset_peak_rss, _status_mb  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(__file__).resolve()
BASELINE_MSE = 1 / 12  # Var(u), u ~ U[0, 1): always predicting 1/2


# -- the task and the model ------------------------------------------------------------


def recall_stream(period: int, periods: int, generator: torch.Generator) -> StreamData:
    """``periods`` periods of delayed recall laid end to end (module docstring).

    Returns inputs (N, 2), targets (N, 1), mask (N,) with N = periods * period; no starts
    (the stream never resets).
    """
    values = torch.rand(periods, period, generator=generator)  # (E, P)
    marker = torch.zeros(periods, period)
    marker[:, 0] = 1.0
    targets = values[:, :1].expand(periods, period)  # (E, P): the value at the marker
    counted = torch.zeros(periods, period, dtype=torch.bool)
    counted[:, period // 2 :] = True
    return StreamData(
        inputs=torch.stack([values, marker], dim=-1).reshape(-1, 2),  # (N, 2)
        targets=targets.reshape(-1, 1),  # (N, 1)
        mask=counted.reshape(-1),  # (N,)
    )


def build_model(hidden: int, period: int, *, init: str, seed: int) -> RecurrentNet:
    """A one-layer minGRU with a linear head; ``init="chrono"`` sets the update gate's bias to
    -log(tau), tau ~ U[1, period], so unit i forgets at a rate of about 1/tau_i."""
    torch.manual_seed(seed)
    model = RecurrentNet(
        ModelConfig(
            kind="mingru",
            hidden_size=hidden,
            num_layers=1,
            input_size=2,
            output_size=1,
            embedding_size=0,
            dropout=0.0,
            highway=0,
        )
    )
    if init == "chrono":
        tau = 1 + (period - 1) * torch.rand(hidden, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            model.recurrent.layers[0].bias[:hidden] = -torch.log(tau)  # rows [z; candidate]
    return model


# -- one case, in its own process -------------------------------------------------------


def run_case(args) -> dict:
    """Train one strategy as ``args`` say; returns its measurements (JSON-able)."""
    torch.set_num_threads(args.threads)
    train = recall_stream(
        args.period, args.batch * args.periods, torch.Generator().manual_seed(args.seed)
    )
    valid = recall_stream(
        args.period, args.valid_periods, torch.Generator().manual_seed(args.seed + 1)
    )
    model = build_model(args.hidden, args.period, init=args.init, seed=args.seed)
    config = TrainConfig(
        strategy=args.case,
        batch_size=args.batch,
        epochs=args.epochs,
        max_steps=args.max_steps,
        lr=args.lr,
        lr_schedule="constant",
        seed=args.seed,
    )
    trainer = Trainer(model, train, valid, config)
    marker = model.recurrent.layers[0].weight[:, 1].detach().clone()  # (2H,) z and candidate
    deadline = time.perf_counter() + args.seconds if args.seconds > 0 else math.inf
    release_memory()
    start_mb = _reset_peak_rss()
    start = time.perf_counter()
    records = trainer.fit(stop=lambda: time.perf_counter() > deadline)
    wall = time.perf_counter() - start
    peak_mb = _status_mb("VmHWM") - start_mb
    starts = torch.zeros(len(valid), dtype=torch.bool)
    starts[:: args.period] = True  # a reset at each marker
    reset = StreamData(valid.inputs, valid.targets, starts, valid.mask)
    batch = validation_batch(train, reset, config.eval_batch_size, "cpu")
    reset_mse = trainer.objective.summary(evaluate(model, batch, objective=trainer.objective))
    reset_mse = reset_mse["loss"]
    rows = sum(r["tokens"] for r in records)
    seconds = sum(r["seconds"] for r in records)
    last = records[-1]
    return {
        "case": args.case,
        "init": args.init,
        "period": args.period,
        "hidden": args.hidden,
        "batch": args.batch,
        "epochs": len(records),
        "steps": trainer.step,
        "rows": rows,  # rows read: steps in time x streams
        "train_seconds": seconds,
        "wall_seconds": wall,  # training and validation
        "rows_per_s": rows / max(seconds, 1e-9),
        "val_mse": last.get("val_loss", math.nan),
        "val_mse_by_epoch": [r.get("val_loss", math.nan) for r in records],
        "val_mse_reset": reset_mse,  # the same weights, the state reset at each marker
        "baseline_mse": BASELINE_MSE,
        "marker_weight_change": float(
            (model.recurrent.layers[0].weight[:, 1].detach() - marker).abs().max()
        ),
        "peak_mb": peak_mb,  # resident set above the start of training
        "start_rss_mb": start_mb,
        "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def case_argv(case: str, **options) -> list[str]:
    """The command line of one case (``--case``), its options as flags."""
    argv = [sys.executable, str(SCRIPT.relative_to(ROOT)), "--case", case]
    for key, value in options.items():
        argv += [f"--{key.replace('_', '-')}", str(value)]
    return argv


def launch(case: str, *, in_process: bool = False, **options) -> dict:
    """Run one case in a fresh process (a clean peak memory) or, ``in_process``, here;
    returns its result with its command."""
    argv = case_argv(case, **options)
    if in_process:
        result = run_case(parser().parse_args(argv[2:]))
    else:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)} failed:\n{done.stderr[-3000:]}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
    result["command"] = "python " + shlex.join(argv[1:])
    return result


# -- the tables -----------------------------------------------------------------------


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "load average: " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def learning_table(args, common: dict) -> list[dict]:
    """rtrl (chrono and default init), then regular:K and full:P for rtrl's wall time."""
    rows = []
    print(f"always 1/2: MSE {BASELINE_MSE:.4f}")
    print(
        "| strategy | init | val MSE | best val MSE | val MSE, reset | marker dw | "
        "optimizer steps | rows | seconds | rows/s | peak MB |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    budget = None
    cases = [("rtrl", "chrono"), ("rtrl", "default")] + [(s, "chrono") for s in args.backward]
    for spec, init in cases:
        spec = spec.replace("P", str(args.period))
        if spec == "rtrl":
            options = dict(periods=args.online_periods, epochs=1)
        else:
            options = dict(periods=args.online_periods, epochs=10**6, seconds=f"{budget:.1f}")
        row = launch(spec, init=init, **common, **options)
        if budget is None:
            budget = row["wall_seconds"]
        rows.append(row)
        print(
            f"| {spec} | {init} | {row['val_mse']:.4f} | {min(row['val_mse_by_epoch']):.4f} | "
            f"{row['val_mse_reset']:.4f} | {row['marker_weight_change']:.3g} | "
            f"{row['steps']:,} | {row['rows']:,} | {row['train_seconds']:.0f} | "
            f"{row['rows_per_s']:,.0f} | {row['peak_mb']:.1f} |",
            flush=True,
        )
    return rows


def memory_table(args, common: dict) -> list[dict]:
    """Peak MB of each strategy against the period P: ``rtrl`` and ``regular:K`` read
    ``--memory-rows`` rows, ``full:P`` one window of P rows."""
    rows = []
    specs = ["rtrl", *args.memory_specs]
    print("| P | " + " | ".join(specs) + " |")
    print("| ---: |" + " ---: |" * len(specs))
    for period in args.memory_periods:
        cells = []
        for spec in specs:
            spec = spec.replace("P", str(period))
            if spec.startswith("full"):
                steps = 1
            elif spec.startswith("regular"):
                steps = max(1, args.memory_rows // int(spec.split(":")[1]))
            else:
                steps = args.memory_rows
            options = {**common, "period": period, "periods": 1, "epochs": 1}
            row = launch(spec, init="chrono", max_steps=steps, **options)
            rows.append(row)
            cells.append(f"{row['peak_mb']:.1f}")
        print(f"| {period:,} | " + " | ".join(cells) + " |", flush=True)
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--case", help="run one strategy in this process and print its JSON")
    p.add_argument("--period", type=int, default=1000, help="rows per period P (default: 1000)")
    p.add_argument("--hidden", type=int, default=16)
    p.add_argument("--batch", type=int, default=128, help="streams B (default: 128)")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--init", choices=("chrono", "default"), default="chrono")
    p.add_argument("--periods", type=int, default=12, help="--case: periods per stream")
    p.add_argument("--valid-periods", type=int, default=64)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=0)
    p.add_argument("--seconds", type=float, default=0.0, help="--case: a wall-clock budget")
    p.add_argument("--online-periods", type=int, default=12, help="rtrl's periods per stream")
    p.add_argument("--backward", nargs="+", default=["regular:50", "regular:P", "full:P"])
    p.add_argument("--memory-specs", nargs="+", default=["regular:50", "full:P"])
    p.add_argument("--memory-periods", type=int, nargs="+", default=[1000, 2000, 4000, 8000])
    p.add_argument("--memory-rows", type=int, default=1000)
    p.add_argument("--skip-learning", action="store_true", help="only the memory table")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run (the test)")
    p.add_argument("--in-process", action="store_true", help="every case in this process")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/online_memory.json")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args)))
        return 0
    if args.quick:
        args.period, args.hidden, args.batch, args.valid_periods = 32, 4, 256, 16
        args.online_periods, args.memory_rows = 2, 32
        args.backward = ["regular:4", "regular:P", "full:P"]
        args.memory_specs = ["regular:4", "full:P"]
        args.memory_periods = [32, 1024]
    common = dict(
        hidden=args.hidden,
        batch=args.batch,
        lr=args.lr,
        seed=args.seed,
        threads=args.threads,
        valid_periods=args.valid_periods,
        in_process=args.in_process,
    )
    start_uptime, start_load = _uptime(), os.getloadavg()
    print(f"{start_uptime}\ntorch {torch.__version__}, {args.threads} thread(s)\n")
    learning = [] if args.skip_learning else learning_table(args, {**common, "period": args.period})
    print()
    memory = memory_table(args, common)
    end_uptime, end_load = _uptime(), os.getloadavg()
    print(f"\n{end_uptime}")
    payload = {
        "uptime_start": start_uptime,
        "uptime_end": end_uptime,
        "load_start": start_load,
        "load_end": end_load,
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "baseline_mse": BASELINE_MSE,
        "learning": learning,
        "memory": memory,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
