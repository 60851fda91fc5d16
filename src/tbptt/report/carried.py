"""The verdict only tbptt can give: whether carrying the state along the stream beat random
windows with a fresh state (a ``windows:K`` entry of a comparison), paired by seed."""

from __future__ import annotations

import math

from tbptt.report.claims import SAME_PPL, Verdict, _ratio
from tbptt.report.summary import Metric, Stat, metric_of, run_summary, trained_strategies
from tbptt.train.compare import parse_entry

__all__ = ["carried_state"]


def _digits(x: float, significant: int) -> str:
    """``x`` to ``significant`` digits, never in exponent form at 10**significant or above
    (``19283``, not ``1.928e+04``)."""
    return f"{x:.0f}" if abs(x) >= 10**significant else f"{x:.{significant}g}"


def _value(stat: Stat) -> str:
    """``1928 ± 4``, ``2.229 ± 0.021``, ``3829 ± 102``: a mean to 4 significant digits, its
    spread to 2."""
    if stat.n == 0:
        return "n/a"
    return _digits(stat.mean, 4) + (f" ± {_digits(stat.std, 2)}" if stat.n > 1 else "")


def _final(comparison, spec: str, m: Metric) -> dict[int, float]:
    """{seed: final validation value of the primary metric} of ``spec``'s runs."""
    return {
        run.seed: run_summary(run.records, m.name, m.higher_is_better)[m.key]
        for run in comparison.runs_of(spec)
    }


def _pair(comparison, windows: str, stateful: list[str], m: Metric) -> str:
    """The stateful entry to set against ``windows``: the one training the same strategy
    (``regular:K`` for ``windows:K``: the same windows, in order, the state carried), else
    the best by mean."""
    strategy = parse_entry(windows).strategy
    same = [spec for spec in stateful if comparison.entry(spec).strategy == strategy]
    if same:
        return same[0]
    means = {spec: Stat.of(list(_final(comparison, spec, m).values())).mean for spec in stateful}
    finite = [spec for spec in stateful if math.isfinite(means[spec])] or stateful
    return (max if m.higher_is_better else min)(finite, key=lambda spec: means[spec])


def carried_state(comparison) -> Verdict:
    """Whether carrying the state along the stream beat random windows with a fresh state.

    The ``windows:K`` entry (random offsets, fresh state) is set against ``regular:K`` (the
    same windows in order, the state carried; else the best stateful entry), paired by
    seed (a seed's runs share their initial weights): the mean of the per-seed differences
    in the final validation metric, in the data's units, and their spread. A difference
    within twice its standard error over seeds (one seed: :data:`SAME_PPL` of the stateful
    entry's value) counts as none: "inconclusive"; else "supported" when the stateful entry
    is better, "not supported" when the windows are. The text also names every entry's
    value and the best entry.
    """
    claim = "Carrying the state along the stream beats random windows with a fresh state."
    m = metric_of(comparison)
    trained = trained_strategies(comparison)
    fresh = [spec for spec in trained if not comparison.entry(spec).stateful]
    stateful = [spec for spec in trained if comparison.entry(spec).stateful]
    if not fresh or not stateful:
        lacking = (
            "no windows:K entry (random windows, each from a fresh state)"
            if not fresh
            else "no entry whose windows follow the stream with the state carried"
        )
        return Verdict(claim, "not evaluated", f"the comparison has {lacking}; add one.")
    windows = fresh[0]
    carried = _pair(comparison, windows, stateful, m)
    values = {spec: _final(comparison, spec, m) for spec in trained}
    stats = {spec: Stat.of(list(v.values())) for spec, v in values.items()}
    seeds = [seed for seed in values[carried] if seed in values[windows]]
    # > 0: the state carried did better, in the metric's own units (the data's, for a series)
    sign = 1 if m.higher_is_better else -1
    gains = [sign * (values[carried][s] - values[windows][s]) for s in seeds]
    gains = [g for g in gains if math.isfinite(g)]
    gain = Stat.of(gains)
    several = len(comparison.config.seeds) > 1
    spread = "mean ± sample standard deviation over seeds" if several else "one seed"
    units = ", in the data's units" if m.objective == "regress" else ""
    text = (
        f"Final validation {m.label}{units} ({spread}): "
        + ", ".join(f"{spec} {_value(stats[spec])}" for spec in trained)
        + ". "
    )
    if gain.n == 0:
        text += f"{carried} and {windows} have no finite {m.label} of the same seed to compare."
        return Verdict(claim, "inconclusive", text)
    if gain.n > 1:
        noise = 2 * gain.std / math.sqrt(gain.n)
        rule = f"twice the standard error of the paired differences, {noise:.3g}"
    else:
        noise = SAME_PPL * abs(stats[carried].mean)
        rule = f"{SAME_PPL:.0%} of {carried}'s {m.label}, {noise:.3g}"
    share = _ratio(abs(gain.mean), abs(stats[windows].mean))
    won = sum(g > 0 for g in gains)
    better = carried if gain.mean > 0 else windows
    ranked = [spec for spec in trained if math.isfinite(stats[spec].mean)]
    best = (max if m.higher_is_better else min)(ranked, key=lambda spec: stats[spec].mean)
    text += (
        f"{carried} (the state carried) against {windows} (fresh state), paired by seed: "
        f"{better} better by {_value(Stat(abs(gain.mean), gain.std, gain.n))} {m.label} "
        f"({share:.1%} of {windows}'s), {carried} ahead in {won} of {gain.n} "
        f"seed{'s' if gain.n > 1 else ''}; differences within {rule}, count as none. "
        f"Best mean: {best}."
    )
    if gain.mean > noise:
        return Verdict(claim, "supported", text)
    if gain.mean < -noise:
        return Verdict(claim, "not supported", text + f" The fresh windows of {windows} won.")
    return Verdict(claim, "inconclusive", text + " No difference beyond the noise.")
