"""Peak memory of ``tbptt prepare`` and of ``tbptt train`` on the prepared corpus, for a
synthetic text of any size (the point: larger than the memory a run may use).

The synthetic text of ``--megabytes`` MB (the generator of ``corpus_memory.py``: words of
letters with punctuation and line breaks) is written into ``--dir``; then, each in a fresh
subprocess (so each peak is its own):

1. ``tbptt prepare TEXT --out DIR --valid-fraction F`` (character level, ``letters``);
2. ``tbptt train --data DIR --max-steps S`` with the default model and strategy, 1 thread.

For each it reports the wall seconds, the peak resident set (``ru_maxrss`` of the child:
Python, torch and the memory-mapped pages it touched), and for prepare the throughput
in input MB/s; for train also the trainer's own ``peak_rss_mb`` of its epoch record. The
text and the prepared directory are deleted at the end (unless ``--keep``).

Usage::

    python benchmarks/prepare_memory.py                       # 2 GB in /tmp
    python benchmarks/prepare_memory.py --megabytes 20 --steps 5

It prints a table and writes JSON (default benchmarks/results/prepare_memory.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from corpus_memory import synthetic_text  # noqa: E402

CHILD = r"""
import json, resource, sys
from tbptt.cli import main
rc = main(sys.argv[1:])
status = {}
with open("/proc/self/status") as f:
    for line in f:
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            status[key] = int(value.split()[0]) / 1024  # MiB
print("RESULT " + json.dumps({"rc": rc, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, **status}))
sys.exit(rc)
"""


def run(argv: list[str]) -> dict:
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", CHILD, *argv],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    seconds = time.perf_counter() - start
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(argv)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return {"seconds": seconds, "stdout": out.stdout, **json.loads(lines[-1][len("RESULT ") :])}


def load() -> str:
    return " ".join(os.getloadavg().__str__().strip("()").split(", "))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=2048.0)
    parser.add_argument("--dir", type=Path, default=Path("/tmp"))
    parser.add_argument("--steps", type=int, default=40, help="training steps (--max-steps)")
    parser.add_argument("--valid-fraction", type=float, default=0.0001)
    parser.add_argument("--keep", action="store_true", help="keep the text and the prepared dir")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/prepare_memory.json"))
    args = parser.parse_args(argv)

    text = args.dir / "tbptt-prepare-bench.txt"
    prepared = args.dir / "tbptt-prepare-bench"
    run_dir = args.dir / "tbptt-prepare-bench-run"
    for stale in (prepared, run_dir):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        synthetic_text(text, args.megabytes)
        size = text.stat().st_size
        load_before = load()
        prep = run(
            [
                "prepare", str(text), "--out", str(prepared), "--tokens", "char",
                "--normalize", "letters", "--valid-fraction", str(args.valid_fraction),
                "--no-progress",
            ]
        )  # fmt: skip
        load_prepare = load()
        meta = json.loads((prepared / "meta.json").read_text())
        train = run(
            [
                "train", "--data", str(prepared), "--out", str(run_dir), "--max-steps",
                str(args.steps), "--threads", "1", "--no-progress", "--sample-length", "0",
            ]
        )  # fmt: skip
        load_train = load()
        epoch = [
            json.loads(line)
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if '"event": "epoch"' in line
        ][-1]
    finally:
        if not args.keep:
            text.unlink(missing_ok=True)
            shutil.rmtree(prepared, ignore_errors=True)
            shutil.rmtree(run_dir, ignore_errors=True)
    result = {
        "text_mb": size / 1e6,
        "tokens": meta["tokens"],
        "dtype": meta["dtype"],
        "valid_tokens": meta["valid_tokens"],
        "prepare_seconds": prep["seconds"],
        "prepare_mb_per_s": size / 1e6 / prep["seconds"],
        "prepare_peak_rss_mb": prep["maxrss_mb"],
        "train_steps": epoch["step"],
        "train_seconds": train["seconds"],
        "train_peak_rss_mb": train["maxrss_mb"],
        "train_record_peak_rss_mb": epoch["peak_rss_mb"],
        "train_end_rss_anon_mb": train.get("RssAnon"),
        "train_end_rss_file_mb": train.get("RssFile"),
        "load_before": load_before,
        "load_after_prepare": load_prepare,
        "load_after_train": load_train,
        "cpus": os.cpu_count(),
    }
    print("| text MB | tokens | prepare s | MB/s | prepare peak RSS MB | train steps | train s "
          "| train peak RSS MB | load (1, 5, 15 min) |")  # fmt: skip
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    print(
        f"| {result['text_mb']:,.0f} | {result['tokens']:,} | {result['prepare_seconds']:.1f} | "
        f"{result['prepare_mb_per_s']:.1f} | {result['prepare_peak_rss_mb']:,.0f} | "
        f"{result['train_steps']} | {result['train_seconds']:.1f} | "
        f"{result['train_peak_rss_mb']:,.0f} | {load_prepare} |"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(args.json.read_text()) if args.json.exists() else []
    args.json.write_text(json.dumps([*runs, result], indent=2) + "\n")


if __name__ == "__main__":
    main()
