"""Strategies side by side: the same model, initial weights, seed and data under each spec.

For every seed s and every strategy spec, a run is::

    torch.manual_seed(s); weights_s = build(model config).state_dict()         # once per seed
    model <- weights_s; torch.manual_seed(s)                                    # same dropout stream
    Trainer(model, train, valid, TrainConfig(strategy=spec, seed=s)).fit(stop=budget)

so two strategies of one seed differ only in where windows end and which
gradient gates apply. Runs stop at the first budget reached: epochs, training
seconds (wall-clock time inside the trainer's windows, evaluation excluded) or
training tokens; the budget is asked between windows, so a run overshoots by
at most one window (for ``full``: one epoch) and one evaluation.

Every run's step and epoch records go to ``<out>/runs/<strategy>-seed<s>/metrics.jsonl``
with a closing ``{"event": "run", ...}`` record (wall time, peak memory, why it
stopped); ``<out>/comparison.json`` holds the resolved configuration, the
opening of the text and each run's sample. :mod:`tbptt.report` turns these into
figures, a table and verdicts.

Peak memory. All runs share one process, whose ``ru_maxrss`` only ever grows,
so it cannot tell runs apart; :class:`tbptt.train.memory.PeakMemory` samples the
resident set size while a run trains, and ``peak_memory_mb`` is the highest
sample minus the level just before the run: the extra memory the run needed at
its worst moment, dominated by the autograd graph of its longest window. On a
CUDA device the run record also has ``peak_cuda_mb``: the allocator's peak
during the run (statistics reset at its start) above what was allocated then.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from tbptt.data.dataset import Dataset, TextData
from tbptt.data.streams import SequentialStream
from tbptt.errors import ConfigError, DataError
from tbptt.models.lm import ModelConfig, RecurrentNet
from tbptt.models.protocol import RecurrentModel
from tbptt.train.generate import generate
from tbptt.train.memory import PeakMemory, release_memory
from tbptt.train.metrics import MetricsWriter, read_metrics
from tbptt.train.objectives import Objective, make_objective
from tbptt.train.trainer import TrainConfig, Trainer
from tbptt.truncation import parse_strategy

__all__ = [
    "CompareConfig",
    "RunResult",
    "Comparison",
    "run_comparison",
    "load_comparison",
    "run_directory_name",
    "DEFAULT_STRATEGIES",
]

DEFAULT_STRATEGIES = ("full", "regular:35", "randomized:35")
OPENING_TOKENS = 400  # tokens of the first stream kept for the picture of the cuts
SMALL_MODEL = 8  # parameters: a model this small has its final values in the run record


@dataclass
class CompareConfig:
    """What to compare and for how long.

    At least one budget must be set; a run stops at the first one reached.
    ``budget_seconds`` counts training seconds (the trainer's time in its windows:
    forward, backward, optimizer step), not evaluation, so every strategy gets the
    same compute whatever its evaluation costs. Validation is measured before
    training, at every epoch end, at each 1/``evals_per_epoch`` of the stream, and
    (if set) every ``eval_seconds`` training seconds; strategies that step once per
    epoch, such as ``full``, only get the first and the epoch ends.
    """

    strategies: tuple[str, ...] = DEFAULT_STRATEGIES
    seeds: tuple[int, ...] = (0,)
    budget_epochs: int | None = None
    budget_seconds: float | None = None
    budget_tokens: int | None = None
    prefix: str = "time traveller"
    sample_length: int = 100
    temperature: float = 0.7
    evals_per_epoch: int = 4
    eval_seconds: float | None = None
    memory_interval_s: float = 0.005

    def check(self) -> None:
        """Raise one :class:`ConfigError` listing every invalid option (bad specs raise SpecError)."""
        problems = []
        if not self.strategies:
            problems.append("give at least one strategy spec, e.g. full regular:35")
        specs = [parse_strategy(s).spec for s in self.strategies]
        if len(set(specs)) != len(specs):
            problems.append(f"each strategy once, got {', '.join(specs)}")
        if not self.seeds:
            problems.append("give at least one seed")
        elif len(set(self.seeds)) != len(self.seeds):
            problems.append(f"each seed once, got {list(self.seeds)}")
        budgets = (self.budget_epochs, self.budget_seconds, self.budget_tokens)
        if all(b is None for b in budgets):
            problems.append("give a budget: epochs, seconds or tokens")
        if self.budget_epochs is not None and self.budget_epochs < 1:
            problems.append(f"epoch budget must be >= 1, got {self.budget_epochs}")
        if self.budget_seconds is not None and not (
            self.budget_seconds > 0 and math.isfinite(self.budget_seconds)
        ):
            problems.append(f"seconds budget must be > 0, got {self.budget_seconds}")
        if self.budget_tokens is not None and self.budget_tokens < 1:
            problems.append(f"token budget must be >= 1, got {self.budget_tokens}")
        if self.evals_per_epoch < 1:
            problems.append(f"evaluations per epoch must be >= 1, got {self.evals_per_epoch}")
        if self.eval_seconds is not None and not self.eval_seconds > 0:
            problems.append(f"seconds between evaluations must be > 0, got {self.eval_seconds}")
        if self.sample_length < 0:
            problems.append(f"sample length must be >= 0, got {self.sample_length}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            problems.append(f"temperature must be >= 0, got {self.temperature}")
        if problems:
            raise ConfigError("; ".join(problems))


@dataclass
class RunResult:
    """One strategy under one seed. ``records``: its step, epoch and closing run records."""

    strategy: str
    seed: int
    directory: str | None
    sample: str
    records: list[dict] = field(default_factory=list, repr=False)

    @property
    def run_record(self) -> dict:
        return next((r for r in reversed(self.records) if r.get("event") == "run"), {})


@dataclass
class Comparison:
    """Everything a report needs: the setup, the opening of the text, and every run."""

    config: CompareConfig
    model: ModelConfig | None  # None: a model the caller built
    train: TrainConfig
    data: dict
    opening: list[str]
    separator: str
    stream_steps: int
    runs: list[RunResult]
    # The objective runs were measured by: name, primary metric, and its direction.
    objective: dict = field(
        default_factory=lambda: {"name": "lm", "primary": "ppl", "higher_is_better": False}
    )

    @property
    def strategies(self) -> list[str]:
        return list(self.config.strategies)  # canonical specs (run_comparison parsed them)

    @property
    def primary(self) -> str:
        """The metric runs are compared by (``ppl``, ``acc``, ``rmse``, ``loss``)."""
        return self.objective["primary"]

    def better(self, a: float, b: float) -> bool:
        """True when primary value ``a`` is strictly better than ``b``."""
        return a > b if self.objective["higher_is_better"] else a < b

    def runs_of(self, strategy: str) -> list[RunResult]:
        return [r for r in self.runs if r.strategy == strategy]

    def to_dict(self) -> dict:
        """JSON-ready, without the per-step records (those live in each run's metrics.jsonl)."""
        return {
            "config": asdict(self.config),
            "model": self.model.to_dict() if self.model is not None else None,
            "objective": self.objective,
            "train": self.train.to_dict(),
            "data": self.data,
            "opening": self.opening,
            "separator": self.separator,
            "stream_steps": self.stream_steps,
            "runs": [
                {
                    "strategy": r.strategy,
                    "seed": r.seed,
                    "directory": r.directory,
                    "sample": r.sample,
                }
                for r in self.runs
            ],
        }


def run_directory_name(strategy: str, seed: int) -> str:
    """``regular:35`` seed 0 -> ``regular-35-seed0`` (safe as a file name)."""
    slug = "".join(c if c.isalnum() or c in "._" else "-" for c in strategy)
    return f"{slug}-seed{seed}"


def load_comparison(out: str | Path) -> Comparison:
    """Read back what :func:`run_comparison` wrote into ``out`` (records from the JSON lines)."""
    out = Path(out)
    path = out / "comparison.json"
    if not path.is_file():
        raise DataError(f"no comparison.json in {out}; run tbptt compare --out {out} first")
    d = json.loads(path.read_text())
    config = d["config"]
    config.update(strategies=tuple(config["strategies"]), seeds=tuple(config["seeds"]))
    runs = []
    for r in d["runs"]:
        records = read_metrics(out / r["directory"] / "metrics.jsonl") if r["directory"] else []
        runs.append(RunResult(r["strategy"], r["seed"], r["directory"], r["sample"], records))
    return Comparison(
        config=CompareConfig(**config),
        model=ModelConfig.from_dict(d["model"]) if d.get("model") else None,
        train=TrainConfig.from_dict(d["train"]),
        data=d["data"],
        opening=d["opening"],
        separator=d["separator"],
        stream_steps=d["stream_steps"],
        runs=runs,
        **({"objective": d["objective"]} if "objective" in d else {}),
    )


# -- the runner -------------------------------------------------------------------------


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


def model_config_for(data: Dataset, **options) -> ModelConfig:
    """The built-in model's configuration for ``data``'s inputs and targets (``options``: the rest)."""
    shape = data.shape
    return ModelConfig(
        vocab_size=shape.vocab_size,
        input_size=shape.input_size,
        output_size=shape.output_size,
        **options,
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
    """Train every (seed, strategy) pair under the budget; return (and write) the records.

    Args:
        data: a :class:`~tbptt.data.Dataset`: prepared text, a time series, a task.
        config: strategies, seeds, budget, sample prefix.
        model: the model for every run: a :class:`ModelConfig` of the built-in model
            (default: :func:`model_config_for` ``(data)``), or a function building your
            model (called once per seed, after ``torch.manual_seed(seed)``).
        train: options for every run; its ``strategy``, ``seed`` and ``epochs`` are replaced
            per run (default: ``TrainConfig(nonfinite="skip")``, so a NaN is counted, not fatal).
        objective: the loss and metrics (default: the one the data implies).
        out: directory for ``comparison.json`` and each run's ``metrics.jsonl`` (None: memory only).
        on_run_start: called with ``{"strategy", "seed", "index", "runs", "tokens_per_epoch"}``.
        on_step, on_epoch: the trainer's step and epoch records, as they happen (step records
            passed here also carry ``train_seconds``, the run's training seconds so far).
        on_run_end: called with each finished :class:`RunResult`.
    """
    config.check()
    strategies = [parse_strategy(s) for s in config.strategies]  # parsed once, here
    specs = [s.spec for s in strategies]
    config = replace(config, strategies=tuple(specs), seeds=tuple(config.seeds))
    model = model if model is not None else model_config_for(data)
    if isinstance(model, ModelConfig):
        _check_model_fits(model, data)
        model_config, build = model, lambda: RecurrentNet(model)
    else:
        model_config, build = None, model
    objective = make_objective(objective if objective is not None else data.shape.objective)
    train = train or TrainConfig(nonfinite="skip")
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
    text = isinstance(data, TextData)
    first_stream = stream.data[:OPENING_TOKENS, 0].tolist() if text else []
    comparison = Comparison(
        config=config,
        model=model_config,
        train=train,
        data={**data.describe(), "baselines": data.baselines()},
        opening=[data.vocab.itos[i] for i in first_stream],
        separator=data.separator if text else "",
        stream_steps=stream.steps,
        runs=[],
        objective={
            "name": objective.name,
            "primary": objective.primary,
            "higher_is_better": objective.higher_is_better,
        },
    )
    budget_epochs = config.budget_epochs or 2**31 - 1
    total = len(config.seeds) * len(specs)
    _warm_up(build, train, stream.data, strategies)
    for seed in config.seeds:
        torch.manual_seed(seed)
        initial = copy.deepcopy(build().state_dict())
        for strategy in strategies:
            spec = strategy.spec
            run = _one_run(
                data,
                config,
                build,
                replace(train, strategy=spec, seed=seed, epochs=budget_epochs),
                strategy,
                objective,
                initial,
                out,
                info={
                    "strategy": spec,
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
        inputs = rows[:length].to(train.device)  # (T, B, ...)
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
    spec, seed = train.strategy, train.seed
    directory = run_directory_name(spec, seed)
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
                "strategy": spec,
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
    return RunResult(spec, seed, directory_rel, sample, records)


def _sample(model, data: Dataset, config: CompareConfig, seed: int) -> str:
    if config.sample_length == 0 or not isinstance(data, TextData):
        return ""
    prefix = data.encode(config.prefix)
    if len(prefix) == 0:
        prefix = data.valid[:10] if len(data.valid) >= 10 else data.train[:10]
    generator = torch.Generator().manual_seed(seed)
    ids = generate(
        model, prefix, config.sample_length, temperature=config.temperature, generator=generator
    )
    return data.decode(prefix.tolist()) + data.separator + data.decode(ids)
