"""Time to quality on The Time Machine: validation perplexity against training seconds.

Each configuration is a ``tbptt train`` command run in its own process, one after
another (each has the machine to itself), for one or more seeds; the baseline is the
classic PyTorch word-language-model example's loop with its defaults (2-layer LSTM
200, embedding 200, dropout 0.2, SGD lr 20 divided by 4 whenever validation does not
improve, clip 0.25, batch 20, 35-step windows), written out below, on the same
character stream and scored by tbptt's own scorer (the validation split in 16 columns,
state carried, every token counted), so every curve is comparable. Training seconds
exclude evaluation, as ``tbptt train``'s epoch records do.

Writes the curves (JSON), a table (per configuration: perplexity at 30 s, 60 s, 180 s,
the best, and the seconds to 3.85 / 3.70 / 3.55, mean over seeds) and a plot. Before each
run the machine's matrix-product rate (GFLOP/s, torch's default threads) is measured and
kept with the run: a shared or throttled machine shows there, and "seconds" mean little
without it.

Usage::

    python benchmarks/recipes.py                                  # default vs baseline
    python benchmarks/recipes.py --configs default timemachine-best --seeds 0 1 2
    python benchmarks/recipes.py --config "lr01=--lr 0.01" --seeds 0
    python benchmarks/recipes.py --report benchmarks/results/recipes.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Before torch (imported where used): OpenMP waits here as in the tbptt train processes.
import tbptt  # noqa: F401

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED_TEXT = ROOT.parent / "shared" / "data" / "timemachine.txt"

#: name -> `tbptt train` flags (beside --data, --seed, --out).
RECIPES: dict[str, list[str]] = {
    "default": [],
    # the best 3-minute configuration of the search in docs/recipes.md
    "timemachine-best": (
        "--hidden-size 384 --dropout 0.25 --epochs 12 --optimizer adamw --weight-decay 0.1"
    ).split(),
}
MARKS = (30.0, 60.0, 180.0)
TARGETS = (3.85, 3.70, 3.55)


def curve_of(metrics: Path) -> list[list[float]]:
    """[[cumulative training seconds, validation perplexity], ...] per epoch of a run."""
    points, seconds = [], 0.0
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        if record.get("event") == "epoch" and "val_ppl" in record:
            seconds += record["seconds"]
            points.append([seconds, record["val_ppl"]])
    return points


def machine_gflops(args) -> float:
    """The matrix-product rate now (bench.gemm_rate, 1024 x 1024, at the runs' threads)."""
    import torch

    if str(HERE) not in sys.path:
        sys.path.insert(0, str(HERE))
    from bench import gemm_rate

    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return gemm_rate("cpu", 1024, repeats=9)
    finally:
        torch.set_num_threads(threads)


def run_tbptt(name: str, flags: list[str], seed: int, args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "tbptt", "train", "--data", args.data, "--out", tmp,
            "--seed", str(seed), "--no-progress", *flags,
        ]  # fmt: skip
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"{name} failed: {done.stderr.strip().splitlines()[-1:]}")
        curve = curve_of(Path(tmp) / "metrics.jsonl")
    return {"config": name, "flags": flags, "seed": seed, "curve": curve,
            "wall_s": time.perf_counter() - started}  # fmt: skip


# -- the baseline: the classic example's loop ---------------------------------------------


def run_example(seed: int, args) -> dict:
    """The PyTorch word-language-model example's training loop and defaults on the
    character stream, for ``args.example_seconds`` training seconds (in this process,
    with tbptt imported first, so OpenMP waits as it does in the tbptt train runs)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    from tbptt.data import load_corpus, prepare_text
    from tbptt.train.evaluate import score

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(seed)
    text, _ = load_corpus(args.data)
    data = prepare_text(text, level="char")
    vocab = len(data.vocab)

    class ExampleLM(nn.Module):
        def __init__(self, size=200, layers=2, dropout=0.2):
            super().__init__()
            self.drop = nn.Dropout(dropout)
            self.encoder = nn.Embedding(vocab, size)
            self.rnn = nn.LSTM(size, size, layers, dropout=dropout)
            self.decoder = nn.Linear(size, vocab)
            nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
            nn.init.zeros_(self.decoder.bias)
            nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
            self.layers, self.size = layers, size

        def forward(self, x, state):  # x (T, B) ids -> logits (T, B, V)
            out, state = self.rnn(self.drop(self.encoder(x.long())), state)  # ids stored compact
            return self.decoder(self.drop(out)), state

        def initial_state(self, batch):
            z = torch.zeros(self.layers, batch, self.size)
            return (z, z.clone())

    model = ExampleLM()
    train = data.train.long()
    batch, bptt, clip = 20, 35, 0.25
    rows = len(train) // batch
    columns = train[: rows * batch].view(batch, rows).t().contiguous()  # (N/B, B)
    context = train[-1]
    lr, best, seconds, curve = 20.0, math.inf, 0.0, []
    while seconds < args.example_seconds:
        model.train()
        state = model.initial_state(batch)
        start = time.perf_counter()
        for i in range(0, rows - 1, bptt):
            n = min(bptt, rows - 1 - i)
            x, y = columns[i : i + n], columns[i + 1 : i + 1 + n]
            state = tuple(s.detach() for s in state)
            model.zero_grad()
            logits, state = model(x, state)
            loss = F.cross_entropy(logits.view(-1, vocab), y.reshape(-1))
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(p.grad, alpha=-lr)
        seconds += time.perf_counter() - start
        model.eval()
        val = score(model, data.valid_split(), batch_size=16, window=256, context=context)
        curve.append([seconds, val["ppl"]])
        if val["loss"] < best:
            best = val["loss"]
        else:
            lr /= 4.0
    return {"config": "PyTorch example (fused loop)", "flags": [], "seed": seed, "curve": curve}


# -- report -----------------------------------------------------------------------------


def at(curve: list[list[float]], seconds: float) -> float | None:
    """The perplexity of the last evaluation at or before ``seconds`` of training."""
    done = [ppl for s, ppl in curve if s <= seconds]
    return done[-1] if done else None


def reached(curve: list[list[float]], target: float) -> float | None:
    """Training seconds at the first evaluation at or below ``target`` (None: never)."""
    return next((s for s, ppl in curve if ppl <= target), None)


def _mean(values: list[float | None]) -> float | None:
    return statistics.mean(values) if values and all(v is not None for v in values) else None


def table(runs: list[dict]) -> str:
    head = ["config", "seeds", "GFLOP/s"]
    head += [f"ppl at {int(m)} s" for m in MARKS] + ["best ppl"]
    head += [f"s to {t}" for t in TARGETS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in dict.fromkeys(r["config"] for r in runs):
        group = [r for r in runs if r["config"] == name]
        cells = [name, str(len(group))]
        rates = [r["gemm_gflops"] for r in group if "gemm_gflops" in r]
        cells.append(f"{statistics.mean(rates):.0f}" if rates else "-")
        for m in MARKS:
            v = _mean([at(r["curve"], m) for r in group])
            cells.append("-" if v is None else f"{v:.3f}")
        cells.append(f"{statistics.mean(min(p for _, p in r['curve']) for r in group):.3f}")
        for t in TARGETS:
            v = _mean([reached(r["curve"], t) for r in group])
            cells.append("-" if v is None else f"{v:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    names = list(dict.fromkeys(r["config"] for r in runs))
    for i, name in enumerate(names):
        for j, r in enumerate(r for r in runs if r["config"] == name):
            xs, ys = zip(*r["curve"]) if r["curve"] else ((), ())
            ax.plot(xs, ys, marker=".", color=f"C{i}", alpha=0.8, label=name if j == 0 else None)
    for t in TARGETS:
        ax.axhline(t, color="grey", lw=0.5, ls=":")
    ax.set(xlabel="training seconds", ylabel="validation perplexity", ylim=(3.3, 5.0))
    ax.set_title("The Time Machine, characters: time to quality")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--configs", nargs="*", default=["default"], help=f"of {', '.join(RECIPES)}")
    p.add_argument(
        "--config", action="append", default=[], metavar="NAME=FLAGS",
        help="another configuration: its name and its tbptt train flags",
    )  # fmt: skip
    p.add_argument("--seeds", nargs="*", type=int, default=[0])
    p.add_argument("--no-example", action="store_true", help="skip the PyTorch example baseline")
    p.add_argument("--example-seconds", type=float, default=180.0)
    p.add_argument("--threads", type=int, default=None, help="(default: tbptt's default)")
    p.add_argument("--data", default=str(SHARED_TEXT) if SHARED_TEXT.is_file() else None)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "recipes.json"))
    p.add_argument("--report", default=None, help="print the table of a results JSON and exit")
    args = p.parse_args(argv)
    if args.report:
        print(table(json.loads(Path(args.report).read_text())["runs"]))
        return
    configs = {name: RECIPES[name] for name in args.configs}
    for item in args.config:
        name, _, flags = item.partition("=")
        configs[name] = shlex.split(flags)
    runs = []
    out = Path(args.out)
    for seed in args.seeds:
        for name, flags in configs.items():
            gflops = machine_gflops(args)
            runs.append({**run_tbptt(name, flags, seed, args), "gemm_gflops": gflops})
            print(name, seed, [(round(s), round(v, 3)) for s, v in runs[-1]["curve"]], flush=True)
        if not args.no_example:
            gflops = machine_gflops(args)
            runs.append({**run_example(seed, args), "gemm_gflops": gflops})
            print("example", seed, [(round(s), round(v, 3)) for s, v in runs[-1]["curve"]])
        out.write_text(json.dumps({"runs": runs, "load": os.getloadavg()}, indent=1) + "\n")
    print(table(runs))
    plot(runs, out.with_suffix(".png"))
    print(f"wrote {out} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
