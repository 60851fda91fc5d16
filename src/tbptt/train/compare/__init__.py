"""Strategies side by side: the same model, initial weights, seed and data under each entry.

An entry is a strategy spec, or ``windows:K`` (regular:K windows at random offsets,
each from a fresh state: :func:`parse_entry`). For every seed s and every entry, a run is::

    torch.manual_seed(s); weights_s = build(model config).state_dict()         # once per seed
    model <- weights_s; torch.manual_seed(s)                                    # same dropout stream
    run = TrainConfig(strategy=spec, sampling=the entry's, seed=s)             # windows:K: random
    Trainer(model, train, valid, run).fit(stop=budget)

so two strategies of one seed differ only in where windows end and which
gradient gates apply, and ``regular:K`` and ``windows:K`` only in where the windows
are drawn and whether the state is carried into them. Runs stop at the first
budget reached: epochs, training seconds (wall-clock time inside the trainer's
windows, evaluation excluded) or training tokens; the budget is asked between
windows, so a run overshoots by at most one window (for ``full``: one epoch) and
one evaluation.

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

Modules:

- :mod:`~tbptt.train.compare.comparison`: what is compared and what came out
  (:class:`CompareConfig`, :class:`RunResult`, :class:`Comparison`), and reading
  ``comparison.json`` back (:func:`load_comparison`);
- :mod:`~tbptt.train.compare.runner`: :func:`run_comparison`, which trains the runs.
"""

from tbptt.train.compare.comparison import (
    DEFAULT_STRATEGIES,
    CompareConfig,
    Comparison,
    Entry,
    RunResult,
    forecast_entries,
    load_comparison,
    parse_entry,
    run_directory_name,
)
from tbptt.train.compare.runner import model_config_for as model_config_for
from tbptt.train.compare.runner import run_comparison

__all__ = [
    "CompareConfig",
    "RunResult",
    "Comparison",
    "run_comparison",
    "load_comparison",
    "run_directory_name",
    "DEFAULT_STRATEGIES",
    "Entry",
    "parse_entry",
    "forecast_entries",
]
