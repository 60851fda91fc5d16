"""``tbptt compare``: train one model under several strategies and write a report."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

from tqdm import tqdm

from tbptt.cli.arguments import (
    STRATEGY_HELP,
    add_data_arguments,
    add_model_arguments,
    add_optimizer_arguments,
)
from tbptt.cli.common import (
    build_model,
    build_objective,
    check_device,
    given_flags,
    model_config_for,
    run_config_from_args,
    with_recipe,
)
from tbptt.data.config import load_dataset
from tbptt.integrations.tensorboard import check_available, write_metrics_file
from tbptt.report import run_summary, table_rows, verdicts, write_report
from tbptt.threads import use_threads
from tbptt.train import RunConfig, TrainConfig
from tbptt.train.build import model_title
from tbptt.train.compare import (
    DEFAULT_STRATEGIES,
    CompareConfig,
    forecast_entries,
    load_comparison,
    parse_entry,
    run_comparison,
)
from tbptt.truncation import RegularTruncation, parse_strategy

DEFAULT_SECONDS = 60.0

EPILOG = (
    STRATEGY_HELP
    + """
entries: --strategies takes strategy specs and
  windows:K         regular:K windows drawn at random offsets, each from a fresh state
                    (what forecasting libraries train on), beside the stateful entries
                    whose windows follow the stream in order with the state carried
default entries: a time series: regular:K randomized:K full:checkpoint windows:K, K the
  series recipe's (35), and a verdict on whether carrying the state won; other data:
  """
    + " ".join(DEFAULT_STRATEGIES)
    + """

budget: each run stops at the first of --budget-epochs, --budget-seconds (training
seconds, evaluation excluded), --budget-tokens; with none given, a time series trains
its recipe's epochs (30), other data --budget-seconds 60.

writes into --out: report.md and report.html (figures embedded), cuts.png,
validation.png, gap.png, grad_norms.png, summary.json, comparison.json and
runs/<strategy>-seed<s>/metrics.jsonl (JSON lines, one per step, evaluation, epoch).
"""
)


def compare_parser(sub) -> None:
    p = sub.add_parser(
        "compare",
        help="train the same model under several strategies and write a comparison report",
        description="Train the same model, from the same initial weights and seed, under each "
        "strategy spec on the same data and budget; write figures, a table and verdicts.",
        epilog=EPILOG,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, width=100),
    )
    g = p.add_argument_group("what to compare")
    g.add_argument(
        "--strategies",
        nargs="+",
        metavar="SPEC",
        help="strategy specs and windows:K (random windows, fresh state); default: for a time "
        f"series {' '.join(forecast_entries(35))}, else {' '.join(DEFAULT_STRATEGIES)}",
    )
    g.add_argument(
        "--seeds",
        nargs="+",
        type=int,
        default=[0],
        metavar="S",
        help="one run per seed and strategy; several give mean and spread (default: 0)",
    )
    g.add_argument("--budget-epochs", type=int, metavar="N", help="epochs per run")
    g.add_argument("--budget-seconds", type=float, metavar="S", help="training seconds per run")
    g.add_argument("--budget-tokens", type=int, metavar="N", help="training rows (tokens) per run")
    g = p.add_argument_group("data")
    add_data_arguments(g)
    g = p.add_argument_group("model")
    add_model_arguments(g)
    g = p.add_argument_group("training")
    add_optimizer_arguments(g)
    g.add_argument(
        "--evals-per-epoch",
        type=int,
        default=CompareConfig.evals_per_epoch,
        help="validation points per epoch (default: %(default)s)",
    )
    g.add_argument(
        "--eval-seconds",
        type=float,
        metavar="S",
        help="also validate every S training seconds (default: a fifth of --budget-seconds)",
    )
    g = p.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", help="report directory (default: runs/compare-<time>)")
    g.add_argument(
        "--prefix", help="text: prefix for the samples (default: the validation opening)"
    )
    g.add_argument("--sample-length", type=int, default=100)
    g.add_argument("--temperature", type=float, default=0.7)
    g.add_argument("--no-progress", action="store_true", default=None, help="no progress bars")
    g.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="also write each run's metrics as a TensorBoard run DIR/<strategy>-seed<S> "
        "(needs tbptt[tensorboard])",
    )
    p.set_defaults(command=compare_command)


def _entries(data, strategy: str) -> tuple[str, ...]:
    """The default entries: a time series' (the stateful strategies and random windows with
    a fresh state, of its recipe's K), else the text defaults."""
    if "predictions" not in data.outputs:  # not a forecast
        return DEFAULT_STRATEGIES
    recipe = parse_strategy(strategy)
    return forecast_entries(recipe.k if isinstance(recipe, RegularTruncation) else 35)


def compare_command(args) -> int:
    given = [parse_entry(s).name for s in args.strategies] if args.strategies else None
    budgets = (args.budget_epochs, args.budget_seconds, args.budget_tokens)
    no_budget = all(b is None for b in budgets)
    seconds = DEFAULT_SECONDS if no_budget else args.budget_seconds
    # The same flags as tbptt train, through the same RunConfig (a NaN is counted, not fatal).
    run = run_config_from_args(args, base=RunConfig(train=TrainConfig(nonfinite="skip")))
    run.check()
    check_device(run.train.device)
    config = CompareConfig(
        strategies=tuple(given or DEFAULT_STRATEGIES),
        seeds=tuple(args.seeds),
        budget_epochs=args.budget_epochs,
        budget_seconds=seconds,
        budget_tokens=args.budget_tokens,
        prefix=args.prefix or "",
        sample_length=args.sample_length,
        temperature=args.temperature,
        evals_per_epoch=args.evals_per_epoch,
        eval_seconds=args.eval_seconds or (seconds / 5 if seconds else None),
    )
    config.check()  # before the data is read
    if run.output.threads:
        use_threads(run.output.threads)  # the user's choice: never revised

    data = load_dataset(run.data, seed=run.train.seed)
    run = with_recipe(run, data, given_flags(args))  # the series recipe, where no flag chose
    run = dataclasses.replace(run, model=model_config_for(data, run.model, given=given_flags(args)))
    entries = given or _entries(data, run.train.strategy)
    config = dataclasses.replace(config, strategies=tuple(entries))
    if no_budget and "train.epochs" in data.recipe():  # a series: its recipe's epochs
        config = dataclasses.replace(
            config,
            budget_epochs=run.train.epochs,
            budget_seconds=None,
            eval_seconds=args.eval_seconds,
        )
    objective = build_objective(run, data)
    own_model = data.model is not None  # a task's own model (influence balancing)
    model = (lambda: build_model(run, data)) if own_model else run.model
    out = Path(args.out or f"runs/compare-{time.strftime('%Y%m%d-%H%M%S')}")
    metric = objective.primary
    what = model_title(run, data)
    source = run.data.task or Path(run.data.path or "The Time Machine").name
    budget = ", ".join(
        text
        for text, value in (
            ("{} epochs", config.budget_epochs),
            ("{:g} training seconds", config.budget_seconds),
            ("{:,} tokens", config.budget_tokens),
        )
        if value is not None
        for text in [text.format(value)]
    )
    print(
        f"tbptt compare: {' '.join(config.strategies)} x seeds {' '.join(map(str, config.seeds))}; "
        f"{what} on {source} ({len(data.train_split()):,} training rows, {objective.name}); "
        f"budget per run: {budget}; report in {out}"
    )

    bar = [None]
    # A bar of training seconds when only a seconds budget is set, else of tokens.
    by_seconds = (
        config.budget_seconds is not None
        and config.budget_tokens is None
        and config.budget_epochs is None
    )

    def on_run_start(info: dict) -> None:
        desc = f"[{info['index'] + 1}/{info['runs']}] {info['strategy']} seed {info['seed']}"
        if by_seconds:
            bar[0] = tqdm(
                total=config.budget_seconds,
                unit="s",
                desc=desc,
                file=sys.stderr,
                disable=args.no_progress,
                dynamic_ncols=True,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} training s{postfix}",
            )
        else:
            limits = [
                config.budget_tokens or math.inf,
                (config.budget_epochs or math.inf) * info["tokens_per_epoch"],
            ]
            total = min(limits)
            bar[0] = tqdm(
                total=None if math.isinf(total) else total,
                unit="tok",
                unit_scale=True,
                desc=desc,
                file=sys.stderr,
                disable=args.no_progress,
                dynamic_ncols=True,
            )

    def on_step(record: dict) -> None:
        b = bar[0]
        if by_seconds:  # the budget counts training seconds, evaluation excluded
            b.update(min(b.total, record["train_seconds"]) - b.n)
        else:
            b.update(record["tokens"])
        if record["step"] % 10 == 0:
            b.set_postfix(loss=f"{record['loss']:.3f}", refresh=False)

    def on_epoch(record: dict) -> None:
        val = f"  val {metric} {record[f'val_{metric}']:.4g}" if f"val_{metric}" in record else ""
        train = (
            f"train loss {record['train_loss']:.4g}" if "train_loss" in record else "no training"
        )
        line = (
            f"  epoch {record['epoch']:>3}  {train}{val}  "
            f"{record['tokens_per_s'] / 1e3:.1f}k rows/s  {record['seconds']:.1f}s"
        )
        if args.no_progress:
            print(line, flush=True)
        else:
            bar[0].write(line)

    def on_run_end(run) -> None:
        bar[0].close()
        s = run_summary(run.records, metric=metric)
        print(
            f"{run.strategy} seed {run.seed}: val {metric} {s[f'val_{metric}']:.4g}, train loss "
            f"{s['train_loss']:.4g}, {s['epochs']:.2f} epochs, {s['steps']:,} steps, "
            f"{s['tokens_per_s'] / 1e3:.1f}k rows/s, {s['wall_seconds']:.1f} s wall "
            f"(stopped by {s['stop']})"
            + "".join(
                f"; final {name} {value}"
                for name, value in run.run_record.get("parameters", {}).items()
            ),
            flush=True,
        )
        if args.tensorboard and run.directory is not None:
            # The run's own directory name (regular-35-seed0): one TensorBoard run each.
            board = Path(args.tensorboard) / Path(run.directory).name
            write_metrics_file(out / run.directory / "metrics.jsonl", board)

    if args.tensorboard:
        check_available()
    try:
        comparison = run_comparison(
            data,
            config,
            model=model,
            train=run.train,
            objective=objective,
            out=out,
            on_run_start=on_run_start,
            on_step=on_step,
            on_epoch=on_epoch,
            on_run_end=on_run_end,
        )
    except KeyboardInterrupt:
        if bar[0] is not None:
            bar[0].close()
        # comparison.json is rewritten after every finished run: report those.
        done = load_comparison(out).runs if (out / "comparison.json").is_file() else []
        if done:
            write_report(load_comparison(out), out)
        print(
            f"tbptt compare: interrupted; {len(done)} finished run(s)"
            + (f", reported in {out / 'report.md'}" if done else ""),
            file=sys.stderr,
        )
        return 130
    finally:
        if bar[0] is not None:
            bar[0].close()
    for spec, reason in comparison.skipped.items():
        print(f"not run: {spec}: {reason}")
    paths = write_report(comparison, out)
    header, rows = table_rows(comparison)
    print()
    print("| " + " | ".join(header) + " |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print()
    for v in verdicts(comparison):
        print(f"- {v.claim} {v.outcome.upper()}: {v.text}")
    print()
    print(
        f"wrote {paths.markdown}, {paths.html}, {', '.join(p.name for p in paths.figures.values())}"
    )
    return 0
