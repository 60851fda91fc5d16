"""Figures of the gradient laboratory (matplotlib, Agg backend: no screen needed)."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["plot_jacobian", "plot_spectrum", "plot_bias"]


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_jacobian(curves: list[dict], path: str | Path, *, title: str = "") -> Path:
    """||ds_T/ds_{T-k}|| against k (log scale), one curve per entry of ``curves``.

    Each curve: ``label``, ``log_norms`` (mean over streams, k = 0..T),
    optional ``log_min``/``log_max`` (a band over streams), ``fit`` (from
    :func:`~tbptt.analysis.fit_rate`) and ``radius`` (a spectral radius:
    drawn as rho^k through the fitted line's intercept, so only its slope matters).
    """
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for i, c in enumerate(curves):
        color = f"C{i}"
        k = list(range(len(c["log_norms"])))
        ax.plot(k, [math.exp(v) for v in c["log_norms"]], color=color, lw=1.8, label=c["label"])
        if c.get("log_min") is not None:
            ax.fill_between(
                k,
                [math.exp(v) for v in c["log_min"]],
                [math.exp(v) for v in c["log_max"]],
                color=color,
                alpha=0.15,
                lw=0,
            )
        fit = c.get("fit")
        if fit and math.isfinite(fit["slope"]):
            ax.plot(
                k,
                [math.exp(fit["intercept"] + fit["slope"] * x) for x in k],
                color=color,
                ls=":",
                lw=1.2,
                label=f"fit: rate {fit['rate']:.4f} per step",
            )
        rho = c.get("radius")
        if rho and fit and math.isfinite(fit["slope"]):
            ax.plot(
                k,
                [math.exp(fit["intercept"] + math.log(rho) * x) for x in k],
                color=color,
                ls="--",
                lw=1.0,
                alpha=0.8,
                label=f"spectral radius {rho:.4f}: rho^k",
            )
    ax.set_yscale("log")
    ax.set(
        xlabel="distance k = T - t (steps)",
        ylabel="||dh_T / dh_t||",
        title=title or "Jacobian norm against distance",
    )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_spectrum(blocks: list[dict], path: str | Path, *, title: str = "") -> Path:
    """Eigenvalues on the complex plane with the unit circle, and singular values, per block."""
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 5))
    theta = [2 * math.pi * i / 256 for i in range(257)]
    ax.plot([math.cos(t) for t in theta], [math.sin(t) for t in theta], "k-", lw=0.8)
    for i, b in enumerate(blocks):
        label = f"layer {b['layer']} {b['gate']} (rho {b['spectral_radius']:.3f})"
        ax.scatter(
            b["eigenvalues_real"], b["eigenvalues_imag"], s=10, color=f"C{i % 10}", label=label
        )
        ax2.plot(b["singular_values"], color=f"C{i % 10}", lw=1.2, label=label)
    ax.axhline(0, color="0.7", lw=0.5)
    ax.axvline(0, color="0.7", lw=0.5)
    ax.set_aspect("equal", adjustable="datalim")
    ax.set(xlabel="real part", ylabel="imaginary part", title="eigenvalues of W_hh blocks")
    ax.legend(fontsize=7, loc="upper left")
    ax2.axhline(1.0, color="k", lw=0.8)
    ax2.set(xlabel="index", ylabel="singular value", title="singular values (descending)")
    ax2.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _positive(values: list[float]) -> list[float]:
    return [v if v > 0 else math.nan for v in values]


def plot_bias(results: list[dict], path: str | Path, *, title: str = "") -> Path:
    """Cosine, relative bias and relative variance / MSE against K, one line per strategy family."""
    families: dict[str, list[dict]] = {}
    for r in results:
        if r.get("k") is not None:
            families.setdefault(r["name"], []).append(r)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    for i, (name, rows) in enumerate(sorted(families.items())):
        rows = sorted(rows, key=lambda r: r["k"])
        ks = [r["k"] for r in rows]
        color = f"C{i}"
        axes[0].plot(ks, [r["cosine"] for r in rows], "o-", color=color, label=f"{name} (mean)")
        if any(r["draws"] > 1 for r in rows):
            axes[0].plot(
                ks,
                [r["cosine_per_draw"] for r in rows],
                "x--",
                color=color,
                label=f"{name} (one draw, mean)",
            )
        axes[1].plot(
            ks, _positive([r["relative_bias"] for r in rows]), "o-", color=color, label=name
        )
        if any(r["draws"] > 1 for r in rows):
            axes[1].plot(
                ks,
                _positive([r["noise_floor"] for r in rows]),
                ":",
                color=color,
                label=f"{name}: Monte-Carlo noise floor",
            )
        axes[2].plot(
            ks, _positive([r["relative_mse"] for r in rows]), "o-", color=color, label=f"{name} MSE"
        )
        if any(r["draws"] > 1 for r in rows):
            axes[2].plot(
                ks,
                _positive([r["relative_variance"] for r in rows]),
                "s--",
                color=color,
                label=f"{name} variance",
            )
    axes[0].set(xlabel="K", ylabel="cosine to the exact gradient", title="direction")
    axes[1].set(xlabel="K", ylabel="|mean - exact| / |exact|", title="bias (relative error)")
    axes[2].set(xlabel="K", ylabel="per-draw / |exact|^2", title="MSE and variance (relative)")
    for ax in axes:
        ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    for ax in axes[1:]:
        ax.set_yscale("log")  # zeros (no variance, no bias) are not drawn
    if title:
        fig.suptitle(title)
    return _save(fig, path)
