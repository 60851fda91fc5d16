"""Peak memory and time to the first training step on a large synthetic text.

A deterministic synthetic text of ``--megabytes`` MB (words of letters drawn
from a seeded generator, with punctuation and line breaks) is written to a
temporary file; then, in a fresh subprocess (so the peak is the run's own):

- ``load_dataset`` reads, normalizes (``letters``), tokenizes (characters) and
  indexes it, as ``tbptt train --data FILE`` does;
- the default model (``model_config_for(data)``) and a :class:`~tbptt.train.Trainer`
  with the default configuration are built, and one window is trained (the
  measurement ends at that step's record: the evaluation that ends a stopped
  epoch is not counted).

It reports the seconds to the end of loading and to the end of the first
step, the peak resident set (``VmHWM``, the whole process: Python and torch
included) and the resident set after importing torch and tbptt, and bytes of
peak above that baseline per input byte.

Usage::

    python benchmarks/corpus_memory.py                       # 200 MB
    python benchmarks/corpus_memory.py --megabytes 20 --json out.json
    PYTHONPATH=/path/to/other/src python benchmarks/corpus_memory.py   # another version

It prints a table and writes JSON (default benchmarks/results/corpus_memory.json).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, os, sys, time
t0 = time.perf_counter()
import torch
torch.set_num_threads(1)
from tbptt.data.config import DataConfig, load_dataset
from tbptt.models.lm import RecurrentNet
from tbptt.train.build import model_config_for
from tbptt.train.trainer import Trainer, TrainConfig

def status(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024  # MB
base = status("VmRSS")
t1 = time.perf_counter()
data = load_dataset(DataConfig(path=sys.argv[1], normalize="letters"))
t2 = time.perf_counter()
loaded = status("VmHWM")
model = RecurrentNet(model_config_for(data))  # the default model, sized for the data
trainer = Trainer(model, data.train_split(), data.valid_split(), TrainConfig(epochs=1))

def on_step(record):  # the end of the first trained window: report and leave (the
    # evaluation that ends a stopped epoch is not part of getting to the first step)
    print(json.dumps({
        "tokens": len(data.train) + len(data.valid),
        "vocab_size": len(data.vocab),
        "token_dtype": str(data.train.dtype),
        "baseline_rss_mb": base,
        "load_seconds": t2 - t1,
        "peak_after_load_mb": loaded,
        "first_step_seconds": time.perf_counter() - t1,
        "import_seconds": t1 - t0,
        "peak_rss_mb": status("VmHWM"),
    }), flush=True)
    os._exit(0)

trainer.fit(on_step=on_step)
"""


def synthetic_text(path: Path, megabytes: float, seed: int = 0) -> None:
    """Words of 1-9 letters, some capitalized, with punctuation; about ``megabytes`` MB."""
    rng = random.Random(seed)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [12, 9, 8, 7.5, 7, 6.7, 6.3, 6, 6, 4.3, 4, 2.8, 2.8, 2.4, 2.4, 2.2, 2, 2, 1.9]
    weights += [1.5, 1, 0.8, 0.2, 0.2, 0.1, 0.1]
    vocabulary = ["".join(rng.choices(letters, weights, k=rng.randint(1, 9))) for _ in range(5000)]
    vocabulary += [w.capitalize() + "," for w in vocabulary[:500]]
    block = " ".join(rng.choices(vocabulary, k=200_000)) + ".\n"
    target = int(megabytes * 1e6)
    with open(path, "w", encoding="utf-8") as f:
        written = 0
        while written < target:
            piece = block[: target - written]
            f.write(piece)
            written += len(piece)


def measure(path: Path) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=200.0)
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/corpus_memory.json"))
    parser.add_argument("--label", default="", help="a name for this version in the JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "synthetic.txt"
        synthetic_text(path, args.megabytes)
        size = path.stat().st_size
        result = {"label": args.label, "megabytes": size / 1e6, **measure(path)}
    extra = result["peak_rss_mb"] - result["baseline_rss_mb"]
    result["peak_bytes_per_input_byte"] = extra * 2**20 / size
    print("| text MB | tokens | dtype | load s | first step s | peak RSS MB | B per byte |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    print(
        f"| {size / 1e6:.0f} | {result['tokens']:,} | {result['token_dtype']} | "
        f"{result['load_seconds']:.1f} | {result['first_step_seconds']:.1f} | "
        f"{result['peak_rss_mb']:,.0f} | {result['peak_bytes_per_input_byte']:.1f} |"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(args.json.read_text()) if args.json.exists() else []
    args.json.write_text(json.dumps([*runs, result], indent=2) + "\n")


if __name__ == "__main__":
    main()
