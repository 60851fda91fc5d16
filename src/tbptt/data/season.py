"""The season of a time series: its period detected from the training rows'
autocorrelation (:func:`detect_season`), or given (:class:`Season`). The seasonal
baseline and the forecaster's features read it (:mod:`tbptt.data.forecast`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Season", "autocorrelation", "detect_season", "MIN_SEASON_ACF"]

MIN_SEASON_ACF = 0.3  # a detected season's autocorrelation must reach this


@dataclass(frozen=True)
class Season:
    """A season of ``period`` rows, ``given`` or ``detected`` (with its autocorrelation)."""

    period: int
    source: str
    acf: float | None = None

    def to_dict(self) -> dict:
        return {"period": self.period, "source": self.source, "acf": self.acf}


def autocorrelation(runs: Sequence[np.ndarray], max_lag: int) -> np.ndarray:
    """(max_lag + 1,) the autocorrelation of runs of rows, each (n,) or (n, D), pooled.

    Each run's columns lose their least-squares line first (a trend is not a season); the
    products at each lag are summed over runs and divided by the summed squares (the biased
    estimator, which favours the shorter of two equal periods); columns are averaged.
    """
    num, den = np.zeros(max_lag + 1), 0.0
    columns = None
    for run in runs:
        run = np.asarray(run, dtype=np.float64)
        run = run.reshape(len(run), -1)  # (n, D)
        columns = run.shape[1]
        n = len(run)
        if n < 3:
            continue
        time = np.stack([np.ones(n), np.arange(n, dtype=np.float64)], axis=1)  # (n, 2)
        line, *_ = np.linalg.lstsq(time, run, rcond=None)
        z = run - time @ line  # (n, D)
        size = 1 << (2 * n - 1).bit_length()  # FFT length without circular overlap
        spectrum = np.fft.rfft(z, size, axis=0)
        products = np.fft.irfft(spectrum * spectrum.conj(), size, axis=0)[: max_lag + 1]
        num[: min(n, max_lag + 1)] += products[: min(n, max_lag + 1)].sum(1)
        den += float((z**2).sum())
    if columns is None or den <= 0:
        return np.zeros(max_lag + 1)
    return num / den


def detect_season(runs: Sequence[np.ndarray], *, max_period: int | None = None) -> Season | None:
    """The season of runs of training rows, or None.

    The candidates are the peaks of the autocorrelation r at lags 2 .. half the longest run
    that reach 0.3, stand at least 0.1 above the lowest r at a shorter lag (a wiggle on the
    decay of a smooth series is no season) and, where twice the lag is in range, repeat: r
    near twice the lag at least 0.2 above r near one and a half times it. (A persistent
    series without a season, AR(1) with coefficient 0.95 over 1,000 rows, shows chance peaks
    of 0.2 to 0.25 at long lags.) The season is the highest, or the shortest peak within 10% of
    it of which it is a multiple (12, not 24, for a yearly season of months).
    """
    longest = max((len(run) for run in runs), default=0)
    max_lag = longest // 2 if max_period is None else min(longest // 2, max_period)
    if max_lag < 2:
        return None
    r = autocorrelation(runs, max_lag + 1)
    lags = np.arange(2, max_lag + 1)
    peaks = lags[(r[lags] > r[lags - 1]) & (r[lags] >= r[lags + 1])]
    lowest_before = np.minimum.accumulate(r)  # lowest r at lags 0 .. k
    peaks = peaks[(r[peaks] >= MIN_SEASON_ACF) & (r[peaks] - lowest_before[peaks - 1] >= 0.1)]

    def repeats(k: int) -> bool:
        if 2 * k + 2 > max_lag + 1:
            return True  # no second season in range to look at
        half = round(1.5 * k)
        return r[2 * k - 2 : 2 * k + 3].max() - r[half - 1 : half + 2].min() >= 0.2

    peaks = np.array([k for k in peaks if repeats(int(k))], dtype=np.int64)
    if len(peaks) == 0:
        return None
    best = int(peaks[np.argmax(r[peaks])])
    period = best
    for q in peaks[(peaks < best) & (r[peaks] >= 0.9 * r[best])]:
        multiple = round(best / q)
        if multiple >= 2 and abs(best - multiple * q) <= max(1, 0.05 * best):
            period = int(q)
            break
    return Season(period, "detected", float(r[period]))
