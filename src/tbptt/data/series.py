"""Time-series files into train / validation :class:`StreamData` for forecasting.

A table (``.csv`` with a header row; ``.npy`` 1-D or (N, C), columns "0".."C-1";
``.npz`` of 1-D columns named by key, or of one (N, C) array; read by
:mod:`tbptt.data.table`) holds one row per time step of one or several series. At horizon h, pair t of a series reads the
input columns at row t and has as target the target columns at row t + h; no
pair crosses a series boundary. Each series of n rows is cut at its own row
``cut = n - round(n * valid_fraction)``: a pair is for training when its
*target* row is before the cut, for validation otherwise, so the validation
targets are exactly the tail rows [cut, n) (rows [h, n) if cut < h) and no
training target is a validation value (one series, n = 10, valid_fraction =
0.3, h = 2)::

    row       0    1    2    3    4    5    6  │  7    8    9        cut = 7
              └─ training rows: scalers fit ───┘  └─ tail ─┘
    train     x0→x2  x1→x3  x2→x4  x3→x5  x4→x6        t in [0, cut - h)
    valid                              x5→x7  x6→x8  x7→x9   t in [cut - h, n - h)

Validation inputs may lie before the cut (x5, x6): they are observed values,
not validation targets. Training pairs of all series are concatenated in file
order, validation pairs likewise; ``starts`` is True at each series' first pair
in each split (its state starts afresh), None for one series (h = 1,
valid_fraction = 0.2)::

    series     a a a a a a │ b b b b b
    train      a0 a1 a2 a3   b0 b1 b2         starts 1 0 0 0 1 0 0
    valid      a4            b3               starts 1 1

Inputs (N, F) and targets (N, D) are float32, standardized per column by
:class:`Standardizer` s fitted on the training rows [0, cut) of every series
only. Cells: empty, ``NA``, ``NaN`` or ``null`` (any case) is *missing*,
handled by ``missing`` (one of :data:`MISSING`: raise, drop the row, or
forward-fill within the series); any other non-number, or an infinite value,
is always an error naming the file, line and column. Series ids and the time
column (e.g. a Date, which labels the validation rows) are labels, not inputs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tbptt.data.dataset import DatasetBase, DataShape
from tbptt.data.streams import StreamData
from tbptt.data.table import Table, read_table
from tbptt.errors import DataError

__all__ = ["MISSING", "Standardizer", "SeriesData", "Table", "read_table", "prepare_series"]

MISSING = ("error", "drop", "ffill")
TIME_NAMES = frozenset({"date", "time", "timestamp", "datetime"})


@dataclass(frozen=True)
class Standardizer:
    """Per-column standardization fitted on the training rows only: z = (x - mean) / std.

    ``std`` is the population standard deviation; a constant column gets std 1.0.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    @classmethod
    def fit(cls, values: torch.Tensor) -> Standardizer:
        """Fit on (N, D) values, N >= 1."""
        values = torch.as_tensor(values, dtype=torch.float64)
        if values.ndim != 2 or len(values) == 0:
            raise DataError(f"Expected (N, D) values with N >= 1, got shape {tuple(values.shape)}")
        mean = values.mean(0)  # (D,)
        std = (values - mean).square().mean(0).sqrt()  # (D,)
        # Rounding leaves a constant column a std of ~1e-17 * |mean|: call it constant too.
        std = torch.where(std <= 1e-12 * mean.abs(), torch.ones_like(std), std)
        return cls(tuple(mean.tolist()), tuple(std.tolist()))

    def _apply(self, values, fn) -> torch.Tensor:
        values = torch.as_tensor(values)
        if values.ndim == 0 or values.shape[-1] != len(self.mean):
            raise DataError(
                f"Expected values of shape (..., {len(self.mean)}), got {tuple(values.shape)}"
            )
        dtype = values.dtype if values.is_floating_point() else torch.float64
        mean = torch.tensor(self.mean, dtype=torch.float64, device=values.device)  # (D,)
        std = torch.tensor(self.std, dtype=torch.float64, device=values.device)  # (D,)
        return fn(values.double(), mean, std).to(dtype)  # in float64, back to the given dtype

    def transform(self, values) -> torch.Tensor:
        """(..., D) original units -> (..., D) standardized (float64 unless given floats)."""
        return self._apply(values, lambda x, mean, std: (x - mean) / std)

    def inverse(self, values) -> torch.Tensor:
        """(..., D) standardized -> (..., D) original units."""
        return self._apply(values, lambda z, mean, std: z * std + mean)

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict) -> Standardizer:
        try:
            mean, std = tuple(float(m) for m in d["mean"]), tuple(float(s) for s in d["std"])
        except (KeyError, TypeError, ValueError):
            raise DataError(
                f"Expected {{'mean': [...], 'std': [...]}} of numbers, got {d!r}"
            ) from None
        if len(mean) != len(std) or not all(s > 0 and math.isfinite(s) for s in std):
            raise DataError(f"Expected as many means as positive stds, got {d!r}")
        return cls(mean, std)


@dataclass(frozen=True)
class SeriesData(DatasetBase):
    """A forecasting data set: train / validation pairs and what is needed to read them.

    Attributes:
        train: inputs (N_train, F) and targets (N_train, D), float32 standardized;
            starts (N_train,) bool, True at each series' first pair (None for one series).
        valid: the same layout for the validation pairs (N_valid may be 0).
        input_columns: the F input column names; target_columns: the D target names.
        horizon: h, the steps from an input row to its target row.
        inputs_scaler, targets_scaler: fitted on the training rows [0, cut) of every series.
        series: the number of series.
        valid_index: N_valid labels, one per validation target row: its time column
            value (e.g. the date), else its 0-based data row number in the file.
        valid_persistence: (N_valid, D) float64, original units: the target columns at
            the input row t, the persistence forecast of the target at t + h.
        valid_actual: (N_valid, D) float64, the validation targets in original units.
        train_target_mean: (D,) the mean of the training pairs' targets, original units.
        source: the table it was read from (None: unknown); ``series_id`` and
            ``time_column``: its label columns (None: none).
    """

    train: StreamData
    valid: StreamData
    input_columns: tuple[str, ...]
    target_columns: tuple[str, ...]
    horizon: int
    inputs_scaler: Standardizer
    targets_scaler: Standardizer
    series: int
    valid_index: list[str]
    valid_persistence: torch.Tensor
    valid_actual: torch.Tensor
    train_target_mean: tuple[float, ...]
    source: str | None = None
    series_id: str | None = None
    time_column: str | None = None

    outputs = ("predictions",)
    model = None

    def train_split(self) -> StreamData:
        return self.train

    def valid_split(self) -> StreamData:
        return self.valid

    def target_scale(self) -> torch.Tensor:
        """(D,) the targets' standard deviations: a standardized error times this is in the
        data's own units."""
        return torch.tensor(self.targets_scaler.std, dtype=torch.float64)

    @property
    def shape(self) -> DataShape:
        return DataShape(
            input_size=len(self.input_columns),
            output_size=len(self.target_columns),
            objective="regress",
        )

    def describe(self) -> dict:
        return {
            "kind": "series",
            "inputs": list(self.input_columns),
            "targets": list(self.target_columns),
            "horizon": self.horizon,
            "series": self.series,
            "train_rows": len(self.train),
            "valid_rows": len(self.valid),
            "inputs_scaler": self.inputs_scaler.to_dict(),
            "targets_scaler": self.targets_scaler.to_dict(),
        }

    def history(self, path: str | Path | None = None) -> torch.Tensor:
        """(P, F) standardized input rows of the last series of the table at ``path`` (default:
        the table this data was read from), what a forecast continues.

        Raises:
            DataError: no table to read (a preparation whose table is gone), a column the
                run reads is missing, or a gap in the last series.
        """
        path = path if path is not None else self.source
        if path is None or not Path(path).expanduser().is_file():
            where = f"the table it was read from ({path}) is gone" if path else "it keeps no table"
            raise DataError(f"no history to forecast from: {where}; give the table to continue")
        table = read_table(path)
        missing = [c for c in (*self.input_columns, self.series_id) if c and c not in table.columns]
        if missing:
            raise DataError(
                f"{table.path} has no column(s) {', '.join(map(repr, missing))} the run reads; "
                f"available: {', '.join(map(repr, table.columns))}"
            )
        start = 0
        if self.series_id is not None:  # the last run of equal ids
            last = table.label(self.series_id, len(table) - 1)
            start = len(table)
            while start > 0 and table.label(self.series_id, start - 1) == last:
                start -= 1
        values = np.stack([table.numbers(c)[start:] for c in self.input_columns], axis=1)  # (P, F)
        if np.isnan(values).any():
            row = start + int(np.flatnonzero(np.isnan(values).any(axis=1))[0])
            raise DataError(
                f"{table.where(row)}: a missing value in the history; a forecast reads every "
                "row of the last series, so fill it (or give a table without gaps)"
            )
        return self.inputs_scaler.transform(torch.from_numpy(values))

    def baselines(self, split: str = "valid") -> dict[str, dict[str, float]]:
        """RMSE and MAE, original units, over all validation rows x D columns ({} if none) of
        ``persistence`` (the value h steps earlier) and ``mean`` (the training targets' mean)."""
        if split != "valid" or len(self.valid_actual) == 0:
            return {}
        mean = torch.tensor(self.train_target_mean, dtype=torch.float64)  # (D,)
        scores = {}
        for name, forecast in (("persistence", self.valid_persistence), ("mean", mean)):
            error = forecast - self.valid_actual  # (N_valid, D)
            scores[name] = {
                "rmse": error.square().mean().sqrt().item(),
                "mae": error.abs().mean().item(),
            }
        return scores


def _names(value: str | Sequence[str], what: str) -> tuple[str, ...]:
    names = (value,) if isinstance(value, str) else tuple(value)
    if not names or not all(isinstance(name, str) for name in names):
        raise DataError(f"Expected {what} to be a column name or a list of them, got {value!r}")
    if len(set(names)) != len(names):
        raise DataError(f"Expected distinct {what} columns, got {list(names)}")
    return names


def _series_bounds(table: Table, series_id: str | None) -> list[tuple[str, int, int]]:
    """(id, first row, row after last) of each run of equal ids, in file order."""
    if series_id is None:
        return [("", 0, len(table))]
    bounds, seen = [], set()
    for row in range(len(table)):
        name = table.label(series_id, row)
        if bounds and bounds[-1][0] == name:
            continue
        if name in seen:
            raise DataError(
                f"{table.where(row)}: series {name!r} reappears after other series; "
                f"sort the file by {series_id!r}, then by time"
            )
        seen.add(name)
        if bounds:
            bounds[-1] = (*bounds[-1][:2], row)
        bounds.append((name, row, len(table)))
    return bounds


def _handle_missing(table, values, used, bounds, missing):
    """Apply the missing-cell policy to (N, K) ``values``: (M, K) values, (M,) rows, bounds."""
    rows = np.arange(len(values))
    holes = np.isnan(values)  # (N, K)
    if not holes.any():
        return values, rows, bounds
    row, col = np.argwhere(holes)[0]
    where = f"{table.where(row)}, column {used[col]!r}"
    if missing == "error":
        raise DataError(
            f"{where} is missing ({holes.sum()} missing cells in all); "
            "pass missing='drop' to drop such rows or missing='ffill' to repeat the last value"
        )
    if missing == "drop":
        keep = ~holes.any(1)
        kept = np.concatenate([[0], np.cumsum(keep)])  # kept rows before each row
        bounds = [(name, int(kept[a]), int(kept[b])) for name, a, b in bounds]
        return values[keep], rows[keep], bounds
    values = values.copy()
    for name, a, b in bounds:  # ffill within each series
        if holes[a].any():
            series = f"series {name!r}" if name else "the series"
            raise DataError(
                f"{table.where(a)}, column {used[holes[a].argmax()]!r} is missing at the start of "
                f"{series}: no value to forward-fill; fill it in or pass missing='drop'"
            )
        last = np.where(holes[a:b], 0, np.arange(b - a)[:, None])  # (n, K) last seen row
        last = np.maximum.accumulate(last, axis=0)
        values[a:b] = np.take_along_axis(values[a:b], last, axis=0)
    return values, rows, bounds


def prepare_series(
    path: str | Path,
    *,
    target: str | Sequence[str],
    inputs: str | Sequence[str] | None = None,
    horizon: int = 1,
    series_id: str | None = None,
    time_column: str | None = None,
    valid_fraction: float = 0.1,
    missing: str = "error",
) -> SeriesData:
    """Read a table and make standardized train / validation forecasting pairs (module docs).

    ``inputs`` defaults to the target columns (autoregressive forecasting); ``time_column``
    defaults to the first column named date, time, timestamp or datetime (any case), if any.
    """
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise DataError(f"Expected a horizon of at least 1 step, got {horizon!r}")
    if not isinstance(valid_fraction, (int, float)) or not 0.0 <= valid_fraction < 1.0:
        raise DataError(f"Expected a valid fraction in [0, 1), got {valid_fraction}")
    if missing not in MISSING:
        raise DataError(f"Expected missing to be one of {MISSING}, got {missing!r}")
    table = read_table(path)
    targets = _names(target, "target")
    inputs = targets if inputs is None else _names(inputs, "inputs")
    used = tuple(dict.fromkeys(inputs + targets))  # (K,) columns read as numbers
    asked = used + tuple(name for name in (series_id, time_column) if name is not None)
    unknown = [name for name in dict.fromkeys(asked) if name not in table.columns]
    if unknown:
        raise DataError(
            f"{table.path} has no column(s) {', '.join(map(repr, unknown))}; "
            f"available: {', '.join(map(repr, table.columns))}"
        )
    for role, name in (("series id", series_id), ("time column", time_column)):
        if name in used:
            raise DataError(f"the {role} {name!r} is a label; it cannot be an input or target")
    if time_column is None:
        labels = set(used) | {series_id}
        found = [c for c in table.columns if c.lower() in TIME_NAMES and c not in labels]
        time_column = found[0] if found else None

    values = np.stack([table.numbers(name) for name in used], axis=1)  # (N, K)
    bounds = _series_bounds(table, series_id)
    values, rows, bounds = _handle_missing(table, values, used, bounds, missing)
    x_all = values[:, [used.index(c) for c in inputs]]  # (M, F)
    y_all = values[:, [used.index(c) for c in targets]]  # (M, D)

    fit_rows, train_t, valid_t, train_starts, valid_starts = [], [], [], [], []
    for name, a, b in bounds:  # rows [a, b) of values are one series
        n = b - a
        if n <= horizon:
            what = f"series {name!r}" if series_id is not None else "the series"
            dropped = " after dropping rows with missing cells" if missing == "drop" else ""
            raise DataError(
                f"Expected series longer than the horizon h = {horizon}, got {n} rows in {what}"
                f"{dropped}; use a smaller horizon or remove that series"
            )
        cut = n - round(n * valid_fraction)
        k = max(cut - horizon, 0)  # training pairs t in [0, k), validation t in [k, n - h)
        fit_rows += range(a, a + cut)
        train_t += range(a, a + k)
        valid_t += range(a + k, b - horizon)
        train_starts += [t == a for t in range(a, a + k)]
        valid_starts += [t == a + k for t in range(a + k, b - horizon)]
    if len(train_t) < 2:
        raise DataError(
            f"Expected at least 2 training pairs, got {len(train_t)} ({len(values)} rows, "
            f"horizon {horizon}, valid fraction {valid_fraction}); use more rows, a smaller "
            "horizon or a smaller valid fraction"
        )
    train_t, valid_t = np.array(train_t, dtype=np.int64), np.array(valid_t, dtype=np.int64)
    inputs_scaler = Standardizer.fit(x_all[fit_rows])  # (rows, F): training rows only
    targets_scaler = Standardizer.fit(y_all[fit_rows])  # (rows, D)

    def split(t: np.ndarray, starts: list[bool]) -> StreamData:
        x = inputs_scaler.transform(torch.from_numpy(x_all[t])).float()  # (N, F)
        y = targets_scaler.transform(torch.from_numpy(y_all[t + horizon])).float()  # (N, D)
        return StreamData(x, y, torch.tensor(starts, dtype=torch.bool) if len(bounds) > 1 else None)

    label = (lambda row: table.label(time_column, row)) if time_column else str
    return SeriesData(
        train=split(train_t, train_starts),
        valid=split(valid_t, valid_starts),
        input_columns=inputs,
        target_columns=targets,
        horizon=horizon,
        inputs_scaler=inputs_scaler,
        targets_scaler=targets_scaler,
        series=len(bounds),
        valid_index=[label(row) for row in rows[valid_t + horizon].tolist()],
        valid_persistence=torch.from_numpy(y_all[valid_t]),
        valid_actual=torch.from_numpy(y_all[valid_t + horizon]),
        train_target_mean=tuple(y_all[train_t + horizon].mean(0).tolist()),
        source=str(Path(path).expanduser()),
        series_id=series_id,
        time_column=time_column,
    )
