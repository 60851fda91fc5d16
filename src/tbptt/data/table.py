"""Tables of time series as read from a file: columns of cells, before any is a number.

A table is a ``.csv`` with a header row (UTF-8, a BOM allowed; blank lines skipped;
every row as many fields as the header, no column name twice, at most
:data:`MAX_COLUMNS` columns), a ``.npy`` array 1-D or (N, C) (columns "0".."C-1"), or a
``.npz`` of 1-D columns of one length named by key, or of one (N, C) array. A NumPy
file's header is checked against the file's size before anything is loaded (a header
may not claim more than the file holds). :func:`read_table` reads one into a
:class:`Table`.

Each column reads as one of three kinds (:meth:`Table.kind`), found from its cells,
whatever its header says:

- **number**: every cell a number or missing (empty, ``NA``, ``NaN`` or ``null``, any
  case). :meth:`Table.numbers` parses it; any other cell, or an infinite value, is an
  error naming the file, line (CSV) or row (NumPy) and column.
- **time**: every cell a date or a timestamp (``1749-01``, ``1981-01-31``,
  ``2020-03-01T12:30:00Z``, ``2020/03/01 12:30``, ``01.03.2020``, ``Jan-1960``, ``1960-Q1``,
  ...: :func:`tbptt.data.columns.parse_time`). :meth:`Table.times` parses it;
  :func:`~tbptt.data.columns.calendar_features` turns it into inputs.
- **category**: text, e.g. a wind direction ``NW``: :meth:`Table.texts` gives its cells and
  :class:`~tbptt.data.columns.Categories` (fitted on the training rows) one-hot encodes them,
  with one column for values unseen in training.
  A column whose cells are mostly numbers with a few words among them is a number column
  with mistakes (the error names the first), unless it is read as a category on purpose.
"""

from __future__ import annotations

import csv
import math
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from tbptt.data.columns import parse_time, time_format
from tbptt.errors import DataError

__all__ = ["Table", "read_table", "COLUMN_KINDS", "MISSING_CELLS", "SUFFIXES", "MAX_COLUMNS"]

MISSING_CELLS = frozenset({"", "na", "nan", "null"})
SUFFIXES = (".csv", ".npy", ".npz")
COLUMN_KINDS = ("number", "time", "category")
MAX_COLUMNS = 10_000  # a table's columns, CSV header or NumPy array


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

    def texts(self, column: str) -> list[str | None]:
        """The column's cells as stripped text, None where missing."""
        cells = self.cells[column]
        if isinstance(cells, np.ndarray) and cells.dtype.kind == "M":
            return [None if np.isnat(c) else str(c) for c in cells]
        if isinstance(cells, np.ndarray) and cells.dtype.kind == "S":
            cells = [c.decode("utf-8", "replace") for c in cells.tolist()]
        out = []
        for cell in cells:
            text = str(cell.item() if isinstance(cell, np.generic) else cell).strip()
            out.append(None if text.lower() in MISSING_CELLS else text)
        return out

    def kind(self, column: str) -> str:
        """``"number"``, ``"time"`` or ``"category"``: how the column's cells read (module docs).

        Numbers win over times (a column of years such as ``1981`` is a number column); a
        column with no cells at all is a number column (every value missing).
        """
        cells = self.cells[column]
        if isinstance(cells, np.ndarray) and cells.dtype.kind in "biuf":
            return "number"
        if isinstance(cells, np.ndarray) and cells.dtype.kind == "M":
            return "time"
        texts = [t for t in self.texts(column) if t is not None]
        if not texts:
            return "number"
        numbers = sum(1 for t in texts if _is_number(t))
        if numbers == len(texts):
            return "number"
        if time_format(texts) is not None:
            return "time"
        # mostly numbers with a few words among them: a number column with mistakes
        return "number" if numbers >= len(texts) / 2 else "category"

    def reading(self, column: str) -> str:
        """How the column is read, in words, for a message: "'Month' reads as dates (1749-01)"."""
        kind = self.kind(column)
        if kind == "time":
            texts = [t for t in self.texts(column) if t is not None]
            if not texts:  # a NumPy datetime64 column
                return f"{column!r} reads as dates and times"
            return f"{column!r} reads as dates and times ({texts[0]!r}: {time_format(texts)})"
        if kind == "category":
            values = sorted({t for t in self.texts(column) if t is not None})
            shown = ", ".join(values[:6]) + (", ..." if len(values) > 6 else "")
            return f"{column!r} reads as a category ({len(values)} values: {shown}), one-hot"
        return f"{column!r} reads as numbers"

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
            for i, cell in enumerate(self.texts(column)):
                if cell is None:
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
            hint = ""
            if self.kind(column) in ("time", "category"):
                hint = f"; the column reads as a {self.kind(column)}, not as numbers"
            raise DataError(
                f"{self.where(bad[0])}, column {column!r}: expected a finite number, got "
                f"{str(cells[bad[0]])!r}{more}; fix the cell (leave a missing value empty or NA)"
                f"{hint}"
            )
        return values

    def times(self, column: str) -> np.ndarray:
        """(N,) datetime64[s]: the column's dates and times (wall-clock, offsets ignored), NaT
        where missing. Raises DataError at the first cell that is not a date."""
        cells = self.cells[column]
        if isinstance(cells, np.ndarray) and cells.dtype.kind == "M":
            return cells.astype("datetime64[s]")
        texts = self.texts(column)
        order = time_format([t for t in texts if t is not None]) or "year first"
        out = np.full(len(texts), np.datetime64("NaT"), dtype="datetime64[s]")
        for i, text in enumerate(texts):
            if text is None:
                continue
            when = parse_time(text, day_first=order != "month/day/year")
            if when is None:
                raise DataError(
                    f"{self.where(i)}, column {column!r}: expected a date or time like "
                    f"1981-01-31 or 1981-01-31 12:00, got {text!r}; fix the cell"
                )
            out[i] = np.datetime64(when, "s")
        return out


# -- cells -------------------------------------------------------------------------------


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


# -- reading -----------------------------------------------------------------------------


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


def _too_wide(path: Path, count: int) -> DataError:
    return DataError(
        f"{path}: expected at most {MAX_COLUMNS:,} columns, got {count:,}; keep the columns "
        "the series needs"
    )


def _read_csv(path: Path) -> Table:
    rows, lines = [], []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, skipinitialspace=True)  # `a, "b"` reads as a, b
            header = next((row for row in reader if row), [])
            if len(header) > MAX_COLUMNS:
                raise _too_wide(path, len(header))
            names = [name.strip() for name in header]
            counts = Counter(names)  # linear: a header of many columns is checked at once
            duplicated = sorted(name for name, n in counts.items() if n > 1)
            if duplicated:
                raise DataError(f"{path}: the header repeats column(s) {duplicated}; rename them")
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
    cells = {name: [row[j] for row in rows] for j, name in enumerate(names)}
    return Table(path, tuple(names), cells, lines)


def _npy_header(f, what: str, size: int, *, compressed: int | None = None) -> None:
    """Read a ``.npy`` header from ``f`` and refuse it, in one line, when its shape claims
    more bytes than ``size`` (the file's, or the archive member's) holds after the header,
    or than ``compressed`` bytes can inflate to (deflate: at most ~1,032 to 1)."""
    try:
        version = npy_format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = npy_format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = npy_format.read_array_header_2_0(f)
        else:
            shape, _, dtype = npy_format._read_array_header(f, version)
    except (ValueError, OSError, EOFError, SyntaxError, TypeError) as e:
        raise DataError(
            f"cannot read {what} as NumPy data ({e}); write it with numpy.save or numpy.savez"
        ) from None
    if dtype.hasobject:
        raise DataError(
            f"{what} holds Python objects, which tbptt does not load; save numbers, dates or "
            "text (numpy.save of a numeric array)"
        )
    claimed = math.prod(shape) * dtype.itemsize
    held = size - f.tell()
    if claimed != held or (compressed is not None and claimed > 1100 * compressed + 1024):
        raise DataError(
            f"{what} is damaged: its header claims shape {tuple(shape)} of {dtype} "
            f"({claimed:,} bytes), the file holds {max(held, 0):,}; write it again with numpy.save"
        )
    if len(shape) == 2 and shape[1] > MAX_COLUMNS:
        raise DataError(
            f"{what}: expected at most {MAX_COLUMNS:,} columns, got {shape[1]:,}; keep the "
            "columns the series needs"
        )


def _check_numpy(path: Path) -> None:
    """Every array's header against the bytes that hold it, before anything is loaded."""
    if path.suffix.lower() == ".npy":
        with path.open("rb") as f:
            _npy_header(f, str(path), path.stat().st_size)
        return
    with zipfile.ZipFile(path) as archive:
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > MAX_COLUMNS:
            raise _too_wide(path, len(members))
        for member in members:
            what = f"{path} member {member.filename!r}"
            stored = member.compress_type == zipfile.ZIP_STORED
            with archive.open(member) as f:
                _npy_header(
                    f, what, member.file_size, compressed=None if stored else member.compress_size
                )


def _read_numpy(path: Path) -> Table:
    try:
        _check_numpy(path)
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            arrays = {None: loaded}
        else:
            with loaded:
                arrays = {key: loaded[key] for key in loaded.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, MemoryError) as e:
        if isinstance(e, DataError):
            raise
        reason = str(e).split(";")[0].split(". ")[0]  # never numpy's advice to unpickle
        raise DataError(
            f"cannot read {path} as NumPy data ({reason}); write it with numpy.save or numpy.savez"
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
