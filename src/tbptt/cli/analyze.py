"""``tbptt analyze``: the gradient laboratory (linear closed forms, Jacobians, spectra, bias)."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from tbptt.analysis import NORMS, bias_lab, jacobian_lab, linear_lab, load_model, spectrum_lab
from tbptt.cli.arguments import (
    add_data_arguments,
    add_model_arguments,
)
from tbptt.cli.common import (
    FLAG_KEYS,
    build_model,
    build_objective,
    given_flags,
    model_config_for,
    run_config_from_args,
)
from tbptt.data.config import load_dataset
from tbptt.errors import ConfigError
from tbptt.models import ModelConfig
from tbptt.threads import use_threads
from tbptt.train import RunConfig

EPILOG = """\
sub-verbs (each writes <name>.json, <name>.png and <name>.md into --out):
  linear     linear RNNs with prescribed spectral radii: closed-form gradients vs the
             library's, and the log-slope of ||dh_T/dh_t|| vs log rho (text; without
             --data, a synthetic token stream from --seed, nothing downloaded)
  jacobian   ||dh_T/dh_t|| against T - t on real windows, with its fitted rate
  spectrum   eigenvalues and singular values of the recurrent blocks
  bias       cosine, bias, variance and MSE of regular:K and randomized:K against the
             exact gradient, for each K

The model is a checkpoint of `tbptt train` (--checkpoint RUN_DIR_OR_PT: its data, model
and objective) or a fresh one (--model, --hidden-size, ...); data windows come from the
training split of the text, time series (--data x.csv --target COL) or task (--task
adding:T=50), with its resets and loss mask; bias uses the data's objective.
"""

# `analyze linear` without a data source: uniform ids over the size of The Time Machine's
# character vocabulary (the closed form holds for any inputs; nothing to download).
SYNTHETIC_VOCAB_SIZE = 28

# A fresh model is a small GRU (tbptt train's default model is larger).
FRESH_MODEL = ModelConfig(kind="gru", hidden_size=64, num_layers=1, embedding_size=32, dropout=0.0)


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,5,10, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers like 1,5,10, got {text!r}")
    return values


def _floats(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.9,1.1, got {text!r}") from None
    if not values or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected positive numbers like 0.9,1.1, got {text!r}")
    return values


def _common(with_model: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("data (default: the checkpoint's, else The Time Machine)")
    add_data_arguments(g)
    if with_model:
        g = p.add_argument_group("model (a checkpoint, or a fresh model)")
        g.add_argument(
            "--checkpoint",
            metavar="PATH",
            help="run directory or checkpoint.pt of tbptt train (its data, model and "
            "objective; --data may point at its moved data file)",
        )
        add_model_arguments(g, FRESH_MODEL)
    g = p.add_argument_group("run")
    g.add_argument("--out", metavar="DIR", help="output directory (default: runs/analyze-<time>)")
    g.add_argument(
        "--seed",
        type=int,
        default=0,
        help="a fresh model's weights and task data, and the random draws (default: 0)",
    )
    g.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default: 1; the measurements are many small products, "
        "which extra threads slow down)",
    )
    return p


def _window(p: argparse.ArgumentParser, length: int, streams: int) -> None:
    g = p.add_argument_group("window")
    g.add_argument("--length", type=int, default=length, help=f"steps T (default: {length})")
    g.add_argument("--streams", type=int, default=streams, help=f"windows B (default: {streams})")
    g.add_argument(
        "--warmup", type=int, default=50, help="steps run before the window (default: 50)"
    )
    g.add_argument("--offset", type=int, default=0, help="first row in the stream (default: 0)")


def analyze_parser(sub) -> None:
    fmt = lambda prog: argparse.RawDescriptionHelpFormatter(prog, width=100)  # noqa: E731
    p = sub.add_parser(
        "analyze",
        help="the gradient laboratory: closed forms, Jacobians, spectra, bias and variance",
        description="Measure gradients: exact vs each strategy's, Jacobian norms, spectra.",
        epilog=EPILOG,
        formatter_class=fmt,
    )
    verbs = p.add_subparsers(dest="analysis", metavar="SUB-VERB", parser_class=type(p))
    verbs.required = True

    q = verbs.add_parser(
        "linear",
        parents=[_common(False)],
        formatter_class=fmt,
        help="closed-form linear RNN gradients and rho^k rates",
    )
    q.add_argument("--hidden-size", type=int, default=16, help="(default: 16)")
    q.add_argument("--radii", type=_floats, default=[0.9, 1.1], help="(default: 0.9,1.1)")
    q.add_argument("--length", type=int, default=50, help="closed-form window T (default: 50)")
    q.add_argument("--jacobian-length", type=int, default=120, help="(default: 120)")
    q.add_argument("--streams", type=int, default=4, help="(default: 4)")
    q.set_defaults(command=analyze_command)

    q = verbs.add_parser(
        "jacobian", parents=[_common()], formatter_class=fmt, help="||dh_T/dh_t|| against T - t"
    )
    _window(q, 100, 4)
    q.add_argument("--norm", choices=NORMS, default="spectral", help="(default: spectral)")
    q.set_defaults(command=analyze_command)

    q = verbs.add_parser(
        "spectrum", parents=[_common()], formatter_class=fmt, help="eigenvalues of W_hh blocks"
    )
    q.set_defaults(command=analyze_command)

    q = verbs.add_parser(
        "bias",
        parents=[_common()],
        formatter_class=fmt,
        help="bias and variance of each strategy's gradient against K",
    )
    _window(q, 200, 4)
    q.add_argument("--ks", type=_ints, default=[1, 5, 10, 35, 100], help="(default: 1,5,10,35,100)")
    q.add_argument(
        "--families",
        default="regular,randomized",
        help="strategy names, each run as NAME:K (default: regular,randomized)",
    )
    q.add_argument(
        "--strategies",
        nargs="+",
        default=[],
        metavar="SPEC",
        help="more strategies, measured as given, e.g. rtrl uoro snap:1 k1k2:10,35",
    )
    q.add_argument("--draws", type=int, default=20, help="per random strategy (default: 20)")
    q.set_defaults(command=analyze_command)


def _source(run: RunConfig) -> str:
    d = run.data
    return f"task {d.task}" if d.task else f"data {d.documents or d.path or 'The Time Machine'}"


def _fresh_only_flags(args) -> list[str]:
    """The data, model and objective flags given; a checkpoint brings its own (but --data)."""
    sections = ("data", "model", "objective")
    return sorted(
        "--" + dest.replace("_", "-")
        for dest in given_flags(args)
        if FLAG_KEYS[dest].split(".")[0] in sections and dest != "data"
    )


def _inputs(args):
    """(model or None, dataset, run configuration, objective or None, description of the source)
    from a checkpoint or fresh."""
    if getattr(args, "checkpoint", None):
        if extra := _fresh_only_flags(args):
            raise ConfigError(
                f"--checkpoint brings its run's data, model and objective; drop {', '.join(extra)} "
                "(only --data may be given, to point at the run's moved data file)"
            )
        model, data, run = load_model(args.checkpoint, data_path=args.data)
        return model, data, run, build_objective(run, data), f"checkpoint {args.checkpoint}, "
    run = run_config_from_args(args, base=RunConfig(model=FRESH_MODEL))
    run.check()
    data = load_dataset(run.data, seed=run.train.seed)
    if not hasattr(args, "model"):  # linear: the data only
        return None, data, run, None, ""
    if "highway" not in given_flags(args):
        # The laboratory studies the recurrent net: a highway's gradient is the same under
        # every strategy (docs/forecasting.md), and a fresh forecaster's head starts at zero.
        run = run.replace(model={"highway": 0})
    run = dataclasses.replace(run, model=model_config_for(data, run.model, given=given_flags(args)))
    objective = build_objective(run, data)
    torch.manual_seed(run.train.seed)
    model = build_model(run, data)
    return model, data, run, objective, f"fresh model (seed {run.train.seed}), "


def _linear_without_data(args) -> bool:
    """``analyze linear`` given no data source: it runs on a synthetic stream."""
    return args.analysis == "linear" and not ({"data", "task", "documents"} & given_flags(args))


def _linear_synthetic(args, out: Path) -> dict:
    print(
        f"tbptt analyze linear: synthetic tokens (uniform over {SYNTHETIC_VOCAB_SIZE} ids, "
        f"seed {args.seed}; give --data FILE for a text's)"
    )
    return linear_lab(None, SYNTHETIC_VOCAB_SIZE, out, **_linear_sizes(args))


def _linear_sizes(args) -> dict:
    return {
        "hidden_size": args.hidden_size,
        "length": args.length,
        "jacobian_length": args.jacobian_length,
        "streams": args.streams,
        "radii": args.radii,
        "seed": args.seed,
    }


def _print_linear(r: dict) -> None:
    for row in r["radii"]:
        print(
            f"rho {row['rho']:g}: closed form vs library max |diff| "
            f"{row['closed_form_max_abs_diff']:.2e}; fitted rate {row['fit']['rate']:.5f}, "
            f"log-slope {row['fit']['slope']:.5f} vs log rho {row['log_rho']:.5f} "
            f"(relative error {row['slope_relative_error']:.2e})"
        )


def analyze_command(args) -> int:
    if args.threads:
        use_threads(args.threads)  # the user's choice: never revised
    out = Path(args.out or f"runs/analyze-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create output directory {out}: {e.strerror}") from None
    start = time.perf_counter()
    name = args.analysis
    if _linear_without_data(args):
        _print_linear(_linear_synthetic(args, out))
        return _wrote(out, name, start)
    model, data, run, objective, where = _inputs(args)
    source = _source(run)
    if name == "linear" and data.vocabulary() is None:
        kind = {"series": "a time series", "task": "a synthetic task"}.get(
            data.describe().get("kind"), "not text"
        )
        raise ConfigError(
            f"analyze linear is a closed form for a one-hot linear RNN on text, and {source} is "
            f"{kind}; use analyze jacobian or bias on it"
        )
    split = data.train_split()
    objective_note = f"; objective {objective.name}" if objective and objective.name != "lm" else ""
    print(f"tbptt analyze {name}: {where}{source}{objective_note}")
    if name == "linear":
        tokens = split.inputs
        vocab_size = int(tokens.max()) + 1
        _print_linear(linear_lab(tokens, vocab_size, out, **_linear_sizes(args)))
    elif name == "jacobian":
        r = jacobian_lab(
            model,
            split,
            out,
            length=args.length,
            streams=args.streams,
            warmup=args.warmup,
            offset=args.offset,
            norm=args.norm,
        )
        fit = r["fit"]
        print(
            f"||dh_T/dh_t|| ({args.norm}): fitted rate {fit['rate']:.4f} per step "
            f"(log-slope {fit['slope']:.4f}); reference spectral radius {r['reference_radius']:.4f}"
        )
    elif name == "spectrum":
        r = spectrum_lab(model, out)
        for b in r["blocks"]:
            print(
                f"layer {b['layer']} {b['gate']:<9} spectral radius {b['spectral_radius']:.4f}  "
                f"spectral norm {b['spectral_norm']:.4f}"
            )
    else:
        families = [f.strip() for f in args.families.split(",") if f.strip()]
        print(
            f"{'strategy':<16}{'cosine':>10}{'rel. bias':>12}{'noise floor':>13}{'rel. var':>11}"
            f"{'rel. MSE':>11}{'ms/step':>10}"
        )

        def show(res):
            print(
                f"{res['spec']:<16}{res['cosine']:>10.6f}{res['relative_bias']:>12.3e}"
                f"{res['noise_floor']:>13.1e}{res['relative_variance']:>11.2e}{res['relative_mse']:>11.2e}"
                f"{1e3 * res['seconds_per_step']:>10.3g}",
                flush=True,
            )

        bias_lab(
            model,
            split,
            out,
            objective=objective,
            ks=args.ks,
            families=families,
            strategies=args.strategies,
            length=args.length,
            streams=args.streams,
            warmup=args.warmup,
            offset=args.offset,
            draws=args.draws,
            seed=args.seed,
            on_result=show,
        )
    return _wrote(out, name, start)


def _wrote(out: Path, name: str, start: float) -> int:
    print(
        f"wrote {out / (name + '.md')}, {out / (name + '.json')} and plots ({time.perf_counter() - start:.1f}s)"
    )
    return 0
