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
from tbptt.atomic import write_atomically
from tbptt.cli.common import build_objective, check_device, format_metric
from tbptt.errors import ConfigError, DataError
from tbptt.train.evaluate import evaluate, evaluation_batch
from tbptt.train.generate import check_sampling, forecast, stream_tokens

__all__ = ["evaluate_parser", "evaluate_command", "generate_parser", "generate_command"]

CHECKPOINT_HELP = "run directory or checkpoint.pt of tbptt train"
# generate's longest continuation (tokens or forecast steps); it is printed as it is drawn.
MAX_LENGTH = 1_000_000
STREAM_CHUNK = 200  # tokens decoded and printed at a time


def _checkpoint_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", metavar="RUN|CHECKPOINT", help=CHECKPOINT_HELP)
    p.add_argument("--checkpoint", metavar="RUN_DIR", help="the same, as a flag")
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
    p.add_argument(
        "--split",
        choices=("valid", "train", "test"),
        help="(default: valid; test for --data on a run trained on --train/--valid files, "
        "whose --data is read as the test file)",
    )
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
        help="continue a text with a trained language model, or forecast a series",
        description="Continue a prefix with a run trained on text: greedy (temperature 0) "
        "or sampled, optionally kept to the top-k tokens and to the top-p nucleus. For a "
        "forecasting run: the next --length steps after a history (CSV on stdout).",
    )
    _checkpoint_arguments(p)
    p.add_argument(
        "--prefix",
        metavar="TEXT",
        help="the text to continue (default: the run's prefix, else the validation split's "
        "first 10 tokens)",
    )
    p.add_argument(
        "--length",
        type=int,
        metavar="N",
        help="tokens (default: 100), or steps to forecast (default: the run's horizon)",
    )
    p.add_argument(
        "--num-samples", type=int, default=1, metavar="N", help="samples to draw (default: 1)"
    )
    p.add_argument(
        "--history",
        metavar="FILE",
        help="forecasting run: the table whose last series is continued (default: the run's data)",
    )
    p.add_argument(
        "--temperature", type=float, default=0.0, metavar="T", help="0: greedy (default: 0)"
    )
    p.add_argument("--top-k", type=int, metavar="K", help="sample among the K most likely tokens")
    p.add_argument(
        "--top-p", type=float, metavar="P", help="sample within the nucleus of probability P"
    )
    p.add_argument("--seed", type=int, default=0, help="the sampler's seed (default: 0)")
    p.set_defaults(command=generate_command)


def _run_path(args) -> str:
    """The run named positionally or by --checkpoint (one of them, or both the same)."""
    given = [p for p in (args.run, args.checkpoint) if p is not None]
    if not given:
        raise ConfigError(
            "Expected a run directory or checkpoint.pt, got none; e.g. "
            f"tbptt {getattr(args, 'verb', None) or 'evaluate'} runs/my-run"
        )
    if len(given) == 2 and given[0] != given[1]:
        raise ConfigError(
            f"Expected one run, got {given[0]} and --checkpoint {given[1]}; name it once"
        )
    return given[0]


def _positive(name: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise ConfigError(f"Expected {name} >= 1, got {value}")


def _device(args, config) -> torch.device:
    return check_device(args.device or config.train.device)


def evaluate_metrics(args) -> dict:
    """The metrics record of ``tbptt evaluate`` (what ``--json`` writes)."""
    _positive("--batch-size", args.batch_size)
    _positive("--window", args.window)
    args.checkpoint = _run_path(args)
    model, data, config = load_model(args.checkpoint, data_path=args.data)
    device = _device(args, config)
    objective = build_objective(config, data)
    reads_test = args.data is not None and config.data.test_file == args.data
    name = args.split or ("test" if reads_test else "valid")
    train = data.train_split()
    if name == "test":
        split = data.test_split()
        if split is None:
            raise DataError(
                f"{args.checkpoint} has no test file; name one with --data FILE (a run trained "
                "on --train/--valid files) or score --split valid"
            )
    else:
        split = train if name == "train" else data.valid_split()
    if len(split) == 0 or (not split.next_token and split.pairs == 0):
        raise DataError(f"the {name} split of {args.data or 'the run'} has no rows to score")
    # As the trainer: a next-token split's first token is predicted from the token before
    # it (validation follows training, a test file follows validation); the training split
    # has nothing before it.
    context = None
    if split.next_token and name != "train":
        valid = data.valid_split()
        before = valid if name == "test" and len(valid) else train
        context = before.inputs[-1]
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
        "data": args.data
        or config.data.path
        or config.data.documents
        or config.data.train_file
        or config.data.task,
        "split": name,
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
    _positive("--num-samples", args.num_samples)
    if args.length is not None and not 0 <= args.length <= MAX_LENGTH:
        raise ConfigError(
            f"Expected --length between 0 and {MAX_LENGTH:,}, got {args.length:,}; a longer "
            "text is many runs of generate (each continues a --prefix)"
        )
    if not -(2**63) <= args.seed < 2**63:
        raise ConfigError(f"Expected --seed to fit in 64 bits (|seed| < 2**63), got {args.seed}")
    args.checkpoint = _run_path(args)
    model, data, config = load_model(args.checkpoint)
    model = model.to(_device(args, config))
    if "predictions" in data.outputs:
        return _forecast_command(args, model, data, config)
    if args.history is not None:
        raise ConfigError("--history is the input of a forecasting run; a text run takes --prefix")
    if "sample" not in data.outputs:
        raise DataError(
            f"{args.checkpoint} was trained on {data.describe().get('kind', 'data')}, not text "
            "or a time series; generate continues text and forecasts series only (use tbptt "
            "evaluate to measure it)"
        )
    text = args.prefix if args.prefix is not None else config.output.prefix
    prefix = data.encode(text) if text else data.opening(0)
    if len(prefix) == 0 or bool((prefix == 0).all()):  # nothing known: the run's own text
        prefix = data.opening(10)
    # One generator for all samples: sample 1 is the single sample of the same seed.
    generator = torch.Generator().manual_seed(args.seed)
    for i in range(args.num_samples):
        if args.num_samples > 1:
            print(f"[sample {i + 1}/{args.num_samples}]")
        tokens = stream_tokens(
            model,
            prefix,
            100 if args.length is None else args.length,
            temperature=args.temperature,
            generator=generator,
            top_k=args.top_k,
            top_p=args.top_p,
        )
        _print_streamed(tokens, data)
    return 0


def _print_streamed(tokens, data) -> None:
    """Print tokens as text as they are drawn, a chunk at a time (a line end at the end)."""
    chunk: list[int] = []
    text_so_far = ""
    for token in tokens:
        chunk.append(token)
        if len(chunk) == STREAM_CHUNK:
            text_so_far = _flush(chunk, data, text_so_far)
            chunk = []
    _flush(chunk, data, text_so_far)
    print(flush=True)


def _flush(chunk: list[int], data, before: str) -> str:
    text = data.decode(chunk) if chunk else ""
    if before and text and not before.endswith("\n"):
        text = data.separator + text  # the space between two words of two chunks
    print(text, end="", flush=True)
    return text or before


def _forecast_command(args, model, data, config) -> int:
    """Print the forecast of the next steps after the history's last series, as CSV."""
    sampling = [
        flag
        for flag, value, default in (
            ("--prefix", args.prefix, None),
            ("--num-samples", args.num_samples, 1),
            ("--temperature", args.temperature, 0.0),
            ("--top-k", args.top_k, None),
            ("--top-p", args.top_p, None),
        )
        if value != default
    ]
    if sampling:
        raise ConfigError(
            f"{', '.join(sampling)} apply to text runs; a forecasting run continues --history "
            "FILE (default: its data) with one point forecast: drop them"
        )
    history = data.history(args.history)
    dtype = next(model.parameters()).dtype
    steps = data.horizon if args.length is None else args.length
    forecasts = forecast(
        model,
        history.to(dtype),
        steps,
        horizon=data.horizon,
        feedback=data.input_columns == data.target_columns,
    )  # (steps, D) standardized
    values = data.targets_scaler.inverse(forecasts.double())  # (steps, D) in the data's units
    print("step," + ",".join(data.target_columns))
    for j, row in enumerate(values.tolist()):
        print(f"+{j + 1}," + ",".join(f"{v:.6g}" for v in row))
    return 0
