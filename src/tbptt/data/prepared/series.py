"""A time series prepared once: the standardized float32 rows of
:func:`~tbptt.data.series.prepare_series` in memory-mapped files, the rest in ``meta.json``.

::

    DIR/
      inputs.bin    (N, F) float32, the training pairs' inputs then the validation pairs'
      targets.bin   (N, D) float32, their targets (standardized, h steps ahead)
      starts.bin    (N,) one byte a row, 1 where a series starts (several series only)
      meta.json     kind "series"; the columns, horizon, scalers, row counts, and what the
                    validation report needs (labels, persistence forecast, actual values)

The table itself is read in memory (``prepare_series``), so a series file must fit in
memory once, when it is prepared; training then reads the rows from the maps.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from tbptt.data.prepared.directory import Writer, check_target, write_prepared
from tbptt.data.prepared.format import (
    FORMAT,
    INPUTS,
    MASK,
    STARTS,
    TARGETS,
    VERSION,
    file_problems,
)
from tbptt.data.series import SeriesData, Standardizer, prepare_series
from tbptt.data.streams import StreamData
from tbptt.errors import DataError

__all__ = [
    "INPUTS",
    "TARGETS",
    "prepare_series_file",
    "load_series",
    "series_files",
    "series_problems",
]


def prepare_series_file(
    path: str | Path, out: str | Path, *, overwrite: bool = False, **options
) -> dict:
    """:func:`~tbptt.data.series.prepare_series` of ``path`` (``options``: its keywords),
    written to the prepared directory ``out``; returns its metadata.

    Raises:
        DataError: the table is refused, or ``out`` exists (see :func:`prepare`) or cannot
            be written.
    """
    out = Path(out).expanduser()
    check_target(out, overwrite, Path(path))
    data = prepare_series(path, **options)
    n_train, n_valid = len(data.train), len(data.valid)

    def fill(tmp: Path) -> dict:
        files = {}
        for name, key in ((INPUTS, "inputs"), (TARGETS, "targets")):
            writer = Writer(tmp / name)
            for split in (data.train, data.valid):
                writer.write(getattr(split, key).numpy().astype(np.float32))  # (N, F) / (N, D)
            files[name] = writer.close()
        if data.train.starts is not None:
            writer = Writer(tmp / STARTS)
            for split in (data.train, data.valid):
                writer.write(split.starts.numpy())
            files[STARTS] = writer.close()
        if data.train.mask is not None or data.valid.mask is not None:
            writer = Writer(tmp / MASK)
            for split in (data.train, data.valid):
                mask = (
                    split.mask
                    if split.mask is not None
                    else torch.ones(len(split), dtype=torch.bool)
                )
                writer.write(mask.numpy())
            files[MASK] = writer.close()
        return {
            "format": FORMAT,
            "version": VERSION,
            "kind": "series",
            "dtype": "float32",
            "rows": n_train + n_valid,
            "train_rows": n_train,
            "valid_rows": n_valid,
            "input_columns": list(data.input_columns),
            "target_columns": list(data.target_columns),
            "horizon": data.horizon,
            "inputs_scaler": data.inputs_scaler.to_dict(),
            "targets_scaler": data.targets_scaler.to_dict(),
            "series": data.series,
            "time_column": data.time_column,  # found by itself when not given: the labels' name
            "valid_index": data.valid_index,
            "valid_persistence": data.valid_persistence.tolist(),
            "valid_actual": data.valid_actual.tolist(),
            "train_target_mean": list(data.train_target_mean),
            **data.reading_meta(),
            "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
            "source": {"path": str(Path(path).expanduser().resolve())},
            "files": files,
        }

    return write_prepared(out, overwrite, fill, Path(path))


def _numbers(value, length: int) -> bool:
    """Whether ``value`` is a list of ``length`` finite numbers."""
    return (
        isinstance(value, list)
        and len(value) == length
        and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in value
        )
    )


def _rows(value, rows: int, width: int) -> bool:
    """Whether ``value`` is ``rows`` lists of ``width`` finite numbers: a (rows, width) table."""
    return isinstance(value, list) and len(value) == rows and all(_numbers(r, width) for r in value)


def _names(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


def series_files(meta: dict) -> dict[str, int]:
    """The data files of a checked series ``meta``, with their sizes in bytes."""
    n = meta["rows"]
    files = {
        INPUTS: n * 4 * len(meta["input_columns"]),
        TARGETS: n * 4 * len(meta["target_columns"]) * len(meta.get("steps") or [1]),
    }
    if STARTS in meta["files"]:
        files[STARTS] = n
    if MASK in meta["files"]:
        files[MASK] = n
    return files


def series_problems(meta: dict) -> list[str]:
    """What is wrong with the ``meta.json`` of a series preparation (empty: sound): every
    field of the schema, the sizes of the validation report's tables included."""
    counts = ("rows", "train_rows", "valid_rows", "horizon", "series")
    wrong = [k for k in counts if not isinstance(meta.get(k), int) or isinstance(meta[k], bool)]
    wrong += [k for k in ("input_columns", "target_columns") if not _names(meta.get(k))]
    wrong += [k for k in ("options", "source", "files") if not isinstance(meta.get(k), dict)]
    wrong += [k for k in ("valid_index",) if not isinstance(meta.get(k), list)]
    if meta.get("dtype") != "float32":
        wrong.append("dtype")
    if wrong:
        return [f"lacks or mangles {', '.join(wrong)}"]
    problems = []
    n, n_train, n_valid = meta["rows"], meta["train_rows"], meta["valid_rows"]
    steps = meta.get("steps") or [1]
    if not isinstance(steps, list) or not 1 <= len(steps) <= 10_000:
        return ["lacks or mangles steps"]
    f, d = len(meta["input_columns"]), len(meta["target_columns"]) * len(steps)
    if n != n_train + n_valid or n_train < 2 or n_valid < 0:
        problems.append(
            f"splits {n:,} rows into {n_train:,} training and {n_valid:,} validation ones"
        )
    if meta["horizon"] < 1 or meta["series"] < 1:
        problems.append("has a horizon or a number of series below 1")
    for key, width in (("inputs_scaler", f), ("targets_scaler", d)):
        try:
            scaler = Standardizer.from_dict(meta.get(key))
        except (DataError, TypeError):
            problems.append(f"lacks or mangles {key}")
            continue
        if len(scaler.mean) != width:
            problems.append(f"has a {key} for {len(scaler.mean)} columns, expected {width}")
    if problems:
        return problems
    if len(meta["valid_index"]) != n_valid or not all(
        isinstance(v, (str, int)) and not isinstance(v, bool) for v in meta["valid_index"]
    ):
        problems.append(f"has {len(meta['valid_index']):,} validation labels, expected {n_valid:,}")
    for key in ("valid_persistence", "valid_actual"):
        if not _rows(meta.get(key), n_valid, d):
            problems.append(
                f"has a {key} that is not {n_valid:,} rows of {d} number(s) (shortened or damaged)"
            )
    if not _numbers(meta.get("train_target_mean"), d):
        problems.append(f"has a train_target_mean that is not {d} number(s)")
    if meta["series"] > 1 and STARTS not in meta["files"]:  # where each series' state resets
        problems.append(
            f"has {meta['series']} series but {'a' if STARTS in meta['files'] else 'no'} {STARTS}"
        )
    if not problems:
        problems += file_problems(meta["files"], series_files(meta))
    return problems


def _map(file: Path, dtype, shape: tuple[int, ...]) -> torch.Tensor:
    if shape[0] == 0:
        return torch.from_numpy(np.zeros(shape, dtype=dtype))
    return torch.from_numpy(np.memmap(file, dtype=dtype, mode="c", shape=shape))


def load_series(path: Path, meta: dict) -> SeriesData:
    """The :class:`~tbptt.data.series.SeriesData` of a series preparation (``meta`` from
    :func:`~tbptt.data.prepared.format.read_meta`: checked, its files' sizes too)."""
    n, n_train = meta["rows"], meta["train_rows"]
    f = len(meta["input_columns"])
    d = len(meta["target_columns"]) * len(meta.get("steps") or [1])  # O: D per step
    inputs = _map(path / INPUTS, np.float32, (n, f))  # (N, F)
    targets = _map(path / TARGETS, np.float32, (n, d))  # (N, D)
    starts = _map(path / STARTS, np.bool_, (n,)) if STARTS in meta["files"] else None
    mask = _map(path / MASK, np.bool_, (n,)) if MASK in meta["files"] else None

    def split(rows: slice) -> StreamData:
        kept = mask[rows] if mask is not None and not bool(mask[rows].all()) else None
        return StreamData(
            inputs[rows], targets[rows], starts[rows] if starts is not None else None, kept
        )

    actual = torch.tensor(meta["valid_actual"], dtype=torch.float64).reshape(-1, d)
    persistence = torch.tensor(meta["valid_persistence"], dtype=torch.float64).reshape(-1, d)
    return SeriesData(
        train=split(slice(0, n_train)),
        valid=split(slice(n_train, n)),
        input_columns=tuple(meta["input_columns"]),
        target_columns=tuple(meta["target_columns"]),
        horizon=meta["horizon"],
        inputs_scaler=Standardizer.from_dict(meta["inputs_scaler"]),
        targets_scaler=Standardizer.from_dict(meta["targets_scaler"]),
        series=meta["series"],
        valid_index=list(meta["valid_index"]),
        valid_persistence=persistence,
        valid_actual=actual,
        train_target_mean=tuple(meta["train_target_mean"]),
        **SeriesData.fields_from_meta(meta),
    )
