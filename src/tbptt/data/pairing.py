"""Forecasting pairs of a table's rows, and the baselines scored on them.

:func:`pair_rows` cuts each series at its own row and pairs the rows of each segment
(:mod:`tbptt.data.series` draws the layout); :func:`series_baselines` fits the baselines of
:mod:`tbptt.data.forecast` on the training pairs and scores them on the validation pairs;
:func:`step_scores` is the RMSE and MAE of errors, per step of a direct forecast too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tbptt.data.features import Rows
from tbptt.data.forecast import RIDGE_PENALTIES, fit_autoregression, fit_baselines
from tbptt.data.forecast import Rows as BaselineRows
from tbptt.errors import DataError

__all__ = ["Pairs", "pair_rows", "series_baselines", "step_scores"]


def step_scores(errors: torch.Tensor, steps: Sequence[int]) -> dict[str, float]:
    """``rmse`` and ``mae`` of (N, S x D) errors, and per step when S > 1."""
    errors = errors.double()
    out = {"rmse": errors.square().mean().sqrt().item(), "mae": errors.abs().mean().item()}
    if len(steps) > 1:
        per = errors.reshape(len(errors), len(steps), -1)  # (N, S, D)
        for i, k in enumerate(steps):
            out[f"rmse@{k}"] = per[:, i].square().mean().sqrt().item()
            out[f"mae@{k}"] = per[:, i].abs().mean().item()
    return out


@dataclass
class Pairs:
    """The pairs of a table's kept rows (t: the input row; its targets at t + k, k in the steps)."""

    train_t: np.ndarray  # (N_train,) input rows of the training pairs, in order
    train_starts: np.ndarray  # (N_train,) bool
    valid_t: np.ndarray  # (N_valid,) input rows of the validation pairs, warm-up included
    valid_starts: np.ndarray  # (N_valid,) bool
    scored: np.ndarray  # (N_valid,) bool: not a warm-up pair
    training_rows: np.ndarray  # (M,) bool: the rows before each series' cut


def pair_rows(
    rows: Rows,
    steps: Sequence[int],
    valid_fraction: float,
    warm_up: int,
    several: bool,
    missing: str,
) -> Pairs:
    """Cut each series at its own row and pair the rows of each segment (module docs)."""
    far, near = max(steps), min(steps)
    training_rows = np.zeros(len(rows.rows), dtype=bool)
    train_t, train_starts, valid_t, valid_starts, scored = [], [], [], [], []
    by_series: dict[str, list[tuple[int, int]]] = {}
    for name, a, b in rows.segments:
        by_series.setdefault(name, []).append((a, b))
    for name, segments in by_series.items():
        first, last = segments[0][0], segments[-1][1]
        n = last - first
        if n <= far:
            what = f"series {name!r}" if several else "the series"
            dropped = " after dropping rows with missing cells" if missing == "drop" else ""
            raise DataError(
                f"Expected series longer than the horizon h = {far}, got {n} rows in {what}"
                f"{dropped}; use a smaller horizon or remove that series"
            )
        cut = first + n - round(n * valid_fraction)
        training_rows[first:cut] = True
        for a, b in segments:
            t = np.arange(a, max(a, b - far))
            train = t[t + far < cut]
            train_t.append(train)
            train_starts.append(train == a)
            valid = t[t + near >= cut]
            if len(valid):
                warm = t[(t < valid[0]) & (t >= valid[0] - warm_up)]
                block = np.concatenate([warm, valid])
                valid_t.append(block)
                valid_starts.append(np.arange(len(block)) == 0)
                scored.append(np.arange(len(block)) >= len(warm))
    cat = lambda parts, dtype: np.concatenate(parts) if parts else np.zeros(0, dtype)  # noqa: E731
    train_t = cat(train_t, np.int64)
    if len(train_t) < 2:
        raise DataError(
            f"Expected at least 2 training pairs, got {len(train_t)} ({len(rows.rows)} rows, "
            f"horizon {far}, valid fraction {valid_fraction}); use more rows, a smaller "
            "horizon or a smaller valid fraction"
        )
    return Pairs(
        train_t,
        cat(train_starts, bool),
        cat(valid_t, np.int64),
        cat(valid_starts, bool),
        cat(scored, bool),
        training_rows,
    )


def series_baselines(rows, features, names, targets, steps, fit_t, scored_t, season):
    """(scores, info, notes): the baselines of :mod:`tbptt.data.forecast` fitted on the
    training pairs ``fit_t`` and scored on the validation pairs ``scored_t`` (scores None
    when there are none), and the highway a forecaster starts from: the ridge autoregression
    whose order and penalty do best on the training pairs' tail (``info["highway"]``, and its
    scores ``info["ridge_ar"]``: the forecaster's starting point, not a baseline)."""
    extra = [d for d, c in enumerate(targets) if c not in names]  # targets not read as inputs
    history = np.concatenate([features, rows.targets[:, extra]], axis=1)  # (M, K)
    base_rows = BaselineRows(history, rows.targets, rows.segment_start, rows.series)
    notes, info = [], {"season": None, "ar_order": {}}
    fitted, ridges = [], []
    for k in steps:
        try:
            fitted.append(fit_baselines(base_rows, fit_t, horizon=k, season=season))
            found = fitted[-1].season
            ridges.append(
                fit_autoregression(
                    base_rows,
                    fit_t,
                    horizon=k,
                    season=found.period if found is not None else None,
                    penalties=RIDGE_PENALTIES,
                )
            )
        except DataError as e:
            notes.append(f"no seasonal or AR baseline ({e})")
            return None, None, notes
        season = fitted[-1].season if fitted[-1].season is not None else 0
    first = fitted[0]
    if first.season is not None:
        info["season"] = first.season.to_dict()
        how = (
            "given"
            if first.season.source == "given"
            else f"detected: autocorrelation {first.season.acf:.2f} in the training rows"
        )
        notes.append(f"season {first.season.period} rows ({how})")
    else:
        notes.append("no season found in the training rows (no seasonal baseline; give one)")
    for k, base in zip(steps, fitted):
        info["ar_order"][str(k)] = base.ar.order
    orders = sorted(set(info["ar_order"].values()))
    notes.append(
        f"AR baseline of order {', '.join(map(str, orders))} (chosen on the training pairs' "
        "last 20%)"
    )
    info["highway"] = {
        "order": max(r.order for r in ridges),
        "penalty": ridges[0].penalty,
        "orders": {str(k): r.order for k, r in zip(steps, ridges)},
        "penalties": {str(k): r.penalty for k, r in zip(steps, ridges)},
    }
    info["seasonal_fallbacks"] = fitted[0].seasonal_fallbacks(base_rows, scored_t)
    if len(scored_t) == 0:
        return None, info, notes
    actual = np.concatenate([rows.targets[scored_t + k] for k in steps], axis=1)  # (N, S x D)
    forecasts = [b.forecasts(base_rows, scored_t) for b in fitted]  # per step: name -> (N, D)
    scores = {}
    for name in forecasts[0]:
        predicted = np.concatenate([f[name] for f in forecasts], axis=1)  # (N, S x D)
        scores[name] = step_scores(torch.from_numpy(predicted - actual), steps)
    ridge = np.concatenate([r.predict(base_rows, scored_t) for r in ridges], axis=1)
    info["ridge_ar"] = step_scores(torch.from_numpy(ridge - actual), steps)
    return scores, info, notes
