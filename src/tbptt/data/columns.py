"""What a table's text cells mean: dates and times, calendar inputs, categories.

:func:`parse_time` reads a cell as a date or a timestamp, :func:`time_format` says how a whole
column's cells read as times (or that they do not), :func:`calendar_features` turns times
into inputs (month, day of week, ... on the unit circle, so December sits next to January),
and :class:`Categories` one-hot encodes a text column with the values of its training rows,
one more column for any value unseen in training (``<unknown>``, and said). How a table's
columns are told apart is :meth:`tbptt.data.table.Table.kind`.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np

from tbptt.errors import DataError

__all__ = [
    "parse_time",
    "time_format",
    "calendar_features",
    "Categories",
    "CALENDAR_FIELDS",
    "MAX_CATEGORIES",
    "UNKNOWN",
]

MAX_CATEGORIES = 1_000  # the distinct values of a category column's training rows
UNKNOWN = "<unknown>"

_MONTHS = {
    name: i + 1
    for i, names in enumerate(
        [
            ("jan", "january"),
            ("feb", "february"),
            ("mar", "march"),
            ("apr", "april"),
            ("may",),
            ("jun", "june"),
            ("jul", "july"),
            ("aug", "august"),
            ("sep", "sept", "september"),
            ("oct", "october"),
            ("nov", "november"),
            ("dec", "december"),
        ]
    )
    for name in names
}
_CLOCK = (
    r"(?:[T ]+(\d{1,2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?)?\s*(?:Z|UTC|GMT|[+-]\d{2}:?\d{2})?"
)
_YEAR_FIRST = re.compile(r"(\d{4})([-/.])(\d{1,2})(?:\2(\d{1,2}))?" + _CLOCK, re.IGNORECASE)
_DAY_FIRST = re.compile(r"(\d{1,2})([-/.])(\d{1,2})\2(\d{4})" + _CLOCK, re.IGNORECASE)
_NAMED = re.compile(
    r"(?:(\d{1,2})[- ])?([a-z]{3,9})\.?[- ,]+(\d{4})|(\d{4})[- ]([a-z]{3,9})", re.IGNORECASE
)
_QUARTER = re.compile(r"(\d{4})[- ]?Q([1-4])", re.IGNORECASE)


def _fields(text: str, day_first: bool = True):
    """(year, month, day, hour, minute, second, microsecond) or None, without range checks."""
    m = _YEAR_FIRST.fullmatch(text)
    if m:
        y, _, mo, d, hh, mm, ss, frac = m.groups()
        return _tuple(y, mo, d or 1, hh, mm, ss, frac)
    m = _DAY_FIRST.fullmatch(text)
    if m:
        a, _, b, y, hh, mm, ss, frac = m.groups()
        d, mo = (a, b) if day_first else (b, a)
        return _tuple(y, mo, d, hh, mm, ss, frac)
    m = _NAMED.fullmatch(text)
    if m:
        d, name, y, y2, name2 = m.groups()
        month = _MONTHS.get((name or name2).lower())
        return None if month is None else _tuple(y or y2, month, d or 1)
    m = _QUARTER.fullmatch(text)
    if m:
        return _tuple(m.group(1), 3 * int(m.group(2)) - 2, 1)
    return None


def _tuple(y, mo, d, hh=None, mm=None, ss=None, frac=None):
    micro = int((frac or "0")[:6].ljust(6, "0"))
    return (int(y), int(mo), int(d), int(hh or 0), int(mm or 0), int(ss or 0), micro)


def parse_time(text: str, *, day_first: bool = True) -> datetime | None:
    """A cell as a wall-clock datetime (a UTC offset is read and ignored), or None.

    Year first: ``1749-01``, ``1981-01-31``, ``1981/1/31``, ``2020-03-01T12:30:00.5Z``,
    ``2020-03-01 12:30+02:00``; day first (``day_first``) or month first: ``31.01.1981``,
    ``01/31/1981``; month names: ``Jan-1960``, ``1960-Jan``, ``31 Jan 1981``; quarters:
    ``1960-Q1`` (its first month).
    """
    fields = _fields(text.strip(), day_first)
    if fields is None:
        return None
    try:
        return datetime(*fields)
    except ValueError:  # month 13, February 30, hour 25
        return None


def time_format(texts: Sequence[str]) -> str | None:
    """How a column's cells read as times ("year first", "day/month/year", "month/day/year",
    "day/month/year (ambiguous: no day above 12)", "month names", "quarters"), or None.

    Only the form is looked at: a cell of the right form that is no date (month 13) makes
    :meth:`Table.times` name it, rather than the column reading as something else.
    """
    if not texts:
        return None
    if all(_YEAR_FIRST.fullmatch(t) for t in texts):
        return "year first"
    if all(_DAY_FIRST.fullmatch(t) for t in texts):
        firsts = max(int(_DAY_FIRST.fullmatch(t).group(1)) for t in texts)
        seconds = max(int(_DAY_FIRST.fullmatch(t).group(3)) for t in texts)
        if firsts > 12 and seconds > 12:
            return None
        if seconds > 12:
            return "month/day/year"
        return "day/month/year" if firsts > 12 else "day/month/year (ambiguous: no day above 12)"
    if all(_NAMED.fullmatch(t) and _fields(t) is not None for t in texts):
        return "month names"
    if all(_QUARTER.fullmatch(t) for t in texts):
        return "quarters"
    return None


# -- calendar inputs ---------------------------------------------------------------------

CALENDAR_FIELDS = {  # name -> (value from a datetime64[s] array, its period)
    "month": (lambda t: t.astype("datetime64[M]").astype(np.int64) % 12, 12),
    "dayofweek": (lambda t: (t.astype("datetime64[D]").astype(np.int64) + 3) % 7, 7),  # Monday 0
    "dayofyear": (
        lambda t: (t.astype("datetime64[D]") - t.astype("datetime64[Y]")).astype(np.int64),
        365.25,
    ),
    "day": (lambda t: (t.astype("datetime64[D]") - t.astype("datetime64[M]")).astype(np.int64), 31),
    "hour": (
        lambda t: (t.astype("datetime64[h]") - t.astype("datetime64[D]")).astype(np.int64),
        24,
    ),
    "minute": (
        lambda t: (t.astype("datetime64[m]") - t.astype("datetime64[h]")).astype(np.int64),
        60,
    ),
}


def calendar_features(
    times: np.ndarray, fields: Sequence[str], *, column: str = "time"
) -> tuple[np.ndarray, tuple[str, ...]]:
    """(N, 2 len(fields)) float64 and their names: each field on the unit circle,
    sin and cos of 2 pi value / period (December next to January), NaN where the time is.

    ``fields``: some of :data:`CALENDAR_FIELDS` (month, dayofweek, dayofyear, day, hour, minute).
    """
    unknown = [f for f in fields if f not in CALENDAR_FIELDS]
    if unknown or not fields:
        raise DataError(
            f"Expected calendar fields among {', '.join(CALENDAR_FIELDS)}, got "
            f"{', '.join(map(repr, unknown or fields)) or 'none'}"
        )
    times = np.asarray(times).astype("datetime64[s]")
    missing = np.isnat(times)
    safe = np.where(missing, np.datetime64(0, "s"), times)
    columns, names = [], []
    for name in dict.fromkeys(fields):
        value, period = CALENDAR_FIELDS[name]
        angle = 2 * np.pi * value(safe) / period  # (N,)
        for fn, suffix in ((np.sin, "sin"), (np.cos, "cos")):
            columns.append(np.where(missing, np.nan, fn(angle)))
            names.append(f"{column}.{name}_{suffix}")
    return np.stack(columns, axis=1), tuple(names)


# -- categories --------------------------------------------------------------------------


@dataclass(frozen=True)
class Categories:
    """A category column's values seen in the training rows, and its one-hot encoding.

    Attributes:
        column: the column's name.
        levels: the values seen in training, sorted; a value outside them reads as
            ``<unknown>`` (the encoding's last column).
    """

    column: str
    levels: tuple[str, ...]

    @classmethod
    def fit(
        cls, column: str, texts: Sequence[str | None], rows: Sequence[int] | np.ndarray
    ) -> Categories:
        """The values of the cells ``texts`` (None: missing, not a value) at training ``rows``."""
        levels = sorted({texts[r] for r in rows if texts[r] is not None})
        if len(levels) > MAX_CATEGORIES:
            raise DataError(
                f"column {column!r}: expected a category of at most {MAX_CATEGORIES} values, "
                f"got {len(levels)} distinct values in the training rows (an identifier or "
                "free text?); leave the column out"
            )
        return cls(column, tuple(levels))

    def names(self) -> tuple[str, ...]:
        """The encoding's column names: ``Wind=E``, ..., ``Wind=<unknown>``."""
        return tuple(f"{self.column}={v}" for v in (*self.levels, UNKNOWN))

    def encode(self, texts: Sequence[str | None]) -> tuple[np.ndarray, dict[str, int]]:
        """(N, L + 1) float64 one-hot rows of the cells ``texts`` (NaN rows where missing), and
        the values unseen in training with their counts (each read as ``<unknown>``)."""
        index = {v: i for i, v in enumerate(self.levels)}
        out = np.zeros((len(texts), len(self.levels) + 1))
        unseen: Counter = Counter()
        for row, text in enumerate(texts):
            if text is None:
                out[row] = np.nan
                continue
            j = index.get(text)
            if j is None:
                unseen[text] += 1
                j = len(self.levels)
            out[row, j] = 1.0
        return out, dict(unseen)

    def note(self, unseen: dict[str, int]) -> str | None:
        """A line saying which values were unseen in training, or None if none were."""
        if not unseen:
            return None
        shown = ", ".join(f"{v!r} x{n}" for v, n in sorted(unseen.items())[:5])
        more = ", ..." if len(unseen) > 5 else ""
        return (
            f"column {self.column!r}: {sum(unseen.values())} row(s) hold values unseen in "
            f"training ({shown}{more}), read as {UNKNOWN}"
        )

    def to_dict(self) -> dict:
        return {"column": self.column, "levels": list(self.levels)}

    @classmethod
    def from_dict(cls, d: dict) -> Categories:
        try:
            column, levels = d["column"], list(d["levels"])
        except (KeyError, TypeError):
            raise DataError(f"Expected {{'column': ..., 'levels': [...]}}, got {d!r}") from None
        if not isinstance(column, str) or not all(isinstance(v, str) for v in levels):
            raise DataError(f"Expected a column name and text levels, got {d!r}")
        if len(levels) > MAX_CATEGORIES:
            raise DataError(f"Expected at most {MAX_CATEGORIES} levels, got {len(levels)}")
        return cls(column, tuple(levels))
