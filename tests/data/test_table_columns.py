"""The columns real tables have: dates and times found from their cells, calendar inputs,
categories (and values unseen in training), and files whose headers lie or overflow."""

import math
import time
import zipfile
from datetime import datetime

import numpy as np
import pytest
from numpy.lib import format as npy_format

from tbptt.data.columns import (
    MAX_CATEGORIES,
    Categories,
    calendar_features,
    parse_time,
    time_format,
)
from tbptt.data.table import MAX_COLUMNS, read_table
from tbptt.errors import DataError


def write_csv(tmp_path, header, rows, name="t.csv"):
    path = tmp_path / name
    lines = [",".join(header)] + [",".join(str(c) for c in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


# -- dates and times ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "cell, expected",
    [
        ("1749-01", datetime(1749, 1, 1)),
        ("1981-01-31", datetime(1981, 1, 31)),
        ("1981/1/31", datetime(1981, 1, 31)),
        ("2020-03-01T12:30:00Z", datetime(2020, 3, 1, 12, 30)),
        ("2020-03-01 12:30:15.25", datetime(2020, 3, 1, 12, 30, 15, 250000)),
        ("2020-03-01T12:30+02:00", datetime(2020, 3, 1, 12, 30)),  # wall clock kept
        ("31.01.1981", datetime(1981, 1, 31)),
        ("Jan-1960", datetime(1960, 1, 1)),
        ("1960-Jan", datetime(1960, 1, 1)),
        ("31 January 1981", datetime(1981, 1, 31)),
        ("1960-Q3", datetime(1960, 7, 1)),
    ],
)
def test_parse_time(cell, expected):
    assert parse_time(cell) == expected


@pytest.mark.parametrize("cell", ["1981", "2020-13-01", "2021-02-29", "Station 1960", "NW", ""])
def test_not_a_time(cell):
    assert parse_time(cell) is None


@pytest.mark.parametrize(
    "header, cells",
    [
        ("Month", ["1749-01", "1749-02", "1749-03"]),  # the issue's Month column
        ("x", ["1981-01-01", "1981-01-02", "1981-01-03"]),  # whatever the header
        ("", ["2020-03-01T00:00:00", "2020-03-01T01:00:00", "2020-03-01T02:00:00"]),
        ("when", ["01/02/2020", "13/02/2020", ""]),  # day first (13 is no month); a gap
    ],
)
def test_time_columns_are_found_from_their_cells(tmp_path, header, cells):
    path = write_csv(tmp_path, [header, "v"], [(c, i) for i, c in enumerate(cells)])
    table = read_table(path)
    assert table.kind(header) == "time" and table.kind("v") == "number"
    expected = [parse_time(c) for c in cells]
    got = table.times(header)
    for g, e in zip(got, expected):
        assert np.isnat(g) if e is None else g == np.datetime64(e, "s")
    assert "reads as dates and times" in table.reading(header)


def test_day_or_month_first_is_decided_by_the_column():
    assert time_format(["12/31/2020", "01/02/2020"]) == "month/day/year"
    assert time_format(["31/12/2020", "01/02/2020"]) == "day/month/year"
    assert "ambiguous" in time_format(["01/02/2020", "03/04/2020"])
    assert time_format(["31/13/2020"]) is None  # neither order is a date


def test_a_bad_date_in_a_date_column_is_named(tmp_path):
    path = write_csv(tmp_path, ["Month", "v"], [("1960-01", 1), ("1960-13", 2), ("1960-03", 3)])
    table = read_table(path)
    assert table.kind("Month") == "time"  # the form says time; the cell is a mistake
    with pytest.raises(DataError, match=r"line 3, column 'Month'.*'1960-13'"):
        table.times("Month")


def test_years_are_numbers(tmp_path):
    table = read_table(write_csv(tmp_path, ["Year", "v"], [(1981 + i, i) for i in range(4)]))
    assert table.kind("Year") == "number"


def test_numpy_datetime_columns(tmp_path):
    path = tmp_path / "t.npz"
    days = np.array(["2020-01-01", "2020-01-02"], dtype="datetime64[D]")
    np.savez(path, when=days, v=np.array([1.0, 2.0]))
    table = read_table(path)
    assert table.kind("when") == "time" and table.kind("v") == "number"
    np.testing.assert_array_equal(table.times("when"), days.astype("datetime64[s]"))


# -- calendar inputs ---------------------------------------------------------------------


def test_calendar_features_against_datetime():
    stamps = [datetime(1981, 1, 1), datetime(1981, 12, 31, 23, 59), datetime(2024, 2, 29, 6)]
    times = np.array(stamps + [None], dtype="datetime64[s]")  # the last one missing (NaT)
    values, names = calendar_features(times, ["month", "dayofweek", "dayofyear", "hour"])
    assert names == (
        "time.month_sin",
        "time.month_cos",
        "time.dayofweek_sin",
        "time.dayofweek_cos",
        "time.dayofyear_sin",
        "time.dayofyear_cos",
        "time.hour_sin",
        "time.hour_cos",
    )
    for row, when in enumerate(stamps):
        fields = [
            (when.month - 1, 12),
            (when.weekday(), 7),  # Monday 0
            (when.timetuple().tm_yday - 1, 365.25),
            (when.hour, 24),
        ]
        expected = []
        for value, period in fields:
            angle = 2 * math.pi * value / period
            expected += [math.sin(angle), math.cos(angle)]
        np.testing.assert_allclose(values[row], expected, atol=1e-12)
    assert np.isnan(values[3]).all()


def test_unknown_calendar_field_is_one_line():
    with pytest.raises(DataError, match="calendar fields among month"):
        calendar_features(np.array(["2020-01-01"], dtype="datetime64[s]"), ["week"])


# -- categories --------------------------------------------------------------------------


def test_a_text_column_is_a_category_one_hot_with_unseen_values_read_as_unknown(tmp_path):
    wind = ["NW", "N", "NW", "S", "", "N", "SSW", "E"]  # rows 0..5 train, 6..7 validation
    path = write_csv(tmp_path, ["Wind", "Temp"], [(w, i) for i, w in enumerate(wind)])
    table = read_table(path)
    assert table.kind("Wind") == "category"
    assert "reads as a category (5 values" in table.reading("Wind")
    texts = table.texts("Wind")
    categories = Categories.fit("Wind", texts, range(6))
    assert categories.levels == ("N", "NW", "S")  # the training rows' values, sorted
    assert categories.names() == ("Wind=N", "Wind=NW", "Wind=S", "Wind=<unknown>")
    encoded, unseen = categories.encode(texts)
    expected = {"NW": 1, "N": 0, "S": 2, "SSW": 3, "E": 3}  # column of each row's 1
    for row, w in enumerate(wind):
        if w == "":
            assert np.isnan(encoded[row]).all()  # missing: the missing-value policy decides
        else:
            np.testing.assert_array_equal(encoded[row], np.eye(4)[expected[w]])
    assert unseen == {"SSW": 1, "E": 1}
    note = categories.note(unseen)
    assert "'Wind'" in note and "2 row(s)" in note and "<unknown>" in note and "'SSW'" in note
    assert categories.note({}) is None
    assert Categories.from_dict(categories.to_dict()) == categories


def test_the_issue_s_text_cell_is_read_as_a_category_not_an_error(tmp_path):
    path = write_csv(tmp_path, ["Dir", "v"], [("NW", 1), ("SE", 2), ("NW", 3)])
    table = read_table(path)
    assert table.kind("Dir") == "category"
    with pytest.raises(DataError, match="reads as a category, not as numbers"):
        table.numbers("Dir")


def test_mostly_numbers_with_a_typo_is_a_number_column_with_a_mistake(tmp_path):
    cells = ["1.5", "2.5", "3.5x", "4.5"]
    table = read_table(write_csv(tmp_path, ["v"], [(c,) for c in cells]))
    assert table.kind("v") == "number"
    with pytest.raises(DataError, match=r"line 4, column 'v': expected a finite number, got '3"):
        table.numbers("v")


def test_too_many_categories_is_one_line():
    texts = [f"id{i}" for i in range(MAX_CATEGORIES + 1)]
    with pytest.raises(DataError, match="an identifier or free text"):
        Categories.fit("Comment", texts, range(len(texts)))


# -- crafted files (issue 24, items 7 and 8) ---------------------------------------------


def _lying_npy(path, shape=(10**12,), payload=b"\0" * 64):
    with path.open("wb") as f:
        npy_format.write_array_header_1_0(
            f, {"descr": "<f8", "fortran_order": False, "shape": shape}
        )
        f.write(payload)


def _no_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("np.load was called on a file whose header lies")

    monkeypatch.setattr(np, "load", refuse)


def test_npy_header_claiming_more_than_the_file_holds_is_refused_before_loading(
    tmp_path, monkeypatch
):
    path = tmp_path / "big.npy"
    _lying_npy(path)
    assert path.stat().st_size < 300
    _no_load(monkeypatch)
    with pytest.raises(DataError, match=r"damaged: its header claims shape \(1000000000000,\)"):
        read_table(path)


def test_a_truncated_npy_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "cut.npy"
    np.save(path, np.arange(100, dtype=np.float64))
    path.write_bytes(path.read_bytes()[:-8])
    _no_load(monkeypatch)
    with pytest.raises(DataError, match="800 bytes"):
        read_table(path)


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
def test_npz_member_claiming_more_than_it_holds_is_refused_before_loading(
    tmp_path, monkeypatch, compression
):
    member = tmp_path / "x.npy"
    _lying_npy(member, shape=(10**6, 10**6))
    path = tmp_path / "big.npz"
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.write(member, "x.npy")
    _no_load(monkeypatch)
    with pytest.raises(DataError, match=r"member 'x.npy' is damaged"):
        read_table(path)


def test_valid_numpy_files_still_read(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(12, dtype=np.float32).reshape(6, 2))
    table = read_table(tmp_path / "a.npy")
    assert table.columns == ("0", "1") and len(table) == 6
    np.savez_compressed(tmp_path / "b.npz", u=np.arange(5.0), w=np.ones(5))
    assert read_table(tmp_path / "b.npz").columns == ("u", "w")


def test_pickled_npy_is_refused_without_advice_to_unpickle(tmp_path):
    path = tmp_path / "o.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError) as info:
        read_table(path)
    assert "allow_pickle" not in str(info.value) and "Python objects" in str(info.value)


def test_a_header_of_a_million_columns_is_refused_at_once(tmp_path):
    path = tmp_path / "wide.csv"
    path.write_text(",".join(f"c{i}" for i in range(1_000_000)) + "\n" + "1," * 999_999 + "1\n")
    start = time.perf_counter()
    with pytest.raises(DataError, match=f"at most {MAX_COLUMNS:,} columns, got 1,000,000"):
        read_table(path)
    assert time.perf_counter() - start < 10  # was minutes: a quadratic duplicate check


def test_repeated_column_names_are_found_in_linear_time(tmp_path):
    names = [f"c{i}" for i in range(MAX_COLUMNS - 2)] + ["c5", "c7"]
    path = tmp_path / "dup.csv"
    path.write_text(",".join(names) + "\n" + ",".join("1" * len(names)) + "\n")
    start = time.perf_counter()
    with pytest.raises(DataError, match=r"repeats column\(s\) \['c5', 'c7'\]"):
        read_table(path)
    assert time.perf_counter() - start < 5  # quadratic: ~2 s at 10,000 columns on one core
