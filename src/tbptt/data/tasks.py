"""Synthetic tasks: long-memory benchmarks generated from a seed.

Each task is a :class:`Task`: a training and a validation :class:`StreamData`
in the aligned layout (``targets[t]`` is the target after reading
``inputs[t]``), how to read them, and the loss of a trivial baseline computed in
closed form, so a run can tell "learned something" from "predicts the mean".
Episodes are laid one after another; ``starts`` marks each episode's first row,
so the streams reset the state there and no gradient crosses an episode.

**adding** (Hochreiter & Schmidhuber 1997, "Long short-term memory", exp. 4).
An episode has T steps, inputs (T, 2): channel 0 holds u_t ~ U[0, 1), channel 1
is 1 at exactly two steps, i ~ U{0 .. T//2 - 1} and j ~ U{T//2 .. T - 1}, else 0.
The target y = u_i + u_j is stored at every step of the episode, (T, 1), but
``mask`` counts only the last one: the model must carry two values across up to
T - 1 steps. Baseline "always predict 1" = E[y]: its MSE is
Var(u_i + u_j) = 2 * 1/12 = 1/6 ~ 0.1667.

**copy** (Arjovsky, Shah & Bengio 2016, "Unitary evolution RNNs", 4.1). Alphabet
ids 0 .. S-1 are the symbols, S the blank, S + 1 the delimiter (vocabulary
S + 2). An episode of T + 2L steps (T the delay, L the length)::

    inputs   a_1 .. a_L   blank x (T - 1)   delim   blank x L
    targets  blank x (T + L)                        a_1 .. a_L

Every step counts. Baseline: predict blank (with probability 1) up to and
including the delimiter, then uniform over the S symbols. Its loss is 0 on the
first T + L steps and ln S on each of the last L, so the mean cross-entropy is

    L ln(S) / (T + 2L)   nats per step      (10 ln 8 / 120 ~ 0.1733 for the defaults).

**influence** (Tallec & Ollivier 2017, "Unbiasing truncated backpropagation
through time", influence balancing). No input: inputs (N, 1) zeros, targets
(N, 1) ones (the output s_t[1] should be 1), one stream never reset, no mask;
the model is :class:`tbptt.models.influence.InfluenceBalancing` (n, p), whose
docstring has the math. Baseline theta = 0: s_t = A^t s_0 -> 0, so the loss
(0 - 1)^2 -> 1 in the long run; the optimum theta* = 1 / (2 (2p - n)) (-1/6 for
n = 23, p = 10) drives it to 0.

Spec grammar ``name[:key=value[,key=value...]]`` (keys case-sensitive, integer
values), e.g. ``adding``, ``adding:T=50``, ``copy:T=200,length=5``. The canonical
``Task.spec`` lists only the parameters that differ from their defaults, in the
order the task declares them, so ``parse_task(task.spec).spec == task.spec``.

Seeds: the training split comes from ``torch.Generator().manual_seed(seed)``,
the validation split from a second generator seeded ``seed + VALID_SEED_OFFSET``,
so a seed gives the same data bit for bit and validation is never training.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from tbptt.data.dataset import DatasetBase, DataShape
from tbptt.data.streams import StreamData
from tbptt.errors import SpecError

__all__ = [
    "Task",
    "Param",
    "TaskBuilder",
    "TASKS",
    "VALID_SEED_OFFSET",
    "register",
    "parse_task",
    "task_names",
]

VALID_SEED_OFFSET = 1_000_003


@dataclass(frozen=True)
class Task(DatasetBase):
    """A synthetic task: its data, how to read it, and its trivial baseline.

    Attributes:
        name: the registered name ("adding", "copy", "influence").
        spec: canonical spec; ``parse_task(spec).spec == spec``.
        params: every parameter, resolved (defaults filled in), JSON-able.
        train, valid: the splits, aligned layout. Inputs (N,) int64 ids or
            (N, F) float32 features; targets (N,) int64 ids or (N, D) float32.
        input_kind: "tokens" or "features"; input_size: vocabulary size or F.
        target_kind: "classes" or "values"; output_size: classes or D.
        objective: the objective a run uses by default, "classify" or "regress".
        baseline: {"name", "loss", "metric"}: the trivial predictor's loss, in
            closed form, in the metric the objective reports: "mse", or
            "cross_entropy" (mean nats per counted step).
        model: a built-in model the task requires (e.g. "influence"), else None.
        description: one line for the command line.
    """

    name: str
    spec: str
    params: dict
    train: StreamData
    valid: StreamData
    input_kind: str
    input_size: int
    target_kind: str
    output_size: int
    objective: str
    baseline: dict
    model: str | None
    description: str

    # -- the Dataset interface (tbptt.data.Dataset) ------------------------------------

    @property
    def shape(self) -> DataShape:
        tokens = self.input_kind == "tokens"
        return DataShape(
            vocab_size=self.input_size if tokens else 0,
            input_size=0 if tokens else self.input_size,
            output_size=self.output_size,
            objective=self.objective,
        )

    def train_split(self) -> StreamData:
        return self.train

    def valid_split(self) -> StreamData:
        return self.valid

    def baselines(self, split: str = "valid") -> dict[str, dict[str, float]]:
        """The trivial predictor's validation ``loss`` (and ``rmse`` = sqrt of an MSE); for
        classes also the majority class's validation accuracy (the most frequent training
        target, counted where the loss counts)."""
        if split != "valid":
            return {}
        loss = float(self.baseline["loss"])
        metrics = {"loss": loss}
        if self.baseline.get("metric") == "mse":
            metrics["rmse"] = math.sqrt(loss)
        out = {self.baseline["name"]: metrics}
        if self.target_kind == "classes" and len(self.valid) > 0:

            def counted(rows: StreamData) -> torch.Tensor:
                return rows.targets if rows.mask is None else rows.targets[rows.mask]

            majority = int(torch.bincount(counted(self.train)).argmax())
            out["majority class"] = {
                "acc": float((counted(self.valid) == majority).double().mean())
            }
        return out

    def describe(self) -> dict:
        return {
            "kind": "task",
            "task": self.spec or self.name,
            "params": dict(self.params),
            "train_rows": len(self.train),
            "valid_rows": len(self.valid),
        }


@dataclass(frozen=True)
class Param:
    """One integer parameter of a task: its name, default and smallest valid value."""

    name: str
    default: int
    minimum: int


@dataclass(frozen=True)
class TaskBuilder:
    """How to build a task: its parameters and ``build(spec, params, seed) -> Task``.

    ``check(params)`` returns the problems that involve several parameters.
    """

    params: tuple[Param, ...]
    build: Callable[[str, dict, int], Task]
    check: Callable[[dict], list[str]] | None = None

    def usage(self, name: str) -> str:
        """``name:key=default,...``, e.g. ``adding:T=100,episodes=1000,valid_episodes=200``."""
        return name + ":" + ",".join(f"{p.name}={p.default}" for p in self.params)


def _generators(seed: int) -> tuple[torch.Generator, torch.Generator]:
    """(training, validation) generators; the validation seed is derived, never equal."""
    train = torch.Generator().manual_seed(seed)
    return train, torch.Generator().manual_seed(seed + VALID_SEED_OFFSET)


def _episode_marks(episodes: int, length: int, *, last: bool = False) -> torch.Tensor:
    """(episodes * length,) bool: True at each episode's first (or ``last``) row."""
    marks = torch.zeros(episodes, length, dtype=torch.bool)
    marks[:, -1 if last else 0] = True
    return marks.reshape(-1)


def _adding_split(T: int, episodes: int, generator: torch.Generator) -> StreamData:
    values = torch.rand(episodes, T, generator=generator)  # (E, T) float32
    first = torch.randint(0, T // 2, (episodes,), generator=generator)  # (E,)
    second = torch.randint(T // 2, T, (episodes,), generator=generator)  # (E,)
    rows = torch.arange(episodes)
    markers = torch.zeros(episodes, T)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    total = values[rows, first] + values[rows, second]  # (E,)
    return StreamData(
        inputs=torch.stack([values, markers], dim=-1).reshape(episodes * T, 2),  # (N, 2)
        targets=total[:, None].expand(episodes, T).reshape(episodes * T, 1),  # (N, 1)
        starts=_episode_marks(episodes, T),
        mask=_episode_marks(episodes, T, last=True),
    )


def _adding(spec: str, params: dict, seed: int) -> Task:
    train_gen, valid_gen = _generators(seed)
    T = params["T"]
    return Task(
        name="adding",
        spec=spec,
        params=params,
        train=_adding_split(T, params["episodes"], train_gen),
        valid=_adding_split(T, params["valid_episodes"], valid_gen),
        input_kind="features",
        input_size=2,
        target_kind="values",
        output_size=1,
        objective="regress",
        baseline={"name": "always predict 1", "loss": 1 / 6, "metric": "mse"},
        model=None,
        description=f"adding problem: sum the two marked values of {T}-step episodes, "
        "scored at the last step",
    )


def _copy_split(
    T: int, length: int, symbols: int, episodes: int, generator: torch.Generator
) -> StreamData:
    steps = T + 2 * length
    blank, delimiter = symbols, symbols + 1
    drawn = torch.randint(0, symbols, (episodes, length), generator=generator)  # (E, L)
    inputs = torch.full((episodes, steps), blank, dtype=torch.int64)
    inputs[:, :length] = drawn
    inputs[:, length + T - 1] = delimiter
    targets = torch.full((episodes, steps), blank, dtype=torch.int64)
    targets[:, T + length :] = drawn
    return StreamData(
        inputs=inputs.reshape(-1),  # (N,)
        targets=targets.reshape(-1),  # (N,)
        starts=_episode_marks(episodes, steps),
    )


def _copy(spec: str, params: dict, seed: int) -> Task:
    train_gen, valid_gen = _generators(seed)
    T, length, symbols = params["T"], params["length"], params["symbols"]
    return Task(
        name="copy",
        spec=spec,
        params=params,
        train=_copy_split(T, length, symbols, params["episodes"], train_gen),
        valid=_copy_split(T, length, symbols, params["valid_episodes"], valid_gen),
        input_kind="tokens",
        input_size=symbols + 2,
        target_kind="classes",
        output_size=symbols + 2,
        objective="classify",
        baseline={
            "name": "blank until the delimiter, then uniform over the symbols",
            "loss": length * math.log(symbols) / (T + 2 * length),
            "metric": "cross_entropy",
        },
        model=None,
        description=f"copy memory: recall {length} symbols (alphabet of {symbols}) after a delay of {T}",
    )


def _influence_split(steps: int) -> StreamData:
    return StreamData(inputs=torch.zeros(steps, 1), targets=torch.ones(steps, 1))  # (N, 1)


def _influence(spec: str, params: dict, seed: int) -> Task:
    n, p = params["n"], params["p"]
    optimum = f"theta* = 1/(2(2p - n)) = {1 / (2 * (2 * p - n)):.4g}" if 2 * p != n else "none"
    return Task(
        name="influence",
        spec=spec,
        params=params,
        train=_influence_split(params["steps"]),  # no randomness: the seed is not used
        valid=_influence_split(params["valid_steps"]),
        input_kind="features",
        input_size=1,
        target_kind="values",
        output_size=1,
        objective="regress",
        baseline={"name": "theta = 0", "loss": 1.0, "metric": "mse"},
        model="influence",
        description=f"influence balancing (n={n}, p={p}): short truncation diverges; "
        f"optimum {optimum} gives loss 0",
    )


def _influence_check(params: dict) -> list[str]:
    if params["p"] > params["n"]:
        return [f"p must be at most n ({params['n']}), got {params['p']}"]
    return []


# -- registry and spec parsing --------------------------------------------------------

TASKS: dict[str, TaskBuilder] = {}


def register(name: str, builder: TaskBuilder) -> None:
    """Make ``name[:key=value,...]`` parse to ``builder.build(spec, params, seed)``."""
    TASKS[name] = builder


register("adding", TaskBuilder((Param("T", 100, 2), Param("episodes", 1000, 1), Param("valid_episodes", 200, 1)), _adding))  # fmt: skip
register("copy", TaskBuilder((Param("T", 100, 1), Param("length", 10, 1), Param("symbols", 8, 1), Param("episodes", 1000, 1), Param("valid_episodes", 200, 1)), _copy))  # fmt: skip
register("influence", TaskBuilder((Param("n", 23, 1), Param("p", 10, 0), Param("steps", 100_000, 1), Param("valid_steps", 10_000, 1)), _influence, _influence_check))  # fmt: skip


def task_names() -> tuple[str, ...]:
    """The registered task names, sorted."""
    return tuple(sorted(TASKS))


def _parse_params(builder: TaskBuilder, rest: str) -> tuple[dict, list[str]]:
    """The resolved parameters of ``key=value,...`` and every problem found in it."""
    declared = {p.name: p for p in builder.params}
    given: dict[str, int] = {}
    problems = []
    for part in filter(None, (part.strip() for part in rest.split(","))):
        key, eq, value = (s.strip() for s in part.partition("="))
        if not eq:
            problems.append(f"expected key=value, got {part!r}")
        elif key not in declared:
            problems.append(f"unknown parameter {key!r} (expected {', '.join(declared)})")
        elif key in given:
            problems.append(f"parameter {key!r} given twice")
        else:
            try:
                given[key] = int(value)
            except ValueError:
                problems.append(f"{key} needs an integer, got {value!r}")
                given[key] = declared[key].default  # seen (a repeat is still reported)
            else:
                if given[key] < declared[key].minimum:
                    problems.append(
                        f"{key} must be at least {declared[key].minimum}, got {given[key]}"
                    )
    params = {p.name: p.default for p in builder.params} | given
    if builder.check is not None:
        problems += builder.check(params)
    return params, problems


def parse_task(spec: str, *, seed: int = 0) -> Task:
    """Build the task a spec such as ``adding`` or ``copy:T=200,length=5`` names, from ``seed``.

    Raises:
        SpecError: unknown task (the message lists each task with its defaults),
            or every problem with the parameters (unknown key, non-integer,
            out of range) at once.
    """
    name, colon, rest = spec.strip().partition(":")
    name = name.strip().lower()
    if name not in TASKS:
        usages = "; ".join(TASKS[n].usage(n) for n in task_names())
        raise SpecError(f"unknown task {spec!r}; expected one of (with defaults): {usages}")
    builder = TASKS[name]
    params, problems = _parse_params(builder, rest)
    if colon and not rest.strip():
        problems.insert(0, "a ':' with no parameters after it")
    if problems:
        raise SpecError(
            f"invalid task spec {spec!r}: {'; '.join(problems)} (usage: {builder.usage(name)})"
        )
    changed = [f"{p.name}={params[p.name]}" for p in builder.params if params[p.name] != p.default]
    canonical = name + (":" + ",".join(changed) if changed else "")
    return builder.build(canonical, params, seed)
