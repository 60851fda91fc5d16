"""What ``tbptt train`` shows and writes at the end of a run: the epoch and closing lines, the
text sample, and a series' validation predictions (CSV and plot, in the data's units)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import torch

from tbptt.atomic import replacing, write_atomically
from tbptt.cli.common import format_metric
from tbptt.data.dataset import TextData
from tbptt.report import plot_predictions
from tbptt.train import RunConfig, generate
from tbptt.train.evaluate import predict

__all__ = ["resume_line", "epoch_metrics", "closing_line", "sample", "write_predictions"]


def resume_line(out: Path, checkpoint: Path, trainer, epochs: int) -> str:
    """Where a resumed run stands: the epoch it continues, or that it is already complete."""
    if trainer.epoch >= epochs:
        return (
            f"{out} is complete ({trainer.epoch} of {epochs} epochs, step {trainer.step}, from "
            f"{checkpoint}); rewriting its outputs (pass --epochs N to train longer)"
        )
    return (
        f"resuming {out} from {checkpoint} (epoch {trainer.epoch + 1} of {epochs}, "
        f"step {trainer.step})"
    )


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


def sample(model, data: TextData, config: RunConfig) -> str:
    prefix_ids = data.encode(config.output.prefix) if config.output.prefix else data.valid[:0]
    if len(prefix_ids) == 0 or bool((prefix_ids == 0).all()):
        prefix_ids = data.valid[:10] if len(data.valid) >= 10 else data.train[:10]
    gen = torch.Generator().manual_seed(config.train.seed)
    sampled = generate(
        model,
        prefix_ids,
        config.output.sample_length,
        temperature=config.output.temperature,
        generator=gen,
    )
    return data.decode([*prefix_ids.tolist(), *sampled])  # one text: <eos> is a line end


def write_predictions(model, data, out: Path, config: RunConfig) -> list[Path]:
    """predictions.csv and predictions.png: validation forecasts in the data's own units."""
    outputs = predict(
        model,
        data.valid_split(),
        batch_size=config.train.eval_batch_size,
        window=config.train.eval_window,
    )
    outputs = outputs.double().cpu()
    predicted = data.targets_scaler.inverse(outputs)  # (N, D)
    actual, persistence = data.valid_actual, data.valid_persistence
    names = list(data.target_columns)
    path = out / "predictions.csv"
    with io.StringIO(newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["index"]
            + [f"{n}{suffix}" for n in names for suffix in ("", "_predicted", "_persistence")]
        )
        for i, label in enumerate(data.valid_index):
            row = [label]
            for d in range(len(names)):
                row += [f"{actual[i, d]:.6g}", f"{predicted[i, d]:.6g}", f"{persistence[i, d]:.6g}"]
            writer.writerow(row)
        write_atomically(path, f.getvalue())
    plot = out / "predictions.png"
    with replacing(plot, keep_suffix=True) as tmp:
        plot_predictions(
            data.valid_index,
            actual.numpy(),
            predicted.numpy(),
            tmp,
            baseline=persistence.numpy(),
            names=names,
            title=f"validation forecasts, {data.horizon} step(s) ahead",
        )
    return [path, plot]
