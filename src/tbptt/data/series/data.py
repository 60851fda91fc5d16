"""The forecasting data set (:class:`SeriesData`) and per-column standardization."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from tbptt.data.columns import Categories
from tbptt.data.dataset import DatasetBase, DataShape
from tbptt.data.features import MISSING, read_rows
from tbptt.data.pairing import step_scores
from tbptt.data.streams import StreamData
from tbptt.data.table import read_table
from tbptt.errors import DataError

__all__ = ["MISSING", "SERIES_RECIPE", "Standardizer", "SeriesData", "TIME_NAMES"]

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


#: The defaults of a run on a time series (docs/forecasting.md: measured on three real series).
SERIES_RECIPE = {
    "model.kind": "gru",
    "model.hidden_size": 32,
    "model.num_layers": 1,
    "model.dropout": 0.0,
    "train.strategy": "regular:35",
    "train.batch_size": 1,
    "train.epochs": 30,
    "train.lr": 0.003,
}


@dataclass(frozen=True)
class SeriesData(DatasetBase):
    """A forecasting data set: train / validation pairs and what is needed to read them.

    Attributes:
        train: inputs (N_train, F) and targets (N_train, O), float32 standardized;
            starts (N_train,) bool, True at each segment's first pair (None for one segment);
            mask (N_train,) bool, False where a target was forward-filled (None: none was).
        valid: the same layout for the validation pairs (N_valid may be 0); its mask is also
            False on warm-up pairs. Only the rows where it is True are scored.
        input_columns: the F input feature names (a number column's own name, ``Wind=NW``
            for a category's one-hot columns, ``Date.month_sin`` for calendar inputs);
            target_columns: the D target names.
        horizon: h, the steps from an input row to its (last) target row.
        inputs_scaler, targets_scaler: fitted on the training rows [0, cut) of every series
            (the targets' repeated for each step of a direct forecast: O = len(steps) x D).
        series: the number of series.
        valid_index: N_valid labels, one per validation pair: its (first) target row's time
            column value (e.g. the date), else its 0-based data row number in the file.
        valid_persistence: (N_valid, O) float64, original units: the target columns at
            the input row t, the persistence forecast of the targets at t + h.
        valid_actual: (N_valid, O) float64, the validation targets in original units.
        train_target_mean: (O,) the mean of the training pairs' targets, original units.
        source: the table it was read from (None: unknown); ``series_id`` and
            ``time_column``: its label columns (None: none).
        steps: the steps ahead of the O / D outputs' blocks: (h,), or 1..h for a direct
            forecast (() : (horizon,)).
        columns_read: the table's input columns as named (() : ``input_columns``);
            categories: the category columns' training values; calendar: the calendar
            fields read from the time column; missing: the missing-cell policy.
        baseline_scores: each baseline's RMSE and MAE on the scored validation pairs (and
            per step, ``rmse@k``), computed when the table was read (None: persistence and
            mean are computed from the tables above).
        baseline_info: the season and the AR orders of the baselines.
        notes: how the table was read, in words; dropped_rows: rows dropped for a missing cell.
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
    steps: tuple[int, ...] = ()
    columns_read: tuple[str, ...] = ()
    categories: tuple[Categories, ...] = ()
    calendar: tuple[str, ...] = ()
    missing: str = "error"
    baseline_scores: dict | None = None
    baseline_info: dict | None = None
    notes: tuple[str, ...] = ()
    dropped_rows: int = 0

    outputs = ("predictions",)
    model = None
    # scored as each series' stream continues: one evaluation column (with ``warm_up``)
    eval_columns = 1

    def train_split(self) -> StreamData:
        return self.train

    def valid_split(self) -> StreamData:
        return self.valid

    @property
    def horizons(self) -> tuple[int, ...]:
        """The steps ahead of the output blocks: (h,) or (1, ..., h)."""
        return self.steps or (self.horizon,)

    @property
    def output_columns(self) -> tuple[str, ...]:
        """The O output names: the targets', or ``Temp@1``, ``Temp@2``, ... for a direct
        forecast of several steps."""
        if len(self.horizons) == 1:
            return self.target_columns
        return tuple(f"{c}@{k}" for k in self.horizons for c in self.target_columns)

    @property
    def highway(self) -> tuple[int, float] | None:
        """(order, ridge penalty) of the regularized autoregression chosen on the training
        pairs' tail, what a forecaster's highway starts from (None: none could be fitted)."""
        found = (self.baseline_info or {}).get("highway")
        return (int(found["order"]), float(found["penalty"])) if found else None

    def target_scale(self) -> torch.Tensor:
        """(O,) the targets' standard deviations: a standardized error times this is in the
        data's own units."""
        return torch.tensor(self.targets_scaler.std, dtype=torch.float64)

    @property
    def shape(self) -> DataShape:
        return DataShape(
            input_size=len(self.input_columns),
            output_size=len(self.target_columns) * len(self.horizons),
            objective="regress",
        )

    def describe(self) -> dict:
        return {
            "kind": "series",
            "inputs": list(self.input_columns),
            "targets": list(self.target_columns),
            "horizon": self.horizon,
            "steps": list(self.horizons),
            "series": self.series,
            "train_rows": len(self.train),
            "valid_rows": len(self.valid),
            "scored_rows": self.scored_rows,
            "dropped_rows": self.dropped_rows,
            "categories": [c.to_dict() for c in self.categories],
            "calendar": list(self.calendar),
            "baselines": self.baseline_info,
            "inputs_scaler": self.inputs_scaler.to_dict(),
            "targets_scaler": self.targets_scaler.to_dict(),
        }

    def reading(self) -> str:
        return "; ".join(self.notes)

    def recipe(self) -> dict[str, object]:
        """The series recipe measured best on the shared series (docs/forecasting.md): a small
        GRU beside the regularized AR highway, one stream, 30 epochs."""
        return dict(SERIES_RECIPE)

    def reading_meta(self) -> dict:
        """What a preparation stores besides the splits so that it loads as this data does
        (JSON-ready; :meth:`fields_from_meta` reads it back)."""
        return {
            "steps": list(self.horizons),
            "columns_read": list(self.columns_read or self.input_columns),
            "categories": [c.to_dict() for c in self.categories],
            "calendar": list(self.calendar),
            "missing": self.missing,
            "baseline_scores": self.baseline_scores,
            "baseline_info": self.baseline_info,
            "notes": list(self.notes),
            "dropped_rows": self.dropped_rows,
        }

    @staticmethod
    def fields_from_meta(meta: dict) -> dict:
        """The keyword arguments of :class:`SeriesData` that :meth:`reading_meta` stored in a
        preparation's ``meta``; a preparation made before them has none (the defaults).

        Raises:
            DataError: a field of the wrong type or size, in one line.
        """
        out = {}
        bad = []
        steps = meta.get("steps")
        if steps is not None:
            if not _ints(steps) or not steps or min(steps) < 1 or len(steps) > 10_000:
                bad.append("steps")
            else:
                out["steps"] = tuple(steps)
        for key in ("columns_read", "calendar", "notes"):
            value = meta.get(key)
            if value is not None:
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    bad.append(key)
                else:
                    out[key] = tuple(value)
        if meta.get("missing") is not None:
            if meta["missing"] not in MISSING:
                bad.append("missing")
            else:
                out["missing"] = meta["missing"]
        if meta.get("categories") is not None:
            try:
                out["categories"] = tuple(Categories.from_dict(c) for c in meta["categories"])
            except (DataError, TypeError):
                bad.append("categories")
        scores = meta.get("baseline_scores")
        if scores is not None:
            if not isinstance(scores, dict) or not all(
                isinstance(v, dict) and all(_finite(x) for x in v.values()) for v in scores.values()
            ):
                bad.append("baseline_scores")
            else:
                out["baseline_scores"] = scores
        if meta.get("baseline_info") is not None:
            if not isinstance(meta["baseline_info"], dict):
                bad.append("baseline_info")
            else:
                out["baseline_info"] = meta["baseline_info"]
        dropped = meta.get("dropped_rows")
        if dropped is not None:
            if not _ints([dropped]) or dropped < 0:
                bad.append("dropped_rows")
            else:
                out["dropped_rows"] = dropped
        if bad:
            raise DataError(f"the series preparation's meta.json mangles {', '.join(bad)}")
        return out

    @property
    def scored(self) -> torch.Tensor:
        """(N_valid,) bool: the validation pairs that are scored (not warm-up, not filled)."""
        if self.valid.mask is None:
            return torch.ones(len(self.valid), dtype=torch.bool)
        return self.valid.mask.bool().cpu()

    @property
    def scored_rows(self) -> int:
        return int(self.scored.sum())

    def scores(self, predicted: torch.Tensor) -> dict[str, float]:
        """RMSE and MAE in the data's units of ``predicted`` (N_valid, O) validation forecasts
        (original units, one row per validation pair) over the scored pairs, and per step
        (``rmse@k``, ``mae@k``) for a direct forecast of several steps."""
        predicted = torch.as_tensor(predicted, dtype=torch.float64).reshape(len(self.valid), -1)
        keep = self.scored
        return step_scores(predicted[keep] - self.valid_actual[keep], self.horizons)

    def baselines(self, split: str = "valid") -> dict[str, dict[str, float]]:
        """Each baseline's RMSE and MAE, original units, over the scored validation pairs x O
        outputs ({} if none): persistence (the value h steps earlier), mean (the training
        targets' mean), seasonal (the value one season before) and ar (the autoregression
        fitted on the training pairs; :mod:`tbptt.data.forecast`), per step too for a direct
        forecast."""
        if split != "valid" or self.scored_rows == 0:
            return {}
        if self.baseline_scores is not None:
            return self.baseline_scores
        mean = torch.tensor(self.train_target_mean, dtype=torch.float64)  # (O,)
        keep = self.scored
        actual = self.valid_actual[keep]
        return {
            name: step_scores(forecast - actual, self.horizons)
            for name, forecast in (("persistence", self.valid_persistence[keep]), ("mean", mean))
        }

    def history(self, path: str | Path | None = None) -> torch.Tensor:
        """(P, F) standardized input rows of the last segment of the last series of the table
        at ``path`` (default: the table this data was read from), read as in training (its
        categories, calendar inputs and missing-cell policy: a gap dropped starts the segment
        after it), what a forecast continues.

        Raises:
            DataError: no table to read (a preparation whose table is gone), a column the
                run reads is missing, or a missing cell the run's policy refuses.
        """
        path = path if path is not None else self.source
        if path is None or not Path(path).expanduser().is_file():
            where = f"the table it was read from ({path}) is gone" if path else "it keeps no table"
            raise DataError(f"no history to forecast from: {where}; give the table to continue")
        table = read_table(path)
        columns = self.columns_read or self.input_columns
        wanted = (*columns, self.series_id, self.time_column if self.calendar else None)
        missing = [c for c in wanted if c and c not in table.columns]
        if missing:
            raise DataError(
                f"{table.path} has no column(s) {', '.join(map(repr, missing))} the run reads; "
                f"available: {', '.join(map(repr, table.columns))}"
            )
        rows = read_rows(
            table,
            inputs=columns,
            targets=(),
            series_id=self.series_id,
            time_column=self.time_column,
            categorical=[c.column for c in self.categories],
            calendar=self.calendar,
            missing=self.missing,
        )
        if not rows.segments:
            raise DataError(f"{table.path} has no complete row to forecast from")
        features, _ = rows.encode(
            np.zeros(0, dtype=np.int64), {c.column: c for c in self.categories}
        )
        _, a, b = rows.segments[-1]
        return self.inputs_scaler.transform(torch.from_numpy(features[a:b]))


def _ints(values) -> bool:
    return isinstance(values, list) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in values
    )


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
