"""Numbers of a comparison, computed from the metrics records alone.

Every run is compared by its objective's primary metric (``ppl`` for a language
model, ``acc``, ``rmse`` or ``loss`` otherwise) in that metric's direction
(``higher_is_better``); a language model's report reads as it always has.

Per run (:func:`run_summary`), from its JSON-lines records:

    final val <metric>             the last epoch record's val_<metric>; best_val_<metric>:
                                   the best over epochs, by the metric's direction
    final train / val loss, gap    train_loss from the last epoch record that covers at
                                   least :data:`MIN_FRACTION` of an epoch (else the last
                                   one; ``train_fraction`` says how much it covers), so a
                                   budget-cut fragment of a few windows is never the
                                   training figure; gap = val_loss - train_loss of that
                                   same record (``gap_nats`` too for a language model,
                                   with its train_ppl: token-weighted over that epoch's
                                   windows, measured while training, dropout on);
                                   val_loss: the last record's; NaN when missing
    tokens/s                       sum of epoch tokens / sum of epoch training seconds
    seconds per epoch              sum of epoch training seconds / epochs done, where a
                                   budget-stopped epoch counts as its ``fraction``
    steps                          optimizer steps attempted (step records)
    clip rate                      share of step records with ``clipped``
    non-finite                     step records with ``skipped`` (NaN/inf loss or gradient)
    peak memory                    the closing run record's ``peak_memory_mb`` (host), or
                                   ``peak_cuda_mb`` (device allocator) for a CUDA run

Across seeds (:func:`strategy_rows`) each number is the mean, with the sample
standard deviation as spread (0 for one seed).

The verdicts built on these numbers are in :mod:`tbptt.report.claims`.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

__all__ = [
    "Stat",
    "Metric",
    "MIN_FRACTION",
    "metric_of",
    "columns",
    "run_summary",
    "val_curve",
    "epoch_curve",
    "strategy_rows",
    "time_to_reach",
]


@dataclass(frozen=True)
class Stat:
    """Mean and spread (sample standard deviation) of one number over seeds."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        values = [v for v in values if v is not None and not math.isnan(v)]
        if not values:
            return cls(math.nan, math.nan, 0)
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return cls(statistics.fmean(values), std, len(values))

    def format(self, fmt: str = ".3f") -> str:
        if self.n == 0:
            return "n/a"
        if self.n == 1:
            return format(self.mean, fmt)
        return f"{self.mean:{fmt}} ± {self.std:{fmt}}"


MIN_FRACTION = 0.5  # training figures come from an epoch record covering at least this much


def _num(value) -> float:
    # Non-finite numbers are stored as strings in the JSON lines ("nan", "inf").
    return float(value)


@dataclass(frozen=True)
class Metric:
    """The metric a comparison is judged by: its name, direction, and how texts call it."""

    name: str = "ppl"
    higher_is_better: bool = False
    objective: str = "lm"

    @property
    def lm(self) -> bool:
        return self.name == "ppl"

    @property
    def key(self) -> str:
        return f"val_{self.name}"

    @property
    def label(self) -> str:
        """``perplexity`` for a language model, else the metric's name (``rmse``, ``acc``)."""
        return "perplexity" if self.lm else self.name

    def better(self, a: float, b: float) -> bool:
        """True when ``a`` is strictly better than ``b``."""
        return a > b if self.higher_is_better else a < b

    def reached(self, value: float, target: float) -> bool:
        """True when ``value`` is at least as good as ``target``."""
        return value >= target if self.higher_is_better else value <= target


def metric_of(comparison) -> Metric:
    """The :class:`Metric` of ``comparison`` (its ``objective``; a language model without one)."""
    objective = getattr(comparison, "objective", None) or {}
    return Metric(
        objective.get("primary", "ppl"),
        bool(objective.get("higher_is_better", False)),
        objective.get("name", "lm"),
    )


def _get(record: dict, key: str) -> float:
    return _num(record.get(key, math.nan))


def run_summary(records: list[dict], metric: str = "ppl", higher_is_better: bool = False) -> dict:
    """The table's numbers for one run, from its metrics records (see the module docstring).

    ``metric``: the primary metric (``val_<metric>``, ``best_val_<metric>``; best by
    ``higher_is_better``). Missing numbers are NaN.
    """
    epochs = [r for r in records if r.get("event") == "epoch"]
    steps = [r for r in records if r.get("event") == "step"]
    # Training figures from enough tokens: not a budget-cut trailing fragment of an epoch.
    measured = next(
        (r for r in reversed(epochs) if _num(r.get("fraction", 1.0)) >= MIN_FRACTION),
        epochs[-1] if epochs else {},
    )
    run = next((r for r in reversed(records) if r.get("event") == "run"), {})
    seconds = sum(_get(r, "seconds") for r in epochs if "seconds" in r)
    tokens = sum(int(r.get("tokens", 0)) for r in epochs)
    done = sum(_num(r.get("fraction", 1.0)) for r in epochs)
    norms = [_get(r, "grad_norm") for r in steps if math.isfinite(_get(r, "grad_norm"))]
    last = epochs[-1] if epochs else {}
    train_loss = _get(measured, "train_loss")
    val_loss = _get(last, "val_loss")
    key = f"val_{metric}"
    values = [_num(r[key]) for r in epochs if key in r]
    values = [v for v in values if not math.isnan(v)]
    best = (max if higher_is_better else min)(values, default=math.nan)
    out = {}
    if metric == "ppl":
        out["train_ppl"] = _get(measured, "train_ppl")
    out |= {
        key: _get(last, key),
        f"best_{key}": best,
        "train_loss": train_loss,
        "train_fraction": _num(measured.get("fraction", 1.0)) if measured else math.nan,
        "val_loss": val_loss,
        # Both losses at the same point: a gap across two models means nothing.
        "gap": _get(measured, "val_loss") - train_loss,
    }
    if metric == "ppl":
        out["gap_nats"] = out["gap"]
    return out | {
        "tokens": tokens,
        "train_seconds": seconds,
        "tokens_per_s": tokens / seconds if seconds > 0 else math.nan,
        "epochs": done,
        "seconds_per_epoch": seconds / done if done > 0 else math.nan,
        "steps": len(steps),
        "steps_per_s": len(steps) / seconds if seconds > 0 else math.nan,
        "clip_rate": sum(bool(r.get("clipped")) for r in steps) / len(steps) if steps else math.nan,
        "nonfinite": sum(bool(r.get("skipped")) for r in steps),
        "grad_norm_median": statistics.median(norms) if norms else math.nan,
        "grad_norm_p90": _quantile(norms, 0.9),
        "grad_norm_max": max(norms) if norms else math.nan,
        # On a GPU the graph lives in device memory: report the allocator's peak there.
        "peak_memory_mb": _num(run.get("peak_cuda_mb", run.get("peak_memory_mb", math.nan))),
        "wall_seconds": _num(run.get("wall_seconds", math.nan)),
        "stop": run.get("stop", ""),
    }


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    s = sorted(values)
    pos = q * (len(s) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def val_curve(records: list[dict], metric: str = "ppl") -> dict[str, list[float]]:
    """Validation points in order: ``eval`` records inside epochs and every ``epoch`` record.

    Returns lists ``epochs`` (cumulative epochs done), ``seconds`` (cumulative training
    seconds), ``val_<metric>`` (``val_ppl`` for a language model).
    """
    key = f"val_{metric}"
    out = {"epochs": [], "seconds": [], key: []}
    done = seconds = 0.0
    for r in records:
        if r.get("event") == "eval":
            if key not in r:
                continue
            out["epochs"].append(_get(r, "epochs_done"))
            out["seconds"].append(_get(r, "train_seconds"))
            out[key].append(_num(r[key]))
        elif r.get("event") == "epoch":
            done += _num(r.get("fraction", 1.0))
            seconds += _num(r.get("seconds", 0.0))
            if key in r:
                out["epochs"].append(done)
                out["seconds"].append(seconds)
                out[key].append(_num(r[key]))
    return out


def epoch_curve(records: list[dict], metric: str = "ppl") -> dict[str, list[float]]:
    """Per epoch record: cumulative epochs done, ``val_<metric>``, train and validation loss,
    ``gap`` (validation - training loss); for a language model also ``train_ppl`` and
    ``gap_nats``. Missing numbers are NaN. The training figures of an epoch record that
    covers less than ``MIN_FRACTION`` of an epoch (a budget cut it short) are NaN: a few
    windows' loss is not a training figure, so the gap plot leaves the point out."""
    key = f"val_{metric}"
    keys = ["epochs", key, "train_loss", "val_loss", "gap"]
    if metric == "ppl":
        keys += ["train_ppl", "gap_nats"]
    out = {k: [] for k in keys}
    done = 0.0
    for r in records:
        if r.get("event") != "epoch":
            continue
        fraction = _num(r.get("fraction", 1.0))
        done += fraction
        enough = fraction >= MIN_FRACTION
        train_loss = _get(r, "train_loss") if enough else math.nan
        gap = _get(r, "val_loss") - train_loss
        out["epochs"].append(done)
        out[key].append(_get(r, key))
        out["train_loss"].append(train_loss)
        out["val_loss"].append(_get(r, "val_loss"))
        out["gap"].append(gap)
        if metric == "ppl":
            out["train_ppl"].append(_get(r, "train_ppl") if enough else math.nan)
            out["gap_nats"].append(gap)
    return out


def time_to_reach(
    records: list[dict], target: float, metric: str = "ppl", higher_is_better: bool = False
) -> float:
    """Training seconds until the validation ``metric`` first reached ``target`` (NaN: never).

    Reached: at most ``target`` (at least, when ``higher_is_better``). Only points after
    training began count (the comparison also evaluates the start).
    """
    curve = val_curve(records, metric)
    m = Metric(metric, higher_is_better)
    for epochs, seconds, value in zip(curve["epochs"], curve["seconds"], curve[f"val_{metric}"]):
        if epochs > 0 and m.reached(value, target):  # the point before training is no achievement
            return seconds
    return math.nan


def first_trained_evaluation(records: list[dict], metric: str = "ppl") -> float:
    """Training seconds of the first validation point after training began (NaN: none)."""
    curve = val_curve(records, metric)
    return next((s for e, s in zip(curve["epochs"], curve["seconds"]) if e > 0), math.nan)


COLUMNS = (
    ("val_ppl", "val ppl", ".3f"),
    ("train_ppl", "train ppl", ".3f"),
    ("gap_nats", "val − train (nats)", ".3f"),
    ("tokens_per_s", "tokens/s", ",.0f"),
    ("seconds_per_epoch", "s / epoch", ".2f"),
    ("epochs", "epochs", ".2f"),
    ("steps", "steps", ",.0f"),
    ("clip_rate", "clip rate", ".3f"),
    ("nonfinite", "non-finite", ".0f"),
    ("peak_memory_mb", "peak memory (MiB)", ",.1f"),
)  # a language model's columns; :func:`columns` gives any objective's


def columns(metric: str = "ppl", text: bool = True) -> tuple[tuple[str, str, str], ...]:
    """(summary key, column title, format) of the results table for primary ``metric``.

    ``ppl`` (a language model): :data:`COLUMNS`. Otherwise ``val <metric>``, train and
    validation loss and their gap; ``text``: throughput in tokens, else in rows.
    """
    if metric == "ppl":
        return COLUMNS
    rest = COLUMNS[3:]
    if not text:
        rest = (("tokens_per_s", "rows/s", ",.0f"), *rest[1:])
    head = [(f"val_{metric}", f"val {metric}", ".3f")]
    if metric != "loss":
        head.append(("val_loss", "val loss", ".3f"))
    head += [("train_loss", "train loss", ".3f"), ("gap", "val − train loss", ".3f")]
    return (*head, *rest)


def trained_strategies(comparison) -> list[str]:
    """The strategies with at least one finished run (an interrupted comparison has fewer)."""
    return [spec for spec in comparison.strategies if comparison.runs_of(spec)]


def strategy_rows(comparison) -> list[dict]:
    """One row per strategy: ``{"strategy", "seeds", key: Stat}`` for every summary number."""
    m = metric_of(comparison)
    rows = []
    for spec in trained_strategies(comparison):
        summaries = [
            run_summary(r.records, m.name, m.higher_is_better) for r in comparison.runs_of(spec)
        ]
        row = {"strategy": spec, "seeds": len(summaries)}
        for key in summaries[0] if summaries else ():
            if key != "stop":
                row[key] = Stat.of([s[key] for s in summaries])
        rows.append(row)
    return rows
