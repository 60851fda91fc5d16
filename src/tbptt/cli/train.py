"""``tbptt train``: train a recurrent model on any stream under a truncation strategy."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from tbptt.atomic import remove_debris
from tbptt.cli.common import (
    STRATEGY_HELP,
    add_data_arguments,
    add_model_arguments,
    add_optimizer_arguments,
    build_model,
    build_objective,
    check_device,
    given_flags,
    model_config_for,
)
from tbptt.cli.outputs import (
    closing_line,
    epoch_metrics,
    resume_line,
    sample,
    write_predictions,
)
from tbptt.cli.resume import (
    Stopped,
    StopRequest,
    check_continues,
    check_same_data,
    configure,
    restore_metrics,
)
from tbptt.cli.text import prepared_options, test_line, test_metrics, text_reading
from tbptt.data.config import data_digest, load_dataset
from tbptt.data.dataset import TextData
from tbptt.data.prepared import PreparedText
from tbptt.errors import CheckpointError, NonFiniteError
from tbptt.integrations.tensorboard import MirroredMetrics, TensorBoardWriter
from tbptt.report import plot_training
from tbptt.train import MetricsWriter, Objective, RunConfig, Trainer, read_metrics
from tbptt.train.checkpoint import (
    LATEST,
    Checkpointer,
    RunLock,
    latest_checkpoint,
    parse_interval,
    replacing,
    write_atomically,
)
from tbptt.train.distributed import (
    DistributedTrainer,
    Group,
    check_divisible,
    environment_group,
    setup,
    shutdown,
)
from tbptt.truncation import Strategy, parse_strategy


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


# A long run writes millions of step lines: in memory, the trainer's writer keeps the
# epoch records and this many of the newest step records; the plot reads at most about
# PLOT_STEPS step records back from the file (evenly thinned).
METRICS_TAIL = 1000
PLOT_STEPS = 20_000

# The files a run writes into its directory through a temporary name (their debris,
# after a kill, is removed once the run holds the directory's lock).
RUN_FILES = ("config.json", "metrics.jsonl", "summary.json", "predictions.csv", "curves.png",
             "predictions.png")  # fmt: skip


def train_command(args) -> int:
    """Train (or continue) the run in its directory, holding the directory's lock throughout.

    An existing directory is locked before anything is read from it, so a second run
    there is refused at once; a new one is created and locked just before the first
    write, after every cheap check, so a mistake leaves no empty directory behind.
    """
    out = Path(args.resume or args.out or f"runs/train-{time.strftime('%Y%m%d-%H%M%S')}")
    lock = RunLock(out)
    # Under torchrun every rank runs this command; rank 0 alone locks and writes the run
    # directory and prints (tbptt.train.distributed).
    group = environment_group()
    leader = group is None or group.leader
    try:
        if out.is_dir() and leader:
            _lock(lock)
        with contextlib.nullcontext() if leader else contextlib.redirect_stdout(io.StringIO()):
            return _train(args, out, lock, group)
    finally:
        lock.release()
        shutdown()


def _lock(lock: RunLock) -> None:
    if not lock.held:
        lock.acquire()
        remove_debris(lock.directory, RUN_FILES)


@dataclasses.dataclass
class _Run:
    """What the stages of one ``tbptt train`` share: its directory, settings and data."""

    out: Path
    config: RunConfig
    strategy: Strategy
    data: object  # a dataset of tbptt.data.config.load_dataset
    objective: Objective
    digest: str
    found: tuple[Path, dict] | None  # the checkpoint continued (None: a fresh run)
    group: Group | None
    what: str = ""  # the model in words, for the header line and the plot's title

    @property
    def leader(self) -> bool:
        return self.group is None or self.group.leader


def _train(args, out: Path, lock: RunLock, group: Group | None = None) -> int:
    """Configure, load, train, then write the outputs; an exit code."""
    run, model = _prepare(args, out, group)
    trainer, metrics = _start(run, model, lock)
    _announce(run, trainer)
    stopped = _fit(run, trainer, metrics)
    if stopped is not None:
        return stopped
    return _finish(run, trainer) if run.leader else 0  # the outputs are rank 0's to write


def _prepare(args, out: Path, group: Group | None) -> tuple[_Run, torch.nn.Module]:
    """Every check that needs no run directory, the data and the model; nothing written."""
    config, found = configure(args, out)
    # Validate everything cheap before touching data, so mistakes are reported at once.
    config.check()
    strategy = parse_strategy(config.train.strategy)
    config = config.replace(train={"strategy": strategy.spec})
    parse_interval(config.checkpoint.every)
    check_device(config.train.device)
    if config.output.threads:
        torch.set_num_threads(config.output.threads)
    if group is not None:  # every rank refuses alike (one line each), before joining the group
        check_divisible(config.train.batch_size, group.world)
        group = setup(config.train.device)
        if torch.device(config.train.device).type == "cuda":  # one GPU per rank
            config = config.replace(train={"device": f"cuda:{group.local_rank}"})

    if found is not None and args.resume:  # the flags against the run, before any data is read
        check_continues(config, found, resume=True, out=out)
    config = dataclasses.replace(config, data=config.data.resolved())  # the text defaults, fixed
    data = load_dataset(config.data, seed=config.train.seed)
    if isinstance(data, PreparedText):  # tokenized by tbptt prepare: the options are the data's
        config = dataclasses.replace(config, data=prepared_options(config, data, args))
    if found is None or not args.resume:  # the data's sizes (a resumed run has them saved)
        given = given_flags(args)
        config = dataclasses.replace(
            config, model=model_config_for(data, config.model, given=given)
        )
    objective = build_objective(config, data)
    digest = data_digest(data)
    if found is not None:
        check_same_data(found, data, digest)
        if not args.resume:  # --out DIR: the flags must describe the run found there
            check_continues(config, found, resume=False, out=out)
    torch.manual_seed(config.train.seed)
    model = build_model(config, data)
    if group is not None:  # the same weights on every rank; dropout masks of their own
        torch.manual_seed(config.train.seed + group.rank)
    run = _Run(out, config, strategy, data, objective, digest, found, group)
    return run, model


def _start(run: _Run, model: torch.nn.Module, lock: RunLock):
    """Take the run directory (rank 0), write config.json, open the metrics, build the
    trainer and load the checkpoint continued; (trainer, metrics writer)."""
    out, config, found, data = run.out, run.config, run.found, run.data
    if run.leader:
        _lock(lock)  # creates the directory
    if run.leader and found is None and latest_checkpoint(out) is not None:
        raise CheckpointError(
            f"another run wrote a checkpoint into {out} while this one started; "
            "run the command again to continue it, or use another --out"
        )
    if run.leader:
        write_atomically(
            out / "config.json",
            json.dumps({**config.to_dict(), "dataset": data.describe()}, indent=2) + "\n",
        )
    if found is not None and run.leader:
        restore_metrics(out / "metrics.jsonl", found[1])
    metrics = MetricsWriter(
        out / "metrics.jsonl" if run.leader else None, append=found is not None, tail=METRICS_TAIL
    )
    if config.output.tensorboard and run.leader:
        # A resumed run drops the events its first run wrote after the checkpoint.
        resumed_at = found[1]["trainer"]["step"] + 1 if found is not None else None
        board = TensorBoardWriter(config.output.tensorboard, purge_step=resumed_at)
        metrics = MirroredMetrics(metrics, board)
    trainer = (DistributedTrainer if run.group else Trainer)(
        model,
        data.train_split(),
        data.valid_split(),
        config.train,
        strategy=run.strategy,
        objective=run.objective,
        metrics=metrics,
        **({"group": run.group} if run.group else {}),
    )
    if found is not None:
        trainer.load_state_dict(found[1]["trainer"])
        print(f"tbptt train: {resume_line(out, found[0], trainer, config.train.epochs)}")
    return trainer, metrics


def _announce(run: _Run, trainer: Trainer) -> None:
    """The header line: model, parameters, strategy, objective, data sizes, directory."""
    config, data = run.config, run.data
    n_params = sum(p.numel() for p in trainer.model.parameters())
    rows_name = f"{config.data.tokens} tokens" if isinstance(data, TextData) else "rows"
    size = f", vocabulary {data.shape.vocab_size}" if data.shape.vocab_size else ""
    test_split = data.test_split() if isinstance(data, TextData) else None
    if test_split is not None:
        size = f" / {len(test_split):,} test{size}"
    if isinstance(data, TextData):
        size += ", " + text_reading(config.data)
    m = config.model
    run.what = (
        "influence balancing"
        if getattr(data, "model", None) == "influence"
        else (f"{m.kind} {m.num_layers}x{m.hidden_size}")
    )
    print(
        f"tbptt train: {run.what} ({n_params:,} parameters), {run.strategy.spec}, "
        f"{run.objective.name}, {len(data.train_split()):,} training / "
        f"{len(data.valid_split()):,} validation {rows_name}{size}; run directory {run.out}"
    )


def _fit(run: _Run, trainer: Trainer, metrics) -> int | None:
    """Train to the last epoch under a progress bar, checkpointing on schedule, at each
    epoch's end and at the end; the exit code when a signal stopped it, else None."""
    out, config, data, leader = run.out, run.config, run.data, run.leader
    epochs = config.train.epochs
    unit = "tok" if isinstance(data, TextData) else "row"
    rows_per_epoch = trainer.stream.steps * config.train.batch_size  # all ranks' rows
    bar = tqdm(
        total=rows_per_epoch * epochs,
        initial=min(
            rows_per_epoch * epochs,
            rows_per_epoch * trainer.epoch + trainer.stream.position * config.train.batch_size,
        ),
        unit=unit,
        unit_scale=True,
        dynamic_ncols=True,
        disable=not config.output.progress or not leader,
        file=sys.stderr,
        desc="train",
    )
    every_steps, every_seconds = parse_interval(config.checkpoint.every)
    checkpointer = Checkpointer(
        out, every_steps=every_steps, every_seconds=every_seconds, keep=config.checkpoint.keep
    )
    checkpointer.mark(trainer.step)
    stop = StopRequest()

    def checkpoint():
        payload = {
            "config": config.to_dict(),
            "vocab": data.vocab.itos if isinstance(data, TextData) else None,
            "data_sha1": run.digest,
            # What metrics.jsonl holds now (its length and SHA-256), not its lines: a
            # checkpoint's size must not grow with the run.
            "metrics_position": metrics.position(),
            "trainer": trainer.state_dict(),  # distributed: gathered from every rank
        }
        return checkpointer.save(payload, trainer.step) if leader else None

    def agreed(due: bool) -> tuple[bool, int]:
        # Every rank must checkpoint and stop at the same window: rank 0's clock decides
        # when a checkpoint is due, a signal on any rank stops them all.
        if run.group is None:
            return due, stop.signum
        flag, signum = run.group.max([float(due and leader), float(stop.signum)])
        return bool(flag), int(signum)

    def on_step(record):
        # A window just ended: the trainer's state is consistent, so this is where
        # interval checkpoints are written and a stop request is honoured.
        due, signum = agreed(checkpointer.due(record["step"]))
        if due or signum:
            checkpoint()
        if signum:
            raise Stopped(signum)
        bar.update(record["tokens"])
        if record["step"] % 10 == 0:
            bar.set_postfix(
                loss=f"{record['loss']:.3f}", grad=f"{record['grad_norm']:.2f}", refresh=False
            )

    def on_epoch(record):
        line = f"epoch {record['epoch']:>3}/{epochs}  {epoch_metrics(record, run.objective)}  " + (
            f"{record['tokens_per_s'] / 1e3:.1f}k {unit}/s  {record['seconds']:.1f}s"
        )
        if not config.output.progress:
            print(line, flush=True)
        else:
            bar.write(line)
        checkpoint()
        if trainer.epoch < epochs:  # after the last epoch, finish the outputs instead
            if signum := agreed(False)[1]:
                raise Stopped(signum)

    try:
        with stop.installed():
            trainer.fit(on_step=on_step, on_epoch=on_epoch)
    except Stopped as e:
        bar.close()
        metrics.close()
        print(  # (on rank 0: every rank stopped at this step)
            f"tbptt train: stopped by {e.name} at epoch {trainer.epoch + 1}, step {trainer.step}; "
            f"checkpoint in {out / 'checkpoint.pt'}; continue with: tbptt train --resume {out}",
            file=sys.stderr if leader else io.StringIO(),
        )
        return 128 + e.signum
    except KeyboardInterrupt:  # a second signal: abort now, mid-window, without a checkpoint
        bar.close()
        last = checkpointer.last_path or (out / LATEST if (out / LATEST).is_file() else None)
        print(
            f"tbptt train: aborted at epoch {trainer.epoch + 1}, step {trainer.step}; "
            + (
                f"the last checkpoint is {last}; continue with: tbptt train --resume {out}"
                if last
                else "no checkpoint was written"
            ),
            file=sys.stderr,
        )
        return 130
    finally:
        bar.close()
        metrics.close()
    checkpoint()
    return None


def _finish(run: _Run, trainer: Trainer) -> int:
    """Rank 0's outputs: curves.png, summary.json (test metrics, a sample, predictions)
    and the closing lines."""
    out, config, data, objective = run.out, run.config, run.data, run.objective
    baselines = data.baselines()
    metric = "ppl" if objective.name == "lm" else "loss"
    history = read_metrics(out / "metrics.jsonl", max_steps=PLOT_STEPS)
    with replacing(out / "curves.png", keep_suffix=True) as tmp:
        plot_training(history, tmp, title=f"{run.what}, {run.strategy.spec}", metric=metric)
    written = [out / "metrics.jsonl", out / "curves.png", out / "checkpoint.pt"]

    records = [r for r in history if r["event"] == "epoch"]
    summary = {"epochs": trainer.epoch, "steps": trainer.step, "objective": objective.name}
    summary["baselines"] = baselines
    if "unigram" in baselines:
        summary["unigram_ppl"] = baselines["unigram"]["ppl"]
    if records:
        last = records[-1]
        summary.update({k: v for k, v in last.items() if k.startswith(("train_", "val_"))})
        summary["tokens_per_s"] = sum(r["tokens"] for r in records) / max(
            1e-9, sum(r["seconds"] for r in records)
        )
    test_split = data.test_split() if isinstance(data, TextData) else None
    if test_split is not None and len(test_split) > 0:
        summary.update(test_metrics(trainer.model, data, config, objective))
    if isinstance(data, TextData) and config.output.sample_length > 0:
        try:
            summary["sample"] = sample(trainer.model, data, config)
        except NonFiniteError as e:  # a model with non-finite outputs: no sample, the rest kept
            summary["sample_error"] = str(e)
            print(f"tbptt train: no sample: {e}", file=sys.stderr)
    if hasattr(data, "valid_actual") and len(data.valid_split()) > 0:
        written += write_predictions(trainer.model, data, out, config)
    write_atomically(out / "summary.json", json.dumps(summary, indent=2) + "\n")

    if records:
        print(closing_line(summary, objective, baselines, trainer.step))
    if "test_ppl" in summary:
        print(test_line(summary, data))
    if "sample" in summary:
        print(f"sample: {summary['sample']!r}")
    print(f"wrote {', '.join(str(p) for p in written)}")
    return 0
