"""Numbers of a comparison, computed from the metrics records alone, and the verdicts.

Every run is compared by its objective's primary metric (``ppl`` for a language
model, ``acc``, ``rmse`` or ``loss`` otherwise) in that metric's direction
(``higher_is_better``); a language model's report reads as it always has.

Per run (:func:`run_summary`), from its JSON-lines records:

    final val <metric>             the last epoch record's val_<metric>; best_val_<metric>:
                                   the best over epochs, by the metric's direction
    final train / val loss, gap    train_loss, val_loss, gap = val_loss - train_loss
                                   (``gap_nats`` too for a language model, with its
                                   train_ppl: token-weighted over that epoch's windows,
                                   measured while training, dropout on); NaN when missing
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
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

__all__ = [
    "Stat",
    "Metric",
    "metric_of",
    "columns",
    "run_summary",
    "val_curve",
    "epoch_curve",
    "strategy_rows",
    "Verdict",
    "verdicts",
    "time_to_reach",
    "LEARNED",
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
    run = next((r for r in reversed(records) if r.get("event") == "run"), {})
    seconds = sum(_get(r, "seconds") for r in epochs if "seconds" in r)
    tokens = sum(int(r.get("tokens", 0)) for r in epochs)
    done = sum(_num(r.get("fraction", 1.0)) for r in epochs)
    norms = [_get(r, "grad_norm") for r in steps if math.isfinite(_get(r, "grad_norm"))]
    last = epochs[-1] if epochs else {}
    train_loss = _get(last, "train_loss")
    val_loss = _get(last, "val_loss")
    key = f"val_{metric}"
    values = [_num(r[key]) for r in epochs if key in r]
    values = [v for v in values if not math.isnan(v)]
    best = (max if higher_is_better else min)(values, default=math.nan)
    out = {}
    if metric == "ppl":
        out["train_ppl"] = _get(last, "train_ppl")
    out |= {
        key: _get(last, key),
        f"best_{key}": best,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "gap": val_loss - train_loss,
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
    ``gap_nats``. Missing numbers are NaN."""
    key = f"val_{metric}"
    keys = ["epochs", key, "train_loss", "val_loss", "gap"]
    if metric == "ppl":
        keys += ["train_ppl", "gap_nats"]
    out = {k: [] for k in keys}
    done = 0.0
    for r in records:
        if r.get("event") != "epoch":
            continue
        done += _num(r.get("fraction", 1.0))
        gap = _get(r, "val_loss") - _get(r, "train_loss")
        out["epochs"].append(done)
        out[key].append(_get(r, key))
        out["train_loss"].append(_get(r, "train_loss"))
        out["val_loss"].append(_get(r, "val_loss"))
        out["gap"].append(gap)
        if metric == "ppl":
            out["train_ppl"].append(_get(r, "train_ppl"))
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


# -- verdicts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """One lecture claim, the outcome the numbers give, and the sentence that says why."""

    claim: str
    outcome: str  # supported, partly supported, not supported, inconclusive, not evaluated
    text: str


def _first(comparison, kind: str) -> str | None:
    from tbptt.truncation import FullBPTT, RandomizedTruncation, RegularTruncation, parse_strategy

    cls = {"full": FullBPTT, "regular": RegularTruncation, "randomized": RandomizedTruncation}[kind]
    for spec in trained_strategies(comparison):
        if type(parse_strategy(spec)) is cls:
            return spec
    return None


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 and math.isfinite(a) and math.isfinite(b) else math.nan


def _times(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.2f}×"


SPEEDUP = 2.0  # "much faster": at least this ratio of time to the same validation metric
NORM_RATIO = 1.2  # a 90th-percentile gradient norm this much larger counts as less stable
MIN_STEPS = 10  # fewer optimizer steps than this (and nothing non-finite): stability undecided
SAME_PPL = 0.02  # one seed: relative difference in the validation metric treated as no difference
LEARNED = 0.5  # learned the task: final validation loss at most this share of the best baseline's
DIVERGED = 10.0  # diverged: final validation loss above this many times the best baseline's


def verdicts(comparison) -> list[Verdict]:
    """A verdict per lecture claim, each computed from the runs' numbers (thresholds above).

    For data other than text with baselines, a fifth: whether only some strategies learn
    the task (:data:`LEARNED`).
    """
    m = metric_of(comparison)
    rows = {r["strategy"]: r for r in strategy_rows(comparison)}
    full, regular, randomized = (_first(comparison, k) for k in ("full", "regular", "randomized"))
    found = [
        _speed(comparison, rows, full, regular, m),
        _stability(rows, full, regular),
        _regularization(rows, full, regular, m),
        _randomized(rows, regular, randomized, m),
    ]
    data = comparison.data or {}
    if data.get("baselines") and data.get("kind", "text") != "text":
        found.append(_learned(comparison, rows, m))
    return found


def _missing(claim: str, *needed: tuple[str, str | None]) -> Verdict | None:
    absent = [kind for kind, spec in needed if spec is None]
    if absent:
        return Verdict(
            claim,
            "not evaluated",
            f"the comparison has no {' and no '.join(absent)} strategy; add one to test this claim.",
        )
    return None


def _speed(comparison, rows, full, regular, m: Metric) -> Verdict:
    claim = "Regular truncation is much faster than full BPTT."
    if missing := _missing(claim, ("full", full), ("regular", regular)):
        return missing
    f, r = rows[full], rows[regular]
    throughput = _ratio(r["tokens_per_s"].mean, f["tokens_per_s"].mean)
    step_rate = _ratio(r["steps_per_s"].mean, f["steps_per_s"].mean)
    # Time to quality, per seed: how long each took to reach full's final validation perplexity.
    speedups, reached, at_first = [], 0, 0
    for seed in comparison.config.seeds:
        f_run = next((x for x in comparison.runs_of(full) if x.seed == seed), None)
        r_run = next((x for x in comparison.runs_of(regular) if x.seed == seed), None)
        if f_run is None or r_run is None:
            continue
        target = run_summary(f_run.records, m.name, m.higher_is_better)[m.key]
        t_full = time_to_reach(f_run.records, target, m.name, m.higher_is_better)
        t_reg = time_to_reach(r_run.records, target, m.name, m.higher_is_better)
        if not math.isnan(t_reg):
            reached += 1
            speedups.append(_ratio(t_full, t_reg))
            at_first += t_reg == first_trained_evaluation(r_run.records, m.name)
    speedup = Stat.of(speedups)
    text = (
        f"{regular} processed {_times(throughput)} the {'tokens' if m.lm else 'rows'} per "
        f"second of {full} "
        f"({r['tokens_per_s'].mean:,.0f} vs {f['tokens_per_s'].mean:,.0f}) and took "
        f"{_times(step_rate)} the optimizer steps per second ({r['steps'].mean:,.0f} vs "
        f"{f['steps'].mean:,.0f} steps in all). "
        f"Validation {m.label} at the end of the budget: {regular} {r[m.key].format()}, "
        f"{full} {f[m.key].format()}. "
    )
    if reached == 0:
        text += f"{regular} never reached {full}'s final validation {m.label} within the budget."
        return Verdict(claim, "not supported", text)
    text += (
        f"{regular} reached {full}'s final validation {m.label} {speedup.format('.1f')} times "
        f"sooner (training seconds; {reached} of {len(comparison.config.seeds)} seeds)."
    )
    if at_first:
        text += (
            f" A lower bound: {regular} was already there at its first evaluation"
            f"{'' if at_first == reached else f' in {at_first} seeds'}."
        )
    if speedup.mean >= SPEEDUP:
        outcome = "supported"
    elif speedup.mean > 1:
        outcome = "partly supported"
        text += f" Faster, but by less than the {SPEEDUP:g}× this report calls much faster."
    else:
        outcome = "not supported"
    return Verdict(claim, outcome, text)


def _stability(rows, full, regular) -> Verdict:
    claim = "Regular truncation is more stable (the exploding long products are dropped)."
    if missing := _missing(claim, ("full", full), ("regular", regular)):
        return missing
    f, r = rows[full], rows[regular]
    signs = [
        f["nonfinite"].mean > r["nonfinite"].mean,
        f["clip_rate"].mean > r["clip_rate"].mean,
        _ratio(f["grad_norm_p90"].mean, r["grad_norm_p90"].mean) > NORM_RATIO,
    ]
    calmer = [
        f["nonfinite"].mean < r["nonfinite"].mean,
        f["clip_rate"].mean < r["clip_rate"].mean,
        _ratio(r["grad_norm_p90"].mean, f["grad_norm_p90"].mean) > NORM_RATIO,
    ]
    text = (
        f"Non-finite steps: {full} {f['nonfinite'].format('.0f')}, {regular} "
        f"{r['nonfinite'].format('.0f')}. Clipping fired in {f['clip_rate'].mean:.1%} of {full}'s "
        f"{f['steps'].mean:,.0f} steps and {r['clip_rate'].mean:.1%} of {regular}'s "
        f"{r['steps'].mean:,.0f}. Gradient norm before clipping, median / 90th percentile / max: "
        f"{full} {f['grad_norm_median'].mean:.3g} / {f['grad_norm_p90'].mean:.3g} / "
        f"{f['grad_norm_max'].mean:.3g}, {regular} {r['grad_norm_median'].mean:.3g} / "
        f"{r['grad_norm_p90'].mean:.3g} / {r['grad_norm_max'].mean:.3g}."
    )
    if min(f["steps"].mean, r["steps"].mean) < MIN_STEPS and not (
        f["nonfinite"].mean or r["nonfinite"].mean
    ):
        fewer = full if f["steps"].mean <= r["steps"].mean else regular
        text += (
            f" {fewer} took fewer than {MIN_STEPS} steps and no step was non-finite: too "
            "little to judge stability (a longer budget gives more steps)."
        )
        return Verdict(claim, "inconclusive", text)
    if sum(signs) >= 2:
        outcome = "supported"
    elif sum(signs) == 1 and not any(calmer):
        outcome = "partly supported"
    else:
        outcome = "not supported"
    return Verdict(claim, outcome, text)


def _regularization(rows, full, regular, m: Metric) -> Verdict:
    claim = "Regular truncation regularizes (leans on recent context, generalizes better)."
    if missing := _missing(claim, ("full", full), ("regular", regular)):
        return missing
    f, r = rows[full], rows[regular]
    unit = " nats" if m.lm else ""
    text = (
        f"Gap between validation and training loss at the end: {regular} "
        f"{r['gap'].format()}{unit}, {full} {f['gap'].format()}{unit}; validation "
        f"{m.label} {regular} {r[m.key].format()}, {full} {f[m.key].format()}. "
        "(Training loss is measured during the epoch with dropout on, so the gap can be negative.)"
    )
    smaller_gap = r["gap"].mean < f["gap"].mean
    better_val = m.better(r[m.key].mean, f[m.key].mean)
    if smaller_gap and better_val:
        outcome = "supported"
    elif better_val:
        outcome = "partly supported"
        text += (
            f" {regular} generalizes better but its gap is not smaller: its lead comes from "
            "fitting the training text better, not from a smaller gap."
        )
    elif smaller_gap:
        outcome = "partly supported"
        text += f" The smaller gap comes with a worse validation {m.label} (underfitting)."
    else:
        outcome = "not supported"
    return Verdict(claim, outcome, text)


def _randomized(rows, regular, randomized, m: Metric) -> Verdict:
    claim = "Randomized truncation is unbiased but in practice no better than regular."
    if missing := _missing(claim, ("regular", regular), ("randomized", randomized)):
        return missing
    g, r = rows[randomized], rows[regular]
    gv, rv = g[m.key], r[m.key]
    diff = gv.mean - rv.mean
    # Noise, in the metric's own units: the spread over seeds, or a share of regular's value.
    if gv.n > 1 and rv.n > 1:
        noise = 2 * math.sqrt(gv.std**2 / gv.n + rv.std**2 / rv.n)
        rule = f"twice the standard error of the difference over seeds, {noise:.3f}"
    else:
        noise = SAME_PPL * abs(rv.mean)
        rule = f"{SAME_PPL:.0%} of {regular}'s {m.label}, one seed"
        if not m.lm:
            rule += f", {noise:.3g}"
    gain = diff if m.higher_is_better else -diff  # > 0: randomized did better
    throughput = _ratio(g["tokens_per_s"].mean, r["tokens_per_s"].mean)
    per_second = "tokens" if m.lm else "rows"
    text = (
        f"Validation {m.label} {randomized} {gv.format()} vs {regular} "
        f"{rv.format()} (difference {diff:+.3f}; differences within {rule}, count as "
        f"none). {randomized} ran at {_times(throughput)} the {per_second} per second of "
        f"{regular}."
    )
    if gain > noise:
        outcome = "not supported"
        text += f" {randomized} did better."
    else:
        outcome = "supported"
        text += " No better." if gain >= -noise else f" {randomized} did worse."
    return Verdict(claim, outcome, text)


def _best_baseline(baselines: dict, m: Metric) -> tuple[str, str, float] | None:
    """(name, metric, value) of the best baseline: by ``loss`` if any has one, else by the
    primary metric in its direction; None when no baseline has either."""
    for metric, higher in (("loss", False), (m.name, m.higher_is_better)):
        scored = [
            (name, _num(values[metric]))
            for name, values in baselines.items()
            if metric in values and not math.isnan(_num(values[metric]))
        ]
        if scored:
            name, value = (max if higher else min)(scored, key=lambda x: x[1])
            return name, metric, value
    return None


def _learned(comparison, rows, m: Metric) -> Verdict:
    claim = "The task is learned only by strategies whose gradient reaches far enough back."
    best = _best_baseline(comparison.data["baselines"], m)
    if best is None:
        return Verdict(
            claim,
            "not evaluated",
            f"no baseline has a loss or a {m.name} to measure the strategies against.",
        )
    name, metric, base = best
    # A higher-is-better metric (accuracy) is judged by its shortfall from 1 (the error rate).
    flip = metric != "loss" and m.higher_is_better

    def error(value: float) -> float:
        return 1 - value if flip else value

    outcomes, parts = {}, []
    for spec in trained_strategies(comparison):
        values = [
            run_summary(run.records, m.name, m.higher_is_better)[f"val_{metric}"]
            for run in comparison.runs_of(spec)
        ]
        value = statistics.fmean(values) if values else math.nan
        nonfinite = rows[spec]["nonfinite"].mean if spec in rows else 0
        if not all(math.isfinite(v) for v in values) or not values:
            outcome = "diverged"
        elif error(value) > DIVERGED * error(base) or nonfinite > 0:
            outcome = "diverged"
        elif error(value) <= LEARNED * error(base):
            outcome = "learned"
        else:
            outcome = "did not learn"
        outcomes[spec] = outcome
        shown = f"{value:.4g}" if values else "n/a"
        steps = f", {nonfinite:.0f} non-finite steps" if nonfinite else ""
        parts.append(f"{spec} {outcome} (validation {metric} {shown}{steps})")
    rule = (
        f"learned: at most {LEARNED:g}× the baseline's {'error rate' if flip else metric}; "
        f"diverged: non-finite, above {DIVERGED:g}× it, or non-finite steps"
    )
    text = (
        f"Best baseline {name}: {metric} {base:.4g}. Final validation {metric} per strategy"
        f"{' (mean over seeds)' if len(comparison.config.seeds) > 1 else ''}: "
        f"{'; '.join(parts)}. ({rule}.)"
    )
    learned = sum(o == "learned" for o in outcomes.values())
    if learned and learned < len(outcomes):
        outcome = "supported"
    else:
        outcome = "not supported"
        text += " All strategies learned it." if learned else " No strategy learned it."
    return Verdict(claim, outcome, text)
