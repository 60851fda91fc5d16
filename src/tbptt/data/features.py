"""A table's columns as the numbers a forecaster reads, missing cells handled, rows in segments.

:func:`read_rows` turns the columns a series run names into a :class:`Rows` of float64
values in the data's own units:

- a **number** column is one value; a **category** column (detected, or named in
  ``categorical``) is its one-hot encoding (:class:`~tbptt.data.columns.Categories`, fitted
  on the training rows only: a value unseen there reads as ``<unknown>``); ``calendar``
  fields of the time column are sin / cos pairs (:func:`~tbptt.data.columns.calendar_features`);
- a **missing** cell (or an unreadable time, when the calendar reads it) is handled by
  ``missing``: ``error`` names the first; ``drop`` drops its row and starts a new *segment*
  after every gap (nothing reads across a gap: no pair, no lag, no state), and counts the rows
  dropped; ``ffill`` repeats each column's last value within its series and marks the rows
  whose targets were filled, so that they are never scored.

Rows are kept in file order; each series (a run of equal ``series_id`` values) is one or
more segments. Where the training rows end in each series (``cut``) is the caller's: the
categories are fitted only once it is known (:meth:`Rows.encode`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tbptt.data.columns import Categories, calendar_features
from tbptt.data.table import Table
from tbptt.errors import DataError

__all__ = ["MISSING", "Rows", "read_rows", "series_bounds"]

MISSING = ("error", "drop", "ffill")


def series_bounds(table: Table, series_id: str | None) -> list[tuple[str, int, int]]:
    """(id, first row, row after last) of each run of equal ids, in file order."""
    if series_id is None:
        return [("", 0, len(table))]
    bounds, seen = [], set()
    for row in range(len(table)):
        name = table.label(series_id, row)
        if bounds and bounds[-1][0] == name:
            continue
        if name in seen:
            raise DataError(
                f"{table.where(row)}: series {name!r} reappears after other series; "
                f"sort the file by {series_id!r}, then by time"
            )
        seen.add(name)
        if bounds:
            bounds[-1] = (*bounds[-1][:2], row)
        bounds.append((name, row, len(table)))
    return bounds


@dataclass
class Rows:
    """The kept rows of a table, before the categories are encoded.

    Attributes:
        rows: (M,) the file's 0-based data row of each kept row.
        segments: (series name, first, stop) in kept-row coordinates: rows [first, stop) are
            one stretch without a gap; a series is one or more consecutive segments.
        series: (M,) int64, the series index of each kept row.
        targets: (M, D) float64, the target columns.
        filled: (M,) bool, True where a target cell was forward-filled (never scored).
        dropped: rows dropped for missing cells (``drop``).
        notes: how the columns were read, in words.
    """

    rows: np.ndarray
    segments: list[tuple[str, int, int]]
    series: np.ndarray
    targets: np.ndarray
    filled: np.ndarray
    dropped: int = 0
    notes: list[str] = field(default_factory=list)
    _blocks: list[tuple[str, Callable]] = field(default_factory=list, repr=False)
    categories: list[Categories] = field(default_factory=list)

    @property
    def segment_start(self) -> np.ndarray:
        """(M,) int64, the first kept row of each row's segment."""
        start = np.zeros(len(self.rows), dtype=np.int64)
        for _, a, b in self.segments:
            start[a:b] = a
        return start

    def encode(
        self, training: np.ndarray, fitted: dict[str, Categories] | None = None
    ) -> tuple[np.ndarray, tuple[str, ...]]:
        """(M, F) float64 input features and their names, categories fitted on the kept
        rows ``training`` (a boolean (M,) mask or indices), or taken from ``fitted``."""
        training = np.flatnonzero(training) if training.dtype == bool else training
        columns, names = [], []
        self.categories = []
        for _, block in self._blocks:
            values, block_names, categories = block(training, fitted or {})
            columns.append(values)
            names += block_names
            if categories is not None:
                self.categories.append(categories[0])
                if categories[1]:
                    self.notes.append(categories[1])
        return np.concatenate(columns, axis=1), tuple(names)


def _present(table: Table, column: str, kind: str) -> tuple[np.ndarray, object]:
    """((N,) bool where the cell is there, the column's raw values) for a column of ``kind``."""
    if kind == "number":
        values = table.numbers(column)
        return ~np.isnan(values), values
    if kind == "time":
        times = table.times(column)
        return ~np.isnat(times), times
    texts = table.texts(column)
    return np.array([t is not None for t in texts], dtype=bool), texts


def read_rows(
    table: Table,
    *,
    inputs: Sequence[str],
    targets: Sequence[str],
    series_id: str | None = None,
    time_column: str | None = None,
    categorical: Sequence[str] = (),
    calendar: Sequence[str] = (),
    missing: str = "error",
) -> Rows:
    """Read the columns (see the module docstring); the input features come from
    :meth:`Rows.encode` once the training rows are known."""
    if missing not in MISSING:
        raise DataError(
            f"Expected missing to be one of {MISSING}, got {missing!r}", options=("data.missing",)
        )
    unknown = [c for c in categorical if c not in inputs]
    if unknown:
        raise DataError(
            f"the categorical column(s) {', '.join(map(repr, unknown))} are not inputs; "
            f"name them among the inputs ({', '.join(map(repr, inputs))})",
            options=("data.categorical", "data.inputs"),
        )
    if calendar and time_column is None:
        raise DataError(
            "calendar inputs read the time column, and the table has none that reads as dates "
            "or times; name it (the time column option)",
            options=("data.calendar", "data.time_column"),
        )
    kinds = {}
    for column in dict.fromkeys((*inputs, *targets)):
        kind = "category" if column in categorical else table.kind(column)
        if column in targets and kind != "number":
            raise DataError(
                f"the target {column!r} {table.reading(column).split(' ', 1)[1]}; a target is "
                "a column of numbers",
                options=("data.target",),
            )
        if kind == "time":
            raise DataError(
                f"the input {table.reading(column)}; a time is read through calendar inputs "
                "(month, dayofweek, ...), not as a number",
                options=("data.inputs", "data.calendar"),
            )
        kinds[column] = kind
    if calendar:
        kinds[time_column] = "time"
    order = list(kinds)
    present, raw = zip(*(_present(table, c, kinds[c]) for c in order))
    present = np.stack(present, axis=1)  # (N, K)
    notes = [table.reading(c) for c in order if kinds[c] == "category"]
    bounds = series_bounds(table, series_id)

    holes = ~present
    rows = np.arange(len(table))
    source = np.tile(rows[:, None], (1, len(order)))  # (N, K): the row each cell is read from
    dropped = 0
    segments = [(name, a, b) for name, a, b in bounds]
    if holes.any():
        row, col = np.argwhere(holes)[0]
        where = f"{table.where(row)}, column {order[col]!r}"
        if missing == "error":
            raise DataError(
                f"{where} is missing ({int(holes.sum())} missing cells in all); drop such rows "
                "(each gap then starts a new segment) or forward-fill them (missing: drop or "
                "ffill)",
                options=("data.missing",),
            )
        if missing == "drop":
            keep = ~holes.any(1)
            dropped = int((~keep).sum())
            segments = _segments_after_drop(bounds, keep)
            rows, source = rows[keep], source[keep]
            gaps = len(segments) - len(bounds)
            notes.append(
                f"dropped {dropped:,} row(s) with missing cells; {gaps:,} gap(s), each starting "
                "a new segment (the state and the lags never cross one)"
            )
        else:
            source = _forward_fill(table, holes, bounds, order)
    series = np.zeros(len(rows), dtype=np.int64)
    for i, (_, a, b) in enumerate(bounds):
        series[(rows >= a) & (rows < b)] = i
    target_cols = [order.index(c) for c in targets]
    targets_values = np.zeros((len(rows), len(target_cols)))  # (M, D)
    for d, j in enumerate(target_cols):
        targets_values[:, d] = raw[j][source[:, j]]
    filled = (source[:, target_cols] != rows[:, None]).any(1)  # (M,)
    if filled.any():
        notes.append(f"{int(filled.sum()):,} forward-filled target row(s) are never scored")

    def number_block(j, column):
        def block(training, fitted):
            return raw[j][source[:, j]][:, None], [column], None

        return block

    def category_block(j, column):
        def block(training, fitted):
            texts = raw[j]
            categories = fitted.get(column)
            if categories is None:
                train_texts = [texts[r] for r in source[training, j]]
                categories = Categories.fit(column, train_texts, range(len(train_texts)))
            read = [texts[r] for r in source[:, j]]
            encoded, unseen = categories.encode(read)
            return encoded, list(categories.names()), (categories, categories.note(unseen))

        return block

    blocks = []
    for column in inputs:
        j = order.index(column)
        maker = category_block if kinds[column] == "category" else number_block
        blocks.append((column, maker(j, column)))
    if calendar:
        j = order.index(time_column)

        def calendar_block(training, fitted):
            values, names = calendar_features(raw[j][source[:, j]], calendar, column=time_column)
            return values, list(names), None

        blocks.append((time_column, calendar_block))
    return Rows(
        rows=rows,
        segments=segments,
        series=series,
        targets=targets_values,
        filled=filled,
        dropped=dropped,
        notes=notes,
        _blocks=blocks,
    )


def _segments_after_drop(bounds, keep: np.ndarray) -> list[tuple[str, int, int]]:
    """Each series' runs of kept rows, in kept-row coordinates."""
    kept_before = np.concatenate([[0], np.cumsum(keep)])  # kept rows before each row
    segments = []
    for name, a, b in bounds:
        row = a
        while row < b:
            while row < b and not keep[row]:
                row += 1
            start = row
            while row < b and keep[row]:
                row += 1
            if row > start:
                segments.append((name, int(kept_before[start]), int(kept_before[row])))
    return segments


def _forward_fill(table: Table, holes: np.ndarray, bounds, order) -> np.ndarray:
    """(N, K) the row each cell is read from: its own, or the last one with that column
    present in its series."""
    source = np.zeros(holes.shape, dtype=np.int64)
    for name, a, b in bounds:
        if holes[a].any():
            series = f"series {name!r}" if name else "the series"
            raise DataError(
                f"{table.where(a)}, column {order[int(holes[a].argmax())]!r} is missing at the "
                f"start of {series}: no value to forward-fill; fill it in or drop such rows "
                "(missing: drop)",
                options=("data.missing",),
            )
        own = np.arange(a, b)[:, None]  # (n, 1)
        last = np.where(holes[a:b], a, own)  # (n, K)
        source[a:b] = np.maximum.accumulate(last, axis=0)
    return source
