"""Forecast baselines against independent references: numpy least squares on shifted copies of
the series, seasonal naive written out index by index, period detection on synthetic series."""

import math

import numpy as np
import pytest

from tbptt.data.forecast import Rows, fit_autoregression, fit_baselines, fit_direct_baselines
from tbptt.data.season import Season, autocorrelation, detect_season
from tbptt.errors import DataError


def ar2(n=3000, a1=0.5, a2=-0.3, c=2.0, noise=0.5, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros(n)
    for t in range(2, n):
        x[t] = c + a1 * x[t - 1] + a2 * x[t - 2] + noise * rng.standard_normal()
    return x


def reference_ar(x: np.ndarray, t: np.ndarray, p: int, h: int) -> np.ndarray:
    """numpy lstsq of x[t + h] on 1, x[t], ..., x[t - p + 1], pairs t with all lags in range."""
    t = t[t - p + 1 >= 0]
    design = np.column_stack([np.ones(len(t))] + [x[t - j] for j in range(p)])
    coefficients, *_ = np.linalg.lstsq(design, x[t + h], rcond=None)
    return coefficients


def one_series(x: np.ndarray) -> Rows:
    return Rows.from_bounds(x, x, [(0, len(x))])


# -- the autoregression ------------------------------------------------------------------


@pytest.mark.parametrize("h", [1, 3])
def test_ar_equals_numpy_least_squares_and_recovers_ar2(h):
    x = ar2()
    n, cut = len(x), 2700
    train_t, valid_t = np.arange(cut - h), np.arange(cut - h, n - h)
    rows = one_series(x)
    ar = fit_autoregression(rows, train_t, horizon=h, order=2)

    reference = reference_ar(x, train_t, 2, h)
    np.testing.assert_allclose(ar.coefficients[:, 0], reference, rtol=0, atol=1e-10)
    if h == 1:  # the AR(2) itself: c, a1, a2 recovered
        np.testing.assert_allclose(reference, [2.0, 0.5, -0.3], atol=0.06)
    forecast = np.column_stack([np.ones(len(valid_t)), x[valid_t], x[valid_t - 1]]) @ reference
    rmse = math.sqrt(np.mean((forecast - x[valid_t + h]) ** 2))
    base = fit_baselines(rows, train_t, horizon=h, order=2, season=0)
    assert base.scores(rows, valid_t)["ar"]["rmse"] == pytest.approx(rmse, rel=1e-12)
    mae = np.mean(np.abs(x[valid_t] - x[valid_t + h]))  # persistence
    assert base.scores(rows, valid_t)["persistence"]["mae"] == pytest.approx(mae, rel=1e-12)
    mean = x[train_t + h].mean()
    rmse_mean = math.sqrt(np.mean((mean - x[valid_t + h]) ** 2))
    assert base.scores(rows, valid_t)["mean"]["rmse"] == pytest.approx(rmse_mean, rel=1e-12)


def test_ar_order_is_chosen_on_the_training_tail_and_never_reads_the_validation_split():
    x = ar2(n=2000, seed=1)
    cut = 1800
    train_t = np.arange(cut - 1)
    ar = fit_autoregression(one_series(x), train_t, horizon=1, max_order=6)

    # the reference: fit on the training pairs before the last 20%, score on that tail
    n_tail = round(len(train_t) * 0.2)
    before, tail = train_t[:-n_tail], train_t[-n_tail:]
    expected = {}
    for p in range(1, 7):
        c = reference_ar(x, before, p, 1)
        forecast = np.column_stack([np.ones(n_tail)] + [x[tail - j] for j in range(p)]) @ c
        expected[p] = math.sqrt(np.mean((forecast - x[tail + 1]) ** 2))
    assert ar.tail_rmse == pytest.approx(expected, rel=1e-9)
    assert ar.order == min(expected, key=expected.get)
    assert ar.order >= 2  # AR(1) misses the second lag
    np.testing.assert_allclose(
        ar.coefficients[:, 0], reference_ar(x, train_t, ar.order, 1), atol=1e-10
    )

    spoiled = x.copy()
    spoiled[cut:] = 1e6  # the validation targets: nothing fitted may change
    again = fit_baselines(one_series(spoiled), train_t, horizon=1, max_order=6)
    np.testing.assert_array_equal(again.ar.coefficients, ar.coefficients)


def test_ar_reads_inputs_too_and_never_across_a_segment_start():
    rng = np.random.default_rng(2)
    n = 400
    u = rng.standard_normal(n)  # an input that drives the target one step later
    y = np.zeros(n)
    y[1:] = 3.0 * u[:-1] + 0.1 * rng.standard_normal(n - 1)
    history = np.column_stack([y, u])  # (n, K = 2)
    rows = Rows.from_bounds(history, y, [(0, 150), (150, n)])
    train_t = np.array([t for t in range(n - 1) if t + 1 not in (150,)])  # pairs in a segment
    ar = fit_autoregression(rows, train_t, horizon=1, order=2)

    t = np.array([t for t in train_t if t - 1 >= (0 if t < 150 else 150)])
    design = np.column_stack([np.ones(len(t)), y[t], u[t], y[t - 1], u[t - 1]])
    reference, *_ = np.linalg.lstsq(design, y[t + 1], rcond=None)
    np.testing.assert_allclose(ar.coefficients[:, 0], reference, atol=1e-10)
    assert ar.coefficients[2, 0] == pytest.approx(3.0, abs=0.05)  # u[t]'s weight recovered
    # a forecast at a segment's first row reads that row in place of the lag before it
    lagged = rows.lagged(np.array([150]), 2)
    np.testing.assert_array_equal(lagged[0], [1.0, y[150], u[150], y[150], u[150]])


# -- seasonal naive ----------------------------------------------------------------------


@pytest.mark.parametrize("h", [1, 5, 9])
def test_seasonal_naive_is_the_latest_value_one_season_before(h):
    rng = np.random.default_rng(3)
    n, s = 300, 7
    x = 10 * np.sin(2 * np.pi * np.arange(n) / s) + 0.3 * rng.standard_normal(n)
    rows = one_series(x)
    cut = 250
    train_t, valid_t = np.arange(cut - h), np.arange(cut - h, n - h)
    base = fit_baselines(rows, train_t, horizon=h, season=s, order=1)
    back = 7 if h <= 7 else 14  # s * ceil(h / s)
    expected = np.array([x[t + h - back] for t in valid_t])
    np.testing.assert_array_equal(base.forecasts(rows, valid_t)["seasonal"][:, 0], expected)
    rmse = math.sqrt(np.mean((expected - x[valid_t + h]) ** 2))
    assert base.scores(rows, valid_t)["seasonal"]["rmse"] == pytest.approx(rmse, rel=1e-12)
    assert base.season == Season(7, "given")
    assert base.scores(rows, valid_t)["seasonal"]["rmse"] < 1.0  # it is the right season
    assert base.scores(rows, valid_t)["persistence"]["rmse"] > 2.0


def test_seasonal_naive_falls_back_to_persistence_before_the_first_season():
    x = np.arange(40, dtype=float)
    rows = Rows.from_bounds(x, x, [(0, 20), (20, 40)])
    base = fit_baselines(rows, np.arange(15), horizon=1, season=5, order=1)
    t = np.array([20, 21, 23, 24, 30])  # the second segment starts at 20
    got = base.forecasts(rows, t)["seasonal"][:, 0]
    np.testing.assert_array_equal(got, [20, 21, 23, 20, 26])  # t + 1 - 5 >= 20, else x[t]
    assert base.seasonal_fallbacks(rows, t) == 3


# -- the period --------------------------------------------------------------------------


@pytest.mark.parametrize("period", [7, 12, 52])
def test_period_detected_through_trend_and_noise(period):
    rng = np.random.default_rng(period)
    n = 12 * period
    t = np.arange(n)
    x = 0.05 * t + 5 * np.sin(2 * np.pi * t / period) + rng.standard_normal(n)
    season = detect_season([x])
    assert season is not None and season.source == "detected"
    assert season.period == period
    assert season.acf == pytest.approx(autocorrelation([x], period)[period])


def test_period_is_the_season_not_its_multiple_and_harmonics_do_not_fool_it():
    rng = np.random.default_rng(0)
    t = np.arange(600)
    x = (
        np.sin(2 * np.pi * t / 12)
        + 0.6 * np.sin(2 * np.pi * t / 6)
        + 0.3 * rng.standard_normal(600)
    )
    assert detect_season([x]).period == 12


def test_no_period_in_noise_or_a_smooth_random_walk():
    rng = np.random.default_rng(0)
    assert detect_season([rng.standard_normal(1000)]) is None
    smooth = np.zeros(1000)
    for i in range(1, 1000):
        smooth[i] = 0.95 * smooth[i - 1] + rng.standard_normal()
    assert detect_season([smooth]) is None


def test_autocorrelation_equals_the_direct_sum():
    rng = np.random.default_rng(1)
    runs = [rng.standard_normal(50), rng.standard_normal(30)]
    detrended = []
    for run in runs:
        time = np.column_stack([np.ones(len(run)), np.arange(len(run))])
        detrended.append(run - time @ np.linalg.lstsq(time, run, rcond=None)[0])
    den = sum((z**2).sum() for z in detrended)
    expected = [sum((z[: len(z) - k] * z[k:]).sum() for z in detrended) / den for k in range(8)]
    np.testing.assert_allclose(autocorrelation(runs, 7), expected, atol=1e-12)


def test_detected_season_is_used_and_said():
    t = np.arange(400)
    x = 3 * np.sin(2 * np.pi * t / 10) + 0.1 * np.random.default_rng(0).standard_normal(400)
    base = fit_baselines(one_series(x), np.arange(350), horizon=1, order=1)
    assert base.season.period == 10 and base.describe()["season"]["source"] == "detected"
    assert fit_baselines(one_series(x), np.arange(350), season=0, order=1).season is None


@pytest.mark.parametrize("season", [400, -1, 2.5, True])
def test_bad_season_is_one_line(season):
    x = np.arange(400, dtype=float)
    with pytest.raises(DataError, match="season"):
        fit_baselines(one_series(x), np.arange(350), season=season, order=1)


def test_direct_baselines_are_one_fit_per_step():
    x = ar2(n=600, seed=4)
    rows = one_series(x)
    train_t = np.arange(500)
    steps = fit_direct_baselines(rows, train_t, horizons=3, max_order=4)
    assert [b.horizon for b in steps] == [1, 2, 3]
    for h, base in enumerate(steps, start=1):
        single = fit_baselines(rows, train_t, horizon=h, max_order=4, season=steps[0].season or 0)
        np.testing.assert_array_equal(base.ar.coefficients, single.ar.coefficients)
        assert base.season == steps[0].season


def test_ridge_autoregression_equals_the_closed_form_and_is_chosen_on_the_tail():
    x = ar2(n=500, seed=7)
    rows = one_series(x)
    train_t = np.arange(2, 450)
    ar = fit_autoregression(rows, train_t, order=3, penalties=(0.1,))
    # closed form: centred, unit-variance lag columns; intercept unpenalized
    design = np.column_stack([x[train_t - j] for j in range(3)])
    mean, scale = design.mean(0), design.std(0)
    z = (design - mean) / scale
    y = x[train_t + 1]
    slopes = np.linalg.solve(z.T @ z + 0.1 * len(z) * np.eye(3), z.T @ (y - y.mean())) / scale
    np.testing.assert_allclose(ar.coefficients[1:, 0], slopes, atol=1e-12)
    assert ar.coefficients[0, 0] == pytest.approx(y.mean() - mean @ slopes, abs=1e-12)
    assert ar.penalty == 0.1
    chosen = fit_autoregression(rows, train_t, max_order=4, penalties=(0.0, 0.01, 1.0))
    assert set(chosen.tail_rmse) == {(p, lam) for p in range(1, 5) for lam in (0.0, 0.01, 1.0)}
    assert (chosen.order, chosen.penalty) == min(chosen.tail_rmse, key=chosen.tail_rmse.get)
