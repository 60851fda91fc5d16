"""Time-series files into forecasting pairs: pairing, split by time, scalers, baselines, errors."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tbptt.data.series import MISSING, SeriesData, Standardizer, prepare_series, read_table
from tbptt.data.streams import StreamData
from tbptt.errors import DataError
from tests.conftest import TEMPERATURES


def write_csv(tmp_path, header, rows, name="s.csv") -> Path:
    path = tmp_path / name
    lines = [",".join(header)] + [",".join(str(c) for c in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def original(scaler: Standardizer, values: torch.Tensor) -> np.ndarray:
    return scaler.inverse(values.double()).numpy()


# -- pairing and the split by time ---------------------------------------------------------


@pytest.mark.parametrize(
    "horizon, train_rows, valid_rows",
    [
        # n = 10, valid_fraction = 0.3: cut = 7, validation targets are rows 7, 8, 9.
        (1, [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6)], [(6, 7), (7, 8), (8, 9)]),
        (3, [(0, 3), (1, 4), (2, 5), (3, 6)], [(4, 7), (5, 8), (6, 9)]),
    ],
)
def test_pairs_and_split_by_target_row(tmp_path, horizon, train_rows, valid_rows):
    x = np.array([float(i * i) for i in range(10)])
    path = write_csv(tmp_path, ['"Date"', '"Temp"'], [(f'"d{i}"', v) for i, v in enumerate(x)])
    data = prepare_series(path, target="Temp", horizon=horizon, valid_fraction=0.3)

    mean, std = x[:7].mean(), x[:7].std()  # training rows 0..6 only
    for split, pairs in ((data.train, train_rows), (data.valid, valid_rows)):
        assert isinstance(split, StreamData) and split.inputs.dtype == torch.float32
        assert split.inputs.shape == split.targets.shape == (len(pairs), 1)
        expected_inputs = (x[[t for t, _ in pairs]] - mean) / std
        expected_targets = (x[[r for _, r in pairs]] - mean) / std
        np.testing.assert_allclose(split.inputs[:, 0].numpy(), expected_inputs, rtol=1e-6)
        np.testing.assert_allclose(split.targets[:, 0].numpy(), expected_targets, rtol=1e-6)
        assert split.starts is None  # one series
    assert data.valid_index == ["d7", "d8", "d9"]  # the Date of each validation target row
    assert data.horizon == horizon and data.series == 1
    assert data.train_split() is data.train and data.valid_split() is data.valid
    assert data.input_columns == data.target_columns == ("Temp",)
    np.testing.assert_allclose(data.valid_persistence[:, 0].numpy(), x[[t for t, _ in valid_rows]])


def test_multivariate_inputs_and_targets_keep_the_order_asked(tmp_path):
    g = np.random.default_rng(0)
    table = g.normal(size=(12, 3)) * [1.0, 10.0, 100.0] + [0.0, 5.0, -3.0]  # columns a, b, c
    path = write_csv(tmp_path, ["name", "a", "b", "c"], [("x", *row) for row in table])
    data = prepare_series(path, target=["c", "a"], inputs=["b", "c"], horizon=2, valid_fraction=0.25)  # fmt: skip
    # n = 12, cut = 9: training pairs t = 0..6, validation t = 7..9.
    assert data.input_columns == ("b", "c") and data.target_columns == ("c", "a")
    assert data.train.inputs.shape == (7, 2) and data.train.targets.shape == (7, 2)
    inputs, targets = table[:, [1, 2]], table[:, [2, 0]]
    np.testing.assert_allclose(original(data.inputs_scaler, data.train.inputs), inputs[0:7], rtol=1e-5, atol=1e-4)  # fmt: skip
    np.testing.assert_allclose(original(data.targets_scaler, data.train.targets), targets[2:9], rtol=1e-5, atol=1e-5)  # fmt: skip
    np.testing.assert_allclose(original(data.targets_scaler, data.valid.targets), targets[9:12], rtol=1e-5, atol=1e-5)  # fmt: skip
    # Persistence needs target column a at the input row although a is not an input.
    np.testing.assert_array_equal(data.valid_persistence.numpy(), targets[7:10])
    np.testing.assert_allclose(data.targets_scaler.mean, targets[:9].mean(0))
    np.testing.assert_allclose(data.inputs_scaler.std, inputs[:9].std(0))


def test_each_series_is_its_own_segment_with_start_marks(tmp_path):
    # Value = 100 * series + row within the series, so every pair names where it came from.
    rows = [("a", 100 + t) for t in range(6)] + [("b", 200 + t) for t in range(5)]
    path = write_csv(tmp_path, ["id", "v"], rows)
    data = prepare_series(path, target="v", series_id="id", valid_fraction=0.2)
    # a: n = 6, cut = 6 - round(1.2) = 5; b: n = 5, cut = 5 - round(1.0) = 4.
    train_in = [100, 101, 102, 103, 200, 201, 202]
    valid_in = [104, 203]
    assert data.series == 2
    for split, expected in ((data.train, train_in), (data.valid, valid_in)):
        ins = original(data.inputs_scaler, split.inputs)[:, 0].round().astype(int)
        outs = original(data.targets_scaler, split.targets)[:, 0].round().astype(int)
        assert ins.tolist() == expected
        assert (outs == ins + 1).all()  # never a pair across the series boundary
    assert data.train.starts.tolist() == [True, False, False, False, True, False, False]
    assert data.valid.starts.tolist() == [True, True]
    assert data.valid_index == ["5", "10"]  # no time column: data row numbers of the targets
    rows.append(("a", 999))
    with pytest.raises(DataError, match=r"line 13: series 'a' reappears.*sort the file"):
        prepare_series(write_csv(tmp_path, ["id", "v"], rows), target="v", series_id="id")


# -- standardization ------------------------------------------------------------------------


def test_scalers_are_fitted_on_training_rows_only(tmp_path):
    values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0]  # cut = 8 at valid_fraction 0.2
    base = prepare_series(write_csv(tmp_path, ["v"], [(v,) for v in values]), target="v", valid_fraction=0.2)  # fmt: skip
    changed = values[:8] + [500.0, -70.0]
    other = prepare_series(write_csv(tmp_path, ["v"], [(v,) for v in changed], "b.csv"), target="v", valid_fraction=0.2)  # fmt: skip
    assert other.inputs_scaler == base.inputs_scaler and other.targets_scaler == base.targets_scaler
    assert base.targets_scaler.mean == pytest.approx((np.mean(values[:8]),))
    assert base.targets_scaler.std == pytest.approx((np.std(values[:8]),))
    changed = [30.0] + values[1:]
    moved = prepare_series(write_csv(tmp_path, ["v"], [(v,) for v in changed], "c.csv"), target="v", valid_fraction=0.2)  # fmt: skip
    assert moved.targets_scaler != base.targets_scaler


def test_standardizer_round_trips_and_keeps_constant_columns_finite():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, generator=g, dtype=torch.float64) * torch.tensor([1.0, 50.0, 1e-3])
    x[:, 1] += 1000.0
    scaler = Standardizer.fit(x)
    z = scaler.transform(x)
    assert torch.allclose(z.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(z.std(0, unbiased=False), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(scaler.inverse(z), x, rtol=1e-12, atol=1e-12)
    assert torch.allclose(scaler.inverse(scaler.transform(x[None])), x[None])  # (..., D)
    assert Standardizer.from_dict(json.loads(json.dumps(scaler.to_dict()))) == scaler
    # Seven copies of 0.1 have a rounding std of 1e-17, zeros an exact 0: both are constant.
    constant = torch.tensor([[0.1, 0.0]] * 7, dtype=torch.float64)
    assert Standardizer.fit(constant).std == (1.0, 1.0)
    assert Standardizer.fit(constant).transform(constant).abs().max() < 1e-15
    with pytest.raises(DataError, match=r"Expected values of shape \(\.\.\., 3\), got \(4, 2\)"):
        scaler.transform(torch.zeros(4, 2))
    with pytest.raises(DataError, match="mean"):
        Standardizer.from_dict({"std": [1.0]})


# -- baselines ------------------------------------------------------------------------------


def test_baselines_match_a_naive_computation(tmp_path):
    g = np.random.default_rng(3)
    series = {"p": g.normal(size=(13, 2)).cumsum(0), "q": 5 + g.normal(size=(9, 2)).cumsum(0)}
    rows = [(sid, *v) for sid, values in series.items() for v in values]
    path = write_csv(tmp_path, ["sid", "u", "w"], rows)
    h, fraction = 2, 0.3
    data = prepare_series(path, target=["u", "w"], series_id="sid", horizon=h, valid_fraction=fraction)  # fmt: skip

    actual, persistence, train_targets = [], [], []
    for values in series.values():
        n = len(values)
        cut = n - round(n * fraction)  # p: 13 - 4 = 9; q: 9 - 3 = 6
        for row in range(n):
            if row >= cut:
                actual.append(values[row])
                persistence.append(values[row - h])
            elif row >= h:
                train_targets.append(values[row])
    actual, persistence = np.array(actual), np.array(persistence)
    mean = np.mean(train_targets, axis=0)
    expected = {
        "persistence": (
            math.sqrt(np.mean((persistence - actual) ** 2)),
            np.mean(np.abs(persistence - actual)),
        ),  # fmt: skip
        "mean": (math.sqrt(np.mean((mean - actual) ** 2)), np.mean(np.abs(mean - actual))),
    }
    scores = data.baselines()
    assert {"persistence", "mean", "ar"} <= set(scores)  # seasonal: only with a season
    for name, (rmse, mae) in expected.items():
        assert scores[name]["rmse"] == pytest.approx(rmse, rel=1e-12)
        assert scores[name]["mae"] == pytest.approx(mae, rel=1e-12)
    np.testing.assert_allclose(data.train_target_mean, mean)
    np.testing.assert_allclose(original(data.targets_scaler, data.valid.targets), actual, atol=1e-5)  # fmt: skip


def test_no_validation_rows_means_no_baselines(tmp_path):
    path = write_csv(tmp_path, ["v"], [(v,) for v in range(6)])
    data = prepare_series(path, target="v", valid_fraction=0.0)
    assert len(data.valid) == 0 and data.valid.targets.shape == (0, 1)
    assert len(data.train) == 5 and data.baselines() == {} and data.valid_index == []


# -- cells and missing values ---------------------------------------------------------------


def test_missing_cells_dropped_or_forward_filled_within_a_series(tmp_path):
    rows = [("a", 1, "x"), ("a", "", "y"), ("a", 3, "z"), ("a", 4, "z"), ("a", "NA", "z"),
            ("a", 6, "z"), ("a", 7, "z"), ("b", 10, "z"), ("b", "null", "z"), ("b", 12, "z"),
            ("b", 13, "z"), ("b", 14, "z")]  # fmt: skip
    path = write_csv(tmp_path, ["id", "v", "note"], rows)
    with pytest.raises(DataError, match=r"s\.csv line 3, column 'v' is missing.*drop.*ffill") as e:
        prepare_series(path, target="v", series_id="id")
    assert e.value.options == ("data.missing",) and "missing=" not in str(e.value)
    filled = prepare_series(path, target="v", series_id="id", missing="ffill", valid_fraction=0.0)
    raw = original(filled.inputs_scaler, filled.train.inputs)[:, 0]
    np.testing.assert_allclose(raw, [1, 1, 3, 4, 4, 6, 10, 10, 12, 13], atol=1e-5)
    # the pairs whose target was filled (rows 1, 4 of a; row 1 of b) stay, masked out
    assert filled.train.mask.tolist() == [False, True, True, False, True, True, False, True, True, True]  # fmt: skip
    assert "3 forward-filled target row(s) are never scored" in filled.reading()
    dropped = prepare_series(path, target="v", series_id="id", missing="drop", valid_fraction=0.0)
    ins = original(dropped.inputs_scaler, dropped.train.inputs)[:, 0]
    outs = original(dropped.targets_scaler, dropped.train.targets)[:, 0]
    # segments a: [1] [3 4] [6 7], b: [10] [12 13 14]; pairs never cross a gap
    np.testing.assert_allclose(ins, [3, 6, 12, 13], atol=1e-5)
    np.testing.assert_allclose(outs, [4, 7, 13, 14], atol=1e-5)
    assert dropped.train.starts.tolist() == [True, True, True, False]  # a reset at each gap
    assert dropped.dropped_rows == 3
    assert "dropped 3 row(s) with missing cells; 3 gap(s)" in dropped.reading()
    first = write_csv(tmp_path, ["id", "v"], [("a", 1), ("a", 2), ("b", ""), ("b", 4)], "f.csv")
    with pytest.raises(DataError, match=r"line 4, column 'v' is missing at the start of series 'b'"):  # fmt: skip
        prepare_series(first, target="v", series_id="id", missing="ffill")


@pytest.mark.parametrize("missing", MISSING)
@pytest.mark.parametrize("cell", ["?0.2", "abc", "inf", "-Infinity"])
def test_a_cell_that_is_no_number_is_always_an_error(tmp_path, missing, cell):
    rows = [("d1", 1.0), ("d2", 2.0), ("d3", cell), ("d4", 4.0), ("d5", 5.0)]
    path = write_csv(tmp_path, ['"Date"', '"Temp"'], rows)
    match = rf"s\.csv line 4, column 'Temp': expected a finite number, got '{re.escape(cell)}'"
    with pytest.raises(DataError, match=match):
        prepare_series(path, target="Temp", missing=missing)


def test_unused_text_columns_and_labels(tmp_path):
    rows = [(f"t{i}", "words", 10 * i, 2 * i) for i in range(8)]
    path = write_csv(tmp_path, [" When ", "note", "Time", "v"], rows)
    # "Time" is used as an input, so it is no time column; none is detected.
    data = prepare_series(path, target="v", inputs=["Time", "v"], valid_fraction=0.25)
    assert data.valid_index == ["6", "7"]
    data = prepare_series(path, target="v", time_column="When", valid_fraction=0.25)
    assert data.valid_index == ["t6", "t7"]
    data = prepare_series(path, target="v", valid_fraction=0.25)  # auto: the "Time" column
    assert data.valid_index == ["60", "70"]
    with pytest.raises(DataError, match="time column 'When' is a label; it cannot be an input"):
        prepare_series(path, target="v", inputs=["When"], time_column="When")


# -- NumPy files ----------------------------------------------------------------------------


def test_npy_and_npz_files_give_what_the_csv_gives(tmp_path):
    g = np.random.default_rng(1)
    table = g.normal(size=(15, 2))
    csv_path = write_csv(
        tmp_path, ["0", "1"], [tuple(repr(float(v)) for v in row) for row in table]
    )
    np.save(tmp_path / "m.npy", table)
    np.save(tmp_path / "v.npy", table[:, 1])
    np.savez(tmp_path / "cols.npz", **{"0": table[:, 0], "1": table[:, 1]})
    np.savez(tmp_path / "one.npz", data=table)
    reference = prepare_series(csv_path, target="1", inputs=["0", "1"])
    for name in ("m.npy", "cols.npz", "one.npz"):
        data = prepare_series(tmp_path / name, target="1", inputs=["0", "1"])
        assert torch.equal(data.train.inputs, reference.train.inputs)
        assert torch.equal(data.valid.targets, reference.valid.targets)
        assert data.baselines() == reference.baselines()
    assert read_table(tmp_path / "v.npy").columns == ("0",)
    single = prepare_series(tmp_path / "v.npy", target="0")
    assert torch.equal(single.valid.targets, reference.valid.targets)
    np.savez(tmp_path / "bad.npz", a=np.zeros(4), b=np.zeros(5))
    with pytest.raises(DataError, match=r"1-D arrays of one length.*'a': \(4,\), 'b': \(5,\)"):
        read_table(tmp_path / "bad.npz")
    np.save(tmp_path / "inf.npy", np.array([1.0, 2.0, np.inf, 4.0]))
    with pytest.raises(DataError, match=r"inf\.npy row 2, column '0': expected a finite number"):
        prepare_series(tmp_path / "inf.npy", target="0")


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("s.txt", "v\n1\n", r"Expected a \.csv, \.npy, \.npz file, got .*s\.txt"),
        ("s.csv", None, r"no such file: .*s\.csv"),
        ("s.csv", b"v\n\xff\xfe1\n", r"s\.csv is not UTF-8"),
        ("s.csv", "", r"s\.csv is empty"),
        ("s.csv", '"Date","Temp"\n', r"s\.csv has no data rows"),
        ("s.csv", "a,b\n1,2\n3\n", r"s\.csv line 3: expected 2 fields as in the header, got 1"),
        ("s.csv", "a,a\n1,2\n", r"repeats column\(s\) \['a'\]"),
        ("s.npy", b"not numpy", r"cannot read .*s\.npy as NumPy data"),
    ],
)
def test_unreadable_files_are_refused_in_one_line(tmp_path, name, content, match):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=match) as caught:
        read_table(path)
    assert "\n" not in str(caught.value)


def test_unknown_columns_are_named_with_the_available_ones(tmp_path):
    path = write_csv(tmp_path, ["Date", "Temp", "Rain"], [("d", 1, 2)] * 5)
    with pytest.raises(DataError) as caught:
        prepare_series(path, target=["Temp", "Wind"], inputs=["Sun"], series_id="Station")
    message = str(caught.value)
    for name in ("'Wind'", "'Sun'", "'Station'", "available: 'Date', 'Temp', 'Rain'"):
        assert name in message


@pytest.mark.parametrize(
    "options, match",
    [
        ({"horizon": 0}, r"Expected a horizon of at least 1 step, got 0"),
        ({"horizon": 6}, r"longer than the horizon h = 6, got 6 rows in series 'b'"),
        ({"valid_fraction": 1.0}, r"valid fraction in \[0, 1\), got 1\.0"),
        ({"valid_fraction": -0.1}, r"valid fraction in \[0, 1\), got -0\.1"),
        ({"horizon": 4, "valid_fraction": 0.4}, r"at least 2 training pairs, got 1"),
        ({"missing": "zero"}, r"missing to be one of \('error', 'drop', 'ffill'\), got 'zero'"),
        ({"inputs": ["id"]}, r"series id 'id' is a label; it cannot be an input"),
    ],
)
def test_bad_options_are_refused(tmp_path, options, match):
    rows = [("a", v) for v in range(8)] + [("b", v) for v in range(6)]
    path = write_csv(tmp_path, ["id", "v"], rows)
    with pytest.raises(DataError, match=match):
        prepare_series(path, target="v", series_id="id", **options)


# -- the real file --------------------------------------------------------------------------


def test_daily_minimum_temperatures():
    if not TEMPERATURES.is_file():
        pytest.skip(f"no daily minimum temperatures at {TEMPERATURES}")
    table = read_table(TEMPERATURES)
    assert table.columns == ("Date", "Temp") and len(table) == 3650
    data = prepare_series(TEMPERATURES, target="Temp")
    # cut = 3650 - 365 = 3285: 3284 training pairs (targets rows 1..3284), 365 validation pairs.
    assert len(data.train) == 3284 and len(data.valid) == 365
    assert data.valid_index[0] == "1990-01-01" and data.valid_index[-1] == "1990-12-31"

    temps = np.loadtxt(TEMPERATURES, delimiter=",", skiprows=1, usecols=1)  # independent read
    tail, before = temps[3285:], temps[3284:-1]
    rmse = math.sqrt(np.mean((tail - before) ** 2))
    assert 2.0 < rmse < 4.0
    scores = data.baselines()
    assert scores["persistence"]["rmse"] == pytest.approx(rmse, rel=1e-9)
    assert scores["persistence"]["mae"] == pytest.approx(np.mean(np.abs(tail - before)), rel=1e-9)
    assert scores["mean"]["rmse"] == pytest.approx(math.sqrt(np.mean((tail - temps[1:3285].mean()) ** 2)))  # fmt: skip


# -- gaps, filled values, horizons, columns (issue 25) -------------------------------------


def test_a_dropped_gap_resets_the_state_there(tmp_path):
    from tbptt.models import ModelConfig, RecurrentNet
    from tbptt.train.evaluate import evaluation_batch

    values = [float(v) for v in range(1, 13)]
    values[5] = "NA"  # row 5 missing: rows 0..4 | 6..11 (an empty cell would be a blank line)
    path = write_csv(tmp_path, ["v"], [(v,) for v in values])
    data = prepare_series(path, target="v", missing="drop", valid_fraction=0.0)
    assert data.train.starts.tolist() == [True] + [False] * 3 + [True] + [False] * 4
    batch = evaluation_batch(data.train, 1)  # one column, the stream as the trainer reads it
    assert batch.resets[:, 0].tolist() == data.train.starts.tolist()
    torch.manual_seed(0)
    config = ModelConfig(input_size=1, output_size=1, kind="gru", hidden_size=3, num_layers=1,
                         embedding_size=0, dropout=0.0)  # fmt: skip
    model = RecurrentNet(config).double().eval()
    with torch.no_grad():
        outputs, _ = model(batch.inputs.double(), resets=batch.resets)
        after_gap, _ = model(batch.inputs[4:].double())  # a fresh state at the gap
    torch.testing.assert_close(outputs[4:], after_gap, rtol=0, atol=1e-12)
    with torch.no_grad():
        joined, _ = model(batch.inputs.double())  # without the reset the state crosses it
    assert (joined[4:] - after_gap).abs().max() > 1e-6


def test_filled_values_are_masked_so_metrics_score_only_observed_rows(tmp_path):
    from tbptt.train.evaluate import evaluate, evaluation_batch
    from tbptt.train.objectives import Regression

    g = np.random.default_rng(5)
    values = g.normal(size=40).cumsum().round(6)
    cells = [f"{v:.6f}" for v in values]
    for row in (7, 33, 36):  # one training target, two validation targets
        cells[row] = "NA"
    path = write_csv(tmp_path, ["v"], [(c,) for c in cells])
    data = prepare_series(path, target="v", missing="ffill", valid_fraction=0.25)
    observed = np.array([c != "NA" for c in cells])
    assert data.train.mask.tolist() == observed[1:30].tolist()  # targets of pairs t = 0..28
    assert data.valid.mask.tolist() == observed[30:].tolist()  # targets of pairs t = 29..38

    class Doubling(torch.nn.Module):  # any fixed forecast will do: twice the input
        def forward(self, inputs, state=None, gates=None, *, resets=None):
            return 2 * inputs, state

    objective = Regression(scale=data.targets_scaler.std)
    sums = evaluate(Doubling(), evaluation_batch(data.valid, 3), objective=objective)
    got = objective.summary(sums)
    z_in = data.valid.inputs[:, 0].double().numpy()
    predicted = (2 * z_in) * data.targets_scaler.std[0] + data.targets_scaler.mean[0]
    actual = values[30:]  # the true targets of pairs t = 29..38
    keep = observed[30:]
    expected = math.sqrt(np.mean((predicted[keep] - actual[keep]) ** 2))
    assert got["rmse"] == pytest.approx(expected, rel=1e-5)
    assert data.scores(torch.from_numpy(predicted[:, None]))["rmse"] == pytest.approx(expected, rel=1e-12)  # fmt: skip
    seen = values.copy()
    for row in (7, 33, 36):
        seen[row] = seen[row - 1]  # what a forecast made at that row knows: the filled value
    persistence = seen[29:39]
    rmse = math.sqrt(np.mean((persistence[keep] - actual[keep]) ** 2))
    assert data.baselines()["persistence"]["rmse"] == pytest.approx(rmse, rel=1e-9)


def test_direct_multi_horizon_targets_metrics_and_baselines_per_step(tmp_path):
    g = np.random.default_rng(6)
    values = g.normal(size=60).cumsum()
    path = write_csv(tmp_path, ["v"], [(f"{v:.9f}",) for v in values])
    data = prepare_series(path, target="v", horizon=3, direct=True, valid_fraction=0.2)
    # n = 60, cut = 48: training pairs t + 3 < 48 (t = 0..44), validation t + 1 >= 48
    assert data.horizons == (1, 2, 3) and data.shape.output_size == 3
    assert data.output_columns == ("v@1", "v@2", "v@3")
    assert len(data.train) == 45 and len(data.valid) == 57 - 47
    t = np.arange(47, 57)
    actual = np.stack([values[t + k] for k in (1, 2, 3)], axis=1)  # (10, 3)
    np.testing.assert_allclose(original(data.targets_scaler, data.valid.targets), actual, atol=1e-5)
    np.testing.assert_allclose(data.valid_actual.numpy(), actual, atol=1e-8)
    predicted = actual + np.array([0.1, -0.2, 0.4])  # a forecast off by a known error per step
    scores = data.scores(torch.from_numpy(predicted))
    for k, err in zip((1, 2, 3), (0.1, 0.2, 0.4)):
        assert scores[f"rmse@{k}"] == pytest.approx(err, rel=1e-6)
        assert scores[f"mae@{k}"] == pytest.approx(err, rel=1e-6)
    base = data.baselines()["persistence"]
    for k in (1, 2, 3):
        expected = math.sqrt(np.mean((values[t] - values[t + k]) ** 2))
        assert base[f"rmse@{k}"] == pytest.approx(expected, rel=1e-9)
    assert base["rmse"] == pytest.approx(math.sqrt(np.mean((values[t, None] - actual) ** 2)))
    assert set(data.baseline_info["ar_order"]) == {"1", "2", "3"}


def test_text_columns_are_one_hot_inputs_and_unseen_values_are_said(tmp_path):
    wind = ["N", "S", "N", "E", "S", "N", "E", "S", "N", "S", "W", "N"]  # W only in validation
    rows = [(f"2020-01-{i + 1:02d}", w, float(i % 5)) for i, w in enumerate(wind)]
    path = write_csv(tmp_path, ["day", "Wind", "Temp"], rows)
    data = prepare_series(path, target="Temp", inputs=["Temp", "Wind"], valid_fraction=0.25)
    assert data.input_columns == ("Temp", "Wind=E", "Wind=N", "Wind=S", "Wind=<unknown>")
    assert data.time_column == "day"  # found from its cells, whatever its header
    assert data.valid_index == ["2020-01-10", "2020-01-11", "2020-01-12"]
    assert "'Wind' reads as a category" in data.reading()
    assert "column 'Wind': 1 row(s) hold values unseen in training ('W' x1)" in data.reading()
    onehot = original(data.inputs_scaler, data.valid.inputs)[:, 1:].round(6)
    np.testing.assert_array_equal(onehot, [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])  # N S W
    # a column of numbers read as a category on purpose
    forced = prepare_series(path, target="Temp", inputs=["Temp"], categorical=[], valid_fraction=0.25)  # fmt: skip
    assert forced.input_columns == ("Temp",)
    coded = write_csv(tmp_path, ["code", "Temp"], [(i % 3, float(i)) for i in range(12)], "c.csv")
    data = prepare_series(coded, target="Temp", inputs=["Temp", "code"], categorical="code")
    assert data.input_columns[1:] == ("code=0", "code=1", "code=2", "code=<unknown>")
    with pytest.raises(DataError, match="target 'Wind' reads as a category"):
        prepare_series(path, target="Wind")


def test_month_cells_are_the_time_column_and_feed_calendar_inputs(tmp_path):
    months = [f"{1749 + i // 12}-{i % 12 + 1:02d}" for i in range(36)]
    path = write_csv(tmp_path, ["Month", "Sunspots"], [(m, float(i)) for i, m in enumerate(months)])
    data = prepare_series(path, target="Sunspots", calendar=["month"], valid_fraction=0.25)
    assert data.time_column == "Month" and data.valid_index[0] == "1751-04"
    assert data.input_columns == ("Sunspots", "Month.month_sin", "Month.month_cos")
    raw = original(data.inputs_scaler, data.train.inputs)
    month = np.arange(len(raw)) % 12
    np.testing.assert_allclose(raw[:, 1], np.sin(2 * np.pi * month / 12), atol=1e-5)
    np.testing.assert_allclose(raw[:, 2], np.cos(2 * np.pi * month / 12), atol=1e-5)
    with pytest.raises(DataError, match="calendar fields among month"):
        prepare_series(path, target="Sunspots", calendar=["week"])
    plain = write_csv(tmp_path, ["v"], [(float(i),) for i in range(12)], "p.csv")
    with pytest.raises(DataError, match="calendar inputs read the time column"):
        prepare_series(plain, target="v", calendar=["month"])


def test_warm_up_opens_the_validation_with_masked_pairs(tmp_path):
    values = np.arange(30, dtype=float)
    path = write_csv(tmp_path, ["v"], [(v,) for v in values])
    plain = prepare_series(path, target="v", valid_fraction=0.2)
    warm = prepare_series(path, target="v", valid_fraction=0.2, warm_up=5)
    assert len(warm.valid) == len(plain.valid) + 5
    assert warm.valid.mask.tolist() == [False] * 5 + [True] * len(plain.valid)
    assert torch.equal(warm.valid.inputs[5:], plain.valid.inputs)
    np.testing.assert_allclose(original(warm.inputs_scaler, warm.valid.inputs[:5])[:, 0], values[18:23])  # fmt: skip
    assert warm.baselines() == plain.baselines() and warm.scored_rows == len(plain.valid)


def test_history_is_the_last_segment_read_as_in_training(tmp_path):
    cells = ["1", "2", "NA", "4", "5", "6", "7", "8", "9", "10"]
    path = write_csv(tmp_path, ["v"], [(c,) for c in cells])
    data = prepare_series(path, target="v", missing="drop", valid_fraction=0.2)
    history = original(data.inputs_scaler, data.history())[:, 0]
    np.testing.assert_allclose(history, [4, 5, 6, 7, 8, 9, 10], atol=1e-5)  # after the gap
    filled = prepare_series(path, target="v", missing="ffill", valid_fraction=0.2)
    np.testing.assert_allclose(original(filled.inputs_scaler, filled.history())[:, 0], [1, 2, 2, 4, 5, 6, 7, 8, 9, 10], atol=1e-5)  # fmt: skip


def test_real_series_baselines_include_season_and_autoregression():
    if not TEMPERATURES.is_file():
        pytest.skip(f"no daily minimum temperatures at {TEMPERATURES}")
    data = prepare_series(TEMPERATURES, target="Temp")
    scores = data.baselines()
    assert set(scores) == {"persistence", "mean", "seasonal", "ar"}
    assert scores["ar"]["rmse"] < scores["persistence"]["rmse"]
    assert data.baseline_info["season"]["source"] == "detected"
    assert 360 <= data.baseline_info["season"]["period"] <= 370  # a year of days
    assert "season" in data.reading() and "AR baseline of order" in data.reading()


def test_what_a_preparation_stores_reads_back_and_mangled_fields_are_one_line(tmp_path):
    wind = ["N", "S", "N", "E"] * 5
    rows = [(f"2020-01-{i + 1:02d}", w, float(i % 7)) for i, w in enumerate(wind)]
    path = write_csv(tmp_path, ["day", "Wind", "Temp"], rows)
    data = prepare_series(path, target="Temp", inputs=["Temp", "Wind"], calendar="dayofweek",
                          horizon=2, direct=True, valid_fraction=0.25)  # fmt: skip
    stored = json.loads(json.dumps(data.reading_meta()))
    fields = SeriesData.fields_from_meta(stored)
    for key, value in fields.items():
        assert getattr(data, key) == value, key
    assert SeriesData.fields_from_meta({}) == {}  # a preparation made before them
    for key, bad in (("steps", [0]), ("categories", [{"column": 3}]), ("missing", "zero"),
                     ("baseline_scores", {"ar": {"rmse": "x"}}), ("dropped_rows", -1)):  # fmt: skip
        with pytest.raises(DataError, match=f"mangles {key}"):
            SeriesData.fields_from_meta({**stored, key: bad})
