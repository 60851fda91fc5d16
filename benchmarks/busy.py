"""tbptt on an idle and on a busy machine: tokens/s of the default model by thread setting.

A machine is rarely idle: other jobs, a browser, a second training run. This script
measures what that does to ``tbptt train``'s default model (LSTM 2 x 256, embedding
64, batch 32, ``regular:35``, The Time Machine), each setting timed in a fresh
process (OpenMP reads its settings when the process starts), interleaved in rounds
(A B C D, A B C D, ...) so that drift in the machine's state hits every setting alike:

- ``before``: OpenMP's default wait (workers spin 300,000 iterations before they
  sleep), what tbptt ran under before :mod:`tbptt.threads`, at 1 and N threads (N = the
  cores torch sees; N is torch's default);
- ``after``: tbptt's bounded spin, at 1 thread and at tbptt's default (N threads);
- ``passive wait``: ``OMP_WAIT_POLICY=PASSIVE`` (workers sleep at once), for reference.

Loads (``--loads``): ``idle``; ``gemm``: a second process doing float32 matrix products
with torch's default threads (another PyTorch job); ``spin``: one pure-Python busy loop
per core (a compiler, a test suite). The load starts before, and runs across, every
timing of its block.

Usage::

    python benchmarks/busy.py                               # idle and gemm, 3 rounds (~5 min)
    python benchmarks/busy.py --loads idle,gemm,spin --rounds 5 --out benchmarks/results/busy.json
    python benchmarks/busy.py --report benchmarks/results/busy.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent

GEMM_LOAD = """
import torch
a = torch.randn(768, 768)
while True:
    a = torch.tanh(a @ a)
"""
SPIN_LOAD = "while True: pass"


def settings(cores: int) -> dict[str, dict]:
    """Setting name -> the worker's thread count (None: tbptt's default) and environment.

    "before" is what tbptt ran under before it bounded OpenMP's spin-waiting: GNU
    OpenMP's default spin count (300,000), set explicitly so that tbptt keeps it.
    """
    before = {"GOMP_SPINCOUNT": "300000", "KMP_BLOCKTIME": "200"}
    return {
        "1 thread, before": {"threads": 1, "env": before},
        f"{cores} threads, before (torch's default)": {"threads": cores, "env": before},
        "1 thread, after": {"threads": 1, "env": {}},
        f"{cores} threads, after (tbptt's default)": {"threads": None, "env": {}},
        f"{cores} threads, passive wait": {"threads": cores, "env": {"OMP_WAIT_POLICY": "PASSIVE"}},
    }


def start_load(kind: str, cores: int) -> list[subprocess.Popen]:
    if kind == "idle":
        return []
    if kind == "gemm":
        code, n = GEMM_LOAD, 1
    elif kind == "spin":
        code, n = SPIN_LOAD, cores
    else:
        raise SystemExit(f"unknown load {kind!r}; expected idle, gemm or spin")
    procs = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(n)]
    time.sleep(2.0)  # let it reach its steady state
    return procs


def stop_load(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def run_worker(setting: dict, args) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        "--seconds",
        str(args.seconds),
    ]
    if args.data:
        cmd += ["--data", args.data]
    if setting["threads"] is not None:
        cmd += ["--threads", str(setting["threads"])]
    # a wait policy in this process's environment would be kept by the worker's tbptt
    unset = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(setting["env"])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"worker failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def worker(args) -> None:
    """Time the default model's regular:35 windows for ``--seconds`` after warm-up."""
    t0 = time.perf_counter()
    import tbptt  # noqa: F401, I001  (first, as `tbptt train` does: sets the wait policy)
    import torch

    from tbptt.threads import wait_policy

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    sys.path.insert(0, str(HERE))
    from bench import TbpttLoop, make_setup

    args.batch, args.k, args.device = 32, 35, "cpu"
    setup = make_setup(args, "char", "lstm", 256, 2)  # tbptt train's default model and batch
    loop = TbpttLoop(setup, "regular:35")
    for _ in range(2):
        loop.window()
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < args.seconds:
        done += loop.window()
    print(
        json.dumps(
            {
                "tokens_per_s": done / elapsed,
                "threads": torch.get_num_threads(),
                "wait_policy": wait_policy(),
                "startup_s": start - t0,
            }
        )
    )


def measure(args) -> dict:
    cores = os.cpu_count() or 1
    table = settings(cores)
    rows = []
    for load in args.loads.split(","):
        procs = start_load(load, cores)
        try:
            for r in range(args.rounds):
                for name, setting in table.items():
                    result = run_worker(setting, args)
                    rows.append({"load": load, "setting": name, "round": r, **result})
                    print(
                        f"{load:5s} round {r} {name:24s} {result['tokens_per_s']:9,.0f} tokens/s "
                        f"({result['threads']} threads)",
                        flush=True,
                    )
        finally:
            stop_load(procs)
    return {
        "machine": {
            "cores": cores,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_at_end": os.getloadavg(),
        },
        "seconds_per_timing": args.seconds,
        "rows": rows,
    }


def summary(result: dict) -> list[dict]:
    """Per load and setting: median tokens/s over rounds and its ratio to the best setting."""
    out = []
    loads = list(dict.fromkeys(r["load"] for r in result["rows"]))
    for load in loads:
        rows = [r for r in result["rows"] if r["load"] == load]
        names = list(dict.fromkeys(r["setting"] for r in rows))
        med = {
            n: statistics.median(r["tokens_per_s"] for r in rows if r["setting"] == n)
            for n in names
        }
        threads = {n: sorted({r["threads"] for r in rows if r["setting"] == n}) for n in names}
        best = max(med.values())
        for n in names:
            out.append(
                {"load": load, "setting": n, "tokens_per_s": med[n], "of_best": med[n] / best,
                 "threads": threads[n]}
            )  # fmt: skip
    return out


def markdown(result: dict) -> str:
    lines = [
        "| load | setting | threads used | tokens/s (median) | x best |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for s in summary(result):
        threads = "/".join(str(t) for t in s["threads"])
        lines.append(
            f"| {s['load']} | {s['setting']} | {threads} | {s['tokens_per_s']:,.0f} | {s['of_best']:.2f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--loads", default="idle,gemm", help="comma-separated: idle, gemm, spin")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8.0, help="timed seconds per worker")
    p.add_argument("--data", default=None, help="a text file (default: The Time Machine)")
    p.add_argument("--out", default=None, help="write the results JSON here")
    p.add_argument("--report", default=None, help="print the table of a results JSON and exit")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.report:
        print(markdown(json.loads(Path(args.report).read_text())))
        return
    result = measure(args)
    print(markdown(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
