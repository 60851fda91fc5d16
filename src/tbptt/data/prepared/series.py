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

from pathlib import Path

import numpy as np
import torch

from tbptt.data.prepared.format import FORMAT, META, STARTS, VERSION
from tbptt.data.prepared.write import _check_target, _Writer, write_prepared
from tbptt.data.series import SeriesData, Standardizer, prepare_series
from tbptt.data.streams import StreamData
from tbptt.errors import DataError

__all__ = ["INPUTS", "TARGETS", "prepare_series_file", "load_series"]

INPUTS, TARGETS = "inputs.bin", "targets.bin"


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
    _check_target(out, overwrite)
    data = prepare_series(path, **options)
    n_train, n_valid = len(data.train), len(data.valid)

    def fill(tmp: Path) -> dict:
        files = {}
        for name, key in ((INPUTS, "inputs"), (TARGETS, "targets")):
            writer = _Writer(tmp / name)
            for split in (data.train, data.valid):
                writer.write(getattr(split, key).numpy().astype(np.float32))  # (N, F) / (N, D)
            files[name] = writer.close()
        if data.train.starts is not None:
            writer = _Writer(tmp / STARTS)
            for split in (data.train, data.valid):
                writer.write(split.starts.numpy())
            files[STARTS] = writer.close()
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
            "valid_index": data.valid_index,
            "valid_persistence": data.valid_persistence.tolist(),
            "valid_actual": data.valid_actual.tolist(),
            "train_target_mean": list(data.train_target_mean),
            "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
            "source": {"path": str(Path(path).expanduser().resolve())},
            "files": files,
        }

    return write_prepared(out, overwrite, fill)


def _check_series_meta(path: Path, meta: dict) -> None:
    again = "prepare it again with tbptt prepare"
    try:
        n, n_train, n_valid = meta["rows"], meta["train_rows"], meta["valid_rows"]
        width = {INPUTS: len(meta["input_columns"]), TARGETS: len(meta["target_columns"])}
        Standardizer.from_dict(meta["inputs_scaler"])
        Standardizer.from_dict(meta["targets_scaler"])
        ok = n == n_train + n_valid and n_train >= 2 and len(meta["valid_index"]) == n_valid
    except (KeyError, TypeError, DataError):
        ok = False
    if not ok:
        raise DataError(f"{path / META} lacks or contradicts the series fields; {again}")
    names = [INPUTS, TARGETS] + ([STARTS] if STARTS in meta["files"] else [])
    for name in names:
        file = path / name
        if not file.is_file():
            raise DataError(f"{file} is missing; {again}")
        expected = n * (4 * width[name] if name != STARTS else 1)
        if (have := file.stat().st_size) != expected:
            raise DataError(
                f"{file} has {have:,} bytes, expected {expected:,} ({n:,} rows): it is "
                f"truncated or from another preparation; {again}"
            )


def _map(file: Path, dtype, shape: tuple[int, ...]) -> torch.Tensor:
    if shape[0] == 0:
        return torch.from_numpy(np.zeros(shape, dtype=dtype))
    return torch.from_numpy(np.memmap(file, dtype=dtype, mode="c", shape=shape))


def load_series(path: Path, meta: dict) -> SeriesData:
    """The :class:`~tbptt.data.series.SeriesData` of a series preparation (checked, verified)."""
    _check_series_meta(path, meta)
    n, n_train = meta["rows"], meta["train_rows"]
    f, d = len(meta["input_columns"]), len(meta["target_columns"])
    inputs = _map(path / INPUTS, np.float32, (n, f))  # (N, F)
    targets = _map(path / TARGETS, np.float32, (n, d))  # (N, D)
    starts = _map(path / STARTS, np.bool_, (n,)) if STARTS in meta["files"] else None

    def split(rows: slice) -> StreamData:
        return StreamData(inputs[rows], targets[rows], starts[rows] if starts is not None else None)

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
    )
