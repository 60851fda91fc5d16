"""``tbptt evaluate`` and ``tbptt generate``: measure a trained run, or continue a text with it.

``evaluate`` scores a split exactly as the trainer scores its validation split
(the same columns, state carried window to window, a next-token split's first
token predicted from the last training token), so on the run's own data it
reproduces the run's final validation metrics.
"""

from __future__ import annotations

import argparse
import json

import torch

from tbptt.analysis import load_model
from tbptt.cli.common import build_objective, check_device, format_metric
from tbptt.data import TextData
from tbptt.errors import ConfigError, DataError
from tbptt.train.checkpoint.atomic import write_atomically
from tbptt.train.evaluate import evaluate, evaluation_batch
from tbptt.train.generate import check_sampling, generate

__all__ = ["evaluate_parser", "evaluate_command", "generate_parser", "generate_command"]

CHECKPOINT_HELP = "run directory or checkpoint.pt of tbptt train"


def _checkpoint_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", metavar="RUN_DIR", required=True, help=CHECKPOINT_HELP)
    p.add_argument(
        "--device", metavar="NAME", help="where to run the model (default: the run's device)"
    )


def evaluate_parser(sub) -> None:
    p = sub.add_parser(
        "evaluate",
        help="a trained run's metrics on its validation split or on another text",
        description="Score a split of a run's data (or another text, with the run's "
        "vocabulary) exactly as the trainer scores its validation split.",
    )
    _checkpoint_arguments(p)
    p.add_argument(
        "--data",
        metavar="FILE",
        help="evaluate this file instead of the run's data (a text is read with the run's "
        "vocabulary; tokens it lacks are <unk>)",
    )
    p.add_argument("--split", choices=("valid", "train"), default="valid", help="(default: valid)")
    p.add_argument(
        "--batch-size", type=int, metavar="N", help="columns B (default: the run's eval batch size)"
    )
    p.add_argument(
        "--window", type=int, metavar="N", help="rows per forward (default: the run's eval window)"
    )
    p.add_argument("--json", metavar="FILE", help="also write the metrics to FILE as JSON")
    p.set_defaults(command=evaluate_command)


def generate_parser(sub) -> None:
    p = sub.add_parser(
        "generate",
        help="continue a text with a trained language model",
        description="Continue a prefix with a run trained on text: greedy (temperature 0) "
        "or sampled, optionally kept to the top-k tokens and to the top-p nucleus.",
    )
    _checkpoint_arguments(p)
    p.add_argument(
        "--prefix",
        metavar="TEXT",
        help="the text to continue (default: the run's prefix, else the validation split's "
        "first 10 tokens)",
    )
    p.add_argument("--length", type=int, default=100, metavar="N", help="tokens (default: 100)")
    p.add_argument(
        "--temperature", type=float, default=0.0, metavar="T", help="0: greedy (default: 0)"
    )
    p.add_argument("--top-k", type=int, metavar="K", help="sample among the K most likely tokens")
    p.add_argument(
        "--top-p", type=float, metavar="P", help="sample within the nucleus of probability P"
    )
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed (default: 0)")
    p.set_defaults(command=generate_command)


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"Expected {name} >= 1, got {value}")


def _device(args, config) -> torch.device:
    return check_device(args.device or config.train.device)


def evaluate_metrics(args) -> dict:
    """The metrics record of ``tbptt evaluate`` (what ``--json`` writes)."""
    _positive("--batch-size", args.batch_size)
    _positive("--window", args.window)
    model, data, config = load_model(args.checkpoint, data_path=args.data)
    device = _device(args, config)
    objective = build_objective(config, data)
    train = data.train_split()
    split = train if args.split == "train" else data.valid_split()
    if len(split) == 0 or (not split.next_token and split.pairs == 0):
        raise DataError(f"the {args.split} split of {args.data or 'the run'} has no rows to score")
    # As the trainer: a next-token validation split's first token is predicted from the
    # last training token; the training split has nothing before it.
    context = train.inputs[-1] if args.split == "valid" and split.next_token else None
    batch_size = args.batch_size or config.train.eval_batch_size
    batch = evaluation_batch(split, batch_size, context=context).to(device)
    sums = evaluate(
        model.to(device),
        batch,
        objective=objective,
        window=args.window or config.train.eval_window,
    )
    return {
        "checkpoint": str(args.checkpoint),
        "data": args.data or config.data.path or config.data.documents or config.data.task,
        "split": args.split,
        "objective": objective.name,
        "rows": int(sums.get("count", 0)),
        **objective.summary(sums),
    }


def _line(record: dict) -> str:
    rows = record["rows"]
    if record["objective"] == "lm":
        return (
            f"perplexity {format_metric(record['ppl'])}, loss {format_metric(record['loss'], digits=4)} "
            f"nats, bits per token {format_metric(record['bpt'], digits=4)} on {rows} tokens"
        )
    skip = {"checkpoint", "data", "split", "objective", "rows"}
    metrics = ", ".join(
        f"{k} {format_metric(v, digits=4)}" for k, v in record.items() if k not in skip
    )
    return f"{metrics} on {rows} rows"


def evaluate_command(args) -> int:
    record = evaluate_metrics(args)
    print(_line(record))
    if args.json:
        write_atomically(args.json, json.dumps(record, indent=2) + "\n")
    return 0


def generate_command(args) -> int:
    check_sampling(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p)
    if args.length < 0:
        raise ConfigError(f"Expected --length >= 0, got {args.length}")
    model, data, config = load_model(args.checkpoint)
    if not isinstance(data, TextData):
        raise DataError(
            f"{args.checkpoint} was trained on {type(data).__name__}, not text; generate "
            "continues text only (use tbptt evaluate to measure it)"
        )
    text = args.prefix if args.prefix is not None else config.output.prefix
    prefix = data.encode(text) if text else data.valid[:0]
    if len(prefix) == 0 or bool((prefix == 0).all()):  # nothing known: the run's own text
        prefix = data.valid[:10] if len(data.valid) >= 10 else data.train[:10]
    model = model.to(_device(args, config))
    tokens = generate(
        model,
        prefix,
        args.length,
        temperature=args.temperature,
        generator=torch.Generator().manual_seed(args.seed),
        top_k=args.top_k,
        top_p=args.top_p,
    )
    print(data.decode(tokens))
    return 0
