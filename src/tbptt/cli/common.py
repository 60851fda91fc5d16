"""Flags shared by the verbs that build a corpus and a model (train, compare)."""

from __future__ import annotations

from tbptt.data import NORMALIZERS, TOKENIZERS
from tbptt.models import KINDS, ModelConfig

__all__ = ["add_text_arguments", "add_model_arguments", "model_config_from_args"]


def add_text_arguments(g) -> None:
    """--data, --tokens, --normalize, --valid-fraction."""
    g.add_argument(
        "--data",
        metavar="PATH",
        help="a UTF-8 text file, or a directory to cache The "
        "Time Machine in (default: $TBPTT_DATA_DIR or ~/.cache/tbptt)",
    )
    g.add_argument(
        "--tokens", choices=TOKENIZERS, default="char", help="token level (default: char)"
    )
    g.add_argument(
        "--normalize",
        choices=NORMALIZERS,
        default="letters",
        help="letters: lowercase letters, everything else one space (the lecture's); "
        "none: raw text (default: letters)",
    )
    g.add_argument(
        "--valid-fraction",
        type=float,
        default=0.1,
        help="tail held out for validation (default: 0.1)",
    )


def add_model_arguments(g) -> None:
    """--model, --hidden-size, --num-layers, --embedding-size, --dropout, zoneout, spectral norm."""
    d = ModelConfig(vocab_size=2)
    g.add_argument(
        "--model",
        choices=KINDS,
        default=d.kind,
        help=f"cell (default: {d.kind}; linear = identity RNN)",
    )
    g.add_argument(
        "--hidden-size", type=int, default=d.hidden_size, help=f"(default: {d.hidden_size})"
    )
    g.add_argument(
        "--num-layers", type=int, default=d.num_layers, help=f"(default: {d.num_layers})"
    )
    g.add_argument(
        "--embedding-size",
        type=int,
        default=d.embedding_size,
        help=f"0 = one-hot inputs (default: {d.embedding_size})",
    )
    g.add_argument("--dropout", type=float, default=d.dropout, help=f"(default: {d.dropout})")
    g.add_argument(
        "--zoneout",
        type=float,
        default=d.zoneout,
        metavar="Z",
        help="zoneout rate of the hidden state (Krueger et al. 2016; default: 0 = off)",
    )
    g.add_argument(
        "--zoneout-cell",
        type=float,
        default=None,
        metavar="Z",
        help="LSTM cell-state zoneout rate (default: the same as --zoneout)",
    )
    g.add_argument(
        "--spectral-norm",
        type=float,
        default=d.spectral_norm,
        metavar="C",
        help="bound the spectral norm of every recurrent block by C, exactly at every step "
        "(e.g. 1.0; default: 0 = off)",
    )


def model_config_from_args(args, vocab_size: int) -> ModelConfig:
    """The :class:`ModelConfig` the flags of :func:`add_model_arguments` describe."""
    return ModelConfig(
        vocab_size=vocab_size,
        kind=args.model,
        hidden_size=args.hidden_size,
        num_layers=args.num_layers,
        embedding_size=args.embedding_size,
        dropout=args.dropout,
        spectral_norm=args.spectral_norm,
        zoneout=args.zoneout,
        zoneout_cell=args.zoneout_cell,
    )
