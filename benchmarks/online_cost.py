"""Time and peak memory per step of the online estimators beside truncated and full BPTT.

For a GRU (1 layer, float inputs of width I, a linear head) at hidden sizes H
and batch sizes B, each estimator computes the gradient of a stretch of steps
at fixed weights, and the script reports per step:

- ``ms/step``: wall time of the stretch divided by its steps (median of
  ``--repeats``, after one warm-up stretch);
- ``peak MB``: the process's peak resident set during the stretch above the
  resident set before it (VmHWM reset through /proc/self/clear_refs, as
  benchmarks/checkpoint_memory.py does);
- ``GEMM ms``: the time the estimator's dense multiply-adds would take at the
  machine's measured matrix-multiply rate (one thread, float32): its floor.

Estimators: ``rtrl``, ``snap:1``, ``snap:2``, ``uoro`` (tbptt.train.online), and
``regular:35`` and ``full`` (tbptt.train.sequence_gradient over ``--length``
steps); and on a one-layer minGRU of the same H (``mingru rtrl``: the diagonal
engine; ``mingru regular:35``). ``rows/s`` is B divided by the seconds per step. Multiply-adds per step counted for the floor, with G = 3H(I + H) the
GRU's recurrent product per stream: ``full``/``regular`` 3 G B (forward and
backward), ``uoro`` about 4 G B, ``rtrl``/``snap`` (the closed-form engine) G B + 3 B H²
+ B H² P (the step, A_t from the gate coefficients, then the product A J; P parameters);
none for the minGRU (element-wise).

Usage::

    python benchmarks/online_cost.py                  # H 16 32 64 128, B 1 32
    python benchmarks/online_cost.py --hidden 16 32 --batch 1 --json out.json
    python benchmarks/online_cost.py --speed          # the paired speed goals of issue 26
    python benchmarks/online_cost.py --compile        # torch.compile of the closed-form step

``--speed`` measures, one thread, each pair interleaved in one process (rows/s =
rows of B streams per second of gradient computation at fixed weights, window by window
as the trainer runs a strategy: ``update_every`` rows per window; median of
``--repeats``): influence balancing (23 units, batch 1) under
``rtrl:update_every=10`` and ``uoro:update_every=10`` against ``regular:10``; GRU and
LSTM 1x32 on adding-task-shaped inputs (batch 8) under ``rtrl`` (closed form) against
the torch.func engine and, for the GRU, a hand-written loop of the same closed-form
update (:func:`gru_by_hand`); minGRU and LRU 1x64 (batch 8) under ``rtrl`` (diagonal;
every row its own window, and ``update_every=35`` as ``regular:35`` updates) against
``regular:35``.

``--compile`` measures whether ``torch.compile`` speeds up the closed-form engine on
CPU: rows/s of ``rtrl`` on GRU and LSTM 1x32 (batch 8) eager, with the engine's whole
step compiled (``torch.compile(DenseCells.step)``: graph breaks at the head's autograd
call) and with only the cells' coefficients compiled (``cell_step``, the element-wise
part inductor can fuse); interleaved repeats in one process, compile time reported apart
(JSON: online_compile.json beside ``--json``).

It prints a Markdown table and writes JSON (default
benchmarks/results/online_cost.json), with the load average at the start and end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

from tbptt.models import ModelConfig, RecurrentNet
from tbptt.train import sequence_gradient
from tbptt.train.objectives import Regression
from tbptt.train.online import build_estimator, rtrl_bytes
from tbptt.train.online.rtrl import CLOSED_COPIES
from tbptt.truncation import parse_strategy

sys.path.insert(0, str(Path(__file__).resolve().parent))
from checkpoint_memory import _reset_peak_rss, _status_mb  # noqa: E402

ONLINE = ("rtrl", "snap:1", "snap:2", "uoro")
BACKWARD = ("regular:35", "full")
DIAGONAL = ("mingru rtrl", "mingru regular:35")  # a one-layer minGRU of the same H


def gemm_rate(threads: int = 1, size: int = 512, repeats: int = 20) -> float:
    """Multiply-adds per second of a float32 (size x size) @ (size x size) product."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return repeats * size**3 / (time.perf_counter() - start)


def build(hidden: int, inputs: int, outputs: int, kind: str = "gru") -> RecurrentNet:
    torch.manual_seed(0)
    config = ModelConfig(
        kind=kind,
        hidden_size=hidden,
        num_layers=1,
        input_size=inputs,
        output_size=outputs,
        embedding_size=0,
        dropout=0.0,
    )
    return RecurrentNet(config).eval()


def multiply_adds(spec: str, hidden: int, inputs: int, batch: int, params: int) -> float:
    if spec in DIAGONAL:
        return math.nan  # element-wise: no GEMM floor
    g = 3 * hidden * (inputs + hidden)
    if spec in BACKWARD:
        return 3 * g * batch
    if spec == "uoro":
        return 4 * g * batch
    # closed form: a forward (g B), A_t = Σ_g beta_g W_hh,g (3 B H^2), then A J (B H^2 P)
    return g * batch + 3 * batch * hidden**2 + batch * hidden**2 * params


def measure(spec, model, x, y, repeats) -> dict:
    """Seconds per step (median over ``repeats``) and peak MB above the level before.

    An online estimator is built and started once per repeat (its sensitivities count
    in the peak) and takes one untimed step first (SnAp finds its pattern there); the
    timed steps follow. ``regular``/``full`` time their whole stretch of steps.
    """
    strategy = parse_strategy(spec)
    objective, generator = Regression(), torch.Generator().manual_seed(0)
    times, peak = [], 0.0
    for _ in range(repeats):
        before = _reset_peak_rss()
        if spec in ONLINE:
            estimator = build_estimator(strategy, model, objective)
            estimator.start(model.initial_state(x.shape[1]))
            estimator.step(x[:1], y[:1], generator=generator)
            start = time.perf_counter()
            for t in range(1, x.shape[0]):
                estimator.step(x[t : t + 1], y[t : t + 1], generator=generator)
            times.append((time.perf_counter() - start) / (x.shape[0] - 1))
            del estimator
        else:
            sequence_gradient(model, strategy, x[:2], y[:2], objective=objective)  # warm-up
            start = time.perf_counter()
            sequence_gradient(model, strategy, x, y, objective=objective, generator=generator)
            times.append((time.perf_counter() - start) / x.shape[0])
        peak = max(peak, _status_mb("VmHWM") - before)
    return {"seconds_per_step": statistics.median(times), "peak_mb": peak}


def gru_by_hand(model, x, y, steps):
    """The closed-form GRU RTRL update written out for one layer, features in, linear head,
    squared error: the reference loop the package's engine is compared with."""
    core, head = model.recurrent.core, model.head
    w_ih, w_hh, b_ih, b_hh = (
        core.weight_ih_l0.detach(), core.weight_hh_l0.detach(),
        core.bias_ih_l0.detach(), core.bias_hh_l0.detach(),
    )  # fmt: skip
    H, K = w_hh.shape[1], w_ih.shape[1]
    B = x.shape[1]
    P = 3 * H * K + 3 * H * H + 6 * H
    J, J2 = torch.zeros(B, H, P), torch.zeros(B, H, P)
    h = torch.zeros(B, H)
    wv = w_hh.view(3, H, H)
    o1, o2, o3 = 3 * H * K, 3 * H * K + 3 * H * H, 3 * H * K + 3 * H * H + 3 * H
    grad = torch.zeros(P)
    for t in range(steps):
        u = torch.addmm(b_ih, x[t], w_ih.t()).view(B, 3, H)
        v = torch.addmm(b_hh, h, w_hh.t()).view(B, 3, H)
        r = torch.sigmoid(u[:, 0] + v[:, 0])
        z = torch.sigmoid(u[:, 1] + v[:, 1])
        n = torch.tanh(u[:, 2] + r * v[:, 2])
        h_new = n + z * (h - n)
        dn = (1 - z) * (1 - n * n)
        ar = dn * v[:, 2] * r * (1 - r)
        az = (h - n) * z * (1 - z)
        alpha = torch.stack([ar, az, dn], 1)
        beta = torch.stack([ar, az, dn * r], 1)
        torch.bmm(torch.einsum("bgi,gik->bik", beta, wv), J, out=J2)
        J2.addcmul_(z.unsqueeze(-1), J)
        J2[:, :, :o1].view(B, H, 3, H, K).diagonal(dim1=1, dim2=3).add_(
            alpha.unsqueeze(2) * x[t][:, None, :, None]
        )
        J2[:, :, o1:o2].view(B, H, 3, H, H).diagonal(dim1=1, dim2=3).add_(
            beta.unsqueeze(2) * h[:, None, :, None]
        )
        J2[:, :, o2:o3].view(B, H, 3, H).diagonal(dim1=1, dim2=3).add_(alpha)
        J2[:, :, o3:].view(B, H, 3, H).diagonal(dim1=1, dim2=3).add_(beta)
        err = (h_new @ head.weight.detach().t() + head.bias.detach()) - y[t]
        c = 2 * err @ head.weight.detach()  # dl/dh (B, H)
        grad += torch.einsum("bh,bhp->p", c, J2)
        J, J2, h = J2, J, h_new
    return grad


def _rate(fn, rows, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return rows / statistics.median(times)


def _online_rate(model, spec, x, y, objective, repeats):
    """Rows/s of ``spec``'s gradient, window by window as the trainer runs it (U =
    ``update_every`` rows between two optimizer steps; the weights held fixed here)."""
    from tbptt.train.online.training import run_rows

    strategy = parse_strategy(spec)
    U = strategy.update_every

    def run():
        est = build_estimator(strategy, model, objective)
        est.start(model.initial_state(x.shape[1]))
        g = torch.Generator().manual_seed(0)
        for a in range(0, x.shape[0], U):
            run_rows(est, x[a : a + U], y[a : a + U], generator=g)

    run()  # warm-up (torch.func's first call, SnAp's pattern)
    return _rate(run, x.shape[0] * x.shape[1], repeats)


def _backward_rate(model, spec, x, y, objective, repeats):
    run = lambda: sequence_gradient(model, parse_strategy(spec), x, y, objective=objective)  # noqa: E731
    run()
    return _rate(run, x.shape[0] * x.shape[1], repeats)


def speed(args) -> int:
    """The paired speed goals (module docstring); prints a table, writes JSON."""
    from tbptt.models.custom import StatefulModule
    from tbptt.models.influence import InfluenceBalancing

    torch.set_num_threads(1)
    uptime = Path("/proc/loadavg").read_text().split()[:3]
    rows = []

    def add(task, spec, rate, base, base_spec):
        rows.append({"task": task, "spec": spec, "rows_per_s": rate, "baseline": base_spec,
                     "baseline_rows_per_s": base, "ratio": rate / base})  # fmt: skip
        print(f"| {task} | {spec} | {rate:,.0f} | {base_spec} | {base:,.0f} | {rate / base:.2f} |",
              flush=True)  # fmt: skip

    print(f"load average {' '.join(uptime)} at the start; 1 thread; torch {torch.__version__}")
    print("| task | estimator | rows/s | baseline | rows/s | ratio |")
    print("| --- | --- | ---: | --- | ---: | ---: |")
    obj = Regression()
    ib = StatefulModule(InfluenceBalancing(), batch_dim=-2)
    T = args.speed_rows
    x, y = torch.zeros(T, 1, 1), torch.ones(T, 1, 1)
    base = _backward_rate(ib, "regular:10", x, y, obj, args.repeats)
    for spec in ("rtrl:update_every=10", "uoro:update_every=10"):
        add(
            "influence n=23 B=1",
            spec,
            _online_rate(ib, spec, x, y, obj, args.repeats),
            base,
            "regular:10",
        )
    g = torch.Generator().manual_seed(0)
    for kind in ("gru", "lstm"):
        torch.manual_seed(0)
        m = RecurrentNet(ModelConfig(kind=kind, hidden_size=32, num_layers=1, input_size=2,
                                     output_size=1, embedding_size=0, dropout=0.0)).eval()  # fmt: skip
        x, y = torch.randn(T, 8, 2, generator=g), torch.randn(T, 8, 1, generator=g)
        fast = _online_rate(m, "rtrl", x, y, obj, args.repeats)
        short = x[: max(4, T // 10)], y[: max(4, T // 10)]
        from tbptt.train.online import RTRL
        from tbptt.train.online.training import run_rows

        def slow_run(m=m, short=short):
            est = RTRL(m, obj, engine="func")
            est.start(m.initial_state(8))
            for a in range(short[0].shape[0]):  # row by row, as rtrl (update_every=1) trains
                run_rows(est, short[0][a : a + 1], short[1][a : a + 1])

        slow_run()
        slow = _rate(slow_run, short[0].shape[0] * 8, args.repeats)
        add(f"adding {kind} 1x32 B=8", "rtrl (closed form)", fast, slow, "rtrl (torch.func)")
        if kind == "gru":
            hand = _rate(lambda m=m, x=x, y=y: gru_by_hand(m, x, y, T), T * 8, args.repeats)
            add(f"adding {kind} 1x32 B=8", "rtrl (closed form)", fast, hand, "hand-written loop")
        add(f"adding {kind} 1x32 B=8", "rtrl (closed form)", fast,
            _backward_rate(m, "regular:35", x, y, obj, args.repeats), "regular:35")  # fmt: skip
    for kind in ("mingru", "lru"):
        torch.manual_seed(0)
        m = RecurrentNet(ModelConfig(kind=kind, hidden_size=64, num_layers=1, input_size=2,
                                     output_size=1, embedding_size=0, dropout=0.0)).eval()  # fmt: skip
        x, y = torch.randn(T, 8, 2, generator=g), torch.randn(T, 8, 1, generator=g)
        base = _backward_rate(m, "regular:35", x, y, obj, args.repeats)
        for spec in ("rtrl", "rtrl:update_every=35"):
            add(f"{kind} 1x64 B=8", f"{spec} (diagonal)", _online_rate(m, spec, x, y, obj, args.repeats),
                base, "regular:35")  # fmt: skip
    end = Path("/proc/loadavg").read_text().split()[:3]
    print(f"load average {' '.join(end)} at the end")
    out = Path(args.json).with_name("online_speed.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"load_start": uptime, "load_end": end, "rows": rows}, indent=1))
    return 0


def compile_speed(args) -> int:
    """rows/s of the closed-form ``rtrl`` eager and under ``torch.compile`` (module docstring)."""
    import tbptt.train.online.dense as dense
    from tbptt.train.online.training import run_rows

    torch.set_num_threads(1)
    load_start = os.getloadavg()
    T, B, modes = args.speed_rows, 8, ("eager", "compiled step", "compiled cell_step")
    print(f"load {load_start[0]:.2f}; 1 thread; torch {torch.__version__}; {T} rows x B={B}")
    print("| model | mode | rows/s | x eager | first call s |")
    print("| --- | --- | ---: | ---: | ---: |")
    rows = []
    for kind in ("gru", "lstm"):
        model = build(32, 2, 1, kind=kind)
        g = torch.Generator().manual_seed(0)
        x, y = torch.randn(T, B, 2, generator=g), torch.randn(T, B, 1, generator=g)
        cell_step = torch.compile(dense.cell_step)

        def run(mode, model=model, x=x, y=y, cell_step=cell_step):
            eager_cells = dense.cell_step
            if mode == "compiled cell_step":
                dense.cell_step = cell_step  # DenseCells.step looks it up at each call
            try:
                est = build_estimator(parse_strategy("rtrl"), model, Regression())
                if mode == "compiled step":
                    est.engine.step = torch.compile(est.engine.step)
                est.start(model.initial_state(B))
                start = time.perf_counter()
                run_rows(est, x, y)
                return time.perf_counter() - start
            finally:
                dense.cell_step = eager_cells

        first = {}
        for mode in modes:  # the first call compiles (and warms up the eager path)
            start = time.perf_counter()
            run(mode)
            first[mode] = time.perf_counter() - start
        times = {mode: [] for mode in modes}
        for _ in range(args.repeats):  # interleaved: load that drifts hits every mode alike
            for mode in modes:
                times[mode].append(run(mode))
        eager = T * B / statistics.median(times["eager"])
        for mode in modes:
            rate = T * B / statistics.median(times[mode])
            rows.append({"model": f"{kind} 1x32 B={B}", "mode": mode, "rows_per_s": rate,
                         "ratio_to_eager": rate / eager, "first_call_seconds": first[mode]})  # fmt: skip
            print(f"| {kind} 1x32 B={B} | {mode} | {rate:,.0f} | {rate / eager:.2f} | "
                  f"{first[mode]:.1f} |", flush=True)  # fmt: skip
    load_end = os.getloadavg()
    print(f"load {load_end[0]:.2f} at the end")
    out = Path(args.json).with_name("online_compile.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"load_start": load_start, "load_end": load_end, "torch": torch.__version__,
               "rows": rows}  # fmt: skip
    out.write_text(json.dumps(payload, indent=1))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    p.add_argument("--inputs", type=int, default=8, help="input width I (default: 8)")
    p.add_argument("--length", type=int, default=70, help="steps for regular/full (default: 70)")
    p.add_argument(
        "--online-steps",
        type=int,
        default=4,
        help="steps timed for the online estimators (default: 4)",
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-gb", type=float, default=6.0, help="skip RTRL needing more (default: 6)")
    p.add_argument("--json", default="benchmarks/results/online_cost.json")
    p.add_argument("--speed", action="store_true", help="the paired speed goals instead")
    p.add_argument("--compile", action="store_true", help="torch.compile of the closed form")
    p.add_argument("--speed-rows", type=int, default=350, help="rows per --speed run")
    args = p.parse_args(argv)
    if args.speed:
        return speed(args)
    if args.compile:
        return compile_speed(args)
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    rate = gemm_rate(args.threads)
    rows = []
    # One untimed pass over every estimator first: the process's one-time allocations
    # (torch.func, the allocator's pools) do not land in the first row's peak.
    warm = build(4, args.inputs, 1)
    xw, yw = torch.randn(3, 2, args.inputs), torch.randn(3, 2, 1)
    for spec in (*BACKWARD, *ONLINE):
        measure(spec, warm, xw, yw, 1)
    warm = build(4, args.inputs, 1, kind="mingru")
    for spec in ("rtrl", "regular:35"):
        measure(spec, warm, xw, yw, 1)
    print(
        f"load {load_start[0]:.2f}; GEMM {rate / 1e9:.1f} G multiply-adds/s ({args.threads} thread)"
    )
    print("| H | B | P | estimator | ms/step | rows/s | peak MB | GEMM ms |")
    print("| ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |")
    for hidden in args.hidden:
        models = {"gru": build(hidden, args.inputs, 1)}
        models["mingru"] = build(hidden, args.inputs, 1, kind="mingru")
        for batch in args.batch:
            g = torch.Generator().manual_seed(1)
            x = torch.randn(args.length, batch, args.inputs, generator=g)
            y = torch.randn(args.length, batch, 1, generator=g)
            for name in (*BACKWARD, *ONLINE, *DIAGONAL):
                kind, spec = name.split(" ") if " " in name else ("gru", name)
                model = models[kind]
                params = sum(q.numel() for q in model.parameters())
                backward = spec in BACKWARD
                steps = args.length if backward else args.online_steps + 1
                row = {"hidden": hidden, "batch": batch, "parameters": params, "spec": name}
                need = rtrl_bytes(params, batch, hidden, 4, copies=CLOSED_COPIES) / 1e9
                if kind == "gru" and spec.startswith(("rtrl", "snap")) and need > args.max_gb:
                    row.update(skipped=f"needs about {need:.1f} GB")
                else:
                    row.update(measure(spec, model, x[:steps], y[:steps], args.repeats))
                    row["rows_per_s"] = batch / row["seconds_per_step"]
                work = multiply_adds(name, hidden, args.inputs, batch, params)
                row["gemm_seconds"] = None if math.isnan(work) else work / rate
                rows.append(row)
                shown = (
                    f"{1e3 * row['seconds_per_step']:.3g} | {row['rows_per_s']:,.0f} | "
                    f"{row['peak_mb']:.0f}"
                    if "skipped" not in row
                    else f"{row['skipped']} | - | -"
                )
                floor = row["gemm_seconds"]
                floor = "-" if floor is None else f"{1e3 * floor:.3g}"
                print(f"| {hidden} | {batch} | {params} | {name} | {shown} | {floor} |", flush=True)
    load_end = os.getloadavg()
    print(f"load {load_end[0]:.2f} at the end")
    payload = {
        "gemm_multiply_adds_per_s": rate,
        "threads": args.threads,
        "load_start": load_start,
        "load_end": load_end,
        "torch": torch.__version__,
        "rows": rows,
    }
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
