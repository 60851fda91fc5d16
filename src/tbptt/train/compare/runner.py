"""The comparison runner: :func:`run_comparison` trains every (seed, entry) pair.

Each run starts from the seed's initial weights and dropout stream, trains under
the budget with validation along the way, measures its peak memory, and writes
its records (see :mod:`tbptt.train.compare` for the procedure and the files). An
entry ``windows:K`` trains as ``regular:K`` with ``TrainConfig(sampling="random")``:
the trainer's :class:`~tbptt.data.streams.RandomStream` draws each window at a
random offset and starts it from a fresh state.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from tbptt.data.dataset import Dataset
from tbptt.data.streams import SequentialStream, ids
from tbptt.errors import ConfigError, DataError
from tbptt.models.lm import ModelConfig
from tbptt.models.protocol import RecurrentModel
from tbptt.train.budget import check_full_memory, check_step_time
from tbptt.train.build import build_model, build_objective, model_config_for
from tbptt.train.compare.comparison import (
    CompareConfig,
    Comparison,
    Entry,
    RunResult,
    parse_entry,
    run_directory_name,
)
from tbptt.train.config import RunConfig
from tbptt.train.generate import generate
from tbptt.train.memory import PeakMemory, release_memory
from tbptt.train.metrics import MetricsWriter
from tbptt.train.objectives import Objective, make_objective
from tbptt.train.trainer import TrainConfig, Trainer
from tbptt.truncation import parse_strategy

__all__ = ["run_comparison", "model_config_for"]

OPENING_TOKENS = 400  # tokens of the first stream kept for the picture of the cuts
SMALL_MODEL = 8  # parameters: a model this small has its final values in the run record


def _check_lengths(strategies, stream_steps: int, batch_size: int, n_rows: int) -> None:
    # Fail before any training if some strategy cannot run on this data, not after hours.
    for strategy in strategies:
        need = strategy.reference_length(stream_steps)
        if stream_steps < need:
            raise DataError(
                f"the training split has {n_rows} rows: {batch_size} streams of {stream_steps} "
                f"steps, shorter than one {strategy.spec} window of {need} steps; use more data, "
                "a smaller batch size or a shorter window"
            )


def _check_model_fits(model: ModelConfig, data: Dataset) -> None:
    shape = data.shape
    want = (shape.vocab_size, shape.input_size, shape.output_size or shape.vocab_size)
    have = (model.vocab_size, model.input_size, model.head_size)
    if want != have:
        raise ConfigError(
            f"the model reads vocab_size={have[0]}, input_size={have[1]} and outputs "
            f"{have[2]} but the data needs vocab_size={want[0]}, input_size={want[1]} and "
            f"{want[2]} outputs; build the ModelConfig with model_config_for(data, ...)"
        )


def run_comparison(
    data: Dataset,
    config: CompareConfig,
    *,
    model: ModelConfig | Callable[[], RecurrentModel] | None = None,
    train: TrainConfig | None = None,
    objective: Objective | str | Callable | None = None,
    out: str | Path | None = None,
    on_run_start: Callable[[dict], None] | None = None,
    on_step: Callable[[dict], None] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    on_run_end: Callable[[RunResult], None] | None = None,
) -> Comparison:
    """Train every (seed, entry) pair under the budget; return (and write) the records.

    Args:
        data: a :class:`~tbptt.data.Dataset`: prepared text, a time series, a task.
        config: entries (strategy specs, ``windows:K``), seeds, budget, sample prefix.
        model: the model for every run: a :class:`ModelConfig` of the built-in model
            (default: :func:`model_config_for` ``(data)``; with a highway, a series'
            :class:`~tbptt.models.forecast.ForecastNet` starting at its fitted
            autoregression, as ``tbptt train`` builds it), or a function building your
            model (called once per seed, after ``torch.manual_seed(seed)``).
        train: options for every run; its ``strategy``, ``seed`` and ``epochs`` are replaced
            per run, and its ``sampling`` for a ``windows:K`` entry (default:
            ``TrainConfig(nonfinite="skip")``, so a NaN is counted, not fatal). A series is
            scored in the evaluation columns it asks for (``data.eval_columns``).
        objective: the loss and metrics (default: the one the data implies; a standardized
            series' RMSE and MAE in the data's own units).
        out: directory for ``comparison.json`` and each run's ``metrics.jsonl`` (None: memory only).
        on_run_start: called with ``{"strategy", "seed", "index", "runs", "tokens_per_epoch"}``.
        on_step, on_epoch: the trainer's step and epoch records, as they happen (step records
            passed here also carry ``train_seconds``, the run's training seconds so far).
        on_run_end: called with each finished :class:`RunResult`.
    """
    config.check()
    entries = [parse_entry(s) for s in config.strategies]  # parsed once, here
    strategies = [parse_strategy(e.strategy) for e in entries]
    config = replace(config, strategies=tuple(e.name for e in entries), seeds=tuple(config.seeds))
    model = model if model is not None else model_config_for(data)
    if isinstance(model, ModelConfig):
        _check_model_fits(model, data)
        model_config, build = model, _builder(model, data)
    else:
        model_config, build = None, model
    # default: the data's own, as tbptt train builds it (a series' RMSE in the data's units)
    objective = (
        make_objective(objective) if objective is not None else build_objective(RunConfig(), data)
    )
    train = train or TrainConfig(nonfinite="skip")
    if data.eval_columns is not None:  # a series: scored as its stream continues
        train = replace(train, eval_batch_size=data.eval_columns)
    train.check()
    train_split = data.train_split()
    stream = SequentialStream(train_split, train.batch_size)
    _check_lengths(strategies, stream.steps, train.batch_size, len(train_split))
    out = Path(out) if out is not None else None
    if out is not None:
        try:
            (out / "runs").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"cannot create output directory {out}: {e.strerror}") from None

    # Column 0 of the batched stream: the text the first stream reads, in order.
    itos = data.vocabulary()
    first_stream = stream.data[:OPENING_TOKENS, 0].tolist() if itos is not None else []
    comparison = Comparison(
        config=config,
        model=model_config,
        train=train,
        data={**data.describe(), "baselines": data.baselines()},
        opening=[itos[i] for i in first_stream],
        separator=data.separator if itos is not None else "",
        stream_steps=stream.steps,
        runs=[],
        objective={
            "name": objective.name,
            "primary": objective.primary,
            "higher_is_better": objective.higher_is_better,
        },
    )
    budget_epochs = config.budget_epochs or 2**31 - 1
    _warm_up(build, train, stream.data, strategies)
    skipped = _check_budgets(build, train, stream, strategies, objective, config)
    comparison.skipped = {e.name: skipped[e.strategy] for e in entries if e.strategy in skipped}
    kept = [(e, s) for e, s in zip(entries, strategies) if e.name not in comparison.skipped]
    total = len(config.seeds) * len(kept)
    for seed in config.seeds:
        torch.manual_seed(seed)
        initial = copy.deepcopy(build().state_dict())
        for entry, strategy in kept:
            run = _one_run(
                data,
                config,
                build,
                _entry_config(train, entry, seed=seed, epochs=budget_epochs),
                entry,
                strategy,
                objective,
                initial,
                out,
                info={
                    "strategy": entry.name,
                    "seed": seed,
                    "index": len(comparison.runs),
                    "runs": total,
                    "tokens_per_epoch": stream.steps * stream.batch_size,
                },
                on_run_start=on_run_start,
                on_step=on_step,
                on_epoch=on_epoch,
            )
            comparison.runs.append(run)
            if out is not None:  # rewritten after every run: a stopped comparison keeps its results
                (out / "comparison.json").write_text(
                    json.dumps(comparison.to_dict(), indent=2) + "\n"
                )
            if on_run_end is not None:
                on_run_end(run)
    return comparison


def _builder(model: ModelConfig, data: Dataset) -> Callable[[], RecurrentModel]:
    """How every run builds the built-in model: as ``tbptt train`` does (a series' forecaster
    with its highway fitted on the training split; a word vocabulary's output bias at the
    unigram baseline)."""
    run = RunConfig(model=model)
    return lambda: build_model(run, data)


def _entry_config(train: TrainConfig, entry: Entry, *, seed: int, epochs: int) -> TrainConfig:
    """The training options of one run: the entry's strategy and sampling, the seed, the budget."""
    sampling = entry.sampling or train.sampling
    return replace(train, strategy=entry.strategy, sampling=sampling, seed=seed, epochs=epochs)


def _check_budgets(build, train: TrainConfig, stream, strategies, objective, config) -> dict:
    """``{spec: reason}`` of the strategies whose one step will not fit in memory or in the
    seconds budget (a window cannot stop half way: ``full`` on a long text would overrun
    the budget by a whole epoch, or exhaust the machine's memory). They are skipped, and the
    report says why; when every strategy is, the comparison is refused with the first reason."""
    rng = torch.get_rng_state()  # the probe model must not move the seed's draws
    model = build().to(train.device)
    torch.set_rng_state(rng)
    skipped = {}
    strategies = list({s.spec: s for s in strategies}.values())  # regular:K once for windows:K
    for strategy in strategies:
        try:
            check_full_memory(model, strategy, stream, objective=objective)
            if config.budget_seconds is not None:
                check_step_time(model, strategy, stream, config.budget_seconds, objective=objective)
        except ConfigError as e:
            skipped[strategy.spec] = str(e)
    if len(skipped) == len(strategies):
        first = next(iter(skipped.values()))
        raise ConfigError(f"no strategy fits: {first}", options=("train.strategy",))
    return skipped


def _warm_up(build, train: TrainConfig, rows: torch.Tensor, strategies) -> None:
    """Pay one-time costs (CUDA context, cuDNN / oneDNN handles, allocator growth) before any
    run is timed, so the first strategy is not charged for them: a throwaway model runs a
    short window forward and backward on both paths (every gate 1: fused; else: per step).

    On CUDA, cuDNN also plans per sequence length and the caching allocator grows to the
    largest graph, so there every strategy's first window length is run too (a whole epoch
    for ``full``: milliseconds there, but minutes on a CPU, where it is skipped).
    """
    rng = torch.get_rng_state()  # building the throwaway model must not move the seed's draws
    model = build().to(train.device)
    torch.set_rng_state(rng)
    lengths = [max(1, min(8, rows.shape[0] - 1))]
    cuda = torch.device(train.device).type == "cuda"
    if cuda:
        steps = rows.shape[0] - 1
        lengths += [s.plan(steps, torch.Generator().manual_seed(0)).length for s in strategies]
    for length in sorted(set(lengths)):
        inputs = ids(rows[:length]).to(train.device)  # (T, B, ...)
        for gates in (None, (1.0,) + (0.5,) * (length - 1)) if length == lengths[0] else (None,):
            outputs, _ = model(inputs, None, gates)  # (T, B, O)
            outputs.float().logsumexp(-1).sum().backward()
    if cuda:
        torch.cuda.synchronize(train.device)


def _one_run(
    data: Dataset,
    config: CompareConfig,
    build: Callable[[], RecurrentModel],
    train: TrainConfig,
    entry: Entry,
    strategy,
    objective: Objective,
    initial: dict,
    out: Path | None,
    *,
    info: dict,
    on_run_start,
    on_step,
    on_epoch,
) -> RunResult:
    name, seed = entry.name, train.seed
    directory = run_directory_name(name, seed)
    metrics_path = None
    if out is not None:
        (out / "runs" / directory).mkdir(parents=True, exist_ok=True)
        metrics_path = out / "runs" / directory / "metrics.jsonl"
    metrics = MetricsWriter(metrics_path)
    model = build()
    model.load_state_dict(initial)
    torch.manual_seed(seed)  # dropout masks: the same stream for every strategy of this seed
    trainer = Trainer(
        model,
        data.train_split(),
        data.valid_split(),
        train,
        strategy=strategy,
        objective=objective,
        metrics=metrics,
    )
    if on_run_start is not None:
        on_run_start(info)

    steps = trainer.stream.steps
    done = {"tokens": 0, "seconds": 0.0, "epochs": 0.0, "next_eval": 1, "last_eval": 0.0}
    reason = ["epochs"]

    def training_seconds() -> float:
        # Completed epochs plus the current one's step time so far (the trainer times only
        # the windows: planning, forward, backward, step; never evaluation or callbacks).
        return done["seconds"] + trainer._epoch_seconds

    def evaluate(epochs_done: float) -> None:
        measured = trainer.evaluate()
        done["last_eval"] = training_seconds()
        metrics.write(
            {
                "event": "eval",
                "epoch": trainer.epoch + 1,
                "step": trainer.step,
                "epochs_done": epochs_done,
                "train_seconds": done["last_eval"],
                **{f"val_{k}": v for k, v in measured.items()},
            }
        )

    def after_step(record: dict) -> None:
        done["tokens"] += record["tokens"]
        if on_step is not None:
            on_step({**record, "train_seconds": training_seconds()})
        if trainer.valid_batch is None or trainer.stream.remaining() == 0 or stop():
            return  # the epoch end (a complete one, or one ended by the budget) evaluates
        # Validation inside the epoch, at each 1/evals_per_epoch of the stream and every
        # eval_seconds of training, so the curves have points between epochs.
        fraction = trainer.stream.position / steps
        due = done["next_eval"] < config.evals_per_epoch and (
            fraction >= done["next_eval"] / config.evals_per_epoch
        )
        if config.eval_seconds is not None:
            due |= training_seconds() - done["last_eval"] >= config.eval_seconds
        if due:
            while done["next_eval"] / config.evals_per_epoch <= fraction:
                done["next_eval"] += 1
            evaluate(done["epochs"] + fraction)

    def after_epoch(record: dict) -> None:
        done["seconds"] += record["seconds"]
        done["epochs"] += record["fraction"]
        done["next_eval"] = 1
        if on_epoch is not None:
            on_epoch(record)

    def stop() -> bool:
        if config.budget_seconds is not None and training_seconds() >= config.budget_seconds:
            reason[0] = "seconds"
            return True
        if config.budget_tokens is not None and done["tokens"] >= config.budget_tokens:
            reason[0] = "tokens"
            return True
        return False

    release_memory()
    cuda = trainer.device.type == "cuda"
    if cuda:  # the allocator's peak is per process too: restart it for this run
        torch.cuda.synchronize(trainer.device)
        torch.cuda.reset_peak_memory_stats(trainer.device)
        cuda_start = torch.cuda.memory_allocated(trainer.device)
    try:
        with PeakMemory(config.memory_interval_s) as memory:
            start = time.perf_counter()
            if trainer.valid_batch is not None:
                evaluate(0.0)  # the shared starting point of every strategy's curve
            trainer.fit(on_step=after_step, on_epoch=after_epoch, stop=stop)
            wall = time.perf_counter() - start
        sample = _sample(trainer.model, data, config, seed)
        metrics.write(
            {
                "event": "run",
                "strategy": name,
                "sampling": train.sampling,
                "seed": seed,
                "stop": reason[0],
                "wall_seconds": wall,
                "train_seconds": done["seconds"],
                "epochs": trainer.epoch,
                "steps": trainer.step,
                "tokens": done["tokens"],
                "peak_memory_mb": memory.megabytes,
                # A model of a few scalars (influence balancing's theta) is reported as it ends.
                **(
                    {"parameters": {n: p.tolist() for n, p in trainer.model.named_parameters()}}
                    if sum(p.numel() for p in trainer.model.parameters()) <= SMALL_MODEL
                    else {}
                ),
                **(
                    {
                        "peak_cuda_mb": (
                            torch.cuda.max_memory_allocated(trainer.device) - cuda_start
                        )
                        / 2**20
                    }
                    if cuda
                    else {}
                ),
            }
        )
    finally:
        metrics.close()
    records = list(metrics.records)
    directory_rel = f"runs/{directory}" if out is not None else None
    return RunResult(name, seed, directory_rel, sample, records)


def _sample(model, data: Dataset, config: CompareConfig, seed: int) -> str:
    if config.sample_length == 0 or "sample" not in data.outputs:
        return ""
    prefix = data.encode(config.prefix)
    if len(prefix) == 0:
        prefix = data.opening(10).long()
    generator = torch.Generator().manual_seed(seed)
    ids = generate(
        model, prefix, config.sample_length, temperature=config.temperature, generator=generator
    )
    return data.decode([*prefix.tolist(), *ids])  # one text: <eos> is a line end
