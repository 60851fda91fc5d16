"""Numbers of a comparison, computed from the metrics records alone, and the verdicts.

Per run (:func:`run_summary`), from its JSON-lines records:

    final train / val perplexity   the last epoch record's train_ppl, val_ppl
                                   (train_ppl: token-weighted over that epoch's windows,
                                   measured while training, dropout on)
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
    "run_summary",
    "val_curve",
    "epoch_curve",
    "strategy_rows",
    "Verdict",
    "verdicts",
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


def _num(value) -> float:
    # Non-finite numbers are stored as strings in the JSON lines ("nan", "inf").
    return float(value)


def run_summary(records: list[dict]) -> dict:
    """The table's numbers for one run, from its metrics records (see the module docstring)."""
    epochs = [r for r in records if r.get("event") == "epoch"]
    steps = [r for r in records if r.get("event") == "step"]
    run = next((r for r in reversed(records) if r.get("event") == "run"), {})
    seconds = sum(_num(r["seconds"]) for r in epochs)
    tokens = sum(int(r["tokens"]) for r in epochs)
    done = sum(_num(r.get("fraction", 1.0)) for r in epochs)
    norms = [_num(r["grad_norm"]) for r in steps if math.isfinite(_num(r["grad_norm"]))]
    last = epochs[-1] if epochs else {}
    train_loss = _num(last.get("train_loss", math.nan))
    val_loss = _num(last.get("val_loss", math.nan))
    return {
        "train_ppl": _num(last.get("train_ppl", math.nan)),
        "val_ppl": _num(last.get("val_ppl", math.nan)),
        "best_val_ppl": min(
            (_num(r["val_ppl"]) for r in epochs if "val_ppl" in r), default=math.nan
        ),
        "gap_nats": val_loss - train_loss,
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


def val_curve(records: list[dict]) -> dict[str, list[float]]:
    """Validation points in order: ``eval`` records inside epochs and every ``epoch`` record.

    Returns lists ``epochs`` (cumulative epochs done), ``seconds`` (cumulative training
    seconds), ``val_ppl``.
    """
    out = {"epochs": [], "seconds": [], "val_ppl": []}
    done = seconds = 0.0
    for r in records:
        if r.get("event") == "eval":
            out["epochs"].append(_num(r["epochs_done"]))
            out["seconds"].append(_num(r["train_seconds"]))
            out["val_ppl"].append(_num(r["val_ppl"]))
        elif r.get("event") == "epoch":
            done += _num(r.get("fraction", 1.0))
            seconds += _num(r["seconds"])
            if "val_ppl" in r:
                out["epochs"].append(done)
                out["seconds"].append(seconds)
                out["val_ppl"].append(_num(r["val_ppl"]))
    return out


def epoch_curve(records: list[dict]) -> dict[str, list[float]]:
    """Per epoch record: cumulative epochs done, train and validation perplexity, gap in nats."""
    out = {k: [] for k in ("epochs", "train_ppl", "val_ppl", "gap_nats")}
    done = 0.0
    for r in records:
        if r.get("event") != "epoch":
            continue
        done += _num(r.get("fraction", 1.0))
        out["epochs"].append(done)
        out["train_ppl"].append(_num(r["train_ppl"]))
        out["val_ppl"].append(_num(r.get("val_ppl", math.nan)))
        out["gap_nats"].append(_num(r.get("val_loss", math.nan)) - _num(r["train_loss"]))
    return out


def time_to_reach(records: list[dict], target: float) -> float:
    """Training seconds until the validation perplexity first reached ``target`` (NaN: never).

    Only points after training began count (the comparison also evaluates the start).
    """
    curve = val_curve(records)
    for epochs, seconds, ppl in zip(curve["epochs"], curve["seconds"], curve["val_ppl"]):
        if epochs > 0 and ppl <= target:  # the point before training is no achievement
            return seconds
    return math.nan


def first_trained_evaluation(records: list[dict]) -> float:
    """Training seconds of the first validation point after training began (NaN: none)."""
    curve = val_curve(records)
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
)


def trained_strategies(comparison) -> list[str]:
    """The strategies with at least one finished run (an interrupted comparison has fewer)."""
    return [spec for spec in comparison.strategies if comparison.runs_of(spec)]


def strategy_rows(comparison) -> list[dict]:
    """One row per strategy: ``{"strategy", "seeds", key: Stat}`` for every summary number."""
    rows = []
    for spec in trained_strategies(comparison):
        summaries = [run_summary(r.records) for r in comparison.runs_of(spec)]
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


SPEEDUP = 2.0  # "much faster": at least this ratio of time to the same validation perplexity
NORM_RATIO = 1.2  # a 90th-percentile gradient norm this much larger counts as less stable
MIN_STEPS = 10  # fewer optimizer steps than this (and nothing non-finite): stability undecided
SAME_PPL = 0.02  # one seed: relative difference in validation perplexity treated as no difference


def verdicts(comparison) -> list[Verdict]:
    """A verdict per lecture claim, each computed from the runs' numbers (thresholds above)."""
    rows = {r["strategy"]: r for r in strategy_rows(comparison)}
    full, regular, randomized = (_first(comparison, k) for k in ("full", "regular", "randomized"))
    return [
        _speed(comparison, rows, full, regular),
        _stability(rows, full, regular),
        _regularization(rows, full, regular),
        _randomized(rows, regular, randomized),
    ]


def _missing(claim: str, *needed: tuple[str, str | None]) -> Verdict | None:
    absent = [kind for kind, spec in needed if spec is None]
    if absent:
        return Verdict(
            claim,
            "not evaluated",
            f"the comparison has no {' and no '.join(absent)} strategy; add one to test this claim.",
        )
    return None


def _speed(comparison, rows, full, regular) -> Verdict:
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
        target = run_summary(f_run.records)["val_ppl"]
        t_full, t_reg = time_to_reach(f_run.records, target), time_to_reach(r_run.records, target)
        if not math.isnan(t_reg):
            reached += 1
            speedups.append(_ratio(t_full, t_reg))
            at_first += t_reg == first_trained_evaluation(r_run.records)
    speedup = Stat.of(speedups)
    text = (
        f"{regular} processed {_times(throughput)} the tokens per second of {full} "
        f"({r['tokens_per_s'].mean:,.0f} vs {f['tokens_per_s'].mean:,.0f}) and took "
        f"{_times(step_rate)} the optimizer steps per second ({r['steps'].mean:,.0f} vs "
        f"{f['steps'].mean:,.0f} steps in all). "
        f"Validation perplexity at the end of the budget: {regular} {r['val_ppl'].format()}, "
        f"{full} {f['val_ppl'].format()}. "
    )
    if reached == 0:
        text += f"{regular} never reached {full}'s final validation perplexity within the budget."
        return Verdict(claim, "not supported", text)
    text += (
        f"{regular} reached {full}'s final validation perplexity {speedup.format('.1f')} times "
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


def _regularization(rows, full, regular) -> Verdict:
    claim = "Regular truncation regularizes (leans on recent context, generalizes better)."
    if missing := _missing(claim, ("full", full), ("regular", regular)):
        return missing
    f, r = rows[full], rows[regular]
    text = (
        f"Gap between validation and training loss at the end: {regular} "
        f"{r['gap_nats'].format()} nats, {full} {f['gap_nats'].format()} nats; validation "
        f"perplexity {regular} {r['val_ppl'].format()}, {full} {f['val_ppl'].format()}. "
        "(Training loss is measured during the epoch with dropout on, so the gap can be negative.)"
    )
    smaller_gap = r["gap_nats"].mean < f["gap_nats"].mean
    better_val = r["val_ppl"].mean < f["val_ppl"].mean
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
        text += " The smaller gap comes with a worse validation perplexity (underfitting)."
    else:
        outcome = "not supported"
    return Verdict(claim, outcome, text)


def _randomized(rows, regular, randomized) -> Verdict:
    claim = "Randomized truncation is unbiased but in practice no better than regular."
    if missing := _missing(claim, ("regular", regular), ("randomized", randomized)):
        return missing
    g, r = rows[randomized], rows[regular]
    diff = g["val_ppl"].mean - r["val_ppl"].mean
    if g["val_ppl"].n > 1 and r["val_ppl"].n > 1:
        noise = 2 * math.sqrt(
            g["val_ppl"].std ** 2 / g["val_ppl"].n + r["val_ppl"].std ** 2 / r["val_ppl"].n
        )
        rule = f"twice the standard error of the difference over seeds, {noise:.3f}"
    else:
        noise = SAME_PPL * r["val_ppl"].mean
        rule = f"{SAME_PPL:.0%} of {regular}'s perplexity, one seed"
    throughput = _ratio(g["tokens_per_s"].mean, r["tokens_per_s"].mean)
    text = (
        f"Validation perplexity {randomized} {g['val_ppl'].format()} vs {regular} "
        f"{r['val_ppl'].format()} (difference {diff:+.3f}; differences within {rule}, count as "
        f"none). {randomized} ran at {_times(throughput)} the tokens per second of {regular}."
    )
    if diff < -noise:
        outcome = "not supported"
        text += f" {randomized} did better."
    else:
        outcome = "supported"
        text += " No better." if diff <= noise else f" {randomized} did worse."
    return Verdict(claim, outcome, text)
