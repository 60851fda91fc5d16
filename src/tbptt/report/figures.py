"""Figures of a comparison (matplotlib, Agg backend), one function per figure.

Every figure is drawn from recorded numbers or, for the picture of the cuts,
from the strategy objects themselves: ``parse_strategy(spec).plan(...)`` with
a generator seeded as the trainer seeds its own, so the windows drawn are the
windows the run trained on (sequential sampling).
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.ticker
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from tbptt.report.summary import (  # noqa: E402
    epoch_curve,
    metric_of,
    trained_strategies,
    val_curve,
)
from tbptt.truncation import Window, parse_strategy  # noqa: E402

__all__ = [
    "window_plan",
    "plot_cuts",
    "plot_validation",
    "plot_gap",
    "plot_grad_norms",
    "strategy_colors",
]

WINDOW_COLORS = ("#cfe2f3", "#fde2c4")


def strategy_colors(strategies: list[str]) -> dict[str, str]:
    palette = plt.get_cmap("tab10").colors
    return {s: matplotlib.colors.to_hex(palette[i % 10]) for i, s in enumerate(strategies)}


def window_plan(spec: str, seed: int, stream_steps: int, count: int) -> list[Window]:
    """The first windows ``spec`` plans on a stream of ``stream_steps`` steps, covering >= ``count``.

    The generator is ``torch.Generator().manual_seed(seed)``, as the trainer's, so with
    sequential sampling these are the windows of the run's first epoch.
    """
    strategy = parse_strategy(spec)
    generator = torch.Generator().manual_seed(seed)
    windows, covered = [], 0
    while covered < min(count, stream_steps):
        window = strategy.plan(stream_steps - covered, generator)
        windows.append(window)
        covered += window.length
    return windows


def _shown(opening: list[str], separator: str, width: int) -> list[str]:
    # As many tokens as fit about `width` characters of text.
    out, used = [], 0
    for token in opening:
        used += len(token) + len(separator)
        if used > width and out:
            break
        out.append(token)
    return out


def plot_cuts(
    strategies: list[str],
    opening: list[str],
    separator: str,
    stream_steps: int,
    seed: int,
    path: str | Path,
    *,
    width: int = 110,
) -> Path:
    """How each strategy cuts the opening of the first stream into windows, characters shown.

    Windows alternate in colour; a thick red line is a cut (the carried state is
    detached there and the optimizer steps); a window's label gives its length, and
    for gates other than 1 the factor on its kept edges.
    """
    path = Path(path)
    tokens = _shown(opening, separator, width)
    sizes = [max(1, len(t)) + len(separator) for t in tokens]
    starts = np.concatenate([[0], np.cumsum(sizes)])  # x of token i's left edge
    total = float(starts[-1])
    fig, axes = plt.subplots(
        len(strategies), 1, figsize=(max(10, 0.16 * total + 2), 1.15 * len(strategies) + 0.6)
    )
    axes = np.atleast_1d(axes)
    for ax, spec in zip(axes, strategies):
        windows = window_plan(spec, seed, stream_steps, len(tokens))
        pos, label_end, level, scales = 0, -math.inf, 0, set()
        for i, window in enumerate(windows):
            a, b = pos, min(pos + window.length, len(tokens))
            x0, x1 = starts[a], starts[b]
            ax.add_patch(
                plt.Rectangle((x0, 0), x1 - x0, 1, color=WINDOW_COLORS[i % 2], lw=0, zorder=0)
            )
            scales |= {g for g in (window.gates or ())[1:] if g != 1.0}
            label = f"{window.length}" + (" (continues)" if window.length > len(tokens) - a else "")
            # Labels of narrow windows would collide: lift a label that starts before the
            # previous one ends (about 0.4 character cells per letter at this font size).
            level = 1 - level if x0 < label_end else 0
            ax.text(x0 + 0.2, 1.06 + 0.28 * level, label, fontsize=7, va="bottom", color="#333333")
            label_end = (
                max(label_end, x0 + 0.2 + 0.4 * len(label))
                if level
                else x0 + 0.2 + 0.4 * len(label)
            )
            if pos > 0:
                ax.axvline(x0, color="#c0392b", lw=2.2, zorder=3)
            pos += window.length
            if pos >= len(tokens):
                break
        name = spec
        if scales:
            low, high = min(scales), max(scales)
            factor = f"{low:.3g}" if low == high else f"{low:.3g}–{high:.3g}"
            name += f"\nkept edges' gradient ×{factor}"
        for token, x, size in zip(tokens, starts, sizes):
            shown = token.replace(" ", "·") if token.strip() or not token else "·"
            ax.text(
                x + size / 2, 0.45, shown, ha="center", va="center", fontsize=9, family="monospace"
            )
        ax.set_xlim(0, total)
        ax.set_ylim(0, 1.6)
        ax.set_yticks([])
        ax.set_xticks([])
        for side in ("top", "right", "left"):
            ax.spines[side].set_visible(False)
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=10)
    fig.suptitle(
        f"How each strategy cuts the opening of the first stream (seed {seed}): "
        "numbers are window lengths; red line = cut (state detached, optimizer step)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _band(curves: list[tuple[list[float], list[float]]], points: int = 60):
    """Mean and min/max of several (x, y) curves on the x range all of them cover."""
    curves = [(np.asarray(x), np.asarray(y)) for x, y in curves if len(x) > 0]
    if not curves:
        return None
    if len(curves) == 1:
        x, y = curves[0]
        return x, y, None, None
    lo, hi = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
    if not hi > lo:
        return None
    grid = np.linspace(lo, hi, points)
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    return grid, ys.mean(0), ys.min(0), ys.max(0)


def _plot_curves(ax, comparison, colors, x_key: str, y_key: str, source: str = "val") -> None:
    # source "val": every validation point (val_curve), "epoch": one point per epoch.
    metric = metric_of(comparison).name
    for spec in comparison.strategies:
        curves = []
        for run in comparison.runs_of(spec):
            c = (val_curve if source == "val" else epoch_curve)(run.records, metric)
            pairs = [(x, y) for x, y in zip(c[x_key], c[y_key]) if math.isfinite(y)]
            if pairs:
                curves.append(([p[0] for p in pairs], [p[1] for p in pairs]))
        band = _band(curves)
        if band is None:  # seeds whose x ranges do not overlap: plot each, label once
            for i, (x, y) in enumerate(curves):
                label = spec if i == 0 else None
                ax.plot(x, y, "o-", color=colors[spec], lw=1, ms=4, alpha=0.7, label=label)
            continue
        x, mean, low, high = band
        single = low is None
        ax.plot(x, mean, "o-" if single else "-", color=colors[spec], lw=1.6, ms=3, label=spec)
        if not single:
            ax.fill_between(x, low, high, color=colors[spec], alpha=0.2, lw=0)
            for cx, cy in curves:
                ax.plot(cx, cy, ".", color=colors[spec], ms=3, alpha=0.5)


def plot_validation(comparison, path: str | Path) -> Path:
    """Validation metric vs epochs and vs training seconds; bands: min..max over seeds.

    The y axis is logarithmic for perplexity, linear for other metrics.
    """
    path = Path(path)
    m = metric_of(comparison)
    label = f"validation {m.label}"
    colors = strategy_colors(comparison.strategies)
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.4))
    _plot_curves(axes[0], comparison, colors, "epochs", m.key)
    _plot_curves(axes[1], comparison, colors, "seconds", m.key)
    axes[0].set(xlabel="epochs (budget-stopped epochs count as a fraction)", ylabel=label)
    axes[1].set(xlabel="training seconds (evaluation excluded)", ylabel=label)
    for ax in axes:
        if m.lm:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
            ax.yaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
            ax.tick_params(axis="y", which="minor", labelsize=7)
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.suptitle(_seeds_note(comparison, label))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_gap(comparison, path: str | Path) -> Path:
    """Validation minus training loss (nats) per epoch, one line per strategy."""
    path = Path(path)
    colors = strategy_colors(comparison.strategies)
    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    _plot_curves(ax, comparison, colors, "epochs", "gap", source="epoch")
    ax.axhline(0, color="black", lw=0.8)
    lm = metric_of(comparison).lm
    ax.set(
        xlabel="epochs",
        ylabel="validation − training loss" + (" (nats / token)" if lm else ""),
        title=_seeds_note(comparison, "generalization gap"),
    )
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_grad_norms(comparison, path: str | Path) -> Path:
    """Distribution of the global gradient norm before clipping, per strategy (all seeds pooled)."""
    path = Path(path)
    colors = strategy_colors(comparison.strategies)
    data, labels = [], []
    strategies = trained_strategies(comparison)
    for spec in strategies:
        norms = [
            float(r["grad_norm"])
            for run in comparison.runs_of(spec)
            for r in run.records
            if r.get("event") == "step"
            and math.isfinite(float(r["grad_norm"]))
            and float(r["grad_norm"]) > 0
        ]
        data.append(norms or [math.nan])
        labels.append(f"{spec}\n{len(norms):,} step{'' if len(norms) == 1 else 's'}")
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(data)), 4.6))
    parts = ax.boxplot(data, whis=(5, 95), patch_artist=True, widths=0.5)
    ax.set_xticks(range(1, len(labels) + 1), labels)
    for patch, spec in zip(parts["boxes"], strategies):
        patch.set_facecolor(colors[spec])
        patch.set_alpha(0.5)
    rng = np.random.default_rng(0)  # horizontal jitter of the points only
    for i, norms in enumerate(data, start=1):
        if len(norms) <= 2000:
            ax.plot(
                i + rng.uniform(-0.18, 0.18, len(norms)),
                norms,
                ".",
                ms=2,
                color="black",
                alpha=0.35,
            )
    clip = comparison.train.clip
    if clip > 0:
        ax.axhline(clip, color="#c0392b", ls="--", lw=1, label=f"clip threshold {clip:g}")
        ax.legend()
    ax.set_yscale("log")
    ax.set(
        ylabel="global gradient norm before clipping",
        title="gradient norms per step (box: quartiles, whiskers: 5th-95th percentile)",
    )
    ax.grid(alpha=0.3, axis="y", which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _seeds_note(comparison, what: str) -> str:
    n = len(comparison.config.seeds)
    return what if n == 1 else f"{what}: mean over {n} seeds, band from min to max"
