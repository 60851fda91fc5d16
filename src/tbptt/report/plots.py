"""Plots of a training run (matplotlib, Agg backend: no screen needed)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plot_training"]


def _number(value) -> float:
    """A metrics value as a float: the strings JSON holds for NaN and infinity are numbers."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _moving_average(values: list[float], width: int) -> list[float]:
    """The mean of the last ``width`` finite values at each point (a step with no scored rows
    or a skipped one has a non-finite loss: left out; nan where none is finite)."""
    out, total, count = [], 0.0, 0
    finite = [math.isfinite(v) for v in values]
    for i, v in enumerate(values):
        if finite[i]:
            total, count = total + v, count + 1
        if i >= width and finite[i - width]:
            total, count = total - values[i - width], count - 1
        out.append(total / count if count else math.nan)
    return out


def plot_training(
    records: list[dict], path: str | Path, *, title: str = "", metric: str = "ppl"
) -> Path:
    """``metric`` per epoch (``ppl`` for a language model, else ``loss``), and per-step loss and
    gradient norm, from metrics records."""
    path = Path(path)
    epochs = [r for r in records if r.get("event") == "epoch"]
    steps = [r for r in records if r.get("event") == "step" and not r.get("skipped")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    trained = [r for r in epochs if f"train_{metric}" in r]
    if trained:
        ax.plot(
            [r["epoch"] for r in trained],
            [r[f"train_{metric}"] for r in trained],
            "o-",
            label="train",
        )
    checked = [r for r in epochs if f"val_{metric}" in r]
    if checked:
        ax.plot(
            [r["epoch"] for r in checked],
            [r[f"val_{metric}"] for r in checked],
            "s-",
            label="validation",
        )
    if trained or checked:
        ax.legend()
    name = "perplexity (token-weighted)" if metric == "ppl" else metric
    ax.set(xlabel="epoch", ylabel=name, title=name)
    ax.grid(alpha=0.3)
    if steps:
        x = [r["step"] for r in steps]
        width = max(1, len(steps) // 50)
        axes[1].plot(x, [r["loss"] for r in steps], alpha=0.3, lw=0.8)
        losses = [_number(r["loss"]) for r in steps]  # non-finite ones are written as strings
        axes[1].plot(x, _moving_average(losses, width), lw=1.5)
        axes[2].plot(x, [r["grad_norm"] for r in steps], alpha=0.5, lw=0.8)
        axes[2].set_yscale("log")
    axes[1].set(xlabel="optimizer step", ylabel="loss per row", title="training loss per window")
    axes[2].set(
        xlabel="optimizer step", ylabel="global norm", title="gradient norm before clipping"
    )
    for ax in axes[1:]:
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_predictions(
    index: list[str],
    actual,
    predicted,
    path: str | Path,
    *,
    baseline=None,
    baseline_name: str = "persistence",
    names: list[str] | None = None,
    title: str = "",
) -> Path:
    """Validation predictions against the truth, one panel per target column.

    ``actual``, ``predicted`` (and ``baseline``): (N, D) arrays in the data's units.
    """
    path = Path(path)
    D = actual.shape[1]
    fig, axes = plt.subplots(D, 1, figsize=(14, 3.6 * D), squeeze=False)
    x = list(range(len(index)))
    for d in range(D):
        ax = axes[d, 0]
        ax.plot(x, actual[:, d], lw=1.0, color="black", label="truth")
        ax.plot(x, predicted[:, d], lw=1.0, color="tab:blue", label="model")
        if baseline is not None:
            ax.plot(x, baseline[:, d], lw=0.8, color="tab:orange", alpha=0.6, label=baseline_name)
        ticks = x[:: max(1, len(x) // 8)]
        ax.set_xticks(ticks, [index[i] for i in ticks], rotation=20, fontsize=8)
        ax.set(ylabel=names[d] if names else f"target {d}")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right")
    axes[0, 0].set_title(title or "validation predictions")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
