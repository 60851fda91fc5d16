"""The verdicts: each lecture claim about truncation held against a comparison's numbers.

A :class:`Verdict` per claim, computed by :func:`verdicts` from the per-run and
per-strategy numbers of :mod:`tbptt.report.summary`, judged by the comparison's
primary metric in its direction:

    speed            regular truncation is much faster than full BPTT: time to reach
                     full's final validation metric, per seed (:data:`SPEEDUP`)
    stability        regular truncation is more stable: non-finite steps, clip rate,
                     90th-percentile gradient norm (:data:`NORM_RATIO`, :data:`MIN_STEPS`)
    regularization   regular truncation generalizes better: validation - training loss
                     gap and validation metric; inconclusive when a run's training loss
                     covers less than :data:`~tbptt.report.summary.MIN_FRACTION` of an
                     epoch or it logged fewer than :data:`MIN_STEPS` steps
    randomized       randomized truncation is no better than regular in practice: the
                     difference against the noise over seeds (:data:`SAME_PPL` for one seed)
    learned          for data other than text with baselines: only some strategies learn
                     the task (:data:`LEARNED`, :data:`DIVERGED`)
    carried state    for a comparison with a ``windows:K`` entry (a time series' default):
                     carrying the state along the stream beats random windows with a
                     fresh state; by how much, paired by seed, against the seeds' noise

A claim is "not evaluated" when the comparison lacks a strategy it needs (or, for
learned, when no baseline has a score to measure against). The lecture claims are
judged on the entries whose windows follow the stream (a ``windows:K`` entry is
``regular:K`` too, but never stands for it).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from tbptt.report.summary import (
    MIN_FRACTION,
    Metric,
    Stat,
    _num,
    first_trained_evaluation,
    metric_of,
    run_summary,
    strategy_rows,
    time_to_reach,
    trained_strategies,
)
from tbptt.train.compare import parse_entry

__all__ = [
    "Verdict",
    "verdicts",
    "SPEEDUP",
    "NORM_RATIO",
    "MIN_STEPS",
    "SAME_PPL",
    "LEARNED",
    "DIVERGED",
]


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
        entry = parse_entry(spec)
        if entry.sampling is None and type(parse_strategy(entry.strategy)) is cls:
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
    the task (:data:`LEARNED`); for a comparison with a ``windows:K`` entry, a sixth:
    whether carrying the state won (:func:`tbptt.report.carried.carried_state`).
    """
    m = metric_of(comparison)
    rows = {r["strategy"]: r for r in strategy_rows(comparison)}
    full, regular, randomized = (_first(comparison, k) for k in ("full", "regular", "randomized"))
    found = [
        _speed(comparison, rows, full, regular, m),
        _stability(rows, full, regular),
        _regularization(comparison, rows, full, regular, m),
        _randomized(rows, regular, randomized, m),
    ]
    data = comparison.data or {}
    if data.get("baselines") and data.get("kind", "text") != "text":
        found.append(_learned(comparison, rows, m))
    if any(parse_entry(spec).sampling == "random" for spec in comparison.strategies):
        from tbptt.report.carried import carried_state  # (it builds on this module's Verdict)

        found.append(carried_state(comparison))  # a windows:K entry beside the stateful ones
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


def _too_little_training(comparison, specs, m: Metric) -> str:
    """Why the training figures of these strategies' runs are too thin to judge, or ""."""
    reasons = []
    for spec in specs:
        for run in comparison.runs_of(spec):
            s = run_summary(run.records, m.name, m.higher_is_better)
            seed = f" (seed {run.seed})" if len(comparison.config.seeds) > 1 else ""
            if not s["train_fraction"] >= MIN_FRACTION:
                reasons.append(
                    f"{spec}{seed}'s last training loss covers {s['train_fraction']:.0%} of an "
                    f"epoch, less than half an epoch"
                )
            # No step records at all: the steps were not logged, not too few.
            elif 0 < s["steps"] < MIN_STEPS:
                reasons.append(f"{spec}{seed} took {s['steps']} steps, fewer than {MIN_STEPS}")
    return "; ".join(reasons)


def _regularization(comparison, rows, full, regular, m: Metric) -> Verdict:
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
    if thin := _too_little_training(comparison, (full, regular), m):
        text += f" Too little training to judge: {thin} (a longer budget gives more)."
        return Verdict(claim, "inconclusive", text)
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
