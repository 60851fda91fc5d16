"""What a run writes at its end: curves.png, summary.json, and what its data asks for (a text
sample, a series' validation predictions), plus where it ran."""

from __future__ import annotations

import csv
import io
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tbptt.atomic import replacing, write_atomically
from tbptt.data.dataset import Dataset
from tbptt.errors import NonFiniteError
from tbptt.report import plot_predictions, plot_training
from tbptt.train import RunConfig, generate, read_metrics
from tbptt.train.evaluate import predict, score
from tbptt.train.objectives import Objective

__all__ = [
    "RunResult",
    "header_line",
    "resume_line",
    "epoch_line",
    "ran_on",
    "write_outputs",
    "test_metrics",
    "sample",
    "write_predictions",
    "PLOT_STEPS",
]

# The plot reads at most about this many step records back from metrics.jsonl (evenly thinned).
PLOT_STEPS = 20_000


@dataclass
class RunResult:
    """How a run ended.

    Attributes:
        code: 0 when it finished (or was already complete), 128 + the signal's number
            when a signal stopped it (checkpointed), 130 when a second signal aborted it.
        summary: summary.json's record (empty when it did not finish).
        written: the files written at the end.
        resumed_from: the checkpoint it continued (None: it started afresh).
        stopped_by: the signal's name when one stopped it.
        problem: why a run that finished still failed (code 2): it skipped more than
            :data:`MAX_SKIPPED_SHARE` of its steps for non-finite values.
    """

    code: int
    summary: dict = field(default_factory=dict)
    written: list[Path] = field(default_factory=list)
    resumed_from: Path | None = None
    stopped_by: str | None = None
    problem: str | None = None


def header_line(run) -> str:
    """One line: the model, its size, the strategy, objective, data and directory."""
    trainer, data = run.trainer, run.data
    n_params = sum(p.numel() for p in trainer.model.parameters())
    test = data.test_split()
    size = f", vocabulary {data.shape.vocab_size}" if data.shape.vocab_size else ""
    if test is not None:
        size = f" / {len(test):,} test{size}"
    if data.reading():
        size += ", " + data.reading()
    world = f", {run.group.world} processes" if run.group is not None else ""
    return (
        f"{run.title} ({n_params:,} parameters), {run.strategy.spec}, "
        f"{trainer.objective.name}, {len(data.train_split()):,} training / "
        f"{len(data.valid_split()):,} validation {data.unit}{size}{world}; "
        f"run directory {run.directory}"
    )


def resume_line(run) -> str | None:
    """Where a continued run stands (None: a new run)."""
    if run.found is None:
        return None
    trainer, epochs, out = run.trainer, run.config.train.epochs, run.directory
    if trainer.epoch >= epochs:
        return (
            f"{out} is complete ({trainer.epoch} of {epochs} epochs, step {trainer.step}, "
            f"from {run.found[0]}); rewriting its outputs (train longer with more epochs)"
        )
    return (
        f"resuming {out} from {run.found[0]} (epoch {trainer.epoch + 1} of {epochs}, "
        f"step {trainer.step})"
    )


def epoch_line(record: dict, epochs: int) -> str:
    metrics = "  ".join(
        f"{k} {v:.4g}" for k, v in record.items() if k.startswith(("train_", "val_"))
    )
    return f"epoch {record['epoch']}/{epochs}  {metrics}  {record['tokens_per_s']:,.0f} rows/s"


def ran_on(config: RunConfig, world_size: int = 1) -> dict:
    """Where a run ran: processes, device, CPU threads, versions (config.json, summary.json)."""
    from tbptt import __version__

    return {
        "world_size": world_size,
        "device": str(config.train.device),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "tbptt": __version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "pid": os.getpid(),
    }


def test_metrics(model, data: Dataset, config: RunConfig, objective: Objective) -> dict:
    """``test_<metric>`` of the data's test split, scored as validation is (a next-token test
    split's first token is predicted from the last validation token), and the baselines on it."""
    split = data.test_split()
    valid = data.valid_split()
    before = valid if len(valid) else data.train_split()
    context = before.inputs[-1:].cpu() if split.next_token else None
    metrics = score(
        model,
        split,
        objective=objective,
        batch_size=config.train.eval_batch_size,
        window=config.train.eval_window,
        context=context,
    )
    out = {f"test_{k}": v for k, v in metrics.items()}
    if data.unit == "char tokens" and "test_bpt" in out:
        out["test_bpc"] = out["test_bpt"]
    for name, values in data.baselines("test").items():
        for k, v in values.items():
            out[f"{name}_test_{k}"] = v
    out["test_rows"] = len(split)
    return out


def sample(model, data: Dataset, config: RunConfig) -> str:
    """The run's sample: its prefix (default: the validation opening) continued."""
    prefix_ids = data.encode(config.output.prefix) if config.output.prefix else data.opening(0)
    if len(prefix_ids) == 0 or bool((prefix_ids == 0).all()):
        prefix_ids = data.opening(10)
    gen = torch.Generator().manual_seed(config.train.seed)
    sampled = generate(
        model,
        prefix_ids,
        config.output.sample_length,
        temperature=config.output.temperature,
        generator=gen,
    )
    return data.decode([*prefix_ids.tolist(), *sampled])  # one text: <eos> is a line end


def write_predictions(model, data, out: Path, config: RunConfig) -> tuple[list[Path], dict]:
    """predictions.csv and predictions.png: validation forecasts in the data's own units (the
    scored pairs: no warm-up, no filled target); and their metrics per step."""
    outputs = predict(
        model,
        data.valid_split(),
        batch_size=config.train.eval_batch_size,
        window=config.train.eval_window,
    )
    predicted = data.targets_scaler.inverse(outputs.double().cpu())  # (N, O)
    metrics = data.scores(predicted)
    keep = data.scored  # (N,)
    predicted = predicted[keep]
    actual, persistence = data.valid_actual[keep], data.valid_persistence[keep]
    index = [label for label, k in zip(data.valid_index, keep.tolist()) if k]
    names = list(data.output_columns)
    path = out / "predictions.csv"
    with io.StringIO(newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(
            [data.time_column or "index"]
            + [f"{n}{suffix}" for n in names for suffix in ("", "_predicted", "_persistence")]
        )
        for i, label in enumerate(index):
            row = [label]
            for d in range(len(names)):
                row += [f"{actual[i, d]:.6g}", f"{predicted[i, d]:.6g}", f"{persistence[i, d]:.6g}"]
            writer.writerow(row)
        write_atomically(path, f.getvalue())
    plot = out / "predictions.png"
    with replacing(plot, keep_suffix=True) as tmp:
        plot_predictions(
            index,
            actual.numpy(),
            predicted.numpy(),
            tmp,
            baseline=persistence.numpy(),
            names=names,
            title=f"validation forecasts, {data.horizon} step(s) ahead",
        )
    return [path, plot], metrics


def write_outputs(
    out: Path, trainer, data: Dataset, config: RunConfig, *, title: str, ran: dict
) -> tuple[dict, list[Path], list[str]]:
    """curves.png, summary.json and the data's own outputs; (summary, files written, notes).

    ``notes``: what could not be written and why (a model with non-finite outputs has no
    sample), one line each.
    """
    objective = trainer.objective
    baselines = data.baselines()
    metric = "ppl" if objective.name == "lm" else "loss"
    history = read_metrics(out / "metrics.jsonl", max_steps=PLOT_STEPS)
    with replacing(out / "curves.png", keep_suffix=True) as tmp:
        plot_training(history, tmp, title=title, metric=metric)
    written = [
        out / "config.json",
        out / "metrics.jsonl",
        out / "checkpoint.pt",
        out / "curves.png",
    ]
    notes = []

    records = [r for r in history if r["event"] == "epoch"]
    summary = {"epochs": trainer.epoch, "steps": trainer.step, "objective": objective.name}
    summary["skipped_steps"] = trainer.skipped
    summary["baselines"] = baselines
    if "unigram" in baselines:
        summary["unigram_ppl"] = baselines["unigram"]["ppl"]
    if records:
        last = records[-1]
        summary.update({k: v for k, v in last.items() if k.startswith(("train_", "val_"))})
        summary["tokens_per_s"] = sum(r["tokens"] for r in records) / max(
            1e-9, sum(r["seconds"] for r in records)
        )
    test = data.test_split()
    if test is not None and len(test) > 0:
        summary.update(test_metrics(trainer.model, data, config, objective))
    if "sample" in data.outputs and config.output.sample_length > 0:
        try:
            summary["sample"] = sample(trainer.model, data, config)
        except NonFiniteError as e:  # a model with non-finite outputs: no sample, the rest kept
            summary["sample_error"] = str(e)
            notes.append(f"no sample: {e}")
    if "predictions" in data.outputs and len(data.valid_split()) > 0:
        files, metrics = write_predictions(trainer.model, data, out, config)
        written += files
        summary.update({f"val_{k}": v for k, v in metrics.items() if "@" in k})  # per step
    summary["ran_on"] = ran
    write_atomically(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    written.append(out / "summary.json")
    return summary, written, notes
