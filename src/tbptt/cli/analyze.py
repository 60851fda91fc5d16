"""``tbptt analyze``: the gradient laboratory (linear closed forms, Jacobians, spectra, bias)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from tbptt.analysis import (
    NORMS,
    bias_lab,
    encode_training_text,
    jacobian_lab,
    linear_lab,
    load_model,
    spectrum_lab,
)
from tbptt.data import NORMALIZERS, TOKENIZERS, load_corpus, prepare_text
from tbptt.errors import ConfigError
from tbptt.models import KINDS, ModelConfig, RecurrentLM

EPILOG = """\
sub-verbs (each writes <name>.json, <name>.png and <name>.md into --out):
  linear     linear RNNs with prescribed spectral radii: closed-form gradients vs the
             library's, and the log-slope of ||dh_T/dh_t|| vs log rho
  jacobian   ||dh_T/dh_t|| against T - t on real windows, with its fitted rate
  spectrum   eigenvalues and singular values of the recurrent blocks
  bias       cosine, bias, variance and MSE of regular:K and randomized:K against the
             exact gradient, for each K

The model is a checkpoint of `tbptt train` (--checkpoint RUN_DIR_OR_PT) or a fresh one
(--model, --hidden-size, ...); data windows come from the training part of the text.
"""


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
    g = p.add_argument_group("data")
    g.add_argument(
        "--data",
        metavar="PATH",
        help="a UTF-8 text file or cache directory (default: "
        "the checkpoint's, else The Time Machine)",
    )
    g.add_argument("--tokens", choices=TOKENIZERS, default="char")
    g.add_argument("--normalize", choices=NORMALIZERS, default="letters")
    g.add_argument("--valid-fraction", type=float, default=0.1)
    if with_model:
        g = p.add_argument_group("model (a checkpoint, or a fresh model)")
        g.add_argument("--checkpoint", metavar="PATH", help="run directory or checkpoint.pt")
        g.add_argument("--model", choices=KINDS, default="gru", help="(default: gru)")
        g.add_argument("--hidden-size", type=int, default=64, help="(default: 64)")
        g.add_argument("--num-layers", type=int, default=1, help="(default: 1)")
        g.add_argument("--embedding-size", type=int, default=32, help="0 = one-hot (default: 32)")
        g.add_argument("--spectral-norm", type=float, default=0.0, metavar="C")
    g = p.add_argument_group("run")
    g.add_argument("--out", metavar="DIR", help="output directory (default: runs/analyze-<time>)")
    g.add_argument("--seed", type=int, default=0)
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
    q.add_argument("--draws", type=int, default=20, help="per random strategy (default: 20)")
    q.set_defaults(command=analyze_command)


def _model_and_tokens(args):
    """(model, training tokens, description of the source) from a checkpoint or fresh."""
    if getattr(args, "checkpoint", None):
        model, itos, resolved = load_model(args.checkpoint)
        data = resolved.get("data", {})
        text, path = load_corpus(args.data or data.get("path"))
        tokens = encode_training_text(
            text,
            itos,
            level=data.get("tokens", args.tokens),
            normalization=data.get("normalize", args.normalize),
            valid_fraction=data.get("valid_fraction", args.valid_fraction),
        )
        return model, tokens, f"checkpoint {args.checkpoint}, data {path}"
    text, path = load_corpus(args.data)
    data = prepare_text(
        text, level=args.tokens, normalization=args.normalize, valid_fraction=args.valid_fraction
    )
    if not hasattr(args, "model"):
        return None, data.train, f"data {path}"
    torch.manual_seed(args.seed)
    model = RecurrentLM(
        ModelConfig(
            vocab_size=len(data.vocab),
            kind=args.model,
            hidden_size=args.hidden_size,
            num_layers=args.num_layers,
            embedding_size=args.embedding_size,
            dropout=0.0,
            spectral_norm=args.spectral_norm,
        )
    )
    return model, data.train, f"fresh model (seed {args.seed}), data {path}"


def analyze_command(args) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.out or f"runs/analyze-{time.strftime('%Y%m%d-%H%M%S')}")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create output directory {out}: {e.strerror}") from None
    start = time.perf_counter()
    model, tokens, source = _model_and_tokens(args)
    name = args.analysis
    print(f"tbptt analyze {name}: {source}")
    if name == "linear":
        vocab_size = int(tokens.max()) + 1
        r = linear_lab(
            tokens,
            vocab_size,
            out,
            hidden_size=args.hidden_size,
            length=args.length,
            jacobian_length=args.jacobian_length,
            streams=args.streams,
            radii=args.radii,
            seed=args.seed,
        )
        for row in r["radii"]:
            print(
                f"rho {row['rho']:g}: closed form vs library max |diff| "
                f"{row['closed_form_max_abs_diff']:.2e}; fitted rate {row['fit']['rate']:.5f}, "
                f"log-slope {row['fit']['slope']:.5f} vs log rho {row['log_rho']:.5f} "
                f"(relative error {row['slope_relative_error']:.2e})"
            )
    elif name == "jacobian":
        r = jacobian_lab(
            model,
            tokens,
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
            f"{'strategy':<16}{'cosine':>10}{'rel. bias':>12}{'noise floor':>13}{'rel. var':>11}{'rel. MSE':>11}"
        )

        def show(res):
            print(
                f"{res['spec']:<16}{res['cosine']:>10.6f}{res['relative_bias']:>12.3e}"
                f"{res['noise_floor']:>13.1e}{res['relative_variance']:>11.2e}{res['relative_mse']:>11.2e}",
                flush=True,
            )

        bias_lab(
            model,
            tokens,
            out,
            ks=args.ks,
            families=families,
            length=args.length,
            streams=args.streams,
            warmup=args.warmup,
            offset=args.offset,
            draws=args.draws,
            seed=args.seed,
            on_result=show,
        )
    print(
        f"wrote {out / (name + '.md')}, {out / (name + '.json')} and plots ({time.perf_counter() - start:.1f}s)"
    )
    return 0
