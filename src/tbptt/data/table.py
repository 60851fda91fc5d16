"""Tables of time series as read from a file: columns of cells, before any is a number.

A table is a ``.csv`` with a header row (UTF-8, a BOM allowed; blank lines skipped;
every row as many fields as the header, no column name twice), a ``.npy`` array
1-D or (N, C) (columns "0".."C-1"), or a ``.npz`` of 1-D columns of one length named
by key, or of one (N, C) array. :func:`read_table` reads one into a :class:`Table`;
:meth:`Table.numbers` parses a column: empty, ``NA``, ``NaN`` or ``null`` (any case)
is missing (NaN); any other non-number, or an infinite value, is an error naming the
file, line (CSV) or row (NumPy) and column. What the series are made of is in
:mod:`tbptt.data.series`.
"""

from __future__ import annotations

import csv
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tbptt.errors import DataError

__all__ = ["Table", "read_table", "MISSING_CELLS", "SUFFIXES"]

MISSING_CELLS = frozenset({"", "na", "nan", "null"})
SUFFIXES = (".csv", ".npy", ".npz")


@dataclass(frozen=True)
class Table:
    """A file's columns as read, before any is parsed as numbers.

    Attributes:
        path: the file.
        columns: the C column names, in file order.
        cells: name -> its N cells: a list of stripped str (CSV) or a (N,) NumPy array.
        lines: the 1-based file line of each row (header = line 1) for a CSV; None for
            NumPy files, whose rows are named by their 0-based index.
    """

    path: Path
    columns: tuple[str, ...]
    cells: dict[str, list | np.ndarray]
    lines: list[int] | None = None

    def __len__(self) -> int:
        return len(self.cells[self.columns[0]])

    def where(self, row: int) -> str:
        """Where data row ``row`` (0-based) is, for messages: "x.csv line 5"."""
        if self.lines is None:
            return f"{self.path} row {row}"
        return f"{self.path} line {self.lines[row]}"

    def label(self, column: str, row: int) -> str:
        cell = self.cells[column][row]
        cell = cell.item() if isinstance(cell, np.generic) else cell
        return str(int(cell)) if isinstance(cell, float) and cell.is_integer() else str(cell)

    def numbers(self, column: str) -> np.ndarray:
        """(N,) float64: the column's cells as numbers, NaN where missing.

        Raises DataError at the first cell that is neither a finite number nor missing.
        """
        cells = self.cells[column]
        if isinstance(cells, np.ndarray) and cells.dtype.kind in "biuf":
            values = cells.astype(np.float64)
            bad = np.flatnonzero(np.isinf(values)).tolist()
        else:
            values, bad = np.full(len(cells), np.nan), []
            for i, cell in enumerate(str(c).strip() for c in cells):
                if cell.lower() in MISSING_CELLS:
                    continue
                try:
                    values[i] = float(cell)
                except ValueError:
                    bad.append(i)
                    continue
                if not math.isfinite(values[i]):
                    bad.append(i)
        if bad:
            more = f" ({len(bad) - 1} more in this column)" if len(bad) > 1 else ""
            raise DataError(
                f"{self.where(bad[0])}, column {column!r}: expected a finite number, got "
                f"{str(cells[bad[0]])!r}{more}; fix the cell (leave a missing value empty or NA)"
            )
        return values


def read_table(path: str | Path) -> Table:
    """Read a ``.csv`` (header row), ``.npy`` (1-D or (N, C)) or ``.npz`` file's columns."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise DataError(
            f"Expected a {', '.join(SUFFIXES)} file, got {path}; save the series as CSV or NumPy"
        )
    if not path.is_file():
        raise DataError(f"no such file: {path}; check the path")
    if path.stat().st_size == 0:
        raise DataError(f"{path} is empty; expected a header row and one row per time step")
    table = _read_csv(path) if path.suffix.lower() == ".csv" else _read_numpy(path)
    if len(table.columns) == 0 or len(table) == 0:
        raise DataError(f"{path} has no data rows; expected one row per time step")
    return table


def _read_csv(path: Path) -> Table:
    rows, lines = [], []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, skipinitialspace=True)  # `a, "b"` reads as a, b
            header = next((row for row in reader if row), [])
            names = [name.strip() for name in header]
            for row in reader:
                if not row:  # a blank line
                    continue
                if len(row) != len(names):
                    raise DataError(
                        f"{path} line {reader.line_num}: expected {len(names)} fields as in the "
                        f"header, got {len(row)}; fix the row"
                    )
                rows.append([cell.strip() for cell in row])
                lines.append(reader.line_num)
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text ({e.reason}); save it as UTF-8") from None
    except csv.Error as e:
        raise DataError(f"{path} line {reader.line_num}: {e}; fix the CSV quoting") from None
    except OSError as e:
        raise DataError(f"cannot read {path} ({e.strerror}); check the file") from None
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise DataError(f"{path}: the header repeats column(s) {duplicated}; rename them")
    cells = {name: [row[j] for row in rows] for j, name in enumerate(names)}
    return Table(path, tuple(names), cells, lines)


def _read_numpy(path: Path) -> Table:
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            arrays = {None: loaded}
        else:
            with loaded:
                arrays = {key: loaded[key] for key in loaded.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(
            f"cannot read {path} as NumPy data ({e}); write it with numpy.save or numpy.savez"
        ) from None
    if len(arrays) == 1 and next(iter(arrays.values())).ndim == 2:
        (array,) = arrays.values()  # (N, C): columns "0" .. "C-1"
        arrays = {str(j): array[:, j] for j in range(array.shape[1])}
    elif None in arrays:
        arrays = {"0": arrays[None]}
    shapes = {key: array.shape for key, array in arrays.items()}
    if len(set(shapes.values())) != 1 or any(len(shape) != 1 for shape in shapes.values()):
        raise DataError(
            f"Expected in {path} a 1-D array, a 2-D (N, C) array, or 1-D arrays of one length "
            f"(one per column), got shapes {shapes}; save the columns that way"
        )
    return Table(path, tuple(arrays), arrays)
