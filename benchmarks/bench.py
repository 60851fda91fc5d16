"""tbptt against the hand-written PyTorch loop: tokens/s, peak memory, arithmetic rate.

One process times, interleaved (A B C A B C ...), on the same data, batch, window
length, model sizes and seed:

- ``fused loop``: the truncated-BPTT loop every PyTorch language-model example
  writes -- embedding, fused ``nn.LSTM`` / ``nn.GRU``, linear head, cross-entropy,
  ``detach()`` of the state between windows, clip, SGD step (written out below);
- ``cell loop``: the same with an ``nn.LSTMCell`` / ``nn.GRUCell`` step loop, the
  hand-written baseline of a per-step path;
- tbptt's :class:`~tbptt.train.Trainer` with ``regular:K`` (fused kernels),
  ``randomized:K`` and ``k1k2:K1,K`` (the per-step gated path);

and, in fresh subprocesses so that peak memory is the row's own, ``regular:K``
against ``full:T`` and checkpointed ``full:T,checkpoint`` on growing T.

tokens/s counts the rows of the token stream consumed times B (a k1k2 window
that re-runs history counts only its new rows), median over repeats after
warm-up; the ratios are medians of the per-repeat ratios of neighbouring runs. GFLOP/s counts the matrix products of training: forward 2 G H (I + H)
per token and layer (G = 4 for LSTM, 3 for GRU), backward twice that, the head
6 H V; "% GEMM" divides by the rate of one large float32 matrix product
measured by this script with the same threads.

Usage::

    python benchmarks/bench.py                      # the full table (about 10 min on 2 cores)
    python benchmarks/bench.py --quick              # a smoke run (under 2 min)
    python benchmarks/bench.py --device cuda --out benchmarks/results/cuda.json
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from tbptt.data import load_corpus, prepare_text
from tbptt.errors import SpecError, TbpttError
from tbptt.models import ModelConfig, RecurrentLM
from tbptt.train import TrainConfig, Trainer
from tbptt.tree import detach_state
from tbptt.truncation import parse_strategy

ROOT = Path(__file__).resolve().parents[1]
SHARED_TEXT = ROOT.parent / "shared" / "data" / "timemachine.txt"
GATES = {"lstm": 4, "gru": 3}

# -- the hand-written baselines ------------------------------------------------------------


class HandLM(nn.Module):
    """Embedding -> fused nn.LSTM / nn.GRU -> linear head, as the PyTorch examples write it."""

    def __init__(self, kind, vocab_size, embedding_size, hidden_size, num_layers):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        rnn = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = rnn(embedding_size, hidden_size, num_layers)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, x, state):
        out, state = self.rnn(self.embedding(x), state)  # (T, B, H)
        return self.head(out), state  # (T, B, V)


class CellLM(nn.Module):
    """The same model run step by step through nn.LSTMCell / nn.GRUCell."""

    def __init__(self, kind, vocab_size, embedding_size, hidden_size, num_layers):
        super().__init__()
        self.kind = kind
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        cell = nn.LSTMCell if kind == "lstm" else nn.GRUCell
        self.cells = nn.ModuleList(
            cell(embedding_size if layer == 0 else hidden_size, hidden_size)
            for layer in range(num_layers)
        )
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, x, state):
        emb = self.embedding(x)  # (T, B, E)
        state = list(state)
        outs = []
        for t in range(emb.shape[0]):
            inp = emb[t]
            for layer, cell in enumerate(self.cells):
                state[layer] = cell(inp, state[layer])
                inp = state[layer][0] if self.kind == "lstm" else state[layer]
            outs.append(inp)
        return self.head(torch.stack(outs)), state  # (T, B, V)


@dataclass
class Setup:
    """One benchmark configuration."""

    name: str
    kind: str
    hidden: int
    layers: int
    vocab: int
    tokens: torch.Tensor  # (N,) training stream
    batch: int
    k: int
    embedding: int = 64
    lr: float = 1.0
    clip: float = 1.0
    seed: int = 0
    device: str = "cpu"

    def flops_per_token(self) -> float:
        g, h = GATES[self.kind], self.hidden
        rec = sum(6 * g * h * ((self.embedding if i == 0 else h) + h) for i in range(self.layers))
        return rec + 6 * h * self.vocab


class HandLoop:
    """The truncated-BPTT loop of the PyTorch language-model examples."""

    def __init__(self, setup: Setup, cells: bool):
        s = setup
        torch.manual_seed(s.seed)
        cls = CellLM if cells else HandLM
        self.model = cls(s.kind, s.vocab, s.embedding, s.hidden, s.layers).to(s.device)
        rows = len(s.tokens) // s.batch
        self.data = s.tokens[: rows * s.batch].view(s.batch, rows).t().contiguous()  # (N/B, B)
        self.data = self.data.to(s.device)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=s.lr)
        self.setup, self.cells = s, cells
        self.position, self.state = 0, None

    def fresh_state(self):
        s = self.setup
        zeros = lambda: torch.zeros(s.batch, s.hidden, device=s.device)  # noqa: E731
        if self.cells:
            return [(zeros(), zeros()) if s.kind == "lstm" else zeros() for _ in range(s.layers)]
        z = torch.zeros(s.layers, s.batch, s.hidden, device=s.device)
        return (z, z.clone()) if s.kind == "lstm" else z

    def window(self) -> int:
        s, data = self.setup, self.data
        if self.position >= len(data) - 1:
            self.position, self.state = 0, None
        n = min(s.k, len(data) - 1 - self.position)
        x = data[self.position : self.position + n]  # (T, B)
        y = data[self.position + 1 : self.position + 1 + n]  # (T, B)
        state = self.fresh_state() if self.state is None else detach_state(self.state)
        logits, state = self.model(x, state)
        loss = F.cross_entropy(logits.view(-1, s.vocab), y.reshape(-1))
        self.opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.clip)
        self.opt.step()
        loss.item()  # the examples log the loss: the same synchronization as tbptt's record
        self.state = state
        self.position += n
        return n * s.batch


class TbpttLoop:
    """tbptt's Trainer driven window by window, as ``Trainer.train_epoch`` does."""

    def __init__(self, setup: Setup, spec: str):
        s = setup
        torch.manual_seed(s.seed)
        cfg = ModelConfig(
            vocab_size=s.vocab,
            kind=s.kind,
            hidden_size=s.hidden,
            num_layers=s.layers,
            embedding_size=s.embedding,
            dropout=0.0,
        )
        config = TrainConfig(
            strategy=spec,
            batch_size=s.batch,
            optimizer="sgd",
            lr=s.lr,
            clip=s.clip,
            seed=s.seed,
            device=s.device,
        )
        empty = torch.zeros(0, dtype=torch.long)
        self.trainer = Trainer(RecurrentLM(cfg), s.tokens, empty, config)

    def window(self) -> int:
        tr = self.trainer
        if tr.stream.remaining() <= 0:
            tr.stream.restart()
            tr.state = None
        plan = tr.strategy.plan(tr.stream.remaining(), tr.generator)
        batch = tr.stream.next(plan.length)
        tr.train_step(batch.inputs, batch.targets, plan, batch.reset)
        return batch.inputs.numel()


# -- measuring ---------------------------------------------------------------------------------


def _status_kb(field: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return None


def rss_mb() -> float:
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else float("nan")


def reset_peak_rss() -> bool:
    """Release freed memory to the system and restart the kernel's peak-RSS counter."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    kb = _status_kb("VmHWM")
    if kb is None:
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def gemm_rate(device: str, n: int, repeats: int = 5) -> float:
    """GFLOP/s of an (n, n) x (n, n) float32 matrix product, median of ``repeats``."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b)
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def time_interleaved(runners: dict, *, budget: int, repeats: int, warmup: int, device: str):
    """Median tokens/s and peak memory per runner, measured A B C A B C ...

    Each timed chunk runs whole windows until ``budget`` tokens are consumed. Besides the
    wall clock, each chunk's tokens per second of this process's CPU time are kept: on a
    machine shared with other jobs the CPU time leaves out the time the process waited
    for a core, so its ratios are the steadier ones (one thread: they are what an idle
    machine's wall clock gives). Peak memory is measured after the timed chunks, one
    untimed chunk per runner: resetting the peak counter releases the allocator's free
    memory (``malloc_trim``), and the page faults that follow would be timed otherwise.
    """
    for runner in runners.values():
        for _ in range(warmup):
            runner.window()
    rates = {name: [] for name in runners}
    cpu_rates = {name: [] for name in runners}
    for _ in range(repeats):
        for name, runner in runners.items():
            sync(device)
            start, cpu_start = time.perf_counter(), time.process_time()
            tokens = 0
            while tokens < budget:  # a token budget: random window lengths average out
                tokens += runner.window()
            sync(device)
            rates[name].append(tokens / (time.perf_counter() - start))
            cpu_rates[name].append(tokens / max(time.process_time() - cpu_start, 1e-9))
    peaks = {}
    for name, runner in runners.items():
        reset_peak_rss()
        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        tokens = 0
        while tokens < budget:
            tokens += runner.window()
        sync(device)
        peaks[name] = (
            torch.cuda.max_memory_allocated() / 2**20
            if device.startswith("cuda")
            else peak_rss_mb()
        )
    return {
        name: (statistics.median(r), r, peaks[name], cpu_rates[name]) for name, r in rates.items()
    }


def available(spec: str) -> str | None:
    """None when ``spec`` parses, else why not (a strategy another change has not landed yet)."""
    try:
        parse_strategy(spec)
        return None
    except (SpecError, TbpttError) as e:
        return str(e)


def throughput_rows(setup: Setup, args, gemm: float) -> list[dict]:
    k = setup.k
    k1 = max(1, round(k * 2 / 7))
    methods = set(args.methods.split(","))
    runners = {"fused loop": HandLoop(setup, cells=False)}  # every ratio's reference
    if "cell" in methods:
        runners["cell loop"] = HandLoop(setup, cells=True)
    rows = []
    for spec in (f"regular:{k}", f"randomized:{k}", f"k1k2:{k1},{k}"):
        if spec.split(":")[0] not in methods:
            continue
        why = available(spec)
        if why is None:
            runners[f"tbptt {spec}"] = TbpttLoop(setup, spec)
        else:
            rows.append({"config": setup.name, "method": f"tbptt {spec}", "unavailable": why})
    results = time_interleaved(
        runners,
        budget=args.windows * setup.k * setup.batch,
        repeats=args.repeats,
        warmup=args.warmup,
        device=setup.device,
    )
    flops = setup.flops_per_token()
    out = []
    for name, (rate, all_rates, peak, cpu_rates) in results.items():
        out.append(
            {
                "config": setup.name,
                "method": name,
                "tokens_per_s": rate,
                "all_tokens_per_s": all_rates,
                "cpu_tokens_per_s": cpu_rates,
                "gflops": rate * flops / 1e9,
                "gemm_fraction": rate * flops / 1e9 / gemm,
                "peak_mb": peak,
            }
        )
    return paired_ratios(out) + rows


def paired_ratios(rows: list[dict]) -> list[dict]:
    """Set ``vs_fused`` / ``vs_cell``: the median over repeats of the ratio of the rates
    measured next to each other in time (robust to load that drifts during the run);
    ``vs_fused_cpu`` the same of the rates per CPU second (where recorded)."""
    by_config, cpu_by_config = {}, {}
    for r in rows:
        if "all_tokens_per_s" in r:
            by_config.setdefault(r["config"], {})[r["method"]] = r["all_tokens_per_s"]
        if "cpu_tokens_per_s" in r:
            cpu_by_config.setdefault(r["config"], {})[r["method"]] = r["cpu_tokens_per_s"]
    for r in rows:
        runs = by_config.get(r["config"], {})
        if "all_tokens_per_s" not in r or "fused loop" not in runs:
            continue
        for key, base in (("vs_fused", "fused loop"), ("vs_cell", "cell loop")):
            if base not in runs:
                continue
            pairs = zip(r["all_tokens_per_s"], runs[base])
            r[key] = statistics.median(a / b for a, b in pairs)
        cpu_runs = cpu_by_config.get(r["config"], {})
        if "cpu_tokens_per_s" in r and "fused loop" in cpu_runs:
            pairs = zip(r["cpu_tokens_per_s"], cpu_runs["fused loop"])
            r["vs_fused_cpu"] = statistics.median(a / b for a, b in pairs)
    return rows


def stretch_rows(args) -> list[dict]:
    """Time of one fused call per gate-free stretch over the step path's, for the auto choice.

    A 1-layer model, B = args.batch, T = 2 K steps whose gates (a scale of 1.5, not a
    cut) split the window into stretches of the given length; forward and backward.
    """
    rows = []
    steps = 2 * args.k
    for kind in args.kinds.split(","):
        for hidden in (int(h) for h in args.hidden.split(",")):
            torch.manual_seed(0)
            cfg = ModelConfig(
                vocab_size=28, kind=kind, hidden_size=hidden, num_layers=1, dropout=0.0
            )
            model = RecurrentLM(cfg).to(args.device)
            x = torch.randint(0, 28, (steps, args.batch), device=args.device)
            for stretch in (steps, 14, 7, 4, 3, 2):
                gates = [1.5 if t % stretch == 0 and t > 0 else 1.0 for t in range(steps)]

                def run(path, gates=gates, model=model, x=x):
                    logits, _ = model(x, None, gates, path=path)
                    logits.float().pow(2).mean().backward()

                times = {"fused": [], "steps": []}
                for path in times:
                    run(path)
                for _ in range(max(3, args.repeats)):
                    for path in times:
                        sync(args.device)
                        start = time.perf_counter()
                        run(path)
                        sync(args.device)
                        times[path].append(time.perf_counter() - start)
                ratio = statistics.median(times["fused"]) / statistics.median(times["steps"])
                rows.append(
                    {"kind": kind, "hidden": hidden, "stretch": stretch, "fused_over_steps": ratio}
                )
                print(
                    f"  stretch {kind} {hidden} {stretch}: fused/steps time {ratio:.2f}",
                    file=sys.stderr,
                )
    return rows


# -- full BPTT rows, each in its own process -------------------------------------------------


def memory_row(args) -> dict:
    """Child process: train ``args.row_windows`` windows of ``args.row_spec``; time and peak memory."""
    torch.set_num_threads(args.threads)
    setup = make_setup(args, "char", args.full_kind, args.full_hidden, args.full_layers)
    spec = args.row_spec
    strategy = parse_strategy(spec)
    need = strategy.reference_length(10**9)
    if need < 10**9:  # full:T needs T + 1 rows per stream: repeat the text
        copies = math.ceil((need + 2) * setup.batch / len(setup.tokens))
        setup.tokens = setup.tokens.repeat(copies)
    loop = TbpttLoop(setup, spec)
    clean_peak = reset_peak_rss()  # the row's own peak, not the setup's (tokenizing, imports)
    before = rss_mb()
    if setup.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    sync(setup.device)
    start = time.perf_counter()
    tokens = sum(loop.window() for _ in range(args.row_windows))
    sync(setup.device)
    seconds = time.perf_counter() - start
    row = {
        "method": f"tbptt {spec}",
        "steps": need if need < 10**9 else None,
        "tokens_per_s": tokens / seconds,
        "seconds": seconds,
        "rss_before_mb": before,
        "peak_rss_mb": peak_rss_mb(),
        "peak_since_setup": clean_peak,
    }
    row["peak_extra_mb"] = row["peak_rss_mb"] - before
    if setup.device.startswith("cuda"):
        row["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def full_rows(args) -> list[dict]:
    k = args.k
    specs = [(f"regular:{k}", 3)]
    for steps in args.full_lengths:
        if steps <= args.full_plain_max:
            specs.append((f"full:{steps}", 1))
        specs.append((f"full:{steps},checkpoint", 1))
    rows = []
    for spec, windows in specs:
        why = available(spec)
        if why is not None:
            rows.append({"method": f"tbptt {spec}", "unavailable": why})
            continue
        cmd = [sys.executable, __file__, *args.child_argv, "--row-spec", spec]
        cmd += ["--row-windows", str(windows)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.row_timeout)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            rows.append({"method": f"tbptt {spec}", "unavailable": f"failed: {tail}"})
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  {spec}: {json.dumps(rows[-1])}", file=sys.stderr)
    name = f"char {args.full_kind.upper()} {args.full_hidden}x{args.full_layers}"
    for row in rows:
        row["config"] = name
    return rows


# -- setup and report --------------------------------------------------------------------------


_TEXT_CACHE: dict = {}


def load_tokens(args, level: str):
    if level not in _TEXT_CACHE:
        path = args.data or (str(SHARED_TEXT) if SHARED_TEXT.is_file() else None)
        text, _ = load_corpus(path)
        _TEXT_CACHE[level] = prepare_text(text, level=level)
    return _TEXT_CACHE[level]


def make_setup(args, level, kind, hidden, layers) -> Setup:
    data = load_tokens(args, level)
    return Setup(
        name=f"{level} {kind.upper()} {hidden}x{layers}",
        kind=kind,
        hidden=hidden,
        layers=layers,
        vocab=len(data.vocab),
        tokens=data.train.long(),  # the hand-written loops index an embedding with int64
        batch=args.batch,
        k=args.k,
        device=args.device,
    )


def machine(args, gemm: float) -> dict:
    from tbptt.threads import processor

    cpu = processor()
    config = torch.__config__.show()
    blas = "MKL" if "BLAS_INFO=mkl" in config else "see torch.__config__.show()"
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "blas": blas,
        "mkldnn": torch.backends.mkldnn.is_available(),
        "python": platform.python_version(),
        "device": args.device,
        "gemm_gflops": gemm,
        "gemm_size": args.gemm_size,
    }
    if args.device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name()
        info["cudnn"] = torch.backends.cudnn.version()
    return info


def _load_note(result: dict) -> str:
    load = result.get("loadavg")
    if not load:
        return ""
    return f" Load average (1 min) {load['start'][0]:.1f} at the start, {load['end'][0]:.1f} at the end."


def markdown(result: dict) -> str:
    m = result["machine"]
    unit = "peak CUDA MB" if m["device"].startswith("cuda") else "peak RSS MB"
    lines = [
        f"Machine: {m.get('gpu', m['cpu'])}, {m['cores']} cores, {m['threads']} threads, "
        f"torch {m['torch']}, BLAS {m['blas']}; float32 GEMM {m['gemm_size']}^3: "
        f"{m['gemm_gflops']:.0f} GFLOP/s." + _load_note(result),
        "",
        f"| config | method | tokens/s | x fused loop | x fused (CPU time) | x cell loop | GFLOP/s "
        f"| % GEMM | {unit} |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["throughput"]:
        if "unavailable" in r:
            lines.append(f"| {r['config']} | {r['method']} | unavailable | | | | | | |")
            continue
        cpu = f"{r['vs_fused_cpu']:.2f}" if "vs_fused_cpu" in r else ""
        lines.append(
            f"| {r['config']} | {r['method']} | {r['tokens_per_s']:,.0f} | {r['vs_fused']:.2f} "
            f"| {cpu} | {r.get('vs_cell', float('nan')):.2f} | {r['gflops']:.1f} "
            f"| {100 * r['gemm_fraction']:.1f} | {r['peak_mb']:,.0f} |"
        )
    if result.get("full"):
        extra = "peak CUDA MB" if m["device"].startswith("cuda") else "peak RSS MB (extra)"
        lines += [
            "",
            f"| config | method | T | tokens/s | {extra} |",
            "|---|---|---:|---:|---:|",
        ]
        for r in result["full"]:
            if "unavailable" in r:
                lines.append(f"| {r['config']} | {r['method']} | | unavailable | |")
                continue
            mem = (
                f"{r['peak_cuda_mb']:,.0f}"
                if "peak_cuda_mb" in r
                else f"{r['peak_rss_mb']:,.0f} ({r['peak_extra_mb']:,.0f})"
            )
            steps = r["steps"] if r["steps"] else ""
            lines.append(
                f"| {r['config']} | {r['method']} | {steps} | {r['tokens_per_s']:,.0f} | {mem} |"
            )
    if result.get("stretch"):
        lengths = sorted({r["stretch"] for r in result["stretch"]}, reverse=True)
        lines += [
            "",
            "Time of one fused call per gate-free stretch / time of the step path "
            "(1 layer, forward + backward; below 1: fused is faster):",
            "",
            "| model | " + " | ".join(f"stretch {n}" for n in lengths) + " |",
            "|---|" + "---:|" * len(lengths),
        ]
        models = dict.fromkeys((r["kind"], r["hidden"]) for r in result["stretch"])
        for kind, hidden in models:
            cells = {r["stretch"]: r["fused_over_steps"] for r in result["stretch"]
                     if (r["kind"], r["hidden"]) == (kind, hidden)}  # fmt: skip
            row = " | ".join(f"{cells[n]:.2f}" if n in cells else "" for n in lengths)
            lines.append(f"| {kind.upper()} {hidden} | {row} |")
    return "\n".join(lines)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true", help="a smoke run: two configs, few repeats")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--data", default=None, help="a text file (default: The Time Machine)")
    p.add_argument("--kinds", default="lstm,gru")
    p.add_argument("--hidden", default="256,512")
    p.add_argument("--layers", default="1,2")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--k", type=int, default=35)
    p.add_argument(
        "--windows", type=int, default=2, help="tokens per timed repeat, in windows of K steps"
    )
    p.add_argument(
        "--methods",
        default="cell,regular,randomized,k1k2",
        help="which rows beside the fused loop (default: cell,regular,randomized,k1k2)",
    )
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--word", default="lstm:256:2", help="word-level config KIND:H:L, or 'none'")
    p.add_argument("--full-lengths", default="1000,5000,20000")
    p.add_argument("--full-plain-max", type=int, default=5000, help="longest plain full:T")
    p.add_argument("--full-kind", default="lstm")
    p.add_argument("--full-hidden", type=int, default=256)
    p.add_argument("--full-layers", type=int, default=1)
    p.add_argument("--row-timeout", type=float, default=300)
    p.add_argument(
        "--stretch",
        action="store_true",
        help="also time fused-per-stretch against the step path (tunes FUSED_MIN_STRETCH)",
    )
    p.add_argument("--gemm-size", type=int, default=None)
    p.add_argument(
        "--out", default=None, help="JSON results (default benchmarks/results/DEVICE.json)"
    )
    p.add_argument("--report", default=None, help="print the tables of a results JSON and exit")
    p.add_argument("--row-spec", default=None, help=argparse.SUPPRESS)
    p.add_argument("--row-windows", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:  # smaller defaults; options given explicitly still win
        quick = dict(hidden="256", layers="1", windows=2, repeats=3, warmup=1)
        quick.update(full_lengths="500,2000", word="none")
        for name, value in quick.items():
            if getattr(args, name) == p.get_default(name):
                setattr(args, name, value)
    args.full_lengths = [int(x) for x in str(args.full_lengths).split(",") if x]
    if args.gemm_size is None:
        args.gemm_size = 8192 if args.device.startswith("cuda") else 2048
    # what a memory-row child needs to rebuild the same setup
    args.child_argv = [
        "--device", args.device, "--threads", str(args.threads), "--batch", str(args.batch),
        "--k", str(args.k), "--full-kind", args.full_kind, "--full-hidden", str(args.full_hidden),
        "--full-layers", str(args.full_layers),
    ]  # fmt: skip
    if args.data:
        args.child_argv += ["--data", args.data]
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.row_spec:
        print(json.dumps(memory_row(args)))
        return {}
    if args.report:
        result = json.loads(Path(args.report).read_text())
        paired_ratios(result["throughput"])
        print(markdown(result))
        return result
    started = time.perf_counter()
    gemm = gemm_rate(args.device, args.gemm_size)
    result = {"machine": machine(args, gemm), "args": sys.argv[1:] if argv is None else argv}
    result["loadavg"] = {"start": os.getloadavg()}
    result["throughput"] = []
    setups = []
    for kind in filter(None, args.kinds.split(",")):  # --kinds "": no character-level rows
        for hidden in (int(h) for h in args.hidden.split(",")):
            for layers in (int(n) for n in args.layers.split(",")):
                setups.append(("char", kind, hidden, layers))
    if args.word != "none":
        kind, hidden, layers = args.word.split(":")
        setups.append(("word", kind, int(hidden), int(layers)))
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"{args.device.split(':')[0]}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.stretch:
        result["stretch"] = stretch_rows(args)
    for level, kind, hidden, layers in setups:
        out.write_text(json.dumps(result, indent=1) + "\n")  # partial results survive a timeout
        setup = make_setup(args, level, kind, hidden, layers)
        print(f"{setup.name} ...", file=sys.stderr)
        rows = throughput_rows(setup, args, gemm)
        for r in rows:
            if "tokens_per_s" in r:
                print(
                    f"  {r['method']}: {r['tokens_per_s']:,.0f} tok/s, "
                    f"x{r['vs_fused']:.2f} fused (x{r.get('vs_fused_cpu', float('nan')):.2f} "
                    f"in CPU time), x{r.get('vs_cell', float('nan')):.2f} cell",
                    file=sys.stderr,
                )
        result["throughput"] += rows
    result["full"] = full_rows(args) if args.full_lengths else []
    result["seconds"] = time.perf_counter() - started
    result["loadavg"]["end"] = os.getloadavg()
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(markdown(result))
    print(f"\n{result['seconds']:.0f} s; results in {out}")
    return result


if __name__ == "__main__":
    main()
