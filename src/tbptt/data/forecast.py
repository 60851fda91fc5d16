"""The baselines a forecaster is judged against, fitted on the training split only.

The rows of a series table in the data's own units (:class:`Rows`): ``history`` (M, K), the
columns a forecast may read (the targets and the inputs), ``targets`` (M, D), and where each
row's segment starts (a series, or a stretch of one between gaps: nothing reads across a
segment start). A forecasting pair t, as in :mod:`tbptt.data.series`, reads rows <= t and
forecasts the targets of row t + h. The baselines, for the same pairs and horizon h::

    persistence   y^[t + h] = y[t]                                 the last value seen
    mean          y^[t + h] = mean of the training pairs' targets
    seasonal      y^[t + h] = y[t + h - s * ceil(h / s)]           the value one season before
                                                                   (the latest one seen at t)
    ar            y^[t + h] = c + A_0 x[t] + A_1 x[t - 1] + ... + A_{p-1} x[t - p + 1]

The season s is given or detected from the training rows' autocorrelation
(:func:`tbptt.data.season.detect_season`: the highest peak past the first trough, after
removing a linear trend); where one season back lies before the segment start, the seasonal forecast is the
persistence one (counted in :attr:`Baselines.seasonal_fallbacks`). The autoregression (the
direct h-step one: a separate fit for each h) is fitted by least squares on the training
pairs whose p lags lie in their segment; its order p is the one with the lowest RMSE on a
held-out tail of the training pairs (the last ``tail_fraction`` of each series' training
targets), each candidate fitted on the pairs before that tail. The validation split is
never looked at. A forecast whose lags reach before its segment start reads the segment's
first row in their place.

Example (one series of n rows, training targets before row ``cut``, h = 1)::

    rows = Rows.from_bounds(values[:, None], values[:, None], [(0, n)])
    base = fit_baselines(rows, np.arange(cut - 1), horizon=1)
    base.scores(rows, np.arange(cut - 1, n - 1))   # {"persistence": {"rmse", "mae"}, ...}
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from tbptt.data.season import Season, detect_season
from tbptt.errors import DataError

__all__ = [
    "Rows",
    "Autoregression",
    "Baselines",
    "fit_autoregression",
    "fit_baselines",
    "fit_direct_baselines",
    "BASELINES",
    "RIDGE_PENALTIES",
]

BASELINES = ("persistence", "mean", "seasonal", "ar")
MAX_SEARCHED_ORDER = 48  # every order up to this one is a candidate (and the season's, s and s + 1)
# the ridge penalties a regularized autoregression (a forecaster's highway) is chosen among
RIDGE_PENALTIES = (0.0, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)


@dataclass(frozen=True)
class Rows:
    """The rows the baselines read, in the data's units.

    Attributes:
        history: (M, K) float64, the columns a forecast may read (targets and inputs).
        targets: (M, D) float64, the columns forecast.
        segment_start: (M,) int64, the first row of each row's segment.
        series: (M,) int64, each row's series (the held-out tail is per series); None: one.
    """

    history: np.ndarray
    targets: np.ndarray
    segment_start: np.ndarray
    series: np.ndarray | None = None

    @classmethod
    def from_bounds(
        cls,
        history: np.ndarray,
        targets: np.ndarray,
        bounds: Sequence[tuple[int, int]],
        series: Sequence[int] | None = None,
    ) -> Rows:
        """Segments [a, b) covering the M rows in order; ``series``: the series of each segment."""
        start = np.zeros(len(history), dtype=np.int64)
        of_series = None if series is None else np.zeros(len(history), dtype=np.int64)
        for i, (a, b) in enumerate(bounds):
            start[a:b] = a
            if of_series is not None:
                of_series[a:b] = series[i]
        as_2d = lambda v: np.asarray(v, dtype=np.float64).reshape(len(v), -1)  # noqa: E731
        return cls(as_2d(history), as_2d(targets), start, of_series)

    def lagged(self, t: np.ndarray, order: int) -> np.ndarray:
        """(N, 1 + order K): 1, then x[t], x[t - 1], ..., x[t - order + 1] (edge-padded)."""
        t = np.asarray(t, dtype=np.int64)
        lags = t[:, None] - np.arange(order)[None, :]  # (N, p)
        lags = np.maximum(lags, self.segment_start[t][:, None])
        x = self.history[lags].reshape(len(t), -1)  # (N, p K)
        return np.concatenate([np.ones((len(t), 1)), x], axis=1)


@dataclass(frozen=True)
class Autoregression:
    """A direct h-step linear autoregression on the last ``order`` rows of history.

    Attributes:
        order: p. horizon: h.
        coefficients: (1 + p K, D): the intercept's row, then x[t]'s K rows, x[t - 1]'s, ...
        tail_rmse: each candidate order (or (order, penalty)) -> its RMSE on the held-out
            tail of the training pairs.
        penalty: the ridge penalty (0: least squares).
    """

    order: int
    horizon: int
    coefficients: np.ndarray
    tail_rmse: dict = field(default_factory=dict)
    penalty: float = 0.0

    def predict(self, rows: Rows, t: np.ndarray) -> np.ndarray:
        """(N, D) forecasts of the targets at rows t + h."""
        return rows.lagged(t, self.order) @ self.coefficients


def _scores(forecast: np.ndarray, actual: np.ndarray) -> dict[str, float]:
    error = forecast - actual  # (N, D)
    return {"rmse": float(np.sqrt(np.mean(error**2))), "mae": float(np.mean(np.abs(error)))}


def _complete(rows: Rows, t: np.ndarray, order: int) -> np.ndarray:
    """The pairs t whose ``order`` lags all lie in their segment."""
    return t[t - order + 1 >= rows.segment_start[t]]


def _least_squares(
    rows: Rows, t: np.ndarray, order: int, horizon: int, penalties: Sequence[float] = (0.0,)
) -> list[np.ndarray]:
    """For each penalty l, (1 + p K, D): argmin over B of |lagged(t) B - targets[t + h]|^2
    + l N |slopes of the unit-variance columns|^2, the intercept first and never penalized
    (l = 0: least squares).

    Solved on centred, unit-variance columns through their (pK, pK) Gram matrix: the same
    minimizer as a least-squares solver on the design itself (to ~1e-12 for these
    conditionings), at a fraction of the cost of LAPACK's solvers, which crawl when several
    threads share busy cores.
    """
    design = rows.lagged(t, order)[:, 1:]  # (N, p K) without the intercept's column
    y = rows.targets[t + horizon]  # (N, D)
    mean, y_mean = design.mean(0), y.mean(0)
    scale = design.std(0)
    scale = np.where(scale > 0, scale, 1.0)  # a constant column: its slope is 0
    z = (design - mean) / scale  # (N, p K)
    gram, moment = z.T @ z, z.T @ (y - y_mean)  # (p K, p K), (p K, D)
    out = []
    for penalty in penalties:
        ridge = gram + penalty * len(z) * np.eye(len(gram))
        slopes, *_ = np.linalg.lstsq(ridge, moment, rcond=None)  # (p K, D)
        slopes = slopes / scale[:, None]
        out.append(np.concatenate([(y_mean - mean @ slopes)[None], slopes]))  # (1 + p K, D)
    return out


def fit_autoregression(
    rows: Rows,
    train_t: np.ndarray,
    *,
    horizon: int = 1,
    order: int | None = None,
    max_order: int | None = None,
    tail_fraction: float = 0.2,
    season: int | None = None,
    penalties: Sequence[float] = (0.0,),
) -> Autoregression:
    """Least squares on the training pairs ``train_t``, the order given or chosen on their tail.

    The candidates are 1 .. min(``max_order`` or 48, what the pairs before the tail can fit
    with four rows per coefficient), and the season's s and s + 1 when they fit. With several
    ``penalties`` (ridge, on unit-variance columns: :func:`_least_squares`), the order and the
    penalty are chosen together on the tail (``tail_rmse`` keyed by (p, penalty)); the
    baseline is plain least squares (0).
    """
    train_t = np.sort(np.asarray(train_t, dtype=np.int64))
    k = rows.history.shape[1]
    if order is not None:
        fit_t = _complete(rows, train_t, order)
        if len(fit_t) < 1 + order * k:
            raise DataError(
                f"Expected at least {1 + order * k} training pairs to fit an autoregression of "
                f"order {order}, got {len(fit_t)}; use a lower order"
            )
        (coefficients,) = _least_squares(rows, fit_t, order, horizon, penalties[:1])
        return Autoregression(order, horizon, coefficients, penalty=float(penalties[0]))
    before, tail = _tail_split(rows, train_t, horizon, tail_fraction)
    largest = min(max_order or MAX_SEARCHED_ORDER, max(1, (len(before) // 4 - 1) // k))
    candidates = set(range(1, largest + 1))
    if season is not None and max_order is None:
        candidates |= {p for p in (season, season + 1) if (1 + p * k) * 4 <= len(before)}
    tail_rmse = {}
    for p in sorted(candidates):
        fit_t = _complete(rows, before, p)
        if len(fit_t) <= 1 + p * k or len(tail) == 0:
            continue
        lagged = rows.lagged(tail, p)  # (N_tail, 1 + p K)
        for penalty, coefficients in zip(
            penalties, _least_squares(rows, fit_t, p, horizon, penalties)
        ):
            score = _scores(lagged @ coefficients, rows.targets[tail + horizon])["rmse"]
            tail_rmse[p if len(penalties) == 1 else (p, float(penalty))] = score
    if not tail_rmse:
        raise DataError(
            f"Expected enough training pairs to fit an autoregression (at least 3 before a "
            f"held-out tail), got {len(train_t)}; use more rows or a smaller horizon"
        )
    best = min(tail_rmse, key=lambda key: (tail_rmse[key], key))
    p, penalty = best if len(penalties) > 1 else (best, float(penalties[0]))
    (coefficients,) = _least_squares(rows, _complete(rows, train_t, p), p, horizon, (penalty,))
    return Autoregression(p, horizon, coefficients, tail_rmse, penalty=penalty)


def _tail_split(rows: Rows, train_t: np.ndarray, horizon: int, fraction: float):
    """(pairs before the tail, tail pairs): the tail holds each series' last ``fraction`` of
    training pairs; the pairs before it have their targets before the tail's first input."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"Expected a tail fraction in (0, 1), got {fraction}")
    series = rows.series[train_t] if rows.series is not None else np.zeros(len(train_t), int)
    before, tail = [], []
    for s in np.unique(series):
        ts = train_t[series == s]  # sorted
        n_tail = max(1, round(len(ts) * fraction)) if len(ts) >= 4 else 0
        if n_tail == 0:
            before.append(ts)
            continue
        before.append(ts[: len(ts) - n_tail])  # their targets all precede the tail's targets
        tail.append(ts[len(ts) - n_tail :])
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64)  # noqa: E731
    return cat(before), cat(tail)


def _training_runs(rows: Rows, train_t: np.ndarray, horizon: int) -> list[np.ndarray]:
    """The training rows (inputs and targets of the training pairs), cut at segment starts and
    at gaps, as (n, D) target runs."""
    used = np.unique(np.concatenate([train_t, train_t + horizon]))
    if len(used) == 0:
        return []
    breaks = (np.diff(used) != 1) | (rows.segment_start[used[1:]] != rows.segment_start[used[:-1]])
    return [rows.targets[part] for part in np.split(used, np.flatnonzero(breaks) + 1)]


# -- all baselines -----------------------------------------------------------------------


@dataclass(frozen=True)
class Baselines:
    """The fitted baselines at one horizon (see the module docstring).

    Attributes:
        horizon: h. mean: (D,) the training pairs' mean target.
        season: the season used by the seasonal forecast, or None (no season: none reported).
        ar: the autoregression.
    """

    horizon: int
    mean: np.ndarray
    season: Season | None
    ar: Autoregression

    def forecasts(self, rows: Rows, t: np.ndarray) -> dict[str, np.ndarray]:
        """Each baseline's (N, D) forecasts of the targets at rows t + h."""
        t = np.asarray(t, dtype=np.int64)
        out = {
            "persistence": rows.targets[t],
            "mean": np.broadcast_to(self.mean, (len(t), len(self.mean))),
        }
        if self.season is not None:
            out["seasonal"] = rows.targets[self._seasonal_rows(rows, t)]
        out["ar"] = self.ar.predict(rows, t)
        return out

    def _seasonal_rows(self, rows: Rows, t: np.ndarray) -> np.ndarray:
        s, h = self.season.period, self.horizon
        back = t + h - s * math.ceil(h / s)  # one season before t + h, at or before t
        return np.where(back >= rows.segment_start[t], back, t)  # else persistence

    def seasonal_fallbacks(self, rows: Rows, t: np.ndarray) -> int:
        """How many of the pairs t had no season before them in their segment (persistence)."""
        if self.season is None:
            return 0
        t = np.asarray(t, dtype=np.int64)
        return int((self._seasonal_rows(rows, t) == t).sum())

    def scores(self, rows: Rows, t: np.ndarray) -> dict[str, dict[str, float]]:
        """RMSE and MAE in the data's units over the pairs t x D targets ({} for no pairs)."""
        t = np.asarray(t, dtype=np.int64)
        if len(t) == 0:
            return {}
        actual = rows.targets[t + self.horizon]
        return {name: _scores(f, actual) for name, f in self.forecasts(rows, t).items()}

    def describe(self) -> dict:
        return {
            "horizon": self.horizon,
            "season": self.season.to_dict() if self.season is not None else None,
            "ar_order": self.ar.order,
            "ar_tail_rmse": {str(p): v for p, v in self.ar.tail_rmse.items()},
            "ar_penalty": self.ar.penalty,
        }


def _season(rows, train_t, horizon, season) -> Season | None:
    if isinstance(season, Season):
        return season
    if season is None:
        return detect_season(_training_runs(rows, train_t, horizon))
    if isinstance(season, bool) or not isinstance(season, int) or season < 0:
        raise DataError(f"Expected a season of at least 1 row (0: none), got {season!r}")
    if season == 0:
        return None
    longest = max((len(run) for run in _training_runs(rows, train_t, horizon)), default=0)
    if season >= longest:
        raise DataError(
            f"Expected a season shorter than the training rows ({longest}), got {season}; "
            "use a shorter season or more rows"
        )
    return Season(season, "given")


def fit_baselines(
    rows: Rows,
    train_t: np.ndarray,
    *,
    horizon: int = 1,
    season: int | Season | None = None,
    order: int | None = None,
    max_order: int | None = None,
    tail_fraction: float = 0.2,
) -> Baselines:
    """Fit every baseline on the training pairs ``train_t`` (input rows; targets at t + h).

    ``season``: a period in rows (0: no seasonal baseline), a :class:`Season`, or None to
    detect one from the training rows. ``order``: the autoregression's p (None: chosen on the held-out tail).
    """
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise DataError(f"Expected a horizon of at least 1 step, got {horizon!r}")
    train_t = np.asarray(train_t, dtype=np.int64)
    if len(train_t) < 2:
        raise DataError(f"Expected at least 2 training pairs, got {len(train_t)}")
    found = _season(rows, train_t, horizon, season)
    ar = fit_autoregression(
        rows,
        train_t,
        horizon=horizon,
        order=order,
        max_order=max_order,
        tail_fraction=tail_fraction,
        season=found.period if found is not None else None,
    )
    mean = rows.targets[train_t + horizon].mean(0)  # (D,)
    return Baselines(horizon, mean, found, ar)


def fit_direct_baselines(
    rows: Rows, train_t: np.ndarray, *, horizons: int, season: int | Season | None = None, **kw
) -> list[Baselines]:
    """The baselines of each step 1..H of a direct multi-output forecast (one season for all,
    detected once; an autoregression fitted and its order chosen per step)."""
    if isinstance(horizons, bool) or not isinstance(horizons, int) or horizons < 1:
        raise DataError(f"Expected a horizon of at least 1 step, got {horizons!r}")
    found = _season(rows, np.asarray(train_t, dtype=np.int64), horizons, season)
    season = found if found is not None else 0
    return [
        fit_baselines(rows, train_t, horizon=h, season=season, **kw) for h in range(1, horizons + 1)
    ]
