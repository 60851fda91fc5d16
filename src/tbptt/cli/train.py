"""``tbptt train``: train a recurrent language model under a truncation strategy."""

from __future__ import annotations

import codecs
import json
import math
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from tbptt.cli.common import add_model_arguments, add_text_arguments, model_config_from_args
from tbptt.cli.resume import (
    Stopped,
    StopRequest,
    data_digest,
    restore_metrics,
    resumable,
    resume_arguments,
    saved_arguments,
)
from tbptt.data import load_corpus, prepare_text
from tbptt.data.documents import prepare_documents, read_documents
from tbptt.errors import ConfigError
from tbptt.models import RecurrentLM
from tbptt.report import plot_training
from tbptt.train import (
    OPTIMIZERS,
    MetricsWriter,
    TrainConfig,
    Trainer,
    generate,
    read_metrics,
    unigram_perplexity,
)
from tbptt.train.checkpoint import (
    LATEST,
    Checkpointer,
    parse_interval,
)
from tbptt.truncation import parse_strategy

STRATEGY_HELP = """\
strategy spec: full | full:N | regular:K | randomized:K[,alpha=A] | k1k2:K1,K2 | variable:K
               (full and full:N take ",checkpoint" or ",checkpoint=S": full:checkpoint)
  full              exact BPTT over each column's whole stream, one step per epoch
  full:N            exact BPTT over independent N-step sequences (fresh state each)
  full:checkpoint   the same gradient with activation checkpointing over sqrt(T)-step
                    segments (memory O(sqrt T), one extra forward); checkpoint=S: S steps
  regular:K         detach the state every K steps, one step per window
  randomized:K      unbiased randomized truncation, mean window K (cut prob. 1/K,
                    surviving edges' gradients scaled by 1/(1 - 1/K))
  randomized:K,alpha=A   Tallec & Ollivier's polynomial schedule (A > 2, e.g. 4)
  k1k2:K1,K2        TBPTT(k1, k2): a step every K1 steps; the losses of those K1 steps
                    backpropagate to K2 steps before the window's end (K1 <= K2)
  variable:K        AWD-LSTM variable length: base K (p 0.95) or K/2, length
                    max(5, int(N(base, 5))), learning rate times length / K
"""


def train_parser(sub) -> None:
    p = sub.add_parser(
        "train",
        help="train a recurrent language model with the gradient you choose",
        description="Train a recurrent language model; writes config, metrics, checkpoint and plots to --out.",
        epilog=STRATEGY_HELP,
        formatter_class=lambda prog: __import__("argparse").RawDescriptionHelpFormatter(
            prog, width=100
        ),
    )
    t = TrainConfig()
    g = p.add_argument_group("data")
    add_text_arguments(g)
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
    g.add_argument(
        "--sampling",
        choices=("sequential", "random"),
        default=t.sampling,
        help="sequential: state carries across windows; random: random offsets, fresh state",
    )
    g = p.add_argument_group("model")
    add_model_arguments(g)
    g = p.add_argument_group("training")
    g.add_argument(
        "--strategy", default=t.strategy, metavar="SPEC", help=f"see below (default: {t.strategy})"
    )
    g.add_argument(
        "--batch-size",
        type=int,
        default=t.batch_size,
        help=f"parallel streams B (default: {t.batch_size})",
    )
    g.add_argument("--epochs", type=int, default=t.epochs, help=f"(default: {t.epochs})")
    g.add_argument(
        "--optimizer", choices=OPTIMIZERS, default=t.optimizer, help=f"(default: {t.optimizer})"
    )
    g.add_argument("--lr", type=float, default=t.lr, help=f"learning rate (default: {t.lr})")
    g.add_argument(
        "--lr-schedule",
        choices=("cosine", "constant"),
        default=t.lr_schedule,
        help=f"cosine: decay to 0 over the epochs (default: {t.lr_schedule})",
    )
    g.add_argument("--weight-decay", type=float, default=t.weight_decay)
    g.add_argument("--momentum", type=float, default=t.momentum, help="SGD momentum (default: 0)")
    g.add_argument(
        "--clip",
        type=float,
        default=t.clip,
        help=f"global gradient-norm clip, 0 = off (default: {t.clip})",
    )
    g.add_argument(
        "--nonfinite",
        choices=("stop", "skip"),
        default=t.nonfinite,
        help="on a NaN/inf loss or gradient: stop (default) or skip the step",
    )
    g.add_argument("--seed", type=int, default=t.seed, help=f"(default: {t.seed})")
    g.add_argument("--device", default=t.device, help="cpu, cuda, cuda:1 ... (default: cpu)")
    g.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    g = p.add_argument_group("output")
    g.add_argument("--out", metavar="DIR", help="run directory (default: runs/train-<time>)")
    g.add_argument("--prefix", default="time traveller", help="prefix for the generated sample")
    g.add_argument("--sample-length", type=int, default=120)
    g.add_argument(
        "--temperature", type=float, default=0.7, help="sampling temperature, 0 = greedy"
    )
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g = p.add_argument_group("checkpoints and resuming")
    g.add_argument(
        "--resume",
        metavar="DIR",
        help="continue the run in DIR from its newest valid checkpoint, with its saved settings "
        "(--out DIR with the run's own flags does the same)",
    )
    g.add_argument(
        "--checkpoint-every",
        metavar="N|Ns|Nm|Nh",
        default="10m",
        help="also checkpoint every N optimizer steps or every N seconds/minutes/hours; "
        "'epoch': only at epoch ends and at the end (default: 10m)",
    )
    g.add_argument(
        "--keep-checkpoints",
        type=int,
        default=3,
        metavar="N",
        help="keep the last N checkpoints in DIR/checkpoints (default: 3)",
    )
    # Every flag defaults to None, so a flag given explicitly is always known (even when its
    # value is the default); the defaults themselves are filled in by train_command.
    defaults = {a.dest: a.default for a in p._actions if a.dest not in ("help", "resume", "out")}
    p.set_defaults(**dict.fromkeys(defaults), command=train_command, flag_defaults=defaults)


def _check_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}; expected cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r} asked for, but this torch sees no CUDA device; use --device cpu"
        )
    return device


def train_command(args) -> int:
    defaults = args.flag_defaults
    given = {key for key in defaults if getattr(args, key) is not None}
    if getattr(args, "resume", None):
        # the run's saved flags, plus the few given flags that may change
        args = resume_arguments(args, given=given, known=set(defaults))
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    # Validate everything cheap before touching data, so mistakes are reported at once.
    every_steps, every_seconds = parse_interval(args.checkpoint_every)
    if args.keep_checkpoints < 1:
        raise ConfigError(f"--keep-checkpoints must be at least 1, got {args.keep_checkpoints}")
    strategy = parse_strategy(args.strategy)
    _check_device(args.device)
    config = TrainConfig(
        strategy=strategy.spec,
        batch_size=args.batch_size,
        epochs=args.epochs,
        optimizer=args.optimizer,
        lr=args.lr,
        lr_schedule=args.lr_schedule,
        weight_decay=args.weight_decay,
        momentum=args.momentum,
        clip=args.clip,
        sampling=args.sampling,
        nonfinite=args.nonfinite,
        seed=args.seed,
        device=args.device,
    )
    config.check()
    if args.threads:
        torch.set_num_threads(args.threads)

    data, path = _load_data(args)
    torch.manual_seed(args.seed)
    model_config = model_config_from_args(args, len(data.vocab))
    model = RecurrentLM(model_config)

    out = Path(args.out or f"runs/train-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create output directory {out}: {e.strerror}") from None
    resolved = {
        "data": {
            "path": str(path),
            "tokens": args.tokens,
            "normalize": args.normalize,
            "valid_fraction": args.valid_fraction,
            "vocab_size": len(data.vocab),
            "train_tokens": len(data.train),
            "valid_tokens": len(data.valid),
            "documents": getattr(data, "documents", None),
        },
        "model": model_config.to_dict(),
        "train": config.to_dict(),
    }
    data_sha1 = data_digest(data)
    found = resumable(out, args, resolved, data.vocab.itos, data_sha1)
    (out / "config.json").write_text(json.dumps(resolved, indent=2) + "\n")
    if found is not None:
        restore_metrics(out / "metrics.jsonl", found[1])
        metrics = MetricsWriter(out / "metrics.jsonl", append=True)
        metrics.records = read_metrics(out / "metrics.jsonl")
    else:
        metrics = MetricsWriter(out / "metrics.jsonl")
    trainer = Trainer(
        model,
        data.train_split(),
        data.valid_split(),
        config,
        metrics=metrics,
    )
    if found is not None:
        trainer.load_state_dict(found[1]["trainer"])
        print(
            f"tbptt train: resuming {out} from {found[0]} (epoch {trainer.epoch + 1}, "
            f"step {trainer.step})"
        )
    baseline = (
        unigram_perplexity(data.train, data.valid, len(data.vocab)) if len(data.valid) else math.nan
    )

    n_params = sum(p.numel() for p in model.parameters())
    print(
        f"tbptt train: {args.model} {args.num_layers}x{args.hidden_size} ({n_params:,} parameters), "
        f"{strategy.spec}, {len(data.train):,} training / {len(data.valid):,} validation "
        f"{args.tokens} tokens, vocabulary {len(data.vocab)}; run directory {out}"
    )

    tokens_per_epoch = trainer.stream.steps * trainer.stream.batch_size
    bar = tqdm(
        total=tokens_per_epoch * config.epochs,
        initial=min(
            tokens_per_epoch * config.epochs,
            tokens_per_epoch * trainer.epoch + trainer.stream.position * trainer.stream.batch_size,
        ),
        unit="tok",
        unit_scale=True,
        dynamic_ncols=True,
        disable=args.no_progress,
        file=sys.stderr,
        desc="train",
    )
    last_loss = [math.nan]

    checkpointer = Checkpointer(
        out, every_steps=every_steps, every_seconds=every_seconds, keep=args.keep_checkpoints
    )
    checkpointer.mark(trainer.step)
    stop = StopRequest()

    def checkpoint():
        payload = {
            "resolved": resolved,
            "vocab": data.vocab.itos,
            "data_sha1": data_sha1,
            "args": saved_arguments(args),
            "metrics_lines": len(metrics.records),
            "metrics": [json.dumps(r) for r in metrics.records],  # the file's lines so far
            "trainer": trainer.state_dict(),
        }
        return checkpointer.save(payload, trainer.step)

    def on_step(record):
        # A window just ended: the trainer's state is consistent, so this is where
        # interval checkpoints are written and a stop request is honoured.
        if checkpointer.due(record["step"]) or stop.signum:
            checkpoint()
        stop.check()
        bar.update(record["tokens"])
        last_loss[0] = record["loss"]
        if record["step"] % 10 == 0:
            bar.set_postfix(
                loss=f"{record['loss']:.3f}", grad=f"{record['grad_norm']:.2f}", refresh=False
            )

    def on_epoch(record):
        val = f"  val ppl {record['val_ppl']:.3f}" if "val_ppl" in record else ""
        line = (
            f"epoch {record['epoch']:>3}/{config.epochs}  train ppl {record['train_ppl']:.3f}{val}  "
            f"{record['tokens_per_s'] / 1e3:.1f}k tok/s  {record['seconds']:.1f}s"
        )
        if args.no_progress:
            print(line, flush=True)
        else:
            bar.write(line)
        checkpoint()
        if trainer.epoch < config.epochs:  # after the last epoch, finish the outputs instead
            stop.check()

    try:
        with stop.installed():
            trainer.fit(on_step=on_step, on_epoch=on_epoch)
    except Stopped as e:
        bar.close()
        metrics.close()
        print(
            f"tbptt train: stopped by {e.name} at epoch {trainer.epoch + 1}, step {trainer.step}; "
            f"checkpoint in {out / 'checkpoint.pt'}; continue with: tbptt train --resume {out}",
            file=sys.stderr,
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
    plot_training(metrics.records, out / "curves.png", title=f"{args.model}, {strategy.spec}")

    epochs = [r for r in metrics.records if r["event"] == "epoch"]
    summary = {"epochs": trainer.epoch, "steps": trainer.step, "unigram_ppl": baseline}
    if epochs:
        last = epochs[-1]
        summary.update(
            train_ppl=last["train_ppl"],
            val_ppl=last.get("val_ppl", math.nan),
            tokens_per_s=sum(r["tokens"] for r in epochs)
            / max(1e-9, sum(r["seconds"] for r in epochs)),
        )
    prefix_ids = data.encode(args.prefix)
    if len(prefix_ids) == 0 or bool((prefix_ids == 0).all()):
        prefix_ids = data.valid[:10] if len(data.valid) >= 10 else data.train[:10]
    gen = torch.Generator().manual_seed(args.seed)
    sample_ids = generate(
        trainer.model, prefix_ids, args.sample_length, temperature=args.temperature, generator=gen
    )
    summary["sample"] = data.decode(prefix_ids.tolist()) + data.separator + data.decode(sample_ids)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")

    if epochs:
        print(
            f"validation perplexity {summary['val_ppl']:.3f} (unigram baseline {baseline:.3f}), "
            f"train perplexity {summary['train_ppl']:.3f}, {summary['tokens_per_s'] / 1e3:.1f}k tokens/s, "
            f"{trainer.step} optimizer steps"
        )
    print(f"sample: {summary['sample']!r}")
    print(f"wrote {out / 'metrics.jsonl'}, {out / 'curves.png'}, {out / 'checkpoint.pt'}")
    return 0


def _load_data(args):
    """(TextData or DocumentData, path) from --data / --documents / --separator."""
    source = args.documents or (args.data if args.separator else None)
    if source is None:
        text, path = load_corpus(args.data)
        data = prepare_text(
            text,
            level=args.tokens,
            normalization=args.normalize,
            valid_fraction=args.valid_fraction,
        )
        return data, path
    separator = codecs.decode(args.separator, "unicode_escape") if args.separator else None
    documents = read_documents(source, separator=separator)
    data = prepare_documents(
        documents,
        level=args.tokens,
        normalization=args.normalize,
        valid_fraction=args.valid_fraction,
    )
    return data, Path(source)
