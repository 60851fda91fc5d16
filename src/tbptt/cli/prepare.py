"""``tbptt prepare``: tokenize a text (or a directory of documents) once into a memory-mapped
token file that ``tbptt train --data DIR`` trains from without loading the corpus."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from tqdm import tqdm

from tbptt.cli.arguments import columns
from tbptt.data import NORMALIZERS, TOKENIZERS
from tbptt.data.config import DataConfig
from tbptt.data.prepared import OutputExists, prepare, prepare_series_file
from tbptt.errors import ConfigError, DataError

__all__ = ["prepare_parser", "prepare_command"]


def prepare_parser(sub=None) -> argparse.ArgumentParser:
    description = (
        "Tokenize a text file (or, with --documents, a directory of documents) into DIR: "
        "tokens.bin (the token ids, uint8/uint16/uint32 by vocabulary size), meta.json "
        "(vocabulary, counts, SHA-256) and, for documents, starts.bin. The input is read a "
        "block at a time (two passes), so it may be larger than memory. Train on it with "
        "tbptt train --data DIR; see docs/prepared.md."
    )
    if sub is None:
        p = argparse.ArgumentParser(prog="tbptt prepare", description=description)
    else:
        p = sub.add_parser(
            "prepare",
            help="tokenize a corpus once into a memory-mapped token file",
            description=description,
        )
    d = DataConfig()
    p.add_argument(
        "input",
        metavar="PATH",
        help="a text file, a directory of documents (--documents), or a time series (.csv, "
        ".npy, .npz, with --target)",
    )
    p.add_argument("--out", metavar="DIR", required=True, help="the prepared directory to write")
    p.add_argument(
        "--documents",
        action="store_true",
        default=None,
        help="PATH is a directory: every file under it is one document (the state resets "
        "where each starts)",
    )
    p.add_argument("--tokens", choices=TOKENIZERS, help=f"token level (default: {d.tokens})")
    p.add_argument(
        "--normalize",
        choices=NORMALIZERS,
        help="letters = lowercase letters, everything else one space; none = the text as it "
        "is (default: letters for The Time Machine, none for your file)",
    )
    p.add_argument(
        "--eos",
        action=argparse.BooleanOptionalAction,
        help="word level: each line end is the token <eos> (default: on for word level)",
    )
    p.add_argument(
        "--min-freq",
        type=int,
        metavar="N",
        help=f"tokens seen fewer than N times in training are <unk> (default: {d.min_freq})",
    )
    p.add_argument(
        "--max-vocab",
        type=int,
        metavar="N",
        help="keep the N - 1 most frequent tokens and <unk> (default: 0 = all)",
    )
    p.add_argument(
        "--valid-fraction",
        type=float,
        metavar="F",
        help=f"tail held out for validation (default: {d.valid_fraction}); it is laid out in "
        "memory for evaluation, 8 bytes a token",
    )
    g = p.add_argument_group("time series (read in memory once, stored as float32)")
    g.add_argument("--target", type=columns, metavar="COL[,COL]", help="the column(s) to forecast")
    g.add_argument(
        "--inputs", type=columns, metavar="COL[,COL]", help="input columns (default: the targets)"
    )
    g.add_argument("--horizon", type=int, metavar="H", help=f"steps ahead (default: {d.horizon})")
    g.add_argument("--series-id", metavar="COL", help="a column naming independent series")
    g.add_argument("--time-column", metavar="COL", help="the column labelling rows")
    g.add_argument(
        "--missing", choices=("error", "drop", "ffill"), help="missing cells (default: error)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        default=None,
        help="replace an earlier preparation in DIR (only the files tbptt prepare wrote there "
        "are removed; a DIR holding anything else is refused)",
    )
    p.add_argument("--no-progress", action="store_true", default=None, help="no progress bar")
    p.set_defaults(command=prepare_command)
    return p


def _data_config(args) -> DataConfig:
    names = ("tokens", "normalize", "eos", "min_freq", "max_vocab", "valid_fraction", "target")
    names += ("inputs", "horizon", "series_id", "time_column", "missing")
    given = {key: getattr(args, key) for key in names if getattr(args, key) is not None}
    where = {"documents": args.input} if args.documents else {"path": args.input}
    config = DataConfig(**where, **given)
    if problems := config.problems():  # an option the input's kind does not read: refused
        raise ConfigError("; ".join(problems), options=config.refused_options())
    return config.resolved()


class _Bars:
    """One tqdm bar per phase of the preparation (bytes read)."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bar = None
        self.phase = None

    def __call__(self, phase: str, read: int, total: int) -> None:
        if phase != self.phase:
            self.close()
            self.phase = phase
            self.bar = tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                dynamic_ncols=True,
                disable=not self.enabled,
                file=sys.stderr,
                desc=phase,
            )
        self.bar.update(read)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _flagged(error: OutputExists) -> DataError:
    """The library's refusal in the command line's words (its flag for ``overwrite``)."""
    return DataError(
        f"{error.out} already holds a prepared corpus; choose another --out, or pass "
        "--overwrite to replace it"
    )


def _series(args, config: DataConfig) -> int:
    start = time.perf_counter()
    try:
        meta = prepare_series_file(
            args.input,
            args.out,
            overwrite=bool(args.overwrite),
            **config.series_options(),
        )
    except OutputExists as e:
        raise _flagged(e) from None
    print(
        f"tbptt prepare: {meta['rows']:,} rows ({meta['train_rows']:,} training / "
        f"{meta['valid_rows']:,} validation pairs, {len(meta['input_columns'])} input(s), "
        f"{len(meta['target_columns'])} target(s), float32) in {time.perf_counter() - start:.1f} "
        f"s; train with: tbptt train --data {Path(args.out)}"
    )
    return 0


def prepare_command(args) -> int:
    """Prepare ``args.input`` into ``args.out``; prints one summary line (the metadata is in
    ``args.out/meta.json``)."""
    config = _data_config(args)
    if config.resolved_kind() == "series":
        return _series(args, config)
    bars = _Bars(enabled=not args.no_progress)
    start = time.perf_counter()
    try:
        meta = prepare(
            args.input,
            args.out,
            level=config.tokens,
            normalization=config.normalize,
            valid_fraction=config.valid_fraction,
            min_freq=config.min_freq,
            max_vocab=config.max_vocab,
            eos=bool(config.eos),
            documents=bool(args.documents),
            overwrite=bool(args.overwrite),
            progress=bars,
        )
    except OutputExists as e:
        raise _flagged(e) from None
    finally:
        bars.close()
    seconds = time.perf_counter() - start
    megabytes = meta["source"]["bytes"] / 1e6
    docs = f", {meta['documents']:,} documents" if meta["documents"] else ""
    if meta["skipped"]:
        docs += f"; skipped {', '.join(meta['skipped'])} (prepared by tbptt prepare, not documents)"
    print(
        f"tbptt prepare: {megabytes:,.1f} MB -> {meta['tokens']:,} {meta['level']} tokens "
        f"({meta['train_tokens']:,} training / {meta['valid_tokens']:,} validation{docs}), "
        f"vocabulary {len(meta['vocab']):,}, {meta['dtype']}, in {seconds:.1f} s "
        f"({megabytes / max(seconds, 1e-9):.1f} MB/s); train with: tbptt train --data "
        f"{Path(args.out)}"
    )
    return 0
