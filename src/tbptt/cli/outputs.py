"""What ``tbptt train`` shows: the epoch, closing and test lines (the files are the run's:
:mod:`tbptt.run.outputs`)."""

from __future__ import annotations

import math

from tbptt.cli.common import format_metric

__all__ = ["epoch_metrics", "closing_line", "test_line"]


def epoch_metrics(record: dict, objective) -> str:
    if objective.name == "lm":
        train = (
            f"train ppl {format_metric(record['train_ppl'])}"
            if "train_ppl" in record
            else "no trained tokens"
        )
        val = f"  val ppl {format_metric(record['val_ppl'])}" if "val_ppl" in record else ""
        return train + val
    train = (
        f"train loss {format_metric(record['train_loss'], digits=4)}"
        if "train_loss" in record
        else "no trained rows"
    )
    vals = [(k[4:], v) for k, v in record.items() if k.startswith("val_")]
    return train + (
        "  val " + ", ".join(f"{k} {format_metric(v, digits=4)}" for k, v in vals) if vals else ""
    )


def closing_line(summary: dict, objective, baselines: dict, steps: int) -> str:
    if objective.name == "lm":
        return (
            f"validation perplexity {format_metric(summary.get('val_ppl', math.nan))} (unigram "
            f"baseline {format_metric(summary.get('unigram_ppl', math.nan))}), train perplexity "
            f"{format_metric(summary.get('train_ppl', math.nan))}, "
            f"{summary['tokens_per_s'] / 1e3:.1f}k "
            f"tokens/s, {steps} optimizer steps"
        )
    shown = [k for k in (objective.primary, "mae", "loss") if f"val_{k}" in summary]
    measured = ", ".join(
        f"{k.upper() if k != 'loss' else k} {format_metric(summary[f'val_{k}'], digits=4)}"
        for k in shown
    )
    against = "; ".join(
        f"{name}: "
        + ", ".join(
            f"{k.upper() if k != 'loss' else k} {format_metric(v, digits=4)}" for k, v in m.items()
        )
        for name, m in baselines.items()
    )
    return (
        f"validation {measured}"
        + (f" (baselines -- {against})" if against else "")
        + (f", {steps} optimizer steps")
    )


def test_line(summary: dict, data) -> str:
    """``test perplexity X (bits per character Y) on N tokens``."""
    line = f"test perplexity {format_metric(summary['test_ppl'])}"
    if "test_bpc" in summary:
        line += f" (bits per character {format_metric(summary['test_bpc'])})"
    line += f" on {summary.get('test_rows', 0):,} {data.unit}"
    if "unigram_test_ppl" in summary:
        line += f" (unigram baseline {format_metric(summary['unigram_test_ppl'])})"
    return line
