"""What a comparison compares and what came out of it, and reading it back from disk.

:class:`CompareConfig` (entries, seeds, budget), :class:`RunResult` (one entry
under one seed) and :class:`Comparison` (everything a report needs);
:func:`load_comparison` reads back what :func:`~tbptt.train.compare.run_comparison`
wrote, and :func:`run_directory_name` names each run's directory.

An entry is a strategy spec (``regular:35``: windows in order, the state carried
from one to the next) or ``windows:K`` (:func:`parse_entry`): ``regular:K`` windows
drawn at random offsets, each from a fresh state, the way forecasting libraries
train recurrent models. ``windows:35`` and ``regular:35`` cut the same windows
and differ only in where they are drawn and whether the state is carried::

    regular:35   |--35--|--35--|--35--|--35--|...   in order, state carried
    windows:35      |--35--|  |--35--|              random offsets, fresh state
                 |--35--|         |--35--|  ...
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from tbptt.errors import ConfigError, DataError, SpecError
from tbptt.models.lm import ModelConfig
from tbptt.train.config import TrainConfig
from tbptt.train.metrics import read_metrics
from tbptt.truncation import parse_strategy

__all__ = [
    "Entry",
    "parse_entry",
    "forecast_entries",
    "CompareConfig",
    "RunResult",
    "Comparison",
    "load_comparison",
    "run_directory_name",
    "DEFAULT_STRATEGIES",
]

# full:checkpoint: the gradient of full BPTT in O(sqrt T) memory, so the defaults fit on any text
DEFAULT_STRATEGIES = ("full:checkpoint", "regular:35", "randomized:35")

WINDOWS = "windows"  # windows:K, regular:K windows at random offsets with a fresh state


@dataclass(frozen=True)
class Entry:
    """One entry of a comparison: what it is called, the strategy it trains with, and how its
    windows are drawn (``sampling`` None: the comparison's ``TrainConfig.sampling``)."""

    name: str  # as the report writes it: regular:35, windows:35
    strategy: str  # the canonical truncation spec it trains with: regular:35
    sampling: str | None = None

    @property
    def stateful(self) -> bool:
        """True when the state is carried from window to window (windows drawn in order;
        ``sampling`` None counts as the default, sequential)."""
        return self.sampling != "random"


def parse_entry(text: str) -> Entry:
    """``windows:K`` -> regular:K at random offsets with a fresh state; any other text is a
    strategy spec (:func:`~tbptt.truncation.parse_strategy`), its windows drawn as the
    comparison's training configuration says (sequential: in order, the state carried).

    Raises:
        SpecError: an unknown strategy, or ``windows`` without a positive integer K.
    """
    name, _, rest = text.strip().partition(":")
    if name.strip().lower() != WINDOWS:
        spec = parse_strategy(text).spec
        return Entry(spec, spec)
    try:
        spec = parse_strategy(f"regular:{rest}").spec if rest.strip() else None
    except SpecError:
        spec = None
    if spec is None:
        raise SpecError(
            f"windows takes one window length, e.g. 'windows:35' (regular:35 windows at random "
            f"offsets, each from a fresh state), got {text!r}"
        )
    k = spec.partition(":")[2]
    return Entry(f"{WINDOWS}:{k}", spec, "random")


def forecast_entries(k: int) -> tuple[str, ...]:
    """The entries of a comparison on a time series: the stateful strategies beside random
    windows with a fresh state, all of K steps (full: the whole stream, checkpointed)."""
    return (f"regular:{k}", f"randomized:{k}", "full:checkpoint", f"{WINDOWS}:{k}")


@dataclass
class CompareConfig:
    """What to compare and for how long.

    ``strategies``: the entries (:func:`parse_entry`): strategy specs and ``windows:K``.
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
        specs = [parse_entry(s).name for s in self.strategies]
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
    # Strategies not run, with the reason (their one step would not fit in memory or budget).
    skipped: dict = field(default_factory=dict)

    @property
    def strategies(self) -> list[str]:
        return list(self.config.strategies)  # canonical names (run_comparison parsed them)

    def entry(self, name: str) -> Entry:
        """The entry ``name`` stands for: its strategy and how its windows were drawn."""
        entry = parse_entry(name)
        return entry if entry.sampling else replace(entry, sampling=self.train.sampling)

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
            "skipped": self.skipped,
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
    """``regular:35`` seed 0 -> ``regular-35-seed0``, ``windows:35`` -> ``windows-35-seed0``
    (safe as a file name)."""
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
        skipped=d.get("skipped", {}),
    )
