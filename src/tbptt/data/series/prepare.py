"""A table read into a :class:`~tbptt.data.series.SeriesData` (:func:`prepare_series`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tbptt.data.features import MISSING, read_rows
from tbptt.data.pairing import pair_rows, series_baselines
from tbptt.data.series.data import TIME_NAMES, SeriesData, Standardizer
from tbptt.data.streams import StreamData
from tbptt.data.table import Table, read_table
from tbptt.errors import DataError

__all__ = ["prepare_series"]


def _names(value: str | Sequence[str], what: str) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    if not names or not all(isinstance(name, str) for name in names):
        raise DataError(f"Expected {what} to be a column name or a list of them, got {value!r}")
    if len(set(names)) != len(names):
        raise DataError(f"Expected distinct {what} columns, got {list(names)}")
    return names


def _find_time_column(table: Table, labels: set) -> str | None:
    """The first column, not an input, target or series id, whose cells are dates or times;
    else the first named date, time, timestamp or datetime (any case)."""
    free = [c for c in table.columns if c not in labels]
    for column in free:
        if table.kind(column) == "time":
            return column
    named = [c for c in free if c.lower() in TIME_NAMES]
    return named[0] if named else None


def _options(value, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    names = (value,) if isinstance(value, str) else tuple(value)
    if not all(isinstance(name, str) and name for name in names):
        raise DataError(f"Expected {what} to be names, got {value!r}")
    return tuple(dict.fromkeys(names))


def prepare_series(
    path: str | Path,
    *,
    target: str | Sequence[str],
    inputs: str | Sequence[str] | None = None,
    horizon: int = 1,
    direct: bool = False,
    series_id: str | None = None,
    time_column: str | None = None,
    valid_fraction: float = 0.1,
    missing: str = "error",
    season: int | None = None,
    categorical: str | Sequence[str] | None = None,
    calendar: str | Sequence[str] | None = None,
    warm_up: int = 0,
) -> SeriesData:
    """Read a table and make standardized train / validation forecasting pairs (module docs).

    ``inputs`` defaults to the target columns (autoregressive forecasting); ``time_column``
    defaults to the first other column whose cells are dates or times (else one named date,
    time, timestamp or datetime). ``direct``: forecast every step 1..``horizon`` at once.
    ``categorical``: input columns read as categories whatever their cells (text columns
    are found by themselves); ``calendar``: fields of the time column read as inputs (month,
    dayofweek, dayofyear, day, hour, minute). ``season``: the seasonal baseline's period in
    rows (None: detected from the training rows; 0: none). ``warm_up``: earlier pairs, masked
    out, that open each segment's validation pairs (module docs).
    """
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise DataError(f"Expected a horizon of at least 1 step, got {horizon!r}")
    if not isinstance(valid_fraction, (int, float)) or not 0.0 <= valid_fraction < 1.0:
        raise DataError(f"Expected a valid fraction in [0, 1), got {valid_fraction}")
    if missing not in MISSING:
        raise DataError(f"Expected missing to be one of {MISSING}, got {missing!r}")
    if not isinstance(direct, bool):
        raise DataError(f"Expected direct to be True or False, got {direct!r}")
    if isinstance(warm_up, bool) or not isinstance(warm_up, int) or warm_up < 0:
        raise DataError(f"Expected a warm-up of at least 0 rows, got {warm_up!r}")
    table = read_table(path)
    targets = _names(target, "target")
    inputs = targets if inputs is None else _names(inputs, "inputs")
    categorical, calendar = _options(categorical, "categorical"), _options(calendar, "calendar")
    used = tuple(dict.fromkeys(inputs + targets))
    asked = used + tuple(name for name in (series_id, time_column) if name is not None)
    unknown = [name for name in dict.fromkeys(asked + categorical) if name not in table.columns]
    if unknown:
        raise DataError(
            f"{table.path} has no column(s) {', '.join(map(repr, unknown))}; "
            f"available: {', '.join(map(repr, table.columns))}"
        )
    for role, name in (("series id", series_id), ("time column", time_column)):
        if name in used:
            raise DataError(f"the {role} {name!r} is a label; it cannot be an input or target")
    if time_column is None:
        time_column = _find_time_column(table, set(used) | {series_id})
    rows = read_rows(
        table,
        inputs=inputs,
        targets=targets,
        series_id=series_id,
        time_column=time_column,
        categorical=categorical,
        calendar=calendar,
        missing=missing,
    )
    steps = tuple(range(1, horizon + 1)) if direct else (horizon,)
    pairs = pair_rows(rows, steps, valid_fraction, warm_up, series_id is not None, missing)
    features, names = rows.encode(pairs.training_rows)  # (M, F): categories fitted on training
    y_rows = rows.targets  # (M, D)
    inputs_scaler = Standardizer.fit(features[pairs.training_rows])
    scaler = Standardizer.fit(y_rows[pairs.training_rows])
    targets_scaler = Standardizer(scaler.mean * len(steps), scaler.std * len(steps))

    def targets_at(t: np.ndarray) -> np.ndarray:  # (N, S x D), step-major
        return np.concatenate([y_rows[t + k] for k in steps], axis=1)

    def filled_at(t: np.ndarray) -> np.ndarray:  # (N,) any target filled
        return np.stack([rows.filled[t + k] for k in steps], axis=1).any(1)

    def split(t: np.ndarray, starts: np.ndarray, mask: np.ndarray) -> StreamData:
        x = inputs_scaler.transform(torch.from_numpy(features[t])).float()  # (N, F)
        y = targets_scaler.transform(torch.from_numpy(targets_at(t))).float()  # (N, O)
        return StreamData(
            x,
            y,
            torch.from_numpy(starts) if len(rows.segments) > 1 else None,
            None if mask.all() else torch.from_numpy(mask),
        )

    train_mask = ~filled_at(pairs.train_t)
    valid_mask = pairs.scored & ~filled_at(pairs.valid_t)
    label = (lambda row: table.label(time_column, row)) if time_column else str
    fit_t = pairs.train_t[train_mask]
    baseline_scores, baseline_info, said = series_baselines(
        rows, features, names, targets, steps, fit_t, pairs.valid_t[valid_mask], season
    )
    notes = list(rows.notes) + said
    if time_column is not None and table.kind(time_column) == "time":
        notes.insert(0, f"time column {table.reading(time_column)}")
    return SeriesData(
        train=split(pairs.train_t, pairs.train_starts, train_mask),
        valid=split(pairs.valid_t, pairs.valid_starts, valid_mask),
        input_columns=names,
        target_columns=targets,
        horizon=horizon,
        inputs_scaler=inputs_scaler,
        targets_scaler=targets_scaler,
        series=len({name for name, _, _ in rows.segments}) if series_id else 1,
        valid_index=[label(r) for r in rows.rows[pairs.valid_t + min(steps)].tolist()],
        valid_persistence=torch.from_numpy(np.tile(y_rows[pairs.valid_t], (1, len(steps)))),
        valid_actual=torch.from_numpy(targets_at(pairs.valid_t)),
        train_target_mean=tuple(targets_at(fit_t).mean(0).tolist()),
        source=str(Path(path).expanduser()),
        series_id=series_id,
        time_column=time_column,
        steps=steps,
        columns_read=inputs,
        categories=tuple(rows.categories),
        calendar=calendar,
        missing=missing,
        baseline_scores=baseline_scores,
        baseline_info=baseline_info,
        notes=tuple(notes),
        dropped_rows=rows.dropped,
    )
