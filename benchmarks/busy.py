"""tbptt on an idle and on a busy machine: tokens/s of the default model by thread setting.

A machine is rarely idle: other jobs, a browser, a second training run. This script
measures what that does to ``tbptt train``'s default model (LSTM 2 x 256, embedding
64, batch 32, ``regular:35``, The Time Machine; ``--strategy`` for another), each
setting timed in a fresh process (OpenMP reads its settings when the process starts),
interleaved in rounds (A B C D, A B C D, ...) so that drift in the machine's state hits
every setting alike (N = the CPUs this process may use):

- ``1 thread``;
- ``N threads, OpenMP's default spin``: workers spin 300,000 iterations before they
  sleep (torch's default, and tbptt's before :mod:`tbptt.threads`);
- ``N threads, bounded spin``: ``GOMP_SPINCOUNT=1000`` (tbptt's previous default);
- ``N threads, passive wait``: ``OMP_WAIT_POLICY=PASSIVE`` (workers sleep at once);
- ``tbptt's default``: nothing given; :mod:`tbptt.threads` chooses threads and wait
  when the worker starts and revises the thread count between windows, as the trainer
  does.

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


DEFAULT = "tbptt's default (chosen at run time)"


def settings(cores: int) -> dict[str, dict]:
    """Setting name -> the worker's thread count (None: tbptt's default) and environment.

    OpenMP's default spin count (300,000) is set explicitly, so that tbptt keeps it.
    """
    spin = {"GOMP_SPINCOUNT": "300000", "KMP_BLOCKTIME": "200"}
    bounded = {"GOMP_SPINCOUNT": "1000", "KMP_BLOCKTIME": "1"}
    return {
        "1 thread": {"threads": 1, "env": {}},
        f"{cores} threads, OpenMP's default spin (torch's default)": {"threads": cores, "env": spin},
        f"{cores} threads, bounded spin (tbptt's previous default)": {"threads": cores, "env": bounded},
        f"{cores} threads, passive wait": {"threads": cores, "env": {"OMP_WAIT_POLICY": "PASSIVE"}},
        DEFAULT: {"threads": None, "env": {}},
    }  # fmt: skip


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
    if args.strategy:
        cmd += ["--strategy", args.strategy]
    if setting["threads"] is not None:
        cmd += ["--threads", str(setting["threads"])]
    # a wait policy in this process's environment would be kept by the worker's tbptt
    unset = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "OMP_NUM_THREADS",
             "TBPTT_THREAD_POLICY")  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in unset}
    env.update(setting["env"])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"worker failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def worker(args) -> None:
    """Time the default model's windows for ``--seconds`` after warm-up."""
    t0 = time.perf_counter()
    import tbptt  # noqa: F401, I001  (first, as `tbptt train` does: sets the wait policy)
    import torch

    from tbptt.threads import policy, revise, use_threads, wait_policy

    if args.threads is not None:
        use_threads(args.threads)  # as --threads does
    sys.path.insert(0, str(HERE))
    from bench import TbpttLoop, make_setup

    args.batch, args.k, args.device = 32, 35, "cpu"
    setup = make_setup(args, "char", "lstm", 256, 2)  # tbptt train's default model and batch
    loop = TbpttLoop(setup, args.strategy or "regular:35")
    for _ in range(2):
        revise()
        loop.window()
    done, start, used = 0, time.perf_counter(), set()
    while (elapsed := time.perf_counter() - start) < args.seconds:
        revise()  # as the trainer does between windows (acts every few seconds)
        used.add(torch.get_num_threads())
        done += loop.window()
    print(
        json.dumps(
            {
                "tokens_per_s": done / elapsed,
                "threads": torch.get_num_threads(),
                "threads_used": sorted(used),
                "wait_policy": wait_policy(),
                "threads_reason": policy().threads_reason,
                "startup_s": start - t0,
            }
        )
    )


def measure(args) -> dict:
    sys.path.insert(0, str(ROOT / "src"))
    from tbptt.threads import processor, usable_cpus

    cores = usable_cpus()[0]
    table = settings(cores)
    if args.settings:
        names = list(table)
        table = {names[int(i)]: table[names[int(i)]] for i in args.settings.split(",")}
    rows = []
    for load in args.loads.split(","):
        procs = start_load(load, cores)
        try:
            for r in range(args.rounds):
                for name, setting in table.items():
                    before = os.getloadavg()
                    result = run_worker(setting, args)
                    rows.append({"load": load, "setting": name, "round": r, **result,
                                 "loadavg": [before[0], os.getloadavg()[0]]})  # fmt: skip
                    print(
                        f"{load:5s} round {r} {name:50s} {result['tokens_per_s']:9,.0f} tokens/s "
                        f"(threads {result.get('threads_used', result['threads'])}, load "
                        f"{before[0]:.1f})",
                        flush=True,
                    )
        finally:
            stop_load(procs)
    return {
        "machine": {
            "cpu": processor(),
            "cores": cores,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_at_end": os.getloadavg(),
        },
        "strategy": args.strategy or "regular:35",
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
        threads = {
            n: sorted({t for r in rows if r["setting"] == n for t in r.get("threads_used", [r["threads"]])})
            for n in names
        }  # fmt: skip
        loadavg = {
            n: [x for r in rows if r["setting"] == n for x in r.get("loadavg", [])] for n in names
        }
        best = max(med.values())
        for n in names:
            out.append(
                {"load": load, "setting": n, "tokens_per_s": med[n], "of_best": med[n] / best,
                 "threads": threads[n], "loadavg": loadavg[n]}
            )  # fmt: skip
    return out


def markdown(result: dict) -> str:
    lines = [
        "| load | setting | threads used | tokens/s (median) | x best | load average |",
        "| --- | --- | --- | ---: | ---: | --- |",
    ]
    for s in summary(result):
        threads = "/".join(str(t) for t in s["threads"])
        la = s.get("loadavg") or []
        shown = f"{min(la):.1f}-{max(la):.1f}" if la else ""
        lines.append(
            f"| {s['load']} | {s['setting']} | {threads} | {s['tokens_per_s']:,.0f} "
            f"| {s['of_best']:.2f} | {shown} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--loads", default="idle,gemm", help="comma-separated: idle, gemm, spin")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument(
        "--settings", default=None, help="comma-separated indices into the settings (default: all)"
    )
    p.add_argument("--seconds", type=float, default=8.0, help="timed seconds per worker")
    p.add_argument("--data", default=None, help="a text file (default: The Time Machine)")
    p.add_argument("--strategy", default=None, help="the strategy timed (default: regular:35)")
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
