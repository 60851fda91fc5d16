"""Training speed of the adaptive softmax against the full softmax at a large vocabulary.

A synthetic word corpus: ``--tokens`` words drawn from a Zipf distribution (exponent 1)
over ``--types`` word types (``w0``, ``w1``, ...), one line of 5-25 words at a time; the
training text is its first 90 %, the validation text the rest. Both models are the
default ``tbptt train`` model (2-layer LSTM, 256 units, embedding 64), one with
``adaptive_softmax="auto"`` (cut-offs from the token frequencies), built by the same
code as the CLI, trained by the same :class:`~tbptt.train.Trainer` (regular:35, batch
32). They are timed in one process, window for window, interleaved (A B B A ...), at
one thread; a window's time covers forward, backward, clip and optimizer step.

Usage::

    python benchmarks/adaptive_softmax.py                   # 33k types, 3 rounds
    python benchmarks/adaptive_softmax.py --rounds 5 --json out.json

It prints a table and writes JSON (default benchmarks/results/adaptive_softmax.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path

import torch

from tbptt.data.dataset import prepare_corpus
from tbptt.train import RunConfig, Trainer
from tbptt.train.build import build_model, build_objective, model_config_for


def zipf_text(n_tokens: int, n_types: int, seed: int) -> str:
    g = torch.Generator().manual_seed(seed)
    p = 1.0 / torch.arange(1, n_types + 1, dtype=torch.float64)
    ids = torch.multinomial(p / p.sum(), n_tokens, replacement=True, generator=g).tolist()
    lengths = torch.randint(5, 26, (n_tokens // 5,), generator=g).tolist()
    lines, at = [], 0
    for n in lengths:
        if at >= n_tokens:
            break
        lines.append(" ".join(f"w{i}" for i in ids[at : at + n]))
        at += n
    return "\n".join(lines) + "\n"


def windows(trainer: Trainer, n: int) -> float:
    """Seconds for ``n`` training windows (as Trainer.train_epoch runs them)."""
    elapsed = 0.0
    for _ in range(n):
        if trainer.stream.remaining() < trainer.reference_length:
            trainer.stream.restart()
            trainer.state = None
        window = trainer.strategy.plan(trainer.stream.remaining(), trainer.generator)
        start = time.perf_counter()
        batch = trainer.stream.next(window.length)
        trainer.train_step(batch.inputs, batch.targets, window, batch.reset)
        elapsed += time.perf_counter() - start
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=400_000)
    ap.add_argument("--types", type=int, default=60_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--windows", type=int, default=2, help="windows per model per round")
    ap.add_argument("--json", default="benchmarks/results/adaptive_softmax.json")
    args = ap.parse_args()
    torch.set_num_threads(1)

    text = zipf_text(args.tokens, args.types, seed=0)
    cut = text.index("\n", int(len(text) * 0.9)) + 1
    data = prepare_corpus(text[:cut], text[cut:], level="word")
    config = RunConfig().replace(data={"tokens": "word"})
    trainers, sizes = {}, {}
    for name, head in (("full", ""), ("adaptive", "auto")):
        model_config = model_config_for(
            data, dataclasses.replace(config.model, adaptive_softmax=head)
        )
        run = dataclasses.replace(config, model=model_config)
        torch.manual_seed(0)
        model = build_model(run, data)
        trainers[name] = Trainer(
            model, data.train_split(), data.valid[:2000], run.train,
            objective=build_objective(run, data),
        )  # fmt: skip
        sizes[name] = {
            "parameters": sum(p.numel() for p in model.parameters()),
            "adaptive_softmax": model_config.adaptive_softmax,
        }
    load_before = os.getloadavg()
    times = {name: [] for name in trainers}
    windows(trainers["full"], 1)  # warm-up, not timed
    windows(trainers["adaptive"], 1)
    for r in range(args.rounds):
        order = ("full", "adaptive") if r % 2 == 0 else ("adaptive", "full")
        for name in order:
            times[name].append(windows(trainers[name], args.windows))
    load_after = os.getloadavg()
    tokens = args.windows * trainers["full"].reference_length * trainers["full"].stream.batch_size
    per_round = [f / a for f, a in zip(times["full"], times["adaptive"], strict=True)]
    result = {
        "vocab_size": len(data.vocab),
        "train_tokens": len(data.train),
        "tokens_per_window": tokens // args.windows,
        "tokens_per_s": {n: [tokens / t for t in ts] for n, ts in times.items()},
        "speedup_per_round": per_round,
        "speedup_median": statistics.median(per_round),
        "models": sizes,
        "threads": 1,
        "load_average_before": load_before,
        "load_average_after": load_after,
    }
    print(f"vocabulary {len(data.vocab)}, {len(data.train):,} training tokens, "
          f"cut-offs {sizes['adaptive']['adaptive_softmax']}")  # fmt: skip
    print(f"{'round':>5} {'full tok/s':>11} {'adaptive tok/s':>15} {'speed-up':>9}")
    for r, ratio in enumerate(per_round):
        full, adaptive = (result["tokens_per_s"][n][r] for n in ("full", "adaptive"))
        print(f"{r:>5} {full:>11.0f} {adaptive:>15.0f} {ratio:>8.2f}x")
    print(f"median speed-up {result['speedup_median']:.2f}x; load average {load_before[0]:.1f} "
          f"-> {load_after[0]:.1f}")  # fmt: skip
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
