"""Will one step's graph fit? An estimate made before the first window.

Plain full BPTT keeps the activations of every step of a window until its
backward: memory grows linearly with the window (docs/strategies.md measures
about 250 KB per step for an LSTM 1x128 at batch 32 on CPU). A window of a
whole epoch's stream can ask for tens of gigabytes and take the machine down.

:func:`check_full_memory` measures the slope instead of assuming one: it runs
two short windows of the real model, batch and objective forward under
saved-tensor hooks (:class:`~tbptt.train.memory.SavedTensorBytes`), takes the bytes each step
adds, scales them to the strategy's longest window, adds a
margin for the rest of the graph, and compares with the memory available
(``MemAvailable`` of /proc/meminfo on CPU, ``torch.cuda.mem_get_info`` on
CUDA). When the estimate does not fit it raises a one-line
:class:`~tbptt.errors.ConfigError` naming the estimate and the fixes:
``full:checkpoint`` (the same gradient in O(√T) memory) and ``full:N`` with
the largest N that fits.

Checkpointed strategies and short windows (under ``min_steps``) are not measured.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import dataclass

import torch

from tbptt.errors import ConfigError
from tbptt.train.memory import SavedTensorBytes

__all__ = [
    "MemoryEstimate",
    "available_memory",
    "estimate_window_memory",
    "check_full_memory",
    "check_step_time",
]

PROBE_STEPS = 16  # steps of the measured window
MARGIN = 1.5  # graph nodes, gradients and allocator slack above the saved tensors
MIN_STEPS = 2_000  # shorter windows are never a danger worth a probe


@dataclass(frozen=True)
class MemoryEstimate:
    """One step's graph: about ``bytes_per_step`` x ``steps`` x ``MARGIN`` = ``total`` bytes."""

    steps: int
    bytes_per_step: float
    total: float
    available: int | None


def available_memory(device: torch.device | str = "cpu") -> int | None:
    """Bytes a run can still allocate: free GPU memory, or MemAvailable (None if unknown)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _window_length(strategy, steps: int) -> int:
    # The longest graph one optimizer step keeps: a full sequence, or the strategy's window.
    return int(strategy.reference_length(steps))


def _checkpointed(strategy) -> bool:
    return bool(getattr(strategy, "checkpoint", False))


def estimate_window_memory(model, strategy, stream, objective=None) -> MemoryEstimate:
    """Measure the saved bytes per step on a short window of ``stream``; scale to the strategy's.

    The stream's position is left where it was. ``objective``: the run's loss (default:
    a log-softmax over the outputs, what next-token cross-entropy saves).
    """
    steps = _window_length(strategy, stream.steps)
    with _no_draws(model, stream):
        saved = {
            n: _saved_bytes(model, _probe(stream, n), objective)
            for n in (PROBE_STEPS, 2 * PROBE_STEPS)
        }
    # the slope of two windows: what each step adds (the weights saved once cancel out)
    n = min(2 * PROBE_STEPS, stream.steps)
    per_step = max(saved[2 * PROBE_STEPS] - saved[PROBE_STEPS], 0) / max(1, n - PROBE_STEPS)
    if per_step == 0:
        per_step = saved[PROBE_STEPS] / PROBE_STEPS
    total = (saved[PROBE_STEPS] + per_step * (steps - PROBE_STEPS)) * MARGIN
    device = next(iter(model.parameters()), torch.empty(0)).device
    return MemoryEstimate(steps, per_step, total, available_memory(device))


def _saved_bytes(model, batch, objective) -> int:
    device = next(iter(model.parameters()), torch.empty(0)).device
    batch = batch.to(device)
    meter = SavedTensorBytes()
    was_training = model.training
    model.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
            outputs, _ = model(batch.inputs, None)  # (T, B, O)
            if objective is not None:
                loss = objective.loss_sum(outputs, batch.targets, batch.mask)
            else:
                loss = outputs.float().log_softmax(-1).sum()
        del loss, outputs
    finally:
        model.train(was_training)
    return meter.peak


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def check_full_memory(
    model, strategy, stream, *, objective=None, available: int | None = None
) -> MemoryEstimate | None:
    """Refuse, before the first window, a strategy whose one-step graph will not fit in memory.

    Args:
        model: the run's model (on its device).
        strategy: the run's strategy; checkpointed ones and windows under ``MIN_STEPS``
            steps are let through without a measurement.
        stream: the run's training stream (``steps``, ``batch_size``, ``next``).
        objective: the run's objective (its loss's saved tensors are counted).
        available: bytes available (default: :func:`available_memory` of the model's device).

    Returns:
        The estimate, or None when none was needed.

    Raises:
        ConfigError: one line with the estimate, the memory available and the fixes.
    """
    steps = _window_length(strategy, stream.steps)
    if _checkpointed(strategy) or steps < MIN_STEPS:
        return None
    estimate = estimate_window_memory(model, strategy, stream, objective)
    free = available if available is not None else estimate.available
    if free is None or estimate.total <= free:
        return estimate
    fits = int(free / (estimate.bytes_per_step * MARGIN))
    hint = f"full:{max(1, fits // 1000 * 1000 or fits)}" if fits >= 1 else "a shorter window"
    raise ConfigError(
        f"{strategy.spec} keeps the graph of {steps:,} steps of {stream.batch_size} streams for "
        f"one optimizer step: about {_gb(estimate.total)} (measured "
        f"{estimate.bytes_per_step / 1e3:,.0f} KB per step), more than the {_gb(free)} "
        f"available; use full:checkpoint (the same gradient in about "
        f"{_gb(estimate.total / math.sqrt(steps) * 2)}) or {hint} (independent "
        f"sequences that fit)",
        options=("train.strategy",),
    )


def _probe(stream, steps: int):
    position = stream.position
    try:
        stream.position = 0
        return stream.next(min(steps, stream.steps))
    finally:
        stream.position = position


@contextlib.contextmanager
def _no_draws(model, stream):
    """A measurement leaves the run's random state as it found it: the global generators
    (dropout) and a random stream's own generator, so a run with a probe draws exactly what
    it would without one."""
    generator = getattr(stream, "generator", None)
    state = generator.get_state() if generator is not None else None
    device = next(iter(model.parameters()), torch.empty(0)).device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        yield
    if generator is not None:
        generator.set_state(state)


def check_step_time(
    model, strategy, stream, budget_seconds: float, *, objective=None, probe_steps: int = 64
) -> float | None:
    """Refuse a strategy whose one optimizer step cannot finish within ``budget_seconds``.

    A window cannot be stopped half way (its gradient would be a different one), so a
    strategy whose window is a whole epoch (``full``) would overrun a short budget by
    the length of that window. The time of a ``probe_steps`` window, forward and backward,
    scaled to the strategy's window (twice the forward for a checkpointed one), is the
    estimate. Windows under ``MIN_STEPS`` steps are not timed (returns None).

    Raises:
        ConfigError: one line with the estimate, the budget and what to use instead.
    """
    steps = _window_length(strategy, stream.steps)
    if steps < MIN_STEPS:
        return None
    with _no_draws(model, stream):
        batch = _probe(stream, probe_steps)
        device = next(iter(model.parameters()), torch.empty(0)).device
        batch = batch.to(device)
        was_training = model.training
        model.train()
        try:
            for _ in range(2):  # the first pass pays one-time costs
                start = time.perf_counter()
                outputs, _ = model(batch.inputs, None)  # (T, B, O)
                if objective is not None:
                    loss = objective.loss_sum(outputs, batch.targets, batch.mask)
                else:
                    loss = outputs.float().log_softmax(-1).sum()
                loss.backward()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds = time.perf_counter() - start
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)
    per_step = seconds / len(batch.inputs) * (1.3 if _checkpointed(strategy) else 1.0)
    estimate = per_step * steps
    if estimate <= budget_seconds:
        return estimate
    fits = int(budget_seconds / per_step / 4)  # several steps of full:N inside the budget
    hint = f"full:{fits}" if fits >= 1 else "a shorter window"
    raise ConfigError(
        f"one {strategy.spec} step runs {steps:,} steps of {stream.batch_size} streams: about "
        f"{estimate:,.0f} s, more than the budget of {budget_seconds:g} training seconds (a "
        f"window cannot stop half way); give a budget of at least {math.ceil(estimate * 1.5)} "
        f"seconds, or use {hint}",
        options=("compare.budget_seconds", "compare.strategies"),
    )
