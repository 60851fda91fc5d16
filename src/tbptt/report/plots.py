"""Plots of a training run (matplotlib, Agg backend: no screen needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plot_training"]


def _moving_average(values: list[float], width: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= width:
            total -= values[i - width]
        out.append(total / min(i + 1, width))
    return out


def plot_training(records: list[dict], path: str | Path, *, title: str = "") -> Path:
    """Perplexity per epoch, and per-step loss and gradient norm, from metrics records."""
    path = Path(path)
    epochs = [r for r in records if r.get("event") == "epoch"]
    steps = [r for r in records if r.get("event") == "step" and not r.get("skipped")]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    if epochs:
        x = [r["epoch"] for r in epochs]
        ax.plot(x, [r["train_ppl"] for r in epochs], "o-", label="train")
        if "val_ppl" in epochs[0]:
            ax.plot(x, [r["val_ppl"] for r in epochs], "s-", label="validation")
        ax.legend()
    ax.set(xlabel="epoch", ylabel="perplexity", title="perplexity (token-weighted)")
    ax.grid(alpha=0.3)
    if steps:
        x = [r["step"] for r in steps]
        width = max(1, len(steps) // 50)
        axes[1].plot(x, [r["loss"] for r in steps], alpha=0.3, lw=0.8)
        axes[1].plot(x, _moving_average([r["loss"] for r in steps], width), lw=1.5)
        axes[2].plot(x, [r["grad_norm"] for r in steps], alpha=0.5, lw=0.8)
        axes[2].set_yscale("log")
    axes[1].set(
        xlabel="optimizer step", ylabel="loss (nats / token)", title="training loss per window"
    )
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
