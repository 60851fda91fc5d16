"""What ``tbptt train`` users see: tokens/s of each strategy through the command's own path.

``benchmarks/bench.py`` compares tbptt with hand-written loops on a model of its own
(no dropout, SGD). This script times what a user runs: each case is built by
``tbptt train``'s own code (its parser, its defaults -- 2-layer LSTM 256, embedding 64,
dropout 0.1, Adam, cosine schedule, batch 32 -- the data loader, the model builder and a
:class:`tbptt.run.Run` opened in a temporary directory), and its windows are driven
exactly as ``Trainer.train_epoch`` drives them (plan, next, ``train_step``, tally,
metrics line). Evaluation, checkpoints and the progress bar are left out: they are
not the training rate (the epoch line's tokens/s leaves them out too).

A worker process builds every case and times them interleaved (A B C A B C ...,
each timed chunk a budget of ``--windows`` windows' tokens), so load that drifts hits
every case alike; "x regular" is the median of per-repeat ratios to the first case.
The thread setting is per process (OpenMP reads its settings when torch loads), so
the driver runs one worker per setting, interleaved in rounds:

- ``default``: nothing given, as ``tbptt train`` runs: :mod:`tbptt.threads` chooses the
  thread count and wait when the worker starts and revises the count between windows;
- ``1``: ``--threads 1``;
- ``N``: ``--threads N`` (N = the CPUs this process may use), tbptt's wait for it;
- ``N-spin``, ``N-bounded``, ``N-passive``: ``--threads N`` with OpenMP's default spin
  (``GOMP_SPINCOUNT=300000``, torch's default), the bounded spin (``GOMP_SPINCOUNT=1000``,
  tbptt's previous default), a passive wait (``OMP_WAIT_POLICY=PASSIVE``).

"x 1 thread" is the median over rounds of a setting's rate over the ``--threads 1``
worker's rate in the same round; "(CPU time)" the same of tokens per CPU second, for the
settings that ran on one thread (on a shared machine the steadier comparison: it leaves
out the time the process waited for a core). Every row records the load average at its start and
end (``os.getloadavg``): on a shared machine read the ratios, not single figures.

Usage::

    python benchmarks/train_path.py                         # 4 settings x 3 rounds (~6 min)
    python benchmarks/train_path.py --settings default,1 --rounds 5 --out benchmarks/results/train_path.json
    python benchmarks/train_path.py --cases 'regular:35,randomized:35,mingru=--model mingru'
    python benchmarks/train_path.py --report benchmarks/results/train_path.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED_TEXT = ROOT.parent / "shared" / "data" / "timemachine.txt"
DEFAULT_CASES = "regular:35,randomized:35,k1k2:10,35,variable:35"
POLICY_KEYS = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME",
               "TBPTT_THREAD_POLICY")  # fmt: skip


def parse_cases(text: str) -> list[tuple[str, list[str]]]:
    """``"regular:35,k1k2:10,35,mingru=--model mingru"`` -> [(name, extra flags), ...].

    An entry is a strategy spec (``--strategy`` of that spec), or ``NAME=FLAGS``. A piece
    made of digits continues the spec before it (``k1k2:10,35``).
    """
    entries: list[str] = []
    for piece in text.split(","):
        if entries and piece.strip().isdigit():
            entries[-1] += "," + piece.strip()
        elif piece.strip():
            entries.append(piece.strip())
    cases = []
    for entry in entries:
        if "=" in entry:
            name, flags = entry.split("=", 1)
            cases.append((name.strip(), shlex.split(flags)))
        else:
            cases.append((entry, ["--strategy", entry]))
    return cases


def settings(cpus: int) -> dict[str, dict]:
    """Setting name -> extra ``tbptt train`` flags and environment of its worker."""
    return {
        "default": {"flags": [], "env": {}},
        "1": {"flags": ["--threads", "1"], "env": {}},
        str(cpus): {"flags": ["--threads", str(cpus)], "env": {}},
        f"{cpus}-spin": {
            "flags": ["--threads", str(cpus)],
            "env": {"GOMP_SPINCOUNT": "300000", "KMP_BLOCKTIME": "200"},
        },
        f"{cpus}-passive": {
            "flags": ["--threads", str(cpus)],
            "env": {"OMP_WAIT_POLICY": "PASSIVE"},
        },
        f"{cpus}-bounded": {
            "flags": ["--threads", str(cpus)],
            "env": {"GOMP_SPINCOUNT": "1000", "KMP_BLOCKTIME": "1"},
        },
    }


# -- the worker: one process, every case interleaved ------------------------------------


class Case:
    """One ``tbptt train`` command line, built by the command's own code, driven window by
    window as ``Trainer.train_epoch`` does."""

    def __init__(self, flags: list[str], directory: Path):
        from tbptt.cli import build_parser
        from tbptt.cli.train import _prepare
        from tbptt.threads import use_threads
        from tbptt.train.checkpoint import RunLock

        argv = ["train", *flags, "--no-progress", "--out", str(directory)]
        args = build_parser().parse_args(argv)
        self.run = _prepare(args, directory, RunLock(directory), None)
        if args.threads:
            use_threads(args.threads)  # --threads: the user's count, never revised
        self.run.open()
        self.trainer = self.run.trainer

    def window(self) -> int:
        from tbptt.threads import revise

        tr = self.trainer
        revise()  # as Trainer.train_epoch does between windows (acts every few seconds)
        stream = tr.stream
        if stream.remaining() <= 0:  # an epoch's end (evaluation left out)
            stream.restart()
            tr.state = tr.context = None
        window = tr.strategy.plan(stream.remaining(), tr.generator)
        start = time.perf_counter()
        batch = stream.next(window.length)
        record = tr.train_step(
            batch.inputs, batch.targets, window, batch.reset, resets=batch.resets, mask=batch.mask
        )
        tr._tally(record, time.perf_counter() - start)
        tr.metrics.write(record)
        return record["tokens"]

    def close(self) -> None:
        self.run.close()


def worker(args) -> dict:
    t0 = time.perf_counter()
    import tbptt  # noqa: F401, I001  (first, as `tbptt train` is: its thread policy applies)
    import torch

    from tbptt.threads import policy, wait_policy

    cases = parse_cases(args.cases)
    common = ["--data", args.data] + shlex.split(args.flags)
    built = {}
    with tempfile.TemporaryDirectory(prefix="tbptt-train-path-") as tmp:
        for i, (name, flags) in enumerate(cases):
            built[name] = Case(common + flags + shlex.split(args.setting_flags), Path(tmp) / str(i))
        setup_s = time.perf_counter() - t0
        budget = args.windows * 35 * 32
        for case in built.values():
            for _ in range(args.warmup):
                case.window()
        rates: dict[str, list[float]] = {name: [] for name in built}
        cpu_rates: dict[str, list[float]] = {name: [] for name in built}
        used: set[int] = set()
        load_start = os.getloadavg()
        for _ in range(args.repeats):
            for name, case in built.items():
                start, cpu, tokens = time.perf_counter(), time.process_time(), 0
                while tokens < budget:
                    tokens += case.window()
                    used.add(torch.get_num_threads())
                rates[name].append(tokens / (time.perf_counter() - start))
                cpu_rates[name].append(tokens / max(time.process_time() - cpu, 1e-9))
        load_end = os.getloadavg()
        for case in built.values():
            case.close()
    return {
        "rates": rates,
        "cpu_rates": cpu_rates,
        "threads": torch.get_num_threads(),
        "threads_used": sorted(used),
        "wait_policy": wait_policy(),
        "threads_reason": policy().threads_reason,
        "setup_s": setup_s,
        "loadavg_start": load_start,
        "loadavg_end": load_end,
    }


# -- the driver ---------------------------------------------------------------------------


def run_worker(setting: dict, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--cases", args.cases,
           "--data", args.data, "--flags", args.flags, "--windows", str(args.windows),
           "--repeats", str(args.repeats), "--warmup", str(args.warmup),
           "--setting-flags", shlex.join(setting["flags"])]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in POLICY_KEYS}  # the setting decides
    env.update(setting["env"])
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"worker failed: {out.stderr.strip().splitlines()[-3:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def cpus_available() -> int:
    from tbptt.threads import usable_cpus

    return usable_cpus()[0]


def measure(args) -> dict:
    cpus = cpus_available()
    table = settings(cpus)
    chosen = [s for s in args.settings.split(",") if s]
    for s in chosen:
        if s not in table:
            raise SystemExit(f"unknown setting {s!r}; expected one of {', '.join(table)}")
    rows = []
    for r in range(args.rounds):
        for name in chosen:
            result = run_worker(table[name], args)
            rows.append({"setting": name, "round": r, **result})
            meds = {c: statistics.median(v) for c, v in result["rates"].items()}
            shown = "  ".join(f"{c} {v:,.0f}" for c, v in meds.items())
            print(
                f"round {r} {name:10s} ({result['threads']} threads) {shown}  "
                f"load {result['loadavg_start'][0]:.1f}-{result['loadavg_end'][0]:.1f}",
                flush=True,
            )
    return {
        "machine": machine(),
        "args": {k: v for k, v in vars(args).items() if k not in ("worker", "report")},
        "rows": rows,
    }


def machine() -> dict:
    from tbptt.threads import processor

    return {
        "cpu": processor(),
        "cores": os.cpu_count(),
        "cpus_usable": cpus_available(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def summary(result: dict) -> list[dict]:
    """Per setting and case: median tokens/s, x the first case (paired within each worker),
    x the 1-thread worker of the same round (paired by round)."""
    rows = result["rows"]
    names = list(dict.fromkeys(r["setting"] for r in rows))
    cases = list(rows[0]["rates"])
    first = cases[0]
    one = {r["round"]: r for r in rows if r["setting"] == "1"}
    out = []
    for name in names:
        mine = [r for r in rows if r["setting"] == name]
        for case in cases:
            med = [statistics.median(r["rates"][case]) for r in mine]
            vs_first = [a / b for r in mine for a, b in zip(r["rates"][case], r["rates"][first])]
            vs_one = [
                statistics.median(r["rates"][case])
                / statistics.median(one[r["round"]]["rates"][case])
                for r in mine
                if r["round"] in one
            ]
            vs_one_cpu = [  # CPU time: steadier on a shared machine, for one thread
                statistics.median(r["cpu_rates"][case])
                / statistics.median(one[r["round"]]["cpu_rates"][case])
                for r in mine
                if r["round"] in one and "cpu_rates" in r and r.get("threads_used") == [1]
            ]
            loads = [x for r in mine for x in (r["loadavg_start"][0], r["loadavg_end"][0])]
            out.append(
                {
                    "setting": name,
                    "case": case,
                    "threads": sorted({r["threads"] for r in mine}),
                    "tokens_per_s": statistics.median(med),
                    "vs_first": statistics.median(vs_first),
                    "vs_one_thread": statistics.median(vs_one) if vs_one else None,
                    "vs_one_thread_cpu": statistics.median(vs_one_cpu) if vs_one_cpu else None,
                    "load": (min(loads), max(loads)),
                }
            )
    return out


def markdown(result: dict) -> str:
    first = list(result["rows"][0]["rates"])[0]
    lines = [
        f"| setting | threads | case | tokens/s (median) | x {first} | x 1 thread "
        "| x 1 thread (CPU time) | load avg |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in summary(result):
        threads = "/".join(str(t) for t in s["threads"])
        one = f"{s['vs_one_thread']:.2f}" if s["vs_one_thread"] is not None else ""
        cpu = s.get("vs_one_thread_cpu")
        cpu = f"{cpu:.2f}" if cpu is not None else ""
        lines.append(
            f"| {s['setting']} | {threads} | {s['case']} | {s['tokens_per_s']:,.0f} | "
            f"{s['vs_first']:.2f} | {one} | {cpu} | {s['load'][0]:.1f}-{s['load'][1]:.1f} |"
        )
    return "\n".join(lines)


def main(argv=None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--cases", default=DEFAULT_CASES, help=f"(default: {DEFAULT_CASES})")
    p.add_argument(
        "--settings",
        default=None,
        help="comma-separated: default, 1, N, N-spin, N-bounded, N-passive (default: all)",
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=5, help="timed chunks per case and worker")
    p.add_argument("--windows", type=int, default=3, help="tokens per chunk, in 35 x 32 windows")
    p.add_argument("--warmup", type=int, default=2, help="untimed windows per case")
    p.add_argument("--data", default=str(SHARED_TEXT), help="a text file (The Time Machine)")
    p.add_argument("--flags", default="", help="more `tbptt train` flags for every case")
    p.add_argument("--out", default=None, help="write the results JSON here")
    p.add_argument("--report", default=None, help="print the table of a results JSON and exit")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--setting-flags", default="", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return None
    if args.report:
        print(markdown(json.loads(Path(args.report).read_text())))
        return None
    if args.settings is None:
        args.settings = ",".join(settings(cpus_available()))
    result = measure(args)
    print(markdown(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
