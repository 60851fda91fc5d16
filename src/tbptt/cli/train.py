"""``tbptt train``: flags -> :class:`~tbptt.train.RunConfig` -> data and model -> a
:class:`~tbptt.run.Run`, whose lines this verb prints."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import sys
import time
from pathlib import Path

import torch

from tbptt.cli.arguments import (
    STRATEGY_HELP,
    add_data_arguments,
    add_model_arguments,
    add_optimizer_arguments,
)
from tbptt.cli.common import (
    build_model,
    check_device,
    given_flags,
    model_config_for,
    with_recipe,
)
from tbptt.cli.outputs import closing_line, epoch_metrics, test_line
from tbptt.cli.resume import check_continues, configure
from tbptt.data.config import load_dataset
from tbptt.errors import CheckpointError
from tbptt.run import Run, check_same_data
from tbptt.threads import use_threads
from tbptt.train import RunConfig
from tbptt.train.build import model_title
from tbptt.train.checkpoint import RunLock, parse_interval
from tbptt.train.distributed import (
    Group,
    RankLost,
    check_divisible,
    environment_group,
    setup,
    shutdown,
)
from tbptt.truncation import parse_strategy


def train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a recurrent model with the gradient you choose",
        description="Train a recurrent model on text, a time series or a synthetic task; writes "
        "config, metrics, checkpoints and plots to --out.",
        epilog=STRATEGY_HELP,
        formatter_class=lambda prog: argparse.RawDescriptionHelpFormatter(prog, width=100),
    )
    g = p.add_argument_group("data")
    add_data_arguments(g)
    g.add_argument(
        "--documents",
        metavar="PATH",
        help="train on documents: a directory of text files (one document each), or one "
        "file cut at --separator; each stream resets its state where its documents start",
    )
    g.add_argument(
        "--separator",
        metavar="SEP",
        help="string that ends each document in --documents FILE (or --data FILE); "
        "escapes such as \\n are decoded, e.g. --separator '\\n\\n\\n'",
    )
    g = p.add_argument_group("model")
    add_model_arguments(g)
    g = p.add_argument_group("training")
    t = RunConfig().train
    g.add_argument("--strategy", metavar="SPEC", help=f"see below (default: {t.strategy})")
    g.add_argument("--epochs", type=int, help=f"(default: {t.epochs})")
    g.add_argument(
        "--max-steps",
        type=int,
        metavar="N",
        help="stop after N optimizer steps in all (the epoch under way ends there and is "
        "evaluated; default: 0 = no limit)",
    )
    add_optimizer_arguments(g)
    g.add_argument("--seed", type=int, help=f"(default: {t.seed})")
    g = p.add_argument_group("output")
    o = RunConfig().output
    g.add_argument("--out", metavar="DIR", help="run directory (default: runs/train-<time>)")
    g.add_argument(
        "--prefix", help="text: prefix for the generated sample (default: the validation opening)"
    )
    g.add_argument("--sample-length", type=int, help=f"(default: {o.sample_length})")
    g.add_argument(
        "--temperature",
        type=float,
        help=f"sampling temperature, 0 = greedy (default: {o.temperature})",
    )
    g.add_argument("--no-progress", action="store_true", default=None, help="no progress bar")
    g.add_argument(
        "--tensorboard",
        metavar="DIR",
        help="also write the metrics as TensorBoard scalars into DIR (needs tbptt[tensorboard])",
    )
    g = p.add_argument_group("checkpoints and resuming")
    c = RunConfig().checkpoint
    g.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run in DIR from its newest valid checkpoint, with its saved settings "
        "(--out DIR with the run's own flags does the same)",
    )
    g.add_argument(
        "--checkpoint-every",
        metavar="N|Ns|Nm|Nh",
        help="also checkpoint every N optimizer steps or every N seconds/minutes/hours; "
        f"'epoch': only at epoch ends and at the end (default: {c.every})",
    )
    g.add_argument(
        "--keep-checkpoints",
        type=int,
        metavar="N",
        help=f"keep the last N checkpoints in DIR/checkpoints (default: {c.keep})",
    )
    p.set_defaults(command=train_command)


def train_command(args) -> int:
    """Train (or continue) the run in its directory, holding the directory's lock throughout.

    An existing directory is locked before anything is read from it, so a second run
    there is refused at once; a new one is created and locked just before the first
    write, after every cheap check, so a mistake leaves no directory behind.
    """
    out = Path(args.resume or args.out or f"runs/train-{time.strftime('%Y%m%d-%H%M%S')}")
    # Under torchrun every rank runs this command; rank 0 alone locks and writes the run
    # directory and prints (tbptt.train.distributed).
    group = environment_group()
    leader = group is None or group.leader
    lock = RunLock(out)
    try:
        if out.is_dir() and leader:
            lock.acquire()
        with contextlib.nullcontext() if leader else contextlib.redirect_stdout(io.StringIO()):
            return _train(args, out, lock, group)
    except RankLost as e:  # another rank died: rank 0 says how to resume, in one line
        if not leader:
            return 2
        raise CheckpointError(
            f"{e}: torchrun --nproc-per-node {e.world} -m tbptt train --resume {out}"
        ) from None
    finally:
        lock.release()
        shutdown()


def _say(line: str) -> None:
    print(f"tbptt train: {line}", flush=True)


def _warn(line: str) -> None:
    print(f"tbptt train: {line}", file=sys.stderr, flush=True)


def _train(args, out: Path, lock: RunLock, group: Group | None) -> int:
    """Configure, load, train, then print the closing lines; an exit code."""
    run = _prepare(args, out, lock, group)
    try:
        run.open()
        if (line := run.resume_line()) is not None:
            _say(line)
        _say(run.header())
        epochs = run.config.train.epochs
        unit = "tok" if "token" in run.data.unit else "row"

        def epoch_line(record: dict) -> str:
            return (
                f"epoch {record['epoch']:>3}/{epochs}  {epoch_metrics(record, run.objective)}  "
                + (f"{record['tokens_per_s'] / 1e3:.1f}k {unit}/s  {record['seconds']:.1f}s")
            )

        result = run.train(on_epoch_line=epoch_line)
        if result.code:
            return result.code
        if not run.leader:
            return 0  # the outputs are rank 0's to write
        result = run.finish(result)
    finally:
        run.close()
    summary = result.summary
    if "tokens_per_s" in summary:  # an epoch was recorded
        print(closing_line(summary, run.objective, summary["baselines"], run.trainer.step))
    if "test_ppl" in summary:
        print(test_line(summary, run.data))
    if "sample" in summary:
        print(f"sample: {summary['sample']!r}")
    print(f"wrote {', '.join(str(p) for p in result.written)}")
    if result.problem:
        _warn(f"error: {result.problem} (flags: --lr, --clip)")
    return result.code


def _prepare(args, out: Path, lock: RunLock, group: Group | None) -> Run:
    """Every check that needs no run directory, the data and the model; nothing written."""
    config, found = configure(args, out)
    # Validate everything cheap before touching data, so mistakes are reported at once.
    config.check()
    strategy = parse_strategy(config.train.strategy)
    config = config.replace(train={"strategy": strategy.spec})
    parse_interval(config.checkpoint.every)
    check_device(config.train.device)
    if config.output.threads:
        use_threads(config.output.threads)  # the user's choice: never revised
    if group is not None:  # every rank refuses alike (one line each), before joining the group
        check_divisible(config.train.batch_size, group.world)
        group = setup(config.train.device)
        if torch.device(config.train.device).type == "cuda":  # one GPU per rank
            config = config.replace(train={"device": f"cuda:{group.local_rank}"})
    if found is not None and args.resume:  # the flags against the run, before any data is read
        check_continues(config, found, resume=True, out=out)
    # The text defaults fixed, the options the data's kind reads (a preparation's own).
    config = dataclasses.replace(config, data=config.data.resolved().applied())
    data = load_dataset(config.data, seed=config.train.seed)
    if found is None or not args.resume:  # the data's recipe and sizes (a resumed run: saved)
        config = with_recipe(config, data, given_flags(args))
        strategy = parse_strategy(config.train.strategy)
        model = model_config_for(data, config.model, given=given_flags(args))
        config = dataclasses.replace(config, model=model)
    if found is not None:  # the data first (a vocabulary says more than its size)
        check_same_data(found, data)
    if found is not None and not args.resume:  # --out DIR: the flags must describe that run
        check_continues(config, found, resume=False, out=out)
    torch.manual_seed(config.train.seed)
    model = build_model(config, data)
    if group is not None:  # the same weights on every rank; dropout masks of their own
        torch.manual_seed(config.train.seed + group.rank)
    return Run(
        out,
        model=model,
        data=data,
        config=config,
        strategy=strategy,
        group=group,
        title=model_title(config, data),
        echo=_say,
        warn=_warn,
        lock=lock,
        continue_hint=f"continue with: tbptt train --resume {out}",
    )
