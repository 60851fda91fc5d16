"""Time-series files into forecasting pairs: pairing, split by time, scalers, baselines, errors."""

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from tbptt.data.series import MISSING, Standardizer, prepare_series, read_table
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
    assert set(scores) == {"persistence", "mean"}
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
    rows = [("a", 1, "x"), ("a", "", "y"), ("a", 3, "z"), ("a", "NA", "z"), ("a", 5, "z"),
            ("b", 10, "z"), ("b", "null", "z"), ("b", 12, "z"), ("b", 13, "z")]  # fmt: skip
    path = write_csv(tmp_path, ["id", "v", "note"], rows)
    with pytest.raises(DataError, match=r"s\.csv line 3, column 'v' is missing.*'drop'.*'ffill'"):
        prepare_series(path, target="v", series_id="id")
    filled = prepare_series(path, target="v", series_id="id", missing="ffill", valid_fraction=0.0)
    raw = original(filled.inputs_scaler, filled.train.inputs)[:, 0]
    np.testing.assert_allclose(raw, [1, 1, 3, 3, 10, 10, 12], atol=1e-5)
    dropped = prepare_series(path, target="v", series_id="id", missing="drop", valid_fraction=0.0)
    raw = original(dropped.targets_scaler, dropped.train.targets)[:, 0]
    np.testing.assert_allclose(raw, [3, 5, 12, 13], atol=1e-5)  # pairs 1->3, 3->5 | 10->12, 12->13
    assert dropped.train.starts.tolist() == [True, False, True, False]
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
