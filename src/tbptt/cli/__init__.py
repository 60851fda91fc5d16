"""The ``tbptt`` command: parses flags, builds objects, prints. No logic of its own.

Each verb is a ``<verb>_parser(subparsers)`` + ``<verb>_command(args)`` pair, so
tests call the CLI in-process through :func:`main`.
"""

from __future__ import annotations

import argparse
import sys

from tbptt.cli.analyze import analyze_parser
from tbptt.cli.common import flag_hint
from tbptt.cli.compare import compare_parser
from tbptt.cli.env import env_parser
from tbptt.cli.evaluate import evaluate_parser, generate_parser
from tbptt.cli.prepare import prepare_parser
from tbptt.cli.train import train_parser
from tbptt.errors import TbpttError

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line and exit 2, like every other user mistake
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tbptt",
        description="Train recurrent models on long sequences with the gradient you choose.",
    )
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)
    train_parser(sub)
    prepare_parser(sub)
    compare_parser(sub)
    analyze_parser(sub)
    evaluate_parser(sub)
    generate_parser(sub)
    env_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "verb", None):
        parser.print_help()
        return 2
    try:
        return int(args.command(args) or 0)
    except TbpttError as e:
        print(f"tbptt {args.verb}: error: {e}{flag_hint(e.options)}", file=sys.stderr)
        return 2
