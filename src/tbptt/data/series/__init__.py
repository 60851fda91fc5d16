"""Time-series files into train / validation :class:`StreamData` for forecasting.

A table (``.csv`` with a header row; ``.npy`` 1-D or (N, C), columns "0".."C-1";
``.npz`` of 1-D columns named by key, or of one (N, C) array; read by
:mod:`tbptt.data.table`, its columns by :mod:`tbptt.data.features`) holds one row per
time step of one or several series. At horizon h, pair t of a series reads the input
columns at row t and has as target the target columns at row t + h (``direct``: every
step 1..h at once, the h x D targets step-major); no pair crosses a series boundary or a
gap. Each series of n rows is cut at its own row ``cut = n - round(n * valid_fraction)``:
a pair is for training when its last *target* row is before the cut, for validation when
its first is at or after it, so no training target is a validation value (one series,
n = 10, valid_fraction = 0.3, h = 2)::

    row       0    1    2    3    4    5    6  │  7    8    9        cut = 7
              └─ training rows: scalers fit ───┘  └─ tail ─┘
    train     x0→x2  x1→x3  x2→x4  x3→x5  x4→x6        t in [0, cut - h)
    valid                              x5→x7  x6→x8  x7→x9   t in [cut - h, n - h)

Validation inputs may lie before the cut (x5, x6): they are observed values,
not validation targets. Training pairs of all series are concatenated in file
order, validation pairs likewise; ``starts`` is True at each segment's first pair
in each split (a series, or a stretch of one after a gap: its state starts afresh),
None for one segment (h = 1, valid_fraction = 0.2)::

    series     a a a a a a │ b b b b b
    train      a0 a1 a2 a3   b0 b1 b2         starts 1 0 0 0 1 0 0
    valid      a4            b3               starts 1 1

``mask`` is False where a target was forward-filled (``missing="ffill"``): the pair stays in
the stream, its loss and metrics are not counted. With ``warm_up`` W > 0 the validation
split opens each segment's validation pairs with up to W earlier pairs, masked out, so a
stateful model is scored from a state (and an AR highway from lags) that has read the
series, as the baselines read it; evaluated in one column per series, the validation then
continues each series' stream.

Inputs (N, F) and targets (N, D) are float32, standardized per column by
:class:`Standardizer` s fitted on the training rows [0, cut) of every series
only. Series ids and the time column (e.g. a Date, found from its cells, which labels
the validation rows and feeds ``calendar`` inputs) are labels, not inputs. The
baselines a forecast is judged against (persistence, mean, seasonal naive, a linear
autoregression: :mod:`tbptt.data.forecast`) are fitted on the training pairs only and
scored on the same validation pairs, in the data's units.
"""

from tbptt.data.features import MISSING
from tbptt.data.series.data import SERIES_RECIPE, TIME_NAMES, SeriesData, Standardizer
from tbptt.data.series.prepare import prepare_series
from tbptt.data.table import Table, read_table

__all__ = [
    "MISSING",
    "SERIES_RECIPE",
    "TIME_NAMES",
    "Standardizer",
    "SeriesData",
    "Table",
    "read_table",
    "prepare_series",
]
